//! sysfs topology: `devices/system/node/node*/{cpulist,meminfo}` and
//! `bus/pci/devices/<bus id>/numa_node`. The root is configurable so tests use a temp tree.

use std::path::{Path, PathBuf};

use kubesched_core::inventory::NumaNodeInfo;

use super::{HostTopology, TopologyError, parse_cpu_list};
use crate::discovery::normalise_bus_id;

/// The host topology read from the kernel's sysfs files, used when hwloc cannot load.
#[derive(Debug, Clone)]
pub struct SysfsTopology {
    root: PathBuf,
}

impl SysfsTopology {
    /// Reads sysfs under `root` (`/sys` on a real node, a temporary tree in tests).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SysfsTopology { root: root.into() }
    }

    fn read(&self, rel: &Path) -> Result<String, TopologyError> {
        let path = self.root.join(rel);
        std::fs::read_to_string(&path)
            .map_err(|e| TopologyError::Unavailable(format!("{}: {e}", path.display())))
    }

    /// All CPUs when the kernel exposes no NUMA nodes (non-NUMA kernels).
    fn single_node(&self) -> Result<Vec<NumaNodeInfo>, TopologyError> {
        let cpus = parse_cpu_list(&self.read(Path::new("devices/system/cpu/online"))?)?;
        Ok(vec![NumaNodeInfo {
            id: 0,
            cpus,
            memory_mib: 0,
            free_cpus: None,
            free_memory_mib: None,
        }])
    }
}

/// `Node 0 MemTotal:       32768 kB` -> MiB.
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.split_once("MemTotal:")?.1;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024)
    })
}

impl HostTopology for SysfsTopology {
    fn numa_nodes(&self) -> Result<Vec<NumaNodeInfo>, TopologyError> {
        let dir = self.root.join("devices/system/node");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return self.single_node();
        };
        let mut nodes = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("node"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let node_dir = Path::new("devices/system/node").join(&name);
            let cpus = parse_cpu_list(&self.read(&node_dir.join("cpulist"))?)?;
            // Memory sizes from sysfs can disagree with other tools on VMs; report what the kernel says.
            let memory_mib = self
                .read(&node_dir.join("meminfo"))
                .ok()
                .as_deref()
                .and_then(mem_total_mib)
                .unwrap_or(0);
            nodes.push(NumaNodeInfo {
                id,
                cpus,
                memory_mib,
                free_cpus: None,
                free_memory_mib: None,
            });
        }
        if nodes.is_empty() {
            return self.single_node();
        }
        nodes.sort_by_key(|n| n.id);
        Ok(nodes)
    }

    fn numa_of_pci(&self, bus_id: &str) -> Option<u32> {
        let bus_id = normalise_bus_id(bus_id).ok()?;
        let text = self
            .read(&Path::new("bus/pci/devices").join(bus_id).join("numa_node"))
            .ok()?;
        // -1 means "no affinity" (single-socket or non-NUMA hosts), not an error.
        u32::try_from(text.trim().parse::<i64>().ok()?).ok()
    }

    fn kind(&self) -> &'static str {
        "sysfs"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("kubesched-sysfs-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (rel, content) in files {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        root
    }

    #[test]
    fn two_numa_nodes_and_pci_affinity() {
        let root = tree(&[
            ("devices/system/node/node0/cpulist", "0-3\n"),
            (
                "devices/system/node/node0/meminfo",
                "Node 0 MemTotal:       2097152 kB\nNode 0 MemFree: 1 kB\n",
            ),
            ("devices/system/node/node1/cpulist", "4-7\n"),
            ("devices/system/node/possible", "0-1\n"),
            ("bus/pci/devices/0000:3b:00.0/numa_node", "1\n"),
            ("bus/pci/devices/0000:5e:00.0/numa_node", "-1\n"),
        ]);
        let topo = SysfsTopology::new(&root);
        let nodes = topo.numa_nodes().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            (nodes[0].id, nodes[0].cpus.clone(), nodes[0].memory_mib),
            (0, vec![0, 1, 2, 3], 2048)
        );
        assert_eq!(
            (nodes[1].id, nodes[1].cpus.clone(), nodes[1].memory_mib),
            (1, vec![4, 5, 6, 7], 0)
        );
        assert_eq!(topo.numa_of_pci("00000000:3B:00.0"), Some(1));
        assert_eq!(topo.numa_of_pci("0000:5e:00.0"), None, "-1 is no affinity");
        assert_eq!(topo.numa_of_pci("0000:99:00.0"), None);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn no_numa_directory_means_one_node() {
        let root = tree(&[("devices/system/cpu/online", "0-1\n")]);
        let nodes = SysfsTopology::new(&root).numa_nodes().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].cpus, vec![0, 1]);
        std::fs::remove_dir_all(root).unwrap();
    }
}

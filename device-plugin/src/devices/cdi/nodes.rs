//! The device nodes a MIG instance needs inside a container: its parent GPU's
//! `/dev/nvidia<minor>`, the two capability nodes granting access to its GPU instance and its
//! compute instance (`/dev/nvidia-caps/nvidia-cap<N>`, N read from the driver's
//! `/proc/driver/nvidia-caps/mig-minors`), and the control nodes the host has. Both host paths
//! are configurable so tests (and the fake MIG backend) go through the same code.

use std::path::{Path, PathBuf};

use super::spec::{CdiSpecError, DeviceNode};

/// The driver's table of MIG capability minors (`gpu<m>/gi<g>/access <N>` lines).
pub const DEFAULT_MIG_MINORS: &str = "/proc/driver/nvidia-caps/mig-minors";
/// The host's device folder as the agent sees it.
pub const DEFAULT_DEV_ROOT: &str = "/dev";

/// Control nodes every CUDA container needs, added when the host has them.
const CONTROL_NODES: [&str; 3] = ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"];

/// What names a MIG instance's device nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigNodeIds {
    /// Minor number of the parent GPU (`/dev/nvidia<minor>`).
    pub gpu_minor: u32,
    /// The GPU instance id.
    pub gpu_instance: u32,
    /// The compute instance id within the GPU instance.
    pub compute_instance: u32,
}

/// Where the MIG capability table and the device nodes are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevices {
    mig_minors: PathBuf,
    dev_root: PathBuf,
}

impl Default for HostDevices {
    fn default() -> Self {
        HostDevices::new(DEFAULT_MIG_MINORS, DEFAULT_DEV_ROOT)
    }
}

impl HostDevices {
    /// Reads the capability table at `mig_minors` and checks for control nodes under
    /// `dev_root`. The spec always names nodes by their `/dev` path: that is where the runtime
    /// finds them on the host, whatever folder the agent's container mounts them at.
    pub fn new(mig_minors: impl Into<PathBuf>, dev_root: impl Into<PathBuf>) -> Self {
        HostDevices {
            mig_minors: mig_minors.into(),
            dev_root: dev_root.into(),
        }
    }

    /// The capability table's path.
    pub fn mig_minors(&self) -> &Path {
        &self.mig_minors
    }

    /// The device nodes of the MIG instance `ids`: the GPU, the GPU instance and compute
    /// instance capabilities, then the control nodes present on the host. Err when the table
    /// cannot be read or lacks the instance (no node would grant access to it).
    pub fn mig_device_nodes(&self, ids: MigNodeIds) -> Result<Vec<DeviceNode>, CdiSpecError> {
        let path = self.mig_minors.display().to_string();
        let table = std::fs::read_to_string(&self.mig_minors).map_err(|source| {
            CdiSpecError::MigMinors {
                path: path.clone(),
                source,
            }
        })?;
        let gi_key = format!("gpu{}/gi{}/access", ids.gpu_minor, ids.gpu_instance);
        let ci_key = format!(
            "gpu{}/gi{}/ci{}/access",
            ids.gpu_minor, ids.gpu_instance, ids.compute_instance
        );
        let mut nodes = vec![DeviceNode::new(format!("/dev/nvidia{}", ids.gpu_minor))];
        for key in [gi_key, ci_key] {
            let minor = cap_minor(&table, &key).ok_or_else(|| CdiSpecError::MigMinorMissing {
                path: path.clone(),
                key: key.clone(),
            })?;
            nodes.push(DeviceNode::new(format!(
                "/dev/nvidia-caps/nvidia-cap{minor}"
            )));
        }
        for control in CONTROL_NODES {
            if self.dev_root.join(control).exists() {
                nodes.push(DeviceNode::new(format!("/dev/{control}")));
            }
        }
        Ok(nodes)
    }
}

/// The minor of `key` in a mig-minors table (`<key> <minor>` per line).
fn cap_minor(table: &str, key: &str) -> Option<u32> {
    table.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()? != key {
            return None;
        }
        fields.next()?.parse::<u32>().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "config 1\nmonitor 2\ngpu0/gi1/access 12\ngpu0/gi1/ci0/access 13\n\
                         gpu0/gi11/access 102\ngpu1/gi1/access 147\ngpu1/gi1/ci0/access 148\n";

    #[test]
    fn minors_are_found_by_exact_key() {
        assert_eq!(cap_minor(TABLE, "gpu0/gi1/access"), Some(12));
        assert_eq!(cap_minor(TABLE, "gpu0/gi1/ci0/access"), Some(13));
        assert_eq!(cap_minor(TABLE, "gpu1/gi1/access"), Some(147));
        assert_eq!(cap_minor(TABLE, "gpu0/gi2/access"), None);
        assert_eq!(cap_minor("gpu0/gi1/access x", "gpu0/gi1/access"), None);
    }

    #[test]
    fn nodes_come_from_the_table_and_present_control_nodes() {
        let dir = std::env::temp_dir().join(format!("ksdp-cdi-nodes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        std::fs::write(dir.join("mig-minors"), TABLE).unwrap();
        std::fs::write(dir.join("dev/nvidiactl"), "").unwrap();
        let host = HostDevices::new(dir.join("mig-minors"), dir.join("dev"));
        let ids = MigNodeIds {
            gpu_minor: 1,
            gpu_instance: 1,
            compute_instance: 0,
        };
        let paths: Vec<String> = host
            .mig_device_nodes(ids)
            .unwrap()
            .into_iter()
            .map(|n| n.path)
            .collect();
        assert_eq!(
            paths,
            [
                "/dev/nvidia1",
                "/dev/nvidia-caps/nvidia-cap147",
                "/dev/nvidia-caps/nvidia-cap148",
                "/dev/nvidiactl"
            ]
        );
        let missing = host
            .mig_device_nodes(MigNodeIds {
                gpu_instance: 11,
                ..ids
            })
            .unwrap_err();
        assert!(
            missing.to_string().contains("gpu1/gi11/access"),
            "{missing}"
        );
        let unreadable = HostDevices::new(dir.join("none"), dir.join("dev"));
        assert!(matches!(
            unreadable.mig_device_nodes(ids),
            Err(CdiSpecError::MigMinors { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

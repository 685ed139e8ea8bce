//! Host NUMA topology behind the [`HostTopology`] trait: hwloc first, sysfs when hwloc cannot
//! load, the fake fixture in tests. Returns core inventory types.

mod hwloc;
mod sysfs;

pub use hwloc::HwlocTopology;
pub use sysfs::SysfsTopology;

use std::path::Path;

use kubesched_core::inventory::NumaNodeInfo;

/// Why the host's NUMA topology could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The topology cannot be read at all: hwloc does not load, a sysfs file is missing, or the
    /// fixture is unreadable; holds why.
    #[error("topology unavailable: {0}")]
    Unavailable(String),
    /// A topology file holds something that does not parse (e.g. a malformed CPU list).
    #[error("cannot parse {what}: {text:?}")]
    Parse {
        /// What was being read, e.g. `cpu list`.
        what: String,
        /// The text that did not parse.
        text: String,
    },
}

/// The host's NUMA layout: nodes with their CPUs and memory, and the NUMA node of each PCI
/// device (a GPU's NUMA affinity). Implemented by hwloc, sysfs and the fake fixture.
pub trait HostTopology: Send + Sync {
    /// NUMA nodes with their CPUs and memory. A host without NUMA reports one node 0.
    fn numa_nodes(&self) -> Result<Vec<NumaNodeInfo>, TopologyError>;
    /// NUMA node of a PCI device (any bus id format); `None` when it has no affinity.
    fn numa_of_pci(&self, bus_id: &str) -> Option<u32>;
    /// Short name for logs and `doctor` ("hwloc", "sysfs", "fake").
    fn kind(&self) -> &'static str;
}

/// hwloc when it loads, otherwise sysfs under `sysfs_root`.
pub fn detect(sysfs_root: &Path) -> Box<dyn HostTopology> {
    match hwloc::HwlocTopology::load() {
        Ok(topology) => Box::new(topology),
        Err(error) => {
            tracing::warn!(%error, "hwloc unavailable; falling back to sysfs");
            Box::new(sysfs::SysfsTopology::new(sysfs_root))
        }
    }
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, TopologyError> {
    let bad = || TopologyError::Parse {
        what: "cpu list".into(),
        text: text.to_string(),
    };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (
                lo.parse::<u32>().map_err(|_| bad())?,
                hi.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let v = part.parse::<u32>().map_err(|_| bad())?;
                (v, v)
            }
        };
        // A reversed or absurd range is corruption, not a real host.
        if hi < lo || hi - lo > 1 << 16 {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Ok(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list(""), Ok(vec![]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
    }
}

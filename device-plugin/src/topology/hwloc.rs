//! hwloc topology through `hwlocality`: NUMA nodes with their CPUs and memory, and the NUMA
//! node of a PCI device (its first non-I/O ancestor's nodeset).

use hwlocality::Topology;
use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::topology::builder::TypeFilter;
use kubesched_core::inventory::NumaNodeInfo;

use super::{HostTopology, TopologyError};
use crate::discovery::normalise_bus_id;

/// The host topology as hwloc reports it (with PCI devices kept), the first choice of
/// [`detect`](super::detect).
pub struct HwlocTopology {
    topology: Topology,
}

impl HwlocTopology {
    /// Loads the running host's topology, keeping the PCI devices (GPUs are "important").
    pub fn load() -> Result<Self, TopologyError> {
        let unavailable =
            |e: &dyn std::fmt::Display| TopologyError::Unavailable(format!("hwloc: {e}"));
        let topology = Topology::builder()
            .with_io_type_filter(TypeFilter::KeepImportant)
            .map_err(|e| unavailable(&e))?
            .build()
            .map_err(|e| unavailable(&e))?;
        Ok(HwlocTopology { topology })
    }

    /// A synthetic topology, e.g. `pack:2 numa:1 core:4 pu:1` (tests and demos).
    pub fn synthetic(description: &str) -> Result<Self, TopologyError> {
        let unavailable =
            |e: &dyn std::fmt::Display| TopologyError::Unavailable(format!("hwloc synthetic: {e}"));
        let topology = Topology::builder()
            .from_synthetic(description)
            .map_err(|e| unavailable(&e))?
            .build()
            .map_err(|e| unavailable(&e))?;
        Ok(HwlocTopology { topology })
    }
}

fn to_u32(index: impl Into<usize>) -> Option<u32> {
    u32::try_from(index.into()).ok()
}

impl HostTopology for HwlocTopology {
    fn numa_nodes(&self) -> Result<Vec<NumaNodeInfo>, TopologyError> {
        let mut nodes = Vec::new();
        for obj in self.topology.objects_with_type(ObjectType::NUMANode) {
            let Some(id) = obj.os_index().and_then(to_u32) else {
                continue;
            };
            let cpus = obj
                .cpuset()
                .map(|set| set.iter_set().filter_map(to_u32).collect())
                .unwrap_or_default();
            let memory_mib = match obj.attributes() {
                Some(ObjectAttributes::NUMANode(attrs)) => {
                    attrs.local_memory().map_or(0, |m| m.get() / (1024 * 1024))
                }
                _ => 0,
            };
            nodes.push(NumaNodeInfo {
                id,
                cpus,
                memory_mib,
                free_cpus: None,
                free_memory_mib: None,
            });
        }
        if nodes.is_empty() {
            return Err(TopologyError::Unavailable(
                "hwloc reports no NUMA node".into(),
            ));
        }
        nodes.sort_by_key(|n| n.id);
        Ok(nodes)
    }

    fn numa_of_pci(&self, bus_id: &str) -> Option<u32> {
        let bus_id = normalise_bus_id(bus_id).ok()?;
        let device = self.topology.pci_device_by_bus_id_string(&bus_id).ok()??;
        let nodeset = device.first_non_io_ancestor()?.nodeset()?;
        // A device local to several NUMA nodes has no single affinity to report.
        if nodeset.weight() != Some(1) {
            return None;
        }
        nodeset.first_set().and_then(to_u32)
    }

    fn kind(&self) -> &'static str {
        "hwloc"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_two_socket_host() {
        let topo = HwlocTopology::synthetic("pack:2 numa:1 core:2 pu:1").unwrap();
        let nodes = topo.numa_nodes().unwrap();
        assert_eq!(nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(nodes[0].cpus, vec![0, 1]);
        assert_eq!(nodes[1].cpus, vec![2, 3]);
        // Synthetic topologies carry no PCI devices.
        assert_eq!(topo.numa_of_pci("0000:3b:00.0"), None);
        assert_eq!(topo.numa_of_pci("garbage"), None);
    }
}

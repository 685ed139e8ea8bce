//! NUMA topology and the kubelet Topology Manager's admission rule: whether a
//! pod's devices and pinned CPUs can be admitted on a node under its policy,
//! and on which NUMA node.

use serde::{Deserialize, Serialize};

/// The kubelet's `--topology-manager-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyPolicy {
    /// `none`: no alignment is attempted; every pod is admitted (the kubelet's default).
    #[default]
    None,
    /// `best-effort`: alignment is preferred but a misaligned pod is still admitted.
    BestEffort,
    /// `restricted`: a pod is admitted only if its devices span no more NUMA nodes than needed.
    Restricted,
    /// `single-numa-node`: a pod is admitted only if its devices and pinned CPUs share a NUMA
    /// node.
    SingleNumaNode,
}

impl TopologyPolicy {
    /// The kubelet's spelling (`single-numa-node`).
    pub fn as_str(self) -> &'static str {
        match self {
            TopologyPolicy::None => "none",
            TopologyPolicy::BestEffort => "best-effort",
            TopologyPolicy::Restricted => "restricted",
            TopologyPolicy::SingleNumaNode => "single-numa-node",
        }
    }

    /// Policies under which a misaligned pod is rejected at admission.
    pub fn rejects_misalignment(self) -> bool {
        matches!(
            self,
            TopologyPolicy::Restricted | TopologyPolicy::SingleNumaNode
        )
    }
}

/// Free CPU and memory of one NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaState {
    /// NUMA node id as the kernel numbers it.
    pub id: u32,
    /// Whole CPUs the CPU manager could still pin here.
    pub cpus_free: u32,
    /// All CPUs of the node (for the "narrowest possible" rule of `restricted`).
    pub cpus_total: u32,
    /// Memory still free on this NUMA node, in MiB.
    pub memory_free_mib: u64,
}

/// Why the Topology Manager would refuse a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumaReject {
    /// Under `single-numa-node`, the devices lie on more than one NUMA node (listed).
    #[error("devices span NUMA nodes {0:?} but the policy is single-numa-node")]
    DevicesSpan(Vec<u32>),
    /// No NUMA node with the devices (or, without devices, any NUMA node) has enough free CPUs
    /// to pin the pod's exclusive CPUs.
    #[error("no NUMA node has {cpus} free CPUs next to the devices on NUMA {numa:?}")]
    CpusNotAligned {
        /// Exclusive CPUs the pod asks to pin.
        cpus: u32,
        /// NUMA node of the devices; `None` for a pod without NUMA-attached devices.
        numa: Option<u32>,
    },
    /// Under `restricted`, the devices span more NUMA nodes than the narrowest choice would.
    #[error("devices span {got} NUMA nodes where {best} would do (policy restricted)")]
    NotNarrowest {
        /// NUMA nodes the chosen devices span.
        got: usize,
        /// Fewest NUMA nodes the device request could span on this node.
        best: usize,
    },
}

/// Decides admission for devices on `device_numa` (one entry per device;
/// `None` for a device without NUMA affinity) plus `exclusive_cpus` pinned CPUs.
///
/// `narrowest_devices` is the fewest NUMA nodes the device request could use
/// on this node if every device were free: `restricted` admits only that.
/// Returns the NUMA node the pod would be aligned to, if one.
pub fn admit(
    policy: TopologyPolicy,
    numa: &[NumaState],
    device_numa: &[Option<u32>],
    narrowest_devices: usize,
    exclusive_cpus: Option<u32>,
) -> Result<Option<u32>, NumaReject> {
    let mut span: Vec<u32> = device_numa.iter().flatten().copied().collect();
    span.sort_unstable();
    span.dedup();
    let aligned = aligned_node(numa, &span, exclusive_cpus);
    match policy {
        TopologyPolicy::None | TopologyPolicy::BestEffort => Ok(aligned),
        TopologyPolicy::SingleNumaNode => {
            if span.len() > 1 {
                return Err(NumaReject::DevicesSpan(span));
            }
            require_cpus(numa, &span, exclusive_cpus, aligned)
        }
        TopologyPolicy::Restricted => {
            if span.len() > narrowest_devices.max(1) {
                return Err(NumaReject::NotNarrowest {
                    got: span.len(),
                    best: narrowest_devices,
                });
            }
            if span.len() > 1 {
                // A wide but narrowest device hint merges with any CPU hint.
                return Ok(None);
            }
            require_cpus(numa, &span, exclusive_cpus, aligned)
        }
    }
}

fn require_cpus(
    numa: &[NumaState],
    span: &[u32],
    cpus: Option<u32>,
    aligned: Option<u32>,
) -> Result<Option<u32>, NumaReject> {
    match (cpus, aligned) {
        (Some(c), None) if c > 0 && !numa.is_empty() => Err(NumaReject::CpusNotAligned {
            cpus: c,
            numa: span.first().copied(),
        }),
        _ => Ok(aligned),
    }
}

/// The NUMA node that holds all devices and has room for the pinned CPUs.
fn aligned_node(numa: &[NumaState], span: &[u32], cpus: Option<u32>) -> Option<u32> {
    let fits = |n: &NumaState| cpus.is_none_or(|c| n.cpus_free >= c);
    match span {
        [] => numa.iter().find(|n| fits(n)).map(|n| n.id),
        // Without per-NUMA CPU data the devices' node is the best answer.
        [one] if numa.is_empty() => Some(*one),
        [one] => numa.iter().find(|n| n.id == *one && fits(n)).map(|n| n.id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_nodes(free0: u32, free1: u32) -> Vec<NumaState> {
        vec![
            NumaState {
                id: 0,
                cpus_free: free0,
                cpus_total: 32,
                memory_free_mib: 1 << 20,
            },
            NumaState {
                id: 1,
                cpus_free: free1,
                cpus_total: 32,
                memory_free_mib: 1 << 20,
            },
        ]
    }

    #[test]
    fn single_numa_node_refuses_spanning_devices() {
        let n = two_nodes(32, 32);
        let r = admit(
            TopologyPolicy::SingleNumaNode,
            &n,
            &[Some(0), Some(1)],
            1,
            None,
        );
        assert_eq!(r, Err(NumaReject::DevicesSpan(vec![0, 1])));
        assert_eq!(
            admit(TopologyPolicy::BestEffort, &n, &[Some(0), Some(1)], 1, None),
            Ok(None)
        );
    }

    #[test]
    fn single_numa_node_needs_cpus_next_to_the_devices() {
        let n = two_nodes(2, 32);
        assert_eq!(
            admit(TopologyPolicy::SingleNumaNode, &n, &[Some(1)], 1, Some(8)),
            Ok(Some(1))
        );
        let r = admit(TopologyPolicy::SingleNumaNode, &n, &[Some(0)], 1, Some(8));
        assert_eq!(
            r,
            Err(NumaReject::CpusNotAligned {
                cpus: 8,
                numa: Some(0)
            })
        );
        // Without pinned CPUs the device side alone decides.
        assert_eq!(
            admit(TopologyPolicy::SingleNumaNode, &n, &[Some(0)], 1, None),
            Ok(Some(0))
        );
    }

    #[test]
    fn restricted_accepts_the_narrowest_wide_span() {
        let n = two_nodes(32, 32);
        assert_eq!(
            admit(
                TopologyPolicy::Restricted,
                &n,
                &[Some(0), Some(1)],
                2,
                Some(8)
            ),
            Ok(None)
        );
        let r = admit(TopologyPolicy::Restricted, &n, &[Some(0), Some(1)], 1, None);
        assert_eq!(r, Err(NumaReject::NotNarrowest { got: 2, best: 1 }));
    }

    #[test]
    fn policy_names_match_the_kubelet_flag_and_serde() {
        for p in [
            TopologyPolicy::None,
            TopologyPolicy::BestEffort,
            TopologyPolicy::Restricted,
            TopologyPolicy::SingleNumaNode,
        ] {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }

    #[test]
    fn cpu_only_pods_align_anywhere_with_room() {
        let n = two_nodes(2, 32);
        assert_eq!(
            admit(TopologyPolicy::SingleNumaNode, &n, &[], 0, Some(8)),
            Ok(Some(1))
        );
        let r = admit(TopologyPolicy::SingleNumaNode, &n, &[], 0, Some(40));
        assert!(r.is_err());
    }
}

//! The kubelet PodResources API (v1, List and GetAllocatableResources on its own Unix socket):
//! the node's ground truth for which devices, exclusive CPUs and NUMA memory each container
//! holds. The agent uses it to rebuild its hand-out records and to publish per-NUMA free CPUs
//! and memory. When the socket is missing the agent logs it once per outage and publishes the
//! inventory without free figures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubesched_core::inventory::NumaNodeInfo;
use kubesched_proto::podresources::v1::pod_resources_lister_client::PodResourcesListerClient;
use kubesched_proto::podresources::v1::{
    AllocatableResourcesRequest, ContainerDevices, ContainerMemory, ListPodResourcesRequest,
};

use kubesched_k8s::pod_key;

use super::uds;

/// The memory type the Memory Manager reports for ordinary memory (not hugepages).
const MEMORY: &str = "memory";
const MIB: u64 = 1024 * 1024;

/// Why the kubelet's PodResources API could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    /// The socket does not exist (the kubelet is down, or its pod-resources folder is not
    /// mounted); holds the path.
    #[error("kubelet PodResources socket {0} does not exist")]
    Missing(String),
    /// The socket exists but no gRPC channel could be opened on it.
    #[error(transparent)]
    Connect(#[from] uds::ConnectError),
    /// A PodResources call returned an error (a kubelet that does not offer
    /// `GetAllocatableResources` is tolerated, not an error).
    #[error("kubelet PodResources {call} failed: {status}")]
    Call {
        /// The call, `List` or `GetAllocatableResources`.
        call: &'static str,
        /// The gRPC status the kubelet answered with.
        status: tonic::Status,
    },
}

/// Memory of one container (or allocatable on the node) on a set of NUMA nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaMemory {
    /// The NUMA nodes the memory is on; several when the Memory Manager spreads it.
    pub numa_nodes: Vec<u32>,
    /// Size in bytes.
    pub bytes: u64,
}

/// What one container holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerHolding {
    /// Namespace of the container's pod.
    pub namespace: String,
    /// Name of the container's pod.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// (resource name, device id) pairs.
    pub devices: Vec<(String, String)>,
    /// Exclusive CPUs (empty unless the CPU manager's static policy pinned some).
    pub cpus: Vec<u32>,
    /// Memory the Memory Manager assigned the container, by NUMA nodes (ordinary memory only,
    /// not hugepages); empty unless its policy is Static.
    pub memory: Vec<NumaMemory>,
}

/// One reading of the kubelet's view of the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// Whether the kubelet answered `GetAllocatableResources` (older kubelets only `List`).
    pub allocatable_reported: bool,
    /// CPUs the CPU manager may hand out exclusively (empty when it pins nothing).
    pub allocatable_cpus: BTreeSet<u32>,
    /// Memory the Memory Manager may hand out (empty unless its policy is Static).
    pub allocatable_memory: Vec<NumaMemory>,
    /// What every container the kubelet knows of holds, as `List` reports it.
    pub containers: Vec<ContainerHolding>,
}

fn numa_ids(topology: Option<&kubesched_proto::podresources::v1::TopologyInfo>) -> Vec<u32> {
    topology
        .map(|t| {
            t.nodes
                .iter()
                .filter_map(|n| u32::try_from(n.id).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn memory(entries: &[ContainerMemory]) -> Vec<NumaMemory> {
    entries
        .iter()
        .filter(|m| m.memory_type == MEMORY)
        .map(|m| NumaMemory {
            numa_nodes: numa_ids(m.topology.as_ref()),
            bytes: m.size,
        })
        .collect()
}

fn devices(entries: &[ContainerDevices]) -> Vec<(String, String)> {
    entries
        .iter()
        .flat_map(|d| {
            d.device_ids
                .iter()
                .map(|id| (d.resource_name.clone(), id.clone()))
        })
        .collect()
}

fn cpus(ids: &[i64]) -> Vec<u32> {
    ids.iter().filter_map(|c| u32::try_from(*c).ok()).collect()
}

/// Reads the kubelet's PodResources service at `socket`.
pub async fn read_usage(socket: &Path, timeout: Duration) -> Result<NodeUsage, PodResourcesError> {
    // Checked first so an absent kubelet is a plain, quiet condition rather than a dial error.
    if !socket.exists() {
        return Err(PodResourcesError::Missing(socket.display().to_string()));
    }
    let mut client = PodResourcesListerClient::new(uds::connect(socket, timeout).await?);
    let allocatable = match client
        .get_allocatable_resources(AllocatableResourcesRequest {})
        .await
    {
        Ok(response) => Some(response.into_inner()),
        Err(status) if not_offered(&status) => None,
        Err(status) => {
            return Err(PodResourcesError::Call {
                call: "GetAllocatableResources",
                status,
            });
        }
    };
    let listed = client
        .list(ListPodResourcesRequest {})
        .await
        .map_err(|status| PodResourcesError::Call {
            call: "List",
            status,
        })?
        .into_inner();
    let containers = listed
        .pod_resources
        .iter()
        .flat_map(|pod| {
            pod.containers.iter().map(|c| ContainerHolding {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                container: c.name.clone(),
                devices: devices(&c.devices),
                cpus: cpus(&c.cpu_ids),
                memory: memory(&c.memory),
            })
        })
        .collect();
    Ok(NodeUsage {
        allocatable_reported: allocatable.is_some(),
        allocatable_cpus: allocatable
            .as_ref()
            .map(|a| cpus(&a.cpu_ids).into_iter().collect())
            .unwrap_or_default(),
        allocatable_memory: allocatable
            .as_ref()
            .map(|a| memory(&a.memory))
            .unwrap_or_default(),
        containers,
    })
}

/// Whether the kubelet does not offer `GetAllocatableResources`: before 1.21 it does not know
/// the call, and 1.21-1.22 answer that it is disabled unless its feature gate is on. `List`
/// still works there, so the hand-out records are rebuilt; only the free figures are missing.
fn not_offered(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unimplemented
        || (status.code() == tonic::Code::Unknown && status.message().contains("disabled"))
}

impl NodeUsage {
    /// Device ids each pod (`namespace/name`) holds, over all its containers.
    pub fn devices_by_pod(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for c in &self.containers {
            if c.devices.is_empty() {
                continue;
            }
            held.entry(pod_key(&c.namespace, &c.pod))
                .or_default()
                .extend(c.devices.iter().map(|(_, id)| id.clone()));
        }
        held
    }

    /// Fills `free_cpus` and `free_memory_mib` of each NUMA node. CPUs: the allocatable ones
    /// of the node not pinned to a container; left unset when the CPU manager pins nothing
    /// (then no CPU is exclusive and NUMA alignment of CPUs does not apply). Memory: the
    /// node's allocatable memory less what containers hold there (a container spread over
    /// several nodes counts evenly against each); unset without Memory Manager figures.
    pub fn apply_free(&self, numa_nodes: &mut [NumaNodeInfo]) {
        let pinned: BTreeSet<u32> = self
            .containers
            .iter()
            .flat_map(|c| c.cpus.iter().copied())
            .collect();
        let share = |m: &NumaMemory, node: u32| -> u64 {
            let n = m.numa_nodes.len() as u64;
            if n == 0 || !m.numa_nodes.contains(&node) {
                0
            } else {
                m.bytes / n
            }
        };
        for node in numa_nodes {
            node.free_cpus = (!self.allocatable_cpus.is_empty()).then(|| {
                node.cpus
                    .iter()
                    .copied()
                    .filter(|c| self.allocatable_cpus.contains(c) && !pinned.contains(c))
                    .collect()
            });
            let allocatable: u64 = self
                .allocatable_memory
                .iter()
                .map(|m| share(m, node.id))
                .sum();
            let held: u64 = self
                .containers
                .iter()
                .flat_map(|c| c.memory.iter())
                .map(|m| share(m, node.id))
                .sum();
            node.free_memory_mib =
                (allocatable > 0).then(|| allocatable.saturating_sub(held) / MIB);
        }
    }
}

/// Periodic reader that remembers whether the kubelet answered, so an absent socket is
/// logged once per outage and never stops the agent.
#[derive(Debug)]
pub struct UsageReader {
    socket: PathBuf,
    timeout: Duration,
    down: bool,
    /// Whether the missing `GetAllocatableResources` has been logged.
    told_no_allocatable: bool,
}

impl UsageReader {
    /// A reader of the PodResources socket at `socket`; `timeout` bounds the connect and each
    /// call. It starts out assuming the kubelet answers.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        UsageReader {
            socket: socket.into(),
            timeout,
            down: false,
            told_no_allocatable: false,
        }
    }

    /// The current usage, or `None` when the kubelet cannot tell.
    pub async fn read(&mut self) -> Option<NodeUsage> {
        match read_usage(&self.socket, self.timeout).await {
            Ok(usage) => {
                if self.down {
                    tracing::info!(socket = %self.socket.display(), "kubelet PodResources available again");
                }
                self.down = false;
                if !usage.allocatable_reported && !self.told_no_allocatable {
                    tracing::warn!(socket = %self.socket.display(), "this kubelet does not offer GetAllocatableResources (before 1.23, or its feature gate is off); pod holdings are read, free CPUs and memory are not published");
                }
                self.told_no_allocatable = !usage.allocatable_reported;
                Some(usage)
            }
            Err(error) => {
                if !self.down {
                    tracing::warn!(%error, "kubelet PodResources unavailable; publishing the inventory without free CPUs and memory");
                }
                self.down = true;
                None
            }
        }
    }

    /// Whether the last read failed.
    pub fn is_down(&self) -> bool {
        self.down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32, cpus: std::ops::Range<u32>) -> NumaNodeInfo {
        NumaNodeInfo {
            id,
            cpus: cpus.collect(),
            memory_mib: 4096,
            free_cpus: None,
            free_memory_mib: None,
        }
    }

    fn holding(cpus: &[u32], memory: Vec<NumaMemory>) -> ContainerHolding {
        ContainerHolding {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
            devices: vec![],
            cpus: cpus.to_vec(),
            memory,
        }
    }

    #[test]
    fn free_cpus_and_memory_per_numa_node() {
        let usage = NodeUsage {
            allocatable_reported: true,
            // CPU 0 is reserved for the system: not allocatable.
            allocatable_cpus: (1..8).collect(),
            allocatable_memory: vec![
                NumaMemory {
                    numa_nodes: vec![0],
                    bytes: 2048 * MIB,
                },
                NumaMemory {
                    numa_nodes: vec![1],
                    bytes: 4096 * MIB,
                },
            ],
            containers: vec![
                holding(
                    &[2, 5],
                    vec![NumaMemory {
                        numa_nodes: vec![0, 1],
                        bytes: 1024 * MIB,
                    }],
                ),
                holding(
                    &[6],
                    vec![NumaMemory {
                        numa_nodes: vec![1],
                        bytes: 1024 * MIB,
                    }],
                ),
            ],
        };
        let mut nodes = vec![node(0, 0..4), node(1, 4..8)];
        usage.apply_free(&mut nodes);
        assert_eq!(nodes[0].free_cpus, Some(vec![1, 3]));
        assert_eq!(nodes[1].free_cpus, Some(vec![4, 7]));
        assert_eq!(nodes[0].free_memory_mib, Some(2048 - 512));
        assert_eq!(nodes[1].free_memory_mib, Some(4096 - 512 - 1024));
    }

    #[test]
    fn without_cpu_or_memory_manager_figures_nothing_is_claimed() {
        let usage = NodeUsage::default();
        let mut nodes = vec![node(0, 0..4)];
        usage.apply_free(&mut nodes);
        assert_eq!(nodes[0].free_cpus, None);
        assert_eq!(nodes[0].free_memory_mib, None);
    }
}

//! Pods bound to this node, as allocation needs them: their GPU request and the devices the
//! scheduler's `<prefix>/devices` annotation names. Behind [`PodSource`] so tests and the
//! standalone demo use an in-memory list; on a cluster `node_watch` watches the API server.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kube::runtime::reflector::store::WriterDropped;
use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::request::{GpuDemand, ResourceNames};
use kubesched_k8s::PodRef;
use tokio::sync::watch;

/// What a pod's devices annotation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodDevices {
    /// No annotation: the pod was scheduled by another scheduler.
    Unassigned,
    /// An annotation to follow.
    Assigned(DevicesAnnotation),
    /// An annotation this agent cannot follow (malformed, a newer version, another node, not
    /// signed by the scheduler for this pod, or contradicting the pod's request): allocation
    /// for such a pod is refused with this reason rather than guessed.
    Unreadable(String),
}

/// One non-terminal pod bound to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Which pod (`namespace/name` when displayed).
    pub id: PodRef,
    /// The pod's GPU request (whole GPUs or slices of one profile).
    pub demand: GpuDemand,
    /// What the scheduler's devices annotation on the pod says: nothing, devices to follow, or
    /// why it cannot be followed.
    pub devices: PodDevices,
    /// The kubelet has started it (a container status exists): its devices were handed out
    /// already, so it is not the pod an Allocate is for.
    pub admitted: bool,
}

impl PodView {
    /// Whether the pod's GPU request is for `resource`.
    pub fn requests(&self, names: &ResourceNames, resource: &str) -> bool {
        names.for_demand(&self.demand).as_deref() == Some(resource)
    }

    /// The device ids its annotation names for `resource`; `None` when it names none.
    pub fn assigned_ids(&self, resource: &str) -> Option<Vec<String>> {
        match &self.devices {
            PodDevices::Assigned(annotation) if annotation.resource == resource => Some(
                annotation
                    .devices
                    .iter()
                    .map(|device| device.device_id())
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// Why the pods bound to this node cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum PodSourceError {
    /// The task feeding the pod cache has ended (the agent is shutting down).
    #[error("cannot list the pods bound to this node: the pod watch has stopped")]
    WatchStopped(#[source] WriterDropped),
    /// The API server has not answered the first list yet.
    #[error(
        "cannot list the pods bound to this node: no pod list from the API server within {0:?}"
    )]
    NotListed(Duration),
}

/// Where allocation learns about the pods bound to this node.
#[tonic::async_trait]
pub trait PodSource: Send + Sync {
    /// Non-terminal pods bound to this node, in the order the kubelet admits them: the order
    /// they arrived on the node.
    async fn pods_on_node(&self) -> Result<Vec<PodView>, PodSourceError>;

    /// Marked changed whenever the pods may have changed, so a caller waiting for a pod
    /// sleeps until then instead of polling. Subscribe before reading the pods.
    fn changes(&self) -> watch::Receiver<()>;
}

/// A fixed, replaceable pod list: tests, benches and runs without an API server.
#[derive(Debug)]
pub struct InMemoryPods {
    pods: Mutex<Vec<PodView>>,
    changed: watch::Sender<()>,
}

impl Default for InMemoryPods {
    fn default() -> Self {
        InMemoryPods::new(Vec::new())
    }
}

impl InMemoryPods {
    /// A list holding `pods`.
    pub fn new(pods: Vec<PodView>) -> Self {
        InMemoryPods {
            pods: Mutex::new(pods),
            changed: watch::Sender::new(()),
        }
    }

    /// Replaces the list, waking whoever waits for a change.
    pub fn set(&self, pods: Vec<PodView>) {
        *self.pods.lock().unwrap_or_else(PoisonError::into_inner) = pods;
        self.changed.send_replace(());
    }
}

#[tonic::async_trait]
impl PodSource for InMemoryPods {
    async fn pods_on_node(&self) -> Result<Vec<PodView>, PodSourceError> {
        Ok(self
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn changes(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use kubesched_core::annotation::{AssignedDevice, AssignedMig, DEVICES_VERSION};

    use super::*;

    #[test]
    fn assigned_ids_use_the_advertised_device_ids() {
        let annotation = DevicesAnnotation {
            version: DEVICES_VERSION,
            node: "n".into(),
            resource: "nvidia.com/mig-1g.10gb".into(),
            devices: vec![
                AssignedDevice {
                    gpu_uuid: "GPU-2".into(),
                    gpu_index: 2,
                    mig: Some(AssignedMig {
                        profile: "1g.10gb".into(),
                        start: 1,
                        uuid: Some("MIG-1b".into()),
                    }),
                },
                AssignedDevice {
                    gpu_uuid: "GPU-2".into(),
                    gpu_index: 2,
                    mig: Some(AssignedMig {
                        profile: "1g.10gb".into(),
                        start: 3,
                        uuid: None,
                    }),
                },
            ],
            numa_node: Some(1),
            signature: None,
        };
        let pod = PodView {
            id: PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            demand: GpuDemand::Mig {
                profile: "1g.10gb".into(),
                count: 2,
            },
            devices: PodDevices::Assigned(annotation),
            admitted: false,
        };
        assert_eq!(
            pod.assigned_ids("nvidia.com/mig-1g.10gb"),
            Some(vec!["MIG-1b".to_string(), "GPU-2::1g.10gb@3".to_string()])
        );
        assert_eq!(pod.assigned_ids("nvidia.com/gpu"), None);
        let names = ResourceNames::default();
        assert!(pod.requests(&names, "nvidia.com/mig-1g.10gb"));
        assert!(!pod.requests(&names, "nvidia.com/gpu"));
        assert_eq!(pod.id.to_string(), "ns/p");
    }
}

//! GetPreferredAllocation and Allocate: hand a pod exactly the devices the scheduler named in
//! its annotation; for pods without one, prefer the NUMA-aligned, least-fragmenting devices
//! chosen by the core placement policy. Unknown, duplicate or unhealthy device ids are refused
//! with a clear error, and so is a request that contradicts a pod's annotation: never a silent
//! different choice. A dynamic-MIG slot is realised here: its instance is created at exactly
//! the slot's placement (or found, when created ahead for the same pod) and the container gets
//! the new MIG UUID; a placement no longer free fails the Allocate. The response names the
//! devices per the device list strategies (`cdi`); with a CDI strategy a dynamic instance's CDI
//! device is written before the answer, or the Allocate fails.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use kubesched_core::annotation::{DEFAULT_PREFIX, dynamic_slot_id, key, parse_dynamic_slot_id};
use kubesched_core::fragmentation::Workload;
use kubesched_core::inventory::{MigMode, NodeInventory};
use kubesched_core::node::{GPU_MILLI, GpuSlots, NodeState};
use kubesched_core::placement::DeviceChoice;
use kubesched_core::request::{GpuDemand, GpuResource, PodRequest, ResourceNames};
use kubesched_core::scoring::{Policy, Production, ScoreContext};
use kubesched_core::text::quote;
use kubesched_proto::deviceplugin::v1beta1::{
    ContainerAllocateResponse, ContainerPreferredAllocationRequest,
    ContainerPreferredAllocationResponse,
};

use super::ResourceManager;
use super::cdi::CdiConfig;
use crate::mig::{DynamicCdiError, DynamicMig, DynamicMigError};
use crate::pods::{PodDevices, PodSource, PodSourceError, PodView};

/// Environment variable the NVIDIA container runtime reads.
pub const VISIBLE_DEVICES_ENV: &str = "NVIDIA_VISIBLE_DEVICES";

/// Why a GetPreferredAllocation or Allocate call is refused.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    /// An id in the request is not a device (nor a dynamic-MIG slot) of the resource.
    #[error("unknown device id {id} for resource {resource}")]
    UnknownDevice {
        /// Resource name the request was for, e.g. `nvidia.com/mig-1g.10gb`.
        resource: String,
        /// The device id, quoted, that is not one of the resource's devices.
        id: String,
    },
    /// Allocate named a device currently marked unhealthy (an XID fault not yet cleared).
    #[error("device {id} ({resource}) is unhealthy{reason}; refusing to hand it out")]
    Unhealthy {
        /// Resource name the device is advertised under.
        resource: String,
        /// The unhealthy device's id.
        id: String,
        /// The recorded fault as ` (<fault>)`, or empty when none is recorded.
        reason: String,
    },
    /// The same device id appears more than once in one request.
    #[error("device id {id} requested twice")]
    Duplicate {
        /// The repeated device id, quoted.
        id: String,
    },
    /// The kubelet's request is malformed: no device ids, an allocation size of zero or above the
    /// available devices, or must-include devices that are not among the available ones.
    #[error("invalid request for {resource}: {message}")]
    BadRequest {
        /// Resource name the request was for.
        resource: String,
        /// What is wrong with the request.
        message: String,
    },
    /// The kubelet offered or allocated devices other than those the scheduler's annotation
    /// assigned to the pod being admitted.
    #[error(
        "the kubelet offers {offered:?} of {resource} but the scheduler assigned {assigned:?} to pod {pod}; refusing a different choice"
    )]
    AnnotationMismatch {
        /// Resource name the request was for.
        resource: String,
        /// Device ids the kubelet offered (GetPreferredAllocation) or allocated (Allocate).
        offered: Vec<String>,
        /// The pod being admitted, as `namespace/name`.
        pod: String,
        /// Device ids the pod's devices annotation names for this resource.
        assigned: Vec<String>,
    },
    /// The pod being admitted has a devices annotation this agent cannot follow (malformed,
    /// forged, for another node, or contradicting its request).
    #[error(
        "pod {pod} asks for {resource} but its devices annotation cannot be followed ({reason}); refusing to guess"
    )]
    UnreadableAnnotation {
        /// Resource name the pod asks for.
        resource: String,
        /// The pod being admitted, as `namespace/name`.
        pod: String,
        /// Why the annotation cannot be followed.
        reason: String,
    },
    /// The MIG instance of a dynamic-MIG slot could not be created (or found) at the slot's
    /// placement, e.g. because the placement is no longer free.
    #[error(
        "cannot provide MIG slot {id} to {pod}: {source}; refusing to place it anywhere else (the pod must be scheduled again)"
    )]
    DynamicMig {
        /// Device id of the dynamic slot.
        id: String,
        /// The pod the slot was for, as `pod <namespace/name>`, or `a pod without annotation`
        /// when no pod was matched.
        pod: String,
        /// Why dynamic MIG refused the slot.
        source: Box<DynamicMigError>,
    },
    /// The CDI device of a dynamic-MIG instance could not be written (a CDI device list
    /// strategy is on): the container runtime could not inject the instance, so it is not
    /// handed out.
    #[error(
        "cannot provide MIG slot {id} ({uuid}) to {pod}: its CDI device cannot be written ({source}), so the container runtime could not inject it"
    )]
    CdiSpec {
        /// Device id of the dynamic slot.
        id: String,
        /// The MIG UUID of the instance.
        uuid: String,
        /// The pod the slot was for, as `pod <namespace/name>`, or `a pod without annotation`.
        pod: String,
        /// Why the CDI device could not be written.
        source: Box<DynamicCdiError>,
    },
    /// A pod without annotation (or one not seen yet) would get a device another pod's devices
    /// annotation promises: that pod would find its device taken.
    #[error(
        "device {id} of {resource} is promised to another pod by its devices annotation; refusing to hand it to {pod}"
    )]
    Promised {
        /// Resource name the request was for, e.g. `nvidia.com/mig-1g.10gb`.
        resource: String,
        /// The promised device id, quoted.
        id: String,
        /// The pod the device would have gone to (`namespace/name`), or `a pod not seen yet`.
        pod: String,
    },
    /// The blocking task creating or finding a dynamic-MIG instance panicked or was cancelled.
    #[error("the MIG instance task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The pods bound to this node could not be listed.
    #[error(transparent)]
    Pods(#[from] PodSourceError),
}

impl From<AllocationError> for tonic::Status {
    fn from(error: AllocationError) -> Self {
        let message = error.to_string();
        match error {
            AllocationError::UnknownDevice { .. }
            | AllocationError::Duplicate { .. }
            | AllocationError::BadRequest { .. } => tonic::Status::invalid_argument(message),
            AllocationError::Unhealthy { .. }
            | AllocationError::AnnotationMismatch { .. }
            | AllocationError::UnreadableAnnotation { .. }
            | AllocationError::Promised { .. }
            | AllocationError::DynamicMig { .. }
            | AllocationError::CdiSpec { .. } => tonic::Status::failed_precondition(message),
            AllocationError::Pods(_) | AllocationError::Task(_) => {
                tonic::Status::unavailable(message)
            }
        }
    }
}

/// Why a dynamic slot's instance was not handed out.
enum Refusal {
    /// Dynamic MIG could not create or find the instance.
    Mig(DynamicMigError),
    /// The instance (MIG UUID held) has no CDI device the runtime could inject.
    Cdi(String, DynamicCdiError),
}

/// The pod a dynamic slot was for, as errors name it.
fn whose(pod: Option<&PodView>) -> String {
    pod.map_or_else(
        || "a pod without annotation".to_string(),
        |p| format!("pod {}", p.id),
    )
}

/// The pod being admitted for a resource, as allocation sees it.
enum Admitting<'a> {
    /// Its annotation names these devices, not handed out yet.
    Assigned(&'a PodView, Vec<String>),
    /// No annotation: another scheduler placed it, the policy chooses its devices.
    Unassigned(&'a PodView),
    /// Its annotation cannot be followed (forged, contradicting its request, malformed):
    /// refused at once, so it fails with the reason and the pods after it are not held up.
    Refused(&'a PodView, &'a str),
}

fn unreadable(resource: &str, pod: &PodView, reason: &str) -> AllocationError {
    tracing::warn!(resource, pod = %pod.id, %reason, "refusing a pod whose devices annotation cannot be followed");
    AllocationError::UnreadableAnnotation {
        resource: resource.to_string(),
        pod: pod.id.to_string(),
        reason: reason.to_string(),
    }
}

/// Decides and records device hand-outs for every resource of the node.
pub struct Allocator {
    manager: Arc<ResourceManager>,
    pods: Arc<dyn PodSource>,
    names: ResourceNames,
    inventory: RwLock<Arc<NodeInventory>>,
    /// Devices already handed to each annotated pod (by uid), so a multi-container pod's
    /// containers and later pods are matched in turn.
    handed: Mutex<HashMap<String, HashSet<String>>>,
    /// Key of the container annotation naming the pod a hand-out was for.
    pod_annotation: String,
    /// How long to wait for the pod source to show a pod asking for a resource the kubelet
    /// allocates: a watch-fed cache can trail the kubelet by a moment.
    pod_wait: Duration,
    /// Creates the instances of dynamic-MIG slots; `None` when no GPU is dynamic.
    dynamic: Option<Arc<DynamicMig>>,
    /// How the response names the devices to the container runtime.
    cdi: CdiConfig,
}

impl Allocator {
    /// An allocator for `manager`'s devices that learns about pods from `pods`; `inventory` is
    /// what the default placement policy reasons about. Starts with the default annotation
    /// prefix, no pod wait and no dynamic MIG.
    pub fn new(
        manager: Arc<ResourceManager>,
        pods: Arc<dyn PodSource>,
        names: ResourceNames,
        inventory: NodeInventory,
    ) -> Self {
        Allocator {
            manager,
            pods,
            names,
            inventory: RwLock::new(Arc::new(inventory)),
            handed: Mutex::new(HashMap::new()),
            pod_annotation: key(DEFAULT_PREFIX, "pod"),
            pod_wait: Duration::ZERO,
            dynamic: None,
            cdi: CdiConfig::default(),
        }
    }

    /// Names devices to the runtime per `config` (default: `NVIDIA_VISIBLE_DEVICES` only). With
    /// a CDI strategy, the dynamic MIG given to [`Allocator::with_dynamic_mig`] must write CDI
    /// specs ([`DynamicMig::with_cdi_specs`]), or its slots are refused.
    pub fn with_cdi(mut self, config: CdiConfig) -> Self {
        self.cdi = config;
        self
    }

    /// Realises dynamic-MIG slots through `dynamic` on Allocate.
    pub fn with_dynamic_mig(mut self, dynamic: Arc<DynamicMig>) -> Self {
        self.dynamic = Some(dynamic);
        self
    }

    /// `(gpu, profile, start)` when `id` is a dynamic slot of `resource` on a dynamic GPU.
    fn dynamic_slot<'a>(&self, resource: &str, id: &'a str) -> Option<(&'a str, &'a str, u8)> {
        let dynamic = self.dynamic.as_ref()?;
        let (gpu, profile, start) = parse_dynamic_slot_id(id)?;
        (dynamic.is_dynamic(gpu) && self.names.mig(profile) == resource)
            .then_some((gpu, profile, start))
    }

    /// The ids the container sees: MIG UUIDs in place of dynamic slots, whose instances are
    /// created now at exactly their placements (with their CDI devices when a CDI strategy is
    /// on).
    async fn realise(
        &self,
        resource: &str,
        ids: &[String],
        pod: Option<&PodView>,
    ) -> Result<Vec<String>, AllocationError> {
        let mut visible = Vec::with_capacity(ids.len());
        for id in ids {
            let (Some(dynamic), Some((gpu, profile, start))) =
                (self.dynamic.clone(), self.dynamic_slot(resource, id))
            else {
                visible.push(id.clone());
                continue;
            };
            let owner = pod.map(|p| p.id.clone());
            let (gpu_owned, profile_owned) = (gpu.to_string(), profile.to_string());
            let cdi = self.cdi.strategies.uses_cdi();
            let provided = tokio::task::spawn_blocking(move || -> Result<String, Refusal> {
                let uuid = dynamic
                    .ensure(&gpu_owned, &profile_owned, start, owner.as_ref())
                    .map_err(Refusal::Mig)?;
                // The runtime resolves CDI names from spec files: the device must be there before
                // the kubelet hears of it.
                if cdi {
                    dynamic
                        .publish_cdi(&gpu_owned, start, &uuid)
                        .map_err(|e| Refusal::Cdi(uuid.clone(), e))?;
                }
                Ok(uuid)
            })
            .await
            .map_err(AllocationError::Task)?;
            match provided {
                Ok(uuid) => visible.push(uuid),
                Err(Refusal::Mig(source)) => {
                    let pod = whose(pod);
                    tracing::warn!(resource, id = %id, %pod, error = %source, "dynamic MIG slot refused");
                    return Err(AllocationError::DynamicMig {
                        id: id.clone(),
                        pod,
                        source: Box::new(source),
                    });
                }
                Err(Refusal::Cdi(uuid, source)) => {
                    let pod = whose(pod);
                    tracing::warn!(resource, id = %id, mig = %uuid, %pod, error = %source, "cannot write the CDI device of a dynamic MIG instance");
                    return Err(AllocationError::CdiSpec {
                        id: id.clone(),
                        uuid,
                        pod,
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(visible)
    }

    /// Uses `prefix` for the annotations this allocator writes (default `kubesched.ai`).
    pub fn with_annotation_prefix(mut self, prefix: &str) -> Self {
        self.pod_annotation = key(prefix, "pod");
        self
    }

    /// Waits up to `wait` for a pod asking for the resource to appear before deciding.
    pub fn with_pod_wait(mut self, wait: Duration) -> Self {
        self.pod_wait = wait;
        self
    }

    /// Replaces the inventory the default policy reasons about (after a rediscovery).
    pub fn set_inventory(&self, inventory: NodeInventory) {
        *self
            .inventory
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(inventory);
    }

    /// Checks that every id is a device of `resource`; `need_healthy` also refuses unhealthy ones.
    fn check_ids(
        &self,
        resource: &str,
        ids: &[String],
        need_healthy: bool,
    ) -> Result<(), AllocationError> {
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(id.as_str()) {
                return Err(AllocationError::Duplicate { id: quote(id) });
            }
            let found = self.manager.lookup(id).filter(|d| d.resource == resource);
            // A dynamic slot can vanish from the list when its placement was just taken: Allocate
            // then says exactly that, rather than "unknown device".
            if found.is_none() && self.dynamic_slot(resource, id).is_some() {
                continue;
            }
            let device = found.ok_or_else(|| AllocationError::UnknownDevice {
                resource: resource.to_string(),
                id: quote(id),
            })?;
            if need_healthy && !device.healthy {
                let reason = self
                    .manager
                    .faults()
                    .get(id)
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                return Err(AllocationError::Unhealthy {
                    resource: resource.to_string(),
                    id: id.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// The pod the kubelet is admitting for `resource`: the first pod, in the order the pods
    /// arrived on the node, that asks for `resource`, has not started, and still waits for
    /// devices of it. The kubelet admits pods one at a time in that order, so this is the pod
    /// an Allocate without a pod name is for.
    fn admitting<'a>(&self, resource: &str, pods: &'a [PodView]) -> Option<Admitting<'a>> {
        let handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        pods.iter()
            .filter(|pod| !pod.admitted && pod.requests(&self.names, resource))
            .find_map(|pod| {
                let done = handed.get(&pod.id.uid);
                match &pod.devices {
                    PodDevices::Assigned(_) => {
                        let wanted: Vec<String> = pod
                            .assigned_ids(resource)?
                            .into_iter()
                            .filter(|id| done.is_none_or(|d| !d.contains(id)))
                            .collect();
                        (!wanted.is_empty()).then_some(Admitting::Assigned(pod, wanted))
                    }
                    PodDevices::Unassigned => (done.map_or(0, HashSet::len)
                        < pod.demand.count() as usize)
                        .then_some(Admitting::Unassigned(pod)),
                    PodDevices::Unreadable(reason) => done
                        .is_none()
                        .then_some(Admitting::Refused(pod, reason.as_str())),
                }
            })
    }

    /// Devices of `resource` that annotations of pods not yet started promise, other than to
    /// `except` (a pod uid): never to be handed to anyone else.
    fn promised(&self, resource: &str, pods: &[PodView], except: Option<&str>) -> HashSet<String> {
        let handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        pods.iter()
            .filter(|pod| !pod.admitted && Some(pod.id.uid.as_str()) != except)
            .flat_map(|pod| {
                let done = handed.get(&pod.id.uid);
                pod.assigned_ids(resource)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(move |id| done.is_none_or(|d| !d.contains(id)))
            })
            .collect()
    }

    /// The pods on the node, waiting up to `pod_wait` for the one being admitted for
    /// `resource` to show up. Pods already holding their devices do not count: after an API
    /// outage the cache may hold only those, and stopping at them would hand the new pod the
    /// kubelet's (or the policy's) choice instead of its annotated devices. The pods are read
    /// again only when the source says they changed, never on a timer.
    async fn pods_for(&self, resource: &str) -> Result<Vec<PodView>, AllocationError> {
        let deadline = tokio::time::Instant::now() + self.pod_wait;
        // Subscribed before the first read: a change between the read and the wait is kept.
        let mut changes = self.pods.changes();
        loop {
            changes.mark_unchanged();
            let pods = self.pods.pods_on_node().await?;
            let concerned = self.admitting(resource, &pods).is_some();
            if concerned || tokio::time::Instant::now() >= deadline {
                // Without a waiting period (standalone runs) no pod is ever expected.
                if !concerned && !self.pod_wait.is_zero() {
                    tracing::warn!(
                        resource,
                        "no pod on this node waits for this resource; following the kubelet's choice"
                    );
                }
                return Ok(pods);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    // The source will not change any more: nothing to wait for.
                    tokio::time::sleep_until(deadline).await;
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Answers GetPreferredAllocation for one container: the devices the admitted pod's annotation
    /// names or, for a pod without one, the placement policy's NUMA-aligned, least-fragmenting
    /// choice, leaving out devices promised to other pods while enough others remain.
    pub async fn preferred(
        &self,
        resource: &str,
        request: &ContainerPreferredAllocationRequest,
    ) -> Result<ContainerPreferredAllocationResponse, AllocationError> {
        let available = &request.available_device_i_ds;
        let must = &request.must_include_device_i_ds;
        self.check_ids(resource, available, false)?;
        let size = usize::try_from(request.allocation_size)
            .ok()
            .filter(|s| *s > 0 && *s <= available.len())
            .ok_or_else(|| AllocationError::BadRequest {
                resource: resource.to_string(),
                message: format!(
                    "allocation size {} with {} devices available",
                    request.allocation_size,
                    available.len()
                ),
            })?;
        if must.iter().any(|m| !available.contains(m)) || must.len() > size {
            return Err(AllocationError::BadRequest {
                resource: resource.to_string(),
                message: format!(
                    "{} must-include devices are not a subset of {size} available devices",
                    must.len()
                ),
            });
        }
        let pods = self.pods_for(resource).await?;
        let pod = match self.admitting(resource, &pods) {
            Some(Admitting::Refused(pod, reason)) => {
                return Err(unreadable(resource, pod, reason));
            }
            Some(Admitting::Assigned(pod, wanted)) => {
                let chosen: Vec<String> = must
                    .iter()
                    .chain(wanted.iter().filter(|w| !must.contains(w)))
                    .take(size)
                    .cloned()
                    .collect();
                if chosen.len() == size
                    && chosen
                        .iter()
                        .all(|c| wanted.contains(c) && available.contains(c))
                {
                    tracing::info!(resource, pod = %pod.id, devices = ?chosen, "preferred allocation from the pod annotation");
                    return Ok(ContainerPreferredAllocationResponse {
                        device_i_ds: chosen,
                    });
                }
                return Err(AllocationError::AnnotationMismatch {
                    resource: resource.to_string(),
                    offered: available.clone(),
                    pod: pod.id.to_string(),
                    assigned: wanted,
                });
            }
            Some(Admitting::Unassigned(pod)) => Some(pod),
            None => None,
        };
        // Devices promised to other pods are left out while enough others remain.
        let promised = self.promised(resource, &pods, pod.map(|p| p.id.uid.as_str()));
        let unpromised: Vec<String> = available
            .iter()
            .filter(|a| !promised.contains(*a) || must.contains(a))
            .cloned()
            .collect();
        let offered = if unpromised.len() >= size {
            &unpromised
        } else {
            available
        };
        let chosen = self.default_choice(resource, offered, must, size);
        tracing::info!(resource, pod = ?pod.map(|p| p.id.to_string()), devices = ?chosen, "preferred allocation from the placement policy (no annotation)");
        Ok(ContainerPreferredAllocationResponse {
            device_i_ds: chosen,
        })
    }

    /// Answers Allocate for one container: checks `ids` against the annotation of the pod being
    /// admitted and against devices promised to other pods, creates the instances of dynamic-MIG
    /// slots, and records the hand-out. The response names the devices (MIG UUIDs in place of
    /// dynamic slots) per the device list strategies: `NVIDIA_VISIBLE_DEVICES`, CDI devices,
    /// a CDI annotation. It names the pod when its annotation assigned the devices.
    pub async fn allocate(
        &self,
        resource: &str,
        ids: &[String],
    ) -> Result<ContainerAllocateResponse, AllocationError> {
        if ids.is_empty() {
            return Err(AllocationError::BadRequest {
                resource: resource.to_string(),
                message: "no device ids".into(),
            });
        }
        self.check_ids(resource, ids, true)?;
        let pods = self.pods_for(resource).await?;
        let matched = match self.handed_before(ids, &pods) {
            Some(pod) => Some(pod),
            None => match self.admitting(resource, &pods) {
                Some(Admitting::Refused(pod, reason)) => {
                    return Err(unreadable(resource, pod, reason));
                }
                Some(Admitting::Assigned(pod, wanted)) => {
                    if !ids.iter().all(|id| wanted.contains(id)) {
                        return Err(AllocationError::AnnotationMismatch {
                            resource: resource.to_string(),
                            offered: ids.to_vec(),
                            pod: pod.id.to_string(),
                            assigned: wanted,
                        });
                    }
                    Some(pod)
                }
                Some(Admitting::Unassigned(pod)) => {
                    self.refuse_promised(resource, ids, &pods, Some(pod))?;
                    Some(pod)
                }
                None => {
                    self.refuse_promised(resource, ids, &pods, None)?;
                    None
                }
            },
        };
        let visible = self.realise(resource, ids, matched).await?;
        let mut response = self.cdi.response(resource, &visible);
        match matched {
            Some(pod) => {
                self.handed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(pod.id.uid.clone())
                    .or_default()
                    .extend(ids.iter().cloned());
                // Named only when the scheduler's annotation says whose they are; a pod without
                // one is the kubelet's likely admission, not a certainty.
                let annotated = matches!(pod.devices, PodDevices::Assigned(_));
                if annotated {
                    response
                        .annotations
                        .insert(self.pod_annotation.clone(), pod.id.to_string());
                }
                tracing::info!(resource, pod = %pod.id, devices = ?ids, annotated, "allocated");
            }
            None => {
                tracing::info!(resource, devices = ?ids, "allocated for a pod this agent has not seen");
            }
        }
        self.forget_gone(&pods);
        Ok(response)
    }

    /// Refuses handing `ids` to a pod without an annotation when another pod's annotation
    /// promises one of them: that pod would find its device taken.
    fn refuse_promised(
        &self,
        resource: &str,
        ids: &[String],
        pods: &[PodView],
        pod: Option<&PodView>,
    ) -> Result<(), AllocationError> {
        let promised = self.promised(resource, pods, pod.map(|p| p.id.uid.as_str()));
        match ids.iter().find(|id| promised.contains(*id)) {
            Some(id) => Err(AllocationError::Promised {
                resource: resource.to_string(),
                id: quote(id),
                pod: pod.map_or_else(|| "a pod not seen yet".into(), |p| p.id.to_string()),
            }),
            None => Ok(()),
        }
    }

    /// The pod these exact devices were already handed to: the kubelet asking again (a
    /// retried admission, or an app container reusing its init container's devices) gets the
    /// same answer, dynamic instances included.
    fn handed_before<'a>(&self, ids: &[String], pods: &'a [PodView]) -> Option<&'a PodView> {
        let handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        pods.iter().find(|pod| {
            handed
                .get(&pod.id.uid)
                .is_some_and(|done| ids.iter().all(|id| done.contains(id)))
        })
    }

    /// Brings the hand-out records in line with what the kubelet reports each pod holds
    /// (`namespace/name` -> device ids, from PodResources), so they survive an agent restart.
    /// Returns the pods holding devices of their annotated resource that the annotation does
    /// not name (allocated before the annotation, or by another plugin): worth an operator's look.
    pub fn record_holdings(
        &self,
        pods: &[PodView],
        held: &BTreeMap<String, BTreeSet<String>>,
    ) -> Vec<String> {
        let mut mismatched = Vec::new();
        let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        for pod in pods {
            let Some(holds) = held.get(&pod.id.to_string()) else {
                continue;
            };
            let PodDevices::Assigned(annotation) = &pod.devices else {
                // What a pod without a usable annotation holds is its own: recorded, so it is
                // never taken for a pod still waiting for its devices.
                let Some(resource) = self.names.for_demand(&pod.demand) else {
                    continue;
                };
                let own = holds.iter().filter(|id| {
                    self.manager
                        .lookup(id)
                        .is_some_and(|d| d.resource == resource)
                });
                handed
                    .entry(pod.id.uid.clone())
                    .or_default()
                    .extend(own.cloned());
                continue;
            };
            let assigned: HashSet<String> =
                annotation.devices.iter().map(|d| d.device_id()).collect();
            let of_resource: Vec<&String> = holds
                .iter()
                .filter(|id| {
                    self.manager
                        .lookup(id)
                        .is_some_and(|d| d.resource == annotation.resource)
                })
                .collect();
            let foreign: Vec<&String> = of_resource
                .iter()
                .copied()
                .filter(|id| !assigned.contains(*id))
                .collect();
            if !foreign.is_empty() {
                tracing::warn!(pod = %pod.id, resource = %annotation.resource, held = ?foreign, assigned = ?assigned, "pod holds devices its annotation does not name");
                mismatched.push(pod.id.to_string());
            }
            let entry = handed.entry(pod.id.uid.clone()).or_default();
            entry.extend(
                of_resource
                    .into_iter()
                    .filter(|id| assigned.contains(*id))
                    .cloned(),
            );
        }
        handed.retain(|_, ids| !ids.is_empty());
        drop(handed);
        self.forget_gone(pods);
        mismatched
    }

    /// Drops hand-out records of pods no longer bound here (finished or deleted).
    fn forget_gone(&self, pods: &[PodView]) {
        let live: HashSet<&str> = pods.iter().map(|p| p.id.uid.as_str()).collect();
        self.handed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|uid, _| live.contains(uid.as_str()));
    }

    /// The core policy's choice among `available`, keeping `must`; the first available devices
    /// when the policy finds nothing (the kubelet treats the answer as a hint only).
    fn default_choice(
        &self,
        resource: &str,
        available: &[String],
        must: &[String],
        size: usize,
    ) -> Vec<String> {
        let inventory = self
            .inventory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match self.policy_choice(&inventory, resource, available, must, size) {
            Ok(mut chosen) => {
                let mut all: Vec<String> = must.to_vec();
                all.append(&mut chosen);
                all
            }
            Err(reason) => {
                tracing::warn!(resource, %reason, "placement policy found no choice; taking the first available devices");
                must.iter()
                    .chain(available.iter().filter(|a| !must.contains(a)))
                    .take(size)
                    .cloned()
                    .collect()
            }
        }
    }

    fn policy_choice(
        &self,
        inventory: &NodeInventory,
        resource: &str,
        available: &[String],
        must: &[String],
        size: usize,
    ) -> Result<Vec<String>, String> {
        let count = u32::try_from(size - must.len()).map_err(|e| e.to_string())?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let demand = match self.names.classify(resource).map_err(|e| e.to_string())? {
            Some(GpuResource::Whole) => GpuDemand::Whole { count },
            Some(GpuResource::Mig(profile)) => GpuDemand::Mig { profile, count },
            None => return Err(format!("{resource} is not a GPU resource of this agent")),
        };
        // CPU and memory are the kubelet's business here; only devices matter.
        let mut node = NodeState::from_inventory(inventory, u64::MAX / 4, u64::MAX / 4)
            .map_err(|e| e.to_string())?;
        let free: HashSet<&str> = available
            .iter()
            .filter(|a| !must.contains(a))
            .map(String::as_str)
            .collect();
        for gpu in &mut node.gpus {
            match &mut gpu.slots {
                GpuSlots::Plain { used_milli } => {
                    if !free.contains(&*gpu.uuid) {
                        *used_milli = GPU_MILLI;
                    }
                }
                // Live instances (static, or created for pods in dynamic
                // mode) are already placed by core; mark the ones taken.
                GpuSlots::Mig(slots) => {
                    for (start, uuid) in &slots.uuids {
                        if !free.contains(&**uuid) {
                            slots.allocated |= 1 << start;
                        }
                    }
                }
            }
        }
        let request = PodRequest::cpu_only(0, 0).with_gpu(demand);
        let workload = self.target_workload();
        let ctx = ScoreContext {
            workload: &workload,
            seed: 0,
            frag: None,
        };
        let choice = Production::default()
            .choose(&node, &request, &ctx)
            .map_err(|e| e.to_string())?;
        let ids: Vec<String> = match &choice.candidate.choice {
            DeviceChoice::Gpus(positions) => positions
                .iter()
                .filter_map(|&g| node.gpus.get(g))
                .map(|g| g.uuid.to_string())
                .collect(),
            DeviceChoice::Mig(picks) => picks
                .iter()
                .filter_map(|p| {
                    let gpu = node.gpus.get(p.gpu)?;
                    match &gpu.slots {
                        GpuSlots::Mig(slots) if slots.mode == MigMode::Dynamic => {
                            let profile = slots.gpu.geometry().profiles.get(p.profile)?;
                            Some(dynamic_slot_id(&gpu.uuid, &profile.name, p.start))
                        }
                        GpuSlots::Mig(slots) => slots.uuid_at(p.start).map(|u| u.to_string()),
                        GpuSlots::Plain { .. } => None,
                    }
                })
                .collect(),
            DeviceChoice::None | DeviceChoice::Share { .. } => Vec::new(),
        };
        if ids.len() != count as usize || ids.iter().any(|id| !free.contains(id.as_str())) {
            return Err(format!(
                "policy picked {ids:?}, which is not {count} of the offered devices"
            ));
        }
        tracing::debug!(resource, reason = %choice.reason, "placement policy choice");
        Ok(ids)
    }

    /// What fragmentation is measured against: one request of each advertised resource,
    /// equally likely, so the policy keeps room for every kind this node offers.
    fn target_workload(&self) -> Workload {
        let mut kinds: BTreeMap<String, GpuDemand> = BTreeMap::new();
        for name in self.manager.resource_names() {
            match self.names.classify(&name) {
                Ok(Some(GpuResource::Whole)) => kinds.insert(name, GpuDemand::Whole { count: 1 }),
                Ok(Some(GpuResource::Mig(profile))) => {
                    kinds.insert(name, GpuDemand::Mig { profile, count: 1 })
                }
                _ => None,
            };
        }
        Workload::from_counts(
            kinds
                .into_values()
                .map(|d| (PodRequest::cpu_only(0, 0).with_gpu(d), 1)),
        )
    }

    /// Devices handed to annotated pods so far (by pod uid), for diagnostics.
    pub fn handed_out(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.handed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(uid, ids)| (uid.clone(), ids.iter().cloned().collect()))
            .collect()
    }
}

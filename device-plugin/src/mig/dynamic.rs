//! Dynamic MIG on this node: which GPUs are in dynamic mode (`--dynamic-mig`), their live
//! instances as the published inventory shows them, creating the instance a pod was assigned
//! at exactly its placement (on Allocate, or ahead of it when the annotated pod is seen), and
//! cleaning up the instances no pod claims (`decisions` decides, this module acts). With a CDI
//! spec writer (`with_cdi_specs`), an instance handed to a container gets its own CDI device
//! (`publish_cdi`), removed again when the instance is destroyed. All backend calls are
//! serialised by one lock and block: call them from `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kubesched_core::annotation::parse_dynamic_slot_id;
use kubesched_core::catalogue::{self, MigGeometry};
use kubesched_core::inventory::{GpuInfo, MigInfo, MigInstanceInfo, MigMode};
use tokio::sync::watch;

use super::{Claim, Decisions, GpuSnapshot, OrphanTracker, SlotKey, decide};
use super::{LiveInstance, MigBackend, MigBackendError};
use crate::devices::cdi::{CdiSpecError, CdiSpecs, MigNodeIds};
use crate::pods::{PodDevices, PodView};
use kubesched_k8s::PodRef;

/// Which MIG-enabled GPUs are dynamic: `all` or a comma-separated list of GPU UUIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynamicSelection {
    /// Every MIG-enabled GPU of the node.
    All,
    /// Only the GPUs with these UUIDs.
    Gpus(BTreeSet<String>),
}

impl DynamicSelection {
    /// Whether the GPU with UUID `gpu_uuid` is selected for dynamic MIG.
    pub fn selects(&self, gpu_uuid: &str) -> bool {
        match self {
            DynamicSelection::All => true,
            DynamicSelection::Gpus(set) => set.contains(gpu_uuid),
        }
    }
}

impl FromStr for DynamicSelection {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "all" {
            return Ok(DynamicSelection::All);
        }
        let set: BTreeSet<String> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if set.is_empty() {
            return Err("expected `all` or a comma-separated list of GPU UUIDs".into());
        }
        Ok(DynamicSelection::Gpus(set))
    }
}

/// Why a dynamic-MIG slot's instance could not be provided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DynamicMigError {
    /// The GPU (UUID held) is not a dynamic-MIG GPU on this node.
    #[error("GPU {0} is not in dynamic MIG mode on this node")]
    NotDynamic(String),
    /// The GPU is left alone, so nothing is created on it.
    #[error("GPU {gpu} is left alone: {reason}")]
    Blocked {
        /// UUID of the GPU.
        gpu: String,
        /// Why it is left alone: processes outside pod instances, a pending MIG mode change.
        reason: String,
    },
    /// The instance at the placement belongs to another pod (or the request cannot show it is
    /// the same pod).
    #[error("{profile} at position {start} on GPU {gpu} already belongs to pod {holder}")]
    Taken {
        /// UUID of the GPU.
        gpu: String,
        /// MIG profile of the instance, e.g. `1g.10gb`.
        profile: String,
        /// Start position of the placement.
        start: u8,
        /// The pod that owns the instance, as `namespace/name`.
        holder: String,
    },
    /// The GPU instance at the placement has no compute instance, so no MIG UUID to hand out
    /// (a creation interrupted half-way).
    #[error("the GPU instance at position {start} on GPU {gpu} has no compute instance")]
    Incomplete {
        /// UUID of the GPU.
        gpu: String,
        /// Start position of the instance.
        start: u8,
    },
    /// The MIG backend refused or failed the call.
    #[error(transparent)]
    Backend(#[from] MigBackendError),
}

/// Why a dynamic-MIG instance's CDI device could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DynamicCdiError {
    /// Dynamic MIG was built without a CDI spec writer, yet a CDI strategy names its instances.
    #[error(
        "dynamic MIG writes no CDI spec on this node, so the container runtime cannot inject its instances"
    )]
    NoSpecWriter,
    /// The backend could not say which instance starts at the position, or its ids.
    #[error("cannot read MIG instance {uuid} on GPU {gpu}: {source}")]
    Backend {
        /// UUID of the GPU.
        gpu: String,
        /// The MIG UUID handed out.
        uuid: String,
        /// The backend's error.
        #[source]
        source: Box<MigBackendError>,
    },
    /// The instance handed out is no longer at its position (destroyed meanwhile).
    #[error("MIG instance {uuid} no longer starts at position {start} on GPU {gpu}")]
    Gone {
        /// UUID of the GPU.
        gpu: String,
        /// Start position of the instance.
        start: u8,
        /// The MIG UUID handed out.
        uuid: String,
    },
    /// Neither the backend nor discovery gives the GPU (UUID held) a minor number or index.
    #[error("the device minor of GPU {0} is unknown")]
    NoMinor(String),
    /// The spec entry could not be made or written.
    #[error(transparent)]
    Spec(#[from] CdiSpecError),
}

#[derive(Debug, Clone)]
struct Owner {
    pod: PodRef,
    profile: String,
}

#[derive(Debug, Default)]
struct State {
    geometries: BTreeMap<String, Arc<MigGeometry>>,
    /// Index of each dynamic GPU: stands in for the device minor when the backend has none.
    indices: BTreeMap<String, u32>,
    snapshot: BTreeMap<String, GpuSnapshot>,
    blocked: BTreeMap<String, String>,
    owners: BTreeMap<SlotKey, Owner>,
    orphans: OrphanTracker,
}

impl State {
    /// The instance at `slot` is handed out: to `pod` if known (it owns it from now on), and
    /// it is no orphan.
    fn hand_over(&mut self, slot: SlotKey, pod: Option<&PodRef>, profile: &str) {
        self.orphans.forget(&slot);
        if let Some(pod) = pod {
            self.owners.insert(
                slot,
                Owner {
                    pod: pod.clone(),
                    profile: profile.to_string(),
                },
            );
        }
    }
}

/// What one clean-up pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// MIG UUIDs of the instances created ahead of Allocate for annotated pods.
    pub created: Vec<String>,
    /// Instances destroyed, as `<gpu uuid>@<start>`.
    pub destroyed: Vec<String>,
    /// Errors of the creations and destructions that failed; the next pass tries again.
    pub failed: Vec<String>,
    /// What the pass decided, including blocked GPUs and orphans still in their grace period.
    pub decisions: Decisions,
}

/// One dynamic GPU as `doctor` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicGpuStatus {
    /// UUID of the GPU.
    pub gpu: String,
    /// The GPU's live instances as last read, lowest start first.
    pub instances: Vec<LiveInstance>,
    /// Why the agent leaves the GPU alone (processes outside pod instances, a pending MIG mode
    /// change); `None` when it may be touched.
    pub blocked: Option<String>,
}

/// The node's dynamic-MIG GPUs and their instances.
pub struct DynamicMig {
    backend: Arc<dyn MigBackend>,
    selection: DynamicSelection,
    grace: Duration,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    /// The CDI spec of the instances handed to containers; `None` with `envvar` alone.
    cdi_specs: Option<Arc<CdiSpecs>>,
}

impl DynamicMig {
    /// `grace`: how long an instance no running pod holds is kept before it is destroyed.
    pub fn new(backend: Arc<dyn MigBackend>, selection: DynamicSelection, grace: Duration) -> Self {
        DynamicMig {
            backend,
            selection,
            grace,
            state: Mutex::new(State::default()),
            changes: watch::Sender::new(0),
            cdi_specs: None,
        }
    }

    /// Writes a CDI device for each instance handed to a container ([`DynamicMig::publish_cdi`])
    /// into `specs`, and removes it when the instance is destroyed. Needed when a CDI device
    /// list strategy is on: the toolkit's spec cannot name instances made after it.
    pub fn with_cdi_specs(mut self, specs: Arc<CdiSpecs>) -> Self {
        self.cdi_specs = Some(specs);
        self
    }

    /// Writes the CDI device of the instance `uuid` at `start` on `gpu`, just handed out by
    /// [`DynamicMig::ensure`]: its device nodes (GPU minor or index, GPU and compute instance
    /// capabilities) and the toolkit's shared edits. Idempotent. Blocks (backend, files).
    pub fn publish_cdi(&self, gpu: &str, start: u8, uuid: &str) -> Result<(), DynamicCdiError> {
        let specs = self
            .cdi_specs
            .as_ref()
            .ok_or(DynamicCdiError::NoSpecWriter)?;
        // Under the lock, so a clean-up pass cannot destroy the instance (and drop its entry)
        // while the entry is being written.
        let state = self.state();
        let backend = |source| DynamicCdiError::Backend {
            gpu: gpu.to_string(),
            uuid: uuid.to_string(),
            source: Box::new(source),
        };
        let live = self.backend.instances(gpu).map_err(backend)?;
        if !live
            .iter()
            .any(|i| i.start == start && i.uuid.as_deref() == Some(uuid))
        {
            return Err(DynamicCdiError::Gone {
                gpu: gpu.to_string(),
                start,
                uuid: uuid.to_string(),
            });
        }
        let ids = self.backend.instance_ids(gpu, start).map_err(backend)?;
        let gpu_minor = ids
            .gpu_minor
            .or_else(|| state.indices.get(gpu).copied())
            .ok_or_else(|| DynamicCdiError::NoMinor(gpu.to_string()))?;
        let nodes = MigNodeIds {
            gpu_minor,
            gpu_instance: ids.gpu_instance,
            compute_instance: ids.compute_instance,
        };
        if specs.add_mig(uuid, nodes)? {
            tracing::debug!(gpu, start, mig = uuid, spec = %specs.path().display(), "CDI device written");
        }
        drop(state);
        Ok(())
    }

    /// Removes the CDI device of a destroyed instance; a failure is left to the next pass.
    fn forget_cdi(&self, uuid: Option<&str>, report: &mut CleanupReport) {
        let (Some(specs), Some(uuid)) = (&self.cdi_specs, uuid) else {
            return;
        };
        if let Err(error) = specs.remove(uuid) {
            tracing::warn!(mig = uuid, %error, "cannot remove the CDI device of a destroyed MIG instance; will retry");
            report.failed.push(error.to_string());
        }
    }

    /// Drops CDI devices of instances no longer live (destroyed while the agent was away, or
    /// whose removal failed). Only after every dynamic GPU was read: an instance missing from
    /// a stale view may still be running a container that restarts later.
    fn prune_cdi(&self, state: &State, report: &mut CleanupReport) {
        let Some(specs) = &self.cdi_specs else {
            return;
        };
        let live: BTreeSet<&str> = state
            .snapshot
            .values()
            .flat_map(|s| s.instances.iter())
            .filter_map(|i| i.uuid.as_deref())
            .collect();
        match specs.retain(|name| live.contains(name)) {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(devices = ?gone, "removed CDI devices of MIG instances that are gone");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot prune the CDI devices of gone MIG instances; will retry");
                report.failed.push(error.to_string());
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // State updates are completed before the guard drops; a panic cannot leave half of one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ticks whenever instances were created or destroyed or a GPU's blocked state changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Short name of the MIG backend for logs and `doctor` ("nvml", "fake").
    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// Takes the discovered GPUs: the selected MIG-enabled ones of a known geometry become
    /// dynamic. Reads their instances and conditions from the backend.
    pub fn track(&self, gpus: &[GpuInfo]) {
        let mut geometries = BTreeMap::new();
        let mut indices = BTreeMap::new();
        for gpu in gpus.iter().filter(|g| self.selection.selects(&g.uuid)) {
            let Some(mig) = &gpu.mig else {
                if let DynamicSelection::Gpus(_) = self.selection {
                    tracing::warn!(gpu = %gpu.uuid, "GPU selected for dynamic MIG has MIG disabled; advertised whole");
                }
                continue;
            };
            let geometry = match &mig.geometry {
                Some(geometry) => Arc::new(geometry.clone()),
                None => match catalogue::mig_geometry(&gpu.model) {
                    Ok(geometry) => geometry,
                    Err(error) => {
                        tracing::warn!(gpu = %gpu.uuid, %error, "unknown MIG geometry; GPU stays static");
                        continue;
                    }
                },
            };
            geometries.insert(gpu.uuid.clone(), geometry);
            indices.insert(gpu.uuid.clone(), gpu.index);
        }
        let mut state = self.state();
        if state.geometries.keys().ne(geometries.keys()) {
            tracing::info!(gpus = ?geometries.keys().collect::<Vec<_>>(), "dynamic MIG GPUs");
        }
        state.geometries = geometries;
        state.indices = indices;
        let known: Vec<String> = state.geometries.keys().cloned().collect();
        state.snapshot.retain(|gpu, _| known.contains(gpu));
        for gpu in known {
            self.read_gpu(&mut state, &gpu);
        }
    }

    /// Refreshes one GPU's snapshot from the backend; keeps the old one when it fails (and
    /// says so with `false`).
    fn read_gpu(&self, state: &mut State, gpu: &str) -> bool {
        let read = self
            .backend
            .instances(gpu)
            .and_then(|instances| Ok((instances, self.backend.condition(gpu)?)));
        match read {
            Ok((instances, condition)) => {
                state.snapshot.insert(
                    gpu.to_string(),
                    GpuSnapshot {
                        instances,
                        condition,
                    },
                );
                true
            }
            Err(error) => {
                tracing::warn!(gpu, %error, "cannot read MIG instances; keeping the last view");
                false
            }
        }
    }

    /// Whether `gpu` (a GPU UUID) is tracked as a dynamic-MIG GPU: selected, MIG-enabled and of
    /// a known geometry at the last [`DynamicMig::track`].
    pub fn is_dynamic(&self, gpu: &str) -> bool {
        self.state().geometries.contains_key(gpu)
    }

    /// The discovered GPUs with each dynamic GPU in `dynamic` mode showing its live instances;
    /// a blocked GPU is published with its reason (`blocked`) so nothing new is placed on it.
    pub fn overlay(&self, gpus: &[GpuInfo]) -> Vec<GpuInfo> {
        let state = self.state();
        gpus.iter()
            .cloned()
            .map(|mut gpu| {
                let Some(snapshot) = state.snapshot.get(&gpu.uuid) else {
                    return gpu;
                };
                let previous = gpu.mig.take();
                let healthy_of = |uuid: &str| {
                    previous
                        .iter()
                        .flat_map(|m| m.instances.iter())
                        .find(|i| i.uuid == uuid)
                        .is_none_or(|i| i.healthy)
                };
                gpu.mig = Some(MigInfo {
                    mode: MigMode::Dynamic,
                    instances: snapshot
                        .instances
                        .iter()
                        .filter_map(|i| {
                            let uuid = i.uuid.clone()?;
                            Some(MigInstanceInfo {
                                profile: i.profile.clone(),
                                start: i.start,
                                healthy: healthy_of(&uuid),
                                uuid,
                            })
                        })
                        .collect(),
                    geometry: previous.and_then(|m| m.geometry),
                    blocked: state.blocked.get(&gpu.uuid).cloned(),
                });
                gpu
            })
            .collect()
    }

    /// Creates (or finds, for the same pod) the instance of `profile` at exactly `start` on
    /// `gpu` and returns its MIG UUID. Never places it anywhere else.
    pub fn ensure(
        &self,
        gpu: &str,
        profile: &str,
        start: u8,
        pod: Option<&PodRef>,
    ) -> Result<String, DynamicMigError> {
        let mut state = self.state();
        let result = self.ensure_locked(&mut state, gpu, profile, start, pod);
        drop(state);
        if let Ok((_, true)) = result {
            self.changed();
        }
        result.map(|(uuid, _)| uuid)
    }

    /// As [`DynamicMig::ensure`]; also says whether an instance was created.
    fn ensure_locked(
        &self,
        state: &mut State,
        gpu: &str,
        profile: &str,
        start: u8,
        pod: Option<&PodRef>,
    ) -> Result<(String, bool), DynamicMigError> {
        if !state.geometries.contains_key(gpu) {
            return Err(DynamicMigError::NotDynamic(gpu.to_string()));
        }
        if let Some(reason) = state.blocked.get(gpu) {
            return Err(DynamicMigError::Blocked {
                gpu: gpu.to_string(),
                reason: reason.clone(),
            });
        }
        let slot: SlotKey = (gpu.to_string(), start);
        let live = self.backend.instances(gpu)?;
        if let Some(existing) = live
            .iter()
            .find(|i| i.start == start && i.profile == profile)
        {
            // An instance a pod owns is handed to that pod only (an unannotated request
            // cannot prove it is the same pod).
            if let Some(owner) = state.owners.get(&slot)
                && pod.is_none_or(|p| p.uid != owner.pod.uid)
            {
                return Err(DynamicMigError::Taken {
                    gpu: gpu.to_string(),
                    profile: profile.to_string(),
                    start,
                    holder: owner.pod.to_string(),
                });
            }
            let uuid = existing
                .uuid
                .clone()
                .ok_or_else(|| DynamicMigError::Incomplete {
                    gpu: gpu.to_string(),
                    start,
                })?;
            state.hand_over(slot, pod, profile);
            return Ok((uuid, false));
        }
        let created = self.backend.create(gpu, profile, start);
        // Re-read either way: a failure may be someone else's instance we have not seen yet.
        self.read_gpu(state, gpu);
        let created = created?;
        let uuid = created.uuid.ok_or_else(|| DynamicMigError::Incomplete {
            gpu: gpu.to_string(),
            start,
        })?;
        tracing::info!(gpu, profile, start, mig = %uuid, pod = pod.map(|p| p.to_string()), "created MIG instance");
        state.hand_over(slot, pod, profile);
        Ok((uuid, true))
    }

    /// One clean-up pass against the pods bound to this node and, when the kubelet
    /// answered, what each pod holds (`namespace/name` -> device ids). Creates the instances
    /// of annotated pods ahead of Allocate, destroys those of ended pods at once and orphans
    /// after the grace period; never touches blocked GPUs or anything a pod holds.
    pub fn clean_up(
        &self,
        pods: &[PodView],
        held: Option<&BTreeMap<String, BTreeSet<String>>>,
        now: Instant,
    ) -> CleanupReport {
        let mut state = self.state();
        let gpus: Vec<String> = state.geometries.keys().cloned().collect();
        let mut all_read = true;
        for gpu in &gpus {
            all_read &= self.read_gpu(&mut state, gpu);
        }
        let claims = claims(&state, pods, held);
        let live_uids: BTreeSet<&str> = pods.iter().map(|p| p.id.uid.as_str()).collect();
        // Adopt: a claimed live instance belongs to its pod (after a restart we know no owners).
        for (slot, claim) in &claims {
            let live = state.snapshot.get(&slot.0).is_some_and(|s| {
                s.instances
                    .iter()
                    .any(|i| i.start == slot.1 && i.profile == claim.profile)
            });
            let pod = pods.iter().find(|p| p.id.to_string() == claim.pod);
            if let (true, Some(pod)) = (live, pod) {
                state.owners.insert(
                    slot.clone(),
                    Owner {
                        pod: pod.id.clone(),
                        profile: claim.profile.clone(),
                    },
                );
            }
        }
        let snapshot = state.snapshot.clone();
        state.owners.retain(|slot, owner| {
            snapshot.get(&slot.0).is_some_and(|s| {
                s.instances
                    .iter()
                    .any(|i| i.start == slot.1 && i.profile == owner.profile)
            })
        });
        // A known owner has ended only when neither the pod source nor the kubelet has it;
        // without the kubelet's word the grace period applies instead.
        let ended: BTreeSet<SlotKey> = match held {
            Some(held) => state
                .owners
                .iter()
                .filter(|(slot, owner)| {
                    !live_uids.contains(owner.pod.uid.as_str())
                        && !held.contains_key(&owner.pod.to_string())
                        && !claims.contains_key(*slot)
                })
                .map(|(slot, _)| slot.clone())
                .collect(),
            None => BTreeSet::new(),
        };
        let grace = self.grace;
        let decisions = decide(&snapshot, &claims, &ended, &mut state.orphans, now, grace);
        let blocked_changed = state.blocked != decisions.blocked;
        for (gpu, reason) in &decisions.blocked {
            if state.blocked.get(gpu) != Some(reason) {
                tracing::warn!(
                    gpu,
                    reason,
                    "dynamic MIG GPU left alone: no instance is created or destroyed on it"
                );
            }
        }
        state.blocked = decisions.blocked.clone();
        let mut report = CleanupReport::default();
        for (slot, why) in &decisions.destroy {
            match self.backend.destroy(&slot.0, slot.1) {
                Ok(()) => {
                    tracing::info!(gpu = %slot.0, start = slot.1, reason = %why, "destroyed MIG instance");
                    state.owners.remove(slot);
                    state.orphans.forget(slot);
                    report.destroyed.push(format!("{}@{}", slot.0, slot.1));
                    let uuid = snapshot
                        .get(&slot.0)
                        .and_then(|s| s.instances.iter().find(|i| i.start == slot.1))
                        .and_then(|i| i.uuid.as_deref());
                    self.forget_cdi(uuid, &mut report);
                }
                Err(error) => {
                    tracing::warn!(gpu = %slot.0, start = slot.1, %error, "cannot destroy MIG instance; will retry");
                    report.failed.push(error.to_string());
                }
            }
            self.read_gpu(&mut state, &slot.0);
        }
        for (slot, profile, pod_key) in &decisions.create {
            let pod = pods
                .iter()
                .find(|p| p.id.to_string() == *pod_key)
                .map(|p| p.id.clone());
            match self.ensure_locked(&mut state, &slot.0, profile, slot.1, pod.as_ref()) {
                Ok((uuid, _)) => report.created.push(uuid),
                Err(error) => {
                    tracing::warn!(gpu = %slot.0, start = slot.1, profile, pod = %pod_key, %error, "cannot create the annotated MIG instance ahead of Allocate");
                    report.failed.push(error.to_string());
                }
            }
        }
        if all_read {
            self.prune_cdi(&state, &mut report);
        }
        report.decisions = decisions;
        drop(state);
        if blocked_changed || !report.created.is_empty() || !report.destroyed.is_empty() {
            self.changed();
        }
        report
    }

    /// Each dynamic GPU with its instances and why it is left alone, if it is.
    pub fn status(&self) -> Vec<DynamicGpuStatus> {
        let state = self.state();
        state
            .geometries
            .keys()
            .map(|gpu| DynamicGpuStatus {
                gpu: gpu.clone(),
                instances: state
                    .snapshot
                    .get(gpu)
                    .map(|s| s.instances.clone())
                    .unwrap_or_default(),
                blocked: state.blocked.get(gpu).cloned(),
            })
            .collect()
    }
}

/// Placements claimed by pods: the dynamic slots their annotations name (live pods) and the
/// dynamic slot ids the kubelet says they hold.
fn claims(
    state: &State,
    pods: &[PodView],
    held: Option<&BTreeMap<String, BTreeSet<String>>>,
) -> BTreeMap<SlotKey, Claim> {
    let mut claims = BTreeMap::new();
    for (pod, ids) in held.into_iter().flatten() {
        for (gpu, profile, start) in ids.iter().filter_map(|id| parse_dynamic_slot_id(id)) {
            if state.geometries.contains_key(gpu) {
                claims.insert(
                    (gpu.to_string(), start),
                    Claim {
                        profile: profile.to_string(),
                        pod: pod.clone(),
                        annotated: false,
                    },
                );
            }
        }
    }
    for pod in pods {
        let PodDevices::Assigned(annotation) = &pod.devices else {
            continue;
        };
        for device in &annotation.devices {
            let Some(mig) = device.mig.as_ref().filter(|m| m.uuid.is_none()) else {
                continue;
            };
            if !state.geometries.contains_key(&device.gpu_uuid) {
                continue;
            }
            claims
                .entry((device.gpu_uuid.clone(), mig.start))
                .or_insert_with(|| Claim {
                    profile: mig.profile.clone(),
                    pod: pod.id.to_string(),
                    annotated: true,
                });
        }
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        assert_eq!("all".parse(), Ok(DynamicSelection::All));
        let some: DynamicSelection = "GPU-a, GPU-b".parse().unwrap();
        assert!(some.selects("GPU-b") && !some.selects("GPU-c"));
        assert!(" , ".parse::<DynamicSelection>().is_err());
    }
}

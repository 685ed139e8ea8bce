//! Dynamic MIG on this node: which GPUs are in dynamic mode (`--dynamic-mig`), their live
//! instances as the published inventory shows them, creating the instance a pod was assigned
//! at exactly its placement (on Allocate, or ahead of it when the annotated pod is seen), and
//! cleaning up the instances no pod claims (`decisions` decides, this module acts). All backend
//! calls are serialised by one lock and block: call them from `spawn_blocking`.

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

#[derive(Debug, Clone)]
struct Owner {
    pod: PodRef,
    profile: String,
}

#[derive(Debug, Default)]
struct State {
    geometries: BTreeMap<String, Arc<MigGeometry>>,
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
        }
        let mut state = self.state();
        if state.geometries.keys().ne(geometries.keys()) {
            tracing::info!(gpus = ?geometries.keys().collect::<Vec<_>>(), "dynamic MIG GPUs");
        }
        state.geometries = geometries;
        let known: Vec<String> = state.geometries.keys().cloned().collect();
        state.snapshot.retain(|gpu, _| known.contains(gpu));
        for gpu in known {
            self.read_gpu(&mut state, &gpu);
        }
    }

    /// Refreshes one GPU's snapshot from the backend; keeps the old one when it fails.
    fn read_gpu(&self, state: &mut State, gpu: &str) {
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
            }
            Err(error) => {
                tracing::warn!(gpu, %error, "cannot read MIG instances; keeping the last view")
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
        for gpu in &gpus {
            self.read_gpu(&mut state, gpu);
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

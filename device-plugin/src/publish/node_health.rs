//! GPU health on the Node object, as a Node Problem Detector plugin would report it: a
//! `GPUHealthy` node condition summarising the XID faults of the advertised devices, and,
//! when enabled, a `<prefix>/gpu-unhealthy:NoSchedule` taint while no device is healthy.
//! The summary is computed from memory every second; the API server is written only when it
//! changes (plus a periodic heartbeat), with back-off while it is unreachable.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kubesched_core::annotation::key;
use tokio_util::sync::CancellationToken;

use super::Backoff;
use crate::devices::{AdvertisedDevice, ResourceManager};

/// The node condition type the agent owns.
pub const GPU_HEALTHY_CONDITION: &str = "GPUHealthy";
/// Reason when every advertised device is healthy.
pub const REASON_ALL_HEALTHY: &str = "AllGPUsHealthy";
/// Reason when some devices are faulted.
pub const REASON_FAULTS: &str = "GPUFaults";
/// Reason when every advertised device is faulted.
pub const REASON_NO_HEALTHY_GPU: &str = "NoHealthyGPU";
/// Reason on a node that advertises no GPU at all.
pub const REASON_NO_GPUS: &str = "NoGPUs";
/// Suffix of the taint key: the taint is `<annotation-prefix>/gpu-unhealthy`.
pub const GPU_UNHEALTHY_TAINT: &str = "gpu-unhealthy";
/// The taint's effect: running pods stay, new ones go elsewhere.
pub const TAINT_EFFECT: &str = "NoSchedule";

/// Longest condition message written; the API server takes more, but `kubectl describe`
/// stays readable.
const MESSAGE_LIMIT: usize = 1024;
/// Faulted devices named per partly faulted GPU before "+N more".
const DEVICES_NAMED: usize = 4;
/// Reason shown for a device discovery itself reports unhealthy (no XID on record).
const UNHEALTHY_AT_DISCOVERY: &str = "unhealthy";
/// Read-modify-write rounds of the taint before a conflict is given up on (until next retry).
const TAINT_ATTEMPTS: u32 = 4;

/// The full taint key for an annotation prefix: `<prefix>/gpu-unhealthy`.
pub fn gpu_unhealthy_taint_key(prefix: &str) -> String {
    key(prefix, GPU_UNHEALTHY_TAINT)
}

/// What the `GPUHealthy` condition says about the node's GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuHealthCondition {
    /// The condition's status: `true` when no advertised device is faulted (or there is none).
    pub status: bool,
    /// One of [`REASON_ALL_HEALTHY`], [`REASON_FAULTS`], [`REASON_NO_HEALTHY_GPU`],
    /// [`REASON_NO_GPUS`].
    pub reason: String,
    /// For people: how many GPUs, and which ones have faulted devices with which XIDs.
    pub message: String,
    /// Every advertised device is faulted: the node has nothing healthy to offer (the taint).
    pub no_healthy_gpu: bool,
}

/// Faults seen on one GPU's devices.
#[derive(Default)]
struct GpuFaults<'a> {
    devices: usize,
    faulted: BTreeSet<&'a str>,
    reasons: BTreeSet<&'a str>,
}

/// Summarises the advertised `devices` (with effective health) and the manager's `faults`
/// (device id to reason, e.g. `XID 79`). GPUs and devices are sorted, so equal inputs give
/// equal conditions and the writer can skip unchanged ones. A GPU counts when it advertises
/// at least one device (a MIG GPU without instances does not).
pub fn summarize_gpu_health(
    devices: &[AdvertisedDevice],
    faults: &BTreeMap<String, String>,
) -> GpuHealthCondition {
    let mut gpus: BTreeMap<&str, GpuFaults<'_>> = BTreeMap::new();
    for device in devices {
        let gpu = gpus.entry(device.gpu_uuid.as_str()).or_default();
        gpu.devices += 1;
        let reason = match faults.get(&device.id) {
            Some(reason) => Some(reason.as_str()),
            None => (!device.healthy).then_some(UNHEALTHY_AT_DISCOVERY),
        };
        if let Some(reason) = reason {
            gpu.faulted.insert(device.id.as_str());
            gpu.reasons.insert(reason);
        }
    }
    if gpus.is_empty() {
        return GpuHealthCondition {
            status: true,
            reason: REASON_NO_GPUS.into(),
            message: "no GPU advertised on this node".into(),
            no_healthy_gpu: false,
        };
    }
    let faulted: usize = gpus.values().map(|g| g.faulted.len()).sum();
    if faulted == 0 {
        let n = gpus.len();
        return GpuHealthCondition {
            status: true,
            reason: REASON_ALL_HEALTHY.into(),
            message: format!("{n} {}, 0 faulted devices", plural(n, "GPU", "GPUs")),
            no_healthy_gpu: false,
        };
    }
    let parts: Vec<String> = gpus
        .iter()
        .filter(|(_, g)| !g.faulted.is_empty())
        .map(|(uuid, g)| describe_gpu(uuid, g))
        .collect();
    let no_healthy_gpu = faulted == devices.len();
    let reason = if no_healthy_gpu {
        REASON_NO_HEALTHY_GPU
    } else {
        REASON_FAULTS
    };
    GpuHealthCondition {
        status: false,
        reason: reason.into(),
        message: bounded_list(&parts),
        no_healthy_gpu,
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// `GPU-a (XID 79): 7 of 7 devices faulted` when the whole GPU is down, else
/// `GPU-a MIG-x MIG-y (XID 94)` naming the faulted devices.
fn describe_gpu(uuid: &str, gpu: &GpuFaults<'_>) -> String {
    let reasons = gpu.reasons.iter().copied().collect::<Vec<_>>().join(", ");
    if gpu.faulted.len() == gpu.devices {
        return format!(
            "{uuid} ({reasons}): {} of {} devices faulted",
            gpu.faulted.len(),
            gpu.devices
        );
    }
    let named: Vec<&str> = gpu
        .faulted
        .iter()
        .take(DEVICES_NAMED)
        .map(|id| short_device_id(uuid, id))
        .collect();
    let more = match gpu.faulted.len().saturating_sub(DEVICES_NAMED) {
        0 => String::new(),
        n => format!(" +{n} more"),
    };
    format!("{uuid} {}{more} ({reasons})", named.join(" "))
}

/// A dynamic-MIG slot id repeats its GPU (`GPU-a::1g.10gb@0`); after the GPU, its tail says it.
fn short_device_id<'a>(gpu: &str, id: &'a str) -> &'a str {
    id.strip_prefix(gpu)
        .and_then(|rest| rest.strip_prefix("::"))
        .unwrap_or(id)
}

/// Joins `parts` with `; ` within [`MESSAGE_LIMIT`], ending with `; and N more` when some do
/// not fit.
fn bounded_list(parts: &[String]) -> String {
    // Room kept for the "; and N more" tail.
    let budget = MESSAGE_LIMIT - 24;
    let mut message = String::new();
    let mut shown = 0;
    for part in parts {
        let separator = if message.is_empty() { "" } else { "; " };
        if shown > 0 && message.len() + separator.len() + part.len() > budget {
            break;
        }
        message.push_str(separator);
        message.push_str(part);
        shown += 1;
    }
    truncate_at_char(&mut message, budget);
    if shown < parts.len() {
        message.push_str(&format!("; and {} more", parts.len() - shown));
    }
    message
}

fn truncate_at_char(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// Why the condition or the taint could not be written to the Node.
#[derive(Debug, thiserror::Error)]
#[error("cannot set the {what} on node {node}: {source}")]
pub struct NodeHealthError {
    /// The node.
    pub node: String,
    /// What was being written: `condition` or `taint`.
    pub what: &'static str,
    /// The API server's (or the network's) error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Writes the GPU health of this node to its Node object.
#[tonic::async_trait]
pub trait NodeHealthWriter: Send + Sync {
    /// Sets the `GPUHealthy` condition, leaving every other condition as it is. Err when the
    /// API server refuses or cannot be reached.
    async fn set_condition(&self, condition: &GpuHealthCondition) -> Result<(), NodeHealthError>;
    /// Adds (`present`) or removes the `gpu-unhealthy` taint, leaving every other taint as it
    /// is; doing what is already done is a success.
    async fn set_taint(&self, present: bool) -> Result<(), NodeHealthError>;
}

/// The Kubernetes API implementation.
pub struct KubeNodeHealthWriter {
    api: Api<Node>,
    node: String,
    taint_key: String,
}

impl KubeNodeHealthWriter {
    /// A writer for the Node named `node`, through `client`, with taint key `taint_key`
    /// (see [`gpu_unhealthy_taint_key`]).
    pub fn new(
        client: kube::Client,
        node: impl Into<String>,
        taint_key: impl Into<String>,
    ) -> Self {
        KubeNodeHealthWriter {
            api: Api::all(client),
            node: node.into(),
            taint_key: taint_key.into(),
        }
    }

    fn error(&self, what: &'static str, source: kube::Error) -> NodeHealthError {
        NodeHealthError {
            node: self.node.clone(),
            what,
            source: source.into(),
        }
    }
}

/// Now, to the second (what the API server keeps of a condition time).
fn now() -> Time {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The condition as written: the transition time moves only when the status flips (or the
/// node had no such condition), the heartbeat always.
pub fn node_condition(
    condition: &GpuHealthCondition,
    previous: Option<&NodeCondition>,
    now: Time,
) -> NodeCondition {
    let status = if condition.status { "True" } else { "False" };
    let transition = match previous {
        Some(previous) if previous.status == status && previous.last_transition_time.is_some() => {
            previous.last_transition_time.clone()
        }
        _ => Some(now.clone()),
    };
    NodeCondition {
        type_: GPU_HEALTHY_CONDITION.into(),
        status: status.into(),
        reason: Some(condition.reason.clone()),
        message: Some(condition.message.clone()),
        last_heartbeat_time: Some(now),
        last_transition_time: transition,
    }
}

/// `taints` with ours (`key`, `NoSchedule`) added or removed, keeping every other; `None` when
/// nothing needs to change.
pub fn toggle_taint(taints: &[Taint], key: &str, present: bool) -> Option<Vec<Taint>> {
    let ours = |t: &Taint| t.key == key && t.effect == TAINT_EFFECT;
    let has = taints.iter().any(ours);
    match (present, has) {
        (true, true) | (false, false) => None,
        (true, false) => {
            let mut next = taints.to_vec();
            next.push(Taint {
                key: key.to_string(),
                value: Some("true".into()),
                effect: TAINT_EFFECT.into(),
                time_added: None,
            });
            Some(next)
        }
        (false, true) => Some(taints.iter().filter(|t| !ours(t)).cloned().collect()),
    }
}

#[tonic::async_trait]
impl NodeHealthWriter for KubeNodeHealthWriter {
    async fn set_condition(&self, condition: &GpuHealthCondition) -> Result<(), NodeHealthError> {
        // A plain GET carries the status too, and needs no access to `nodes/status` beyond
        // the patch.
        let node = self
            .api
            .get(&self.node)
            .await
            .map_err(|e| self.error("condition", e))?;
        let previous = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == GPU_HEALTHY_CONDITION));
        let written = node_condition(condition, previous, now());
        // Node conditions merge by `type` under a strategic merge patch: the kubelet's own
        // conditions stay untouched.
        let patch = serde_json::json!({ "status": { "conditions": [written] } });
        self.api
            .patch_status(
                &self.node,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .map(drop)
            .map_err(|e| self.error("condition", e))
    }

    async fn set_taint(&self, present: bool) -> Result<(), NodeHealthError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let node = self
                .api
                .get(&self.node)
                .await
                .map_err(|e| self.error("taint", e))?;
            let taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_deref())
                .unwrap_or_default();
            let Some(next) = toggle_taint(taints, &self.taint_key, present) else {
                return Ok(());
            };
            // A merge patch replaces the whole list; the resourceVersion makes the API server
            // refuse it (409) if someone changed the Node since we read it.
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": node.metadata.resource_version },
                "spec": { "taints": next },
            });
            match self
                .api
                .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < TAINT_ATTEMPTS => {
                    tracing::debug!(node = %self.node, attempt, "node changed under the taint update; re-reading");
                }
                Err(error) => return Err(self.error("taint", error)),
            }
        }
    }
}

/// How [`run_node_health`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHealthOptions {
    /// Whether to taint the node while no device is healthy (and untaint on recovery).
    pub taint: bool,
    /// How often the summary is recomputed (it reads memory only).
    pub every: Duration,
    /// How often an unchanged condition is written again, so its heartbeat stays fresh.
    pub refresh: Duration,
    /// Retry delays while the API server is unreachable.
    pub backoff: Backoff,
}

impl Default for NodeHealthOptions {
    fn default() -> Self {
        NodeHealthOptions {
            taint: false,
            every: Duration::from_secs(1),
            refresh: Duration::from_secs(300),
            backoff: Backoff::default(),
        }
    }
}

/// `work`, unless `shutdown` comes first (`None`).
async fn or_stop<T>(shutdown: &CancellationToken, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        out = work => Some(out),
        () = shutdown.cancelled() => None,
    }
}

/// Keeps the Node's `GPUHealthy` condition (and with `options.taint` the taint) in line with
/// `manager`'s device health until `shutdown`. Writes at start, on every change and every
/// `options.refresh`; a failed write is retried with back-off, each retry with the latest
/// summary, so no state is lost and no stale one is written after a newer one.
pub async fn run_node_health(
    manager: Arc<ResourceManager>,
    writer: Arc<dyn NodeHealthWriter>,
    options: NodeHealthOptions,
    shutdown: CancellationToken,
) {
    let mut written: Option<(GpuHealthCondition, Instant)> = None;
    let mut tainted: Option<bool> = None;
    let mut delay = options.backoff.initial;
    // A zero period would make `interval` panic.
    let mut ticker = tokio::time::interval(options.every.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let condition = summarize_gpu_health(&manager.all_devices(), &manager.faults());
        let changed = written.as_ref().is_none_or(|(last, _)| *last != condition);
        let stale = written
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= options.refresh);
        let mut failed = false;
        if changed || stale {
            let Some(result) = or_stop(&shutdown, writer.set_condition(&condition)).await else {
                return;
            };
            match result {
                Ok(()) if changed => {
                    tracing::info!(
                        condition = GPU_HEALTHY_CONDITION,
                        status = condition.status,
                        reason = %condition.reason,
                        message = %condition.message,
                        "node condition written"
                    );
                    written = Some((condition.clone(), Instant::now()));
                }
                Ok(()) => {
                    tracing::debug!(
                        condition = GPU_HEALTHY_CONDITION,
                        "node condition heartbeat"
                    );
                    written = Some((condition.clone(), Instant::now()));
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "cannot write the GPU health node condition");
                    failed = true;
                }
            }
        }
        if options.taint && tainted != Some(condition.no_healthy_gpu) {
            let present = condition.no_healthy_gpu;
            let Some(result) = or_stop(&shutdown, writer.set_taint(present)).await else {
                return;
            };
            match result {
                Ok(()) => {
                    tracing::info!(taint = GPU_UNHEALTHY_TAINT, present, "node taint updated");
                    tainted = Some(present);
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, present, "cannot update the GPU health taint");
                    failed = true;
                }
            }
        }
        if failed {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(options.backoff.max);
            continue;
        }
        delay = options.backoff.initial;
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kube::client::Body;

    use super::*;
    use crate::devices::{MigSlice, ResourcePlan};

    fn whole(uuid: &str) -> AdvertisedDevice {
        AdvertisedDevice {
            id: uuid.into(),
            resource: "r/gpu".into(),
            numa_node: None,
            healthy: true,
            gpu_uuid: uuid.into(),
            gpu_index: 0,
            mig: None,
        }
    }

    fn slice(gpu: &str, id: &str, gi: u32) -> AdvertisedDevice {
        AdvertisedDevice {
            id: id.into(),
            resource: "r/mig".into(),
            gpu_uuid: gpu.into(),
            mig: Some(MigSlice {
                profile: "1g.10gb".into(),
                start: gi as u8,
                gpu_instance_id: Some(gi),
            }),
            ..whole(gpu)
        }
    }

    /// GPU-A split in two slices, GPU-B whole.
    fn manager() -> Arc<ResourceManager> {
        Arc::new(ResourceManager::new(ResourcePlan::from([
            (
                "r/mig".to_string(),
                vec![slice("GPU-A", "MIG-1", 1), slice("GPU-A", "MIG-2", 2)],
            ),
            ("r/gpu".to_string(), vec![whole("GPU-B")]),
        ])))
    }

    fn faults(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(id, reason)| (id.to_string(), reason.to_string()))
            .collect()
    }

    #[test]
    fn summary_reasons_and_messages() {
        let devices = manager().all_devices();
        let healthy = summarize_gpu_health(&devices, &BTreeMap::new());
        assert_eq!(
            healthy,
            GpuHealthCondition {
                status: true,
                reason: REASON_ALL_HEALTHY.into(),
                message: "2 GPUs, 0 faulted devices".into(),
                no_healthy_gpu: false,
            }
        );

        let some = summarize_gpu_health(
            &devices,
            &faults(&[("MIG-2", "XID 94"), ("GPU-B", "XID 79")]),
        );
        assert!(!some.status);
        assert_eq!(some.reason, REASON_FAULTS);
        assert_eq!(
            some.message,
            "GPU-A MIG-2 (XID 94); GPU-B (XID 79): 1 of 1 devices faulted"
        );
        assert!(!some.no_healthy_gpu);

        let all = summarize_gpu_health(
            &devices,
            &faults(&[
                ("MIG-1", "XID 79"),
                ("MIG-2", "XID 79"),
                ("GPU-B", "XID 48"),
            ]),
        );
        assert_eq!(all.reason, REASON_NO_HEALTHY_GPU);
        assert!(all.no_healthy_gpu && !all.status);
        assert_eq!(
            all.message,
            "GPU-A (XID 79): 2 of 2 devices faulted; GPU-B (XID 48): 1 of 1 devices faulted"
        );

        let none = summarize_gpu_health(&[], &BTreeMap::new());
        assert!(none.status && !none.no_healthy_gpu);
        assert_eq!(none.reason, REASON_NO_GPUS);
    }

    #[test]
    fn summary_is_sorted_bounded_and_shortens_slot_ids() {
        // Input order must not matter.
        let mut devices: Vec<AdvertisedDevice> = (0..200)
            .rev()
            .map(|i| whole(&format!("GPU-{i:03}-0123456789abcdef")))
            .collect();
        devices.push(whole("GPU-zz"));
        let all: BTreeMap<String, String> = devices
            .iter()
            .filter(|d| d.gpu_uuid != "GPU-zz")
            .map(|d| (d.id.clone(), "XID 79".to_string()))
            .collect();
        let condition = summarize_gpu_health(&devices, &all);
        assert_eq!(condition.reason, REASON_FAULTS);
        assert!(
            condition.message.len() <= MESSAGE_LIMIT,
            "{}",
            condition.message.len()
        );
        assert!(
            condition.message.starts_with("GPU-000-"),
            "{}",
            condition.message
        );
        assert!(
            condition.message.contains("; and "),
            "{}",
            condition.message
        );
        assert!(
            condition.message.ends_with(" more"),
            "{}",
            condition.message
        );

        let slots: Vec<AdvertisedDevice> = (0..7)
            .map(|i| slice("GPU-d", &format!("GPU-d::1g.10gb@{i}"), i))
            .collect();
        let partial: BTreeMap<String, String> = slots[..6]
            .iter()
            .map(|d| (d.id.clone(), "XID 94".to_string()))
            .collect();
        assert_eq!(
            summarize_gpu_health(&slots, &partial).message,
            "GPU-d 1g.10gb@0 1g.10gb@1 1g.10gb@2 1g.10gb@3 +2 more (XID 94)"
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let at = |s: i64| Time(Timestamp::from_second(s).unwrap());
        let faulted = GpuHealthCondition {
            status: false,
            reason: REASON_FAULTS.into(),
            message: "m".into(),
            no_healthy_gpu: false,
        };
        let first = node_condition(&faulted, None, at(100));
        assert_eq!(first.status, "False");
        assert_eq!(first.last_transition_time, Some(at(100)));
        let again = node_condition(&faulted, Some(&first), at(200));
        assert_eq!(again.last_transition_time, Some(at(100)));
        assert_eq!(again.last_heartbeat_time, Some(at(200)));
        let healthy = GpuHealthCondition {
            status: true,
            ..faulted
        };
        let flipped = node_condition(&healthy, Some(&again), at(300));
        assert_eq!(flipped.status, "True");
        assert_eq!(flipped.last_transition_time, Some(at(300)));
    }

    #[test]
    fn taints_of_others_are_kept() {
        let other = Taint {
            key: "dedicated".into(),
            value: Some("ml".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let key = gpu_unhealthy_taint_key("example.org");
        assert_eq!(key, "example.org/gpu-unhealthy");
        assert_eq!(
            toggle_taint(std::slice::from_ref(&other), &key, false),
            None
        );
        let added = toggle_taint(std::slice::from_ref(&other), &key, true).unwrap();
        assert_eq!(added.len(), 2);
        assert_eq!(added[0], other);
        assert_eq!(added[1].key, key);
        assert_eq!(added[1].effect, "NoSchedule");
        assert_eq!(toggle_taint(&added, &key, true), None);
        assert_eq!(toggle_taint(&added, &key, false), Some(vec![other]));
    }

    /// Records what it is asked to write; fails the first `failures` calls.
    #[derive(Default)]
    struct Recorder {
        failures: Mutex<u32>,
        attempts: Mutex<u32>,
        conditions: Mutex<Vec<GpuHealthCondition>>,
        taints: Mutex<Vec<bool>>,
    }

    impl Recorder {
        fn failing(failures: u32) -> Arc<Self> {
            Arc::new(Recorder {
                failures: Mutex::new(failures),
                ..Recorder::default()
            })
        }

        fn fail(&self, what: &'static str) -> Result<(), NodeHealthError> {
            *self.attempts.lock().unwrap() += 1;
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(NodeHealthError {
                    node: "n".into(),
                    what,
                    source: "connection refused".into(),
                });
            }
            Ok(())
        }

        fn reasons(&self) -> Vec<String> {
            let conditions = self.conditions.lock().unwrap();
            conditions.iter().map(|c| c.reason.clone()).collect()
        }

        fn taints(&self) -> Vec<bool> {
            self.taints.lock().unwrap().clone()
        }
    }

    #[tonic::async_trait]
    impl NodeHealthWriter for Recorder {
        async fn set_condition(
            &self,
            condition: &GpuHealthCondition,
        ) -> Result<(), NodeHealthError> {
            self.fail("condition")?;
            self.conditions.lock().unwrap().push(condition.clone());
            Ok(())
        }

        async fn set_taint(&self, present: bool) -> Result<(), NodeHealthError> {
            self.fail("taint")?;
            self.taints.lock().unwrap().push(present);
            Ok(())
        }
    }

    fn options(taint: bool) -> NodeHealthOptions {
        NodeHealthOptions {
            taint,
            every: Duration::from_millis(5),
            refresh: Duration::from_secs(300),
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(40),
            },
        }
    }

    async fn until(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !what() {
            assert!(Instant::now() < deadline, "condition not reached in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn condition_is_written_at_start_and_on_change_and_never_tainted_without_the_flag() {
        let manager = manager();
        let writer = Recorder::failing(0);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_node_health(
            manager.clone(),
            writer.clone(),
            options(false),
            stop.clone(),
        ));
        until(|| writer.reasons() == [REASON_ALL_HEALTHY]).await;
        manager.set_fault(&ids(&["GPU-B"]), Some("XID 79"));
        until(|| writer.reasons().len() == 2).await;
        manager.set_fault(&ids(&["MIG-1", "MIG-2"]), Some("XID 79"));
        until(|| writer.reasons().len() == 3).await;
        // Unchanged: no more writes.
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            writer.reasons(),
            [REASON_ALL_HEALTHY, REASON_FAULTS, REASON_NO_HEALTHY_GPU]
        );
        assert!(writer.taints().is_empty(), "no taint without the flag");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn taint_only_when_every_device_is_faulted_and_cleared_on_recovery() {
        let manager = manager();
        let writer = Recorder::failing(0);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_node_health(
            manager.clone(),
            writer.clone(),
            options(true),
            stop.clone(),
        ));
        // A stale taint from an earlier run is removed at start.
        until(|| writer.taints() == [false]).await;
        manager.set_fault(&ids(&["GPU-B", "MIG-1"]), Some("XID 79"));
        until(|| writer.reasons().last().map(String::as_str) == Some(REASON_FAULTS)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(writer.taints(), [false], "some devices are still healthy");
        manager.set_fault(&ids(&["MIG-2"]), Some("XID 79"));
        until(|| writer.taints() == [false, true]).await;
        manager.set_fault(&ids(&["MIG-2"]), None);
        until(|| writer.taints() == [false, true, false]).await;
        assert_eq!(
            writer.reasons(),
            [
                REASON_ALL_HEALTHY,
                REASON_FAULTS,
                REASON_NO_HEALTHY_GPU,
                REASON_FAULTS
            ]
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn failed_writes_are_retried_with_the_latest_state() {
        let manager = manager();
        let writer = Recorder::failing(u32::MAX);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_node_health(
            manager.clone(),
            writer.clone(),
            options(true),
            stop.clone(),
        ));
        until(|| *writer.attempts.lock().unwrap() >= 4).await;
        // While the API server is down every device faults; then it comes back.
        manager.set_fault(&ids(&["GPU-B", "MIG-1", "MIG-2"]), Some("XID 79"));
        *writer.failures.lock().unwrap() = 0;
        until(|| !writer.reasons().is_empty() && !writer.taints().is_empty()).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Only the latest state is written; the healthy one of the failed rounds never is.
        assert_eq!(writer.taints(), [true]);
        assert_eq!(writer.reasons(), [REASON_NO_HEALTHY_GPU]);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_unchanged_condition_is_refreshed() {
        let writer = Recorder::failing(0);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_node_health(
            manager(),
            writer.clone(),
            NodeHealthOptions {
                refresh: Duration::from_millis(20),
                ..options(false)
            },
            stop.clone(),
        ));
        until(|| writer.reasons().len() >= 3).await;
        assert!(writer.reasons().iter().all(|r| r == REASON_ALL_HEALTHY));
        stop.cancel();
        task.await.unwrap();
    }

    /// One request as the mock API server saw it: method, URI, content type, body.
    type Seen = (String, String, String, String);

    /// A client whose requests are logged and answered by `answer` (status, JSON body).
    fn mock_client(
        log: Arc<Mutex<Vec<Seen>>>,
        answer: impl Fn(&Seen, usize) -> (u16, String) + Send + Sync + Clone + 'static,
    ) -> kube::Client {
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let (log, answer) = (log.clone(), answer.clone());
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let seen = (
                    parts.method.to_string(),
                    parts.uri.to_string(),
                    content_type,
                    String::from_utf8_lossy(&bytes).into_owned(),
                );
                let (status, text) = {
                    let mut log = log.lock().unwrap();
                    log.push(seen.clone());
                    answer(&seen, log.len())
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Body::from(text.into_bytes()))
                        .unwrap(),
                )
            }
        });
        kube::Client::new(service, "default")
    }

    const NODE: &str = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"gpu-7","resourceVersion":"41"},
        "spec":{"taints":[{"key":"dedicated","value":"ml","effect":"NoExecute"}]},
        "status":{"conditions":[
          {"type":"Ready","status":"True"},
          {"type":"GPUHealthy","status":"False","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;

    #[tokio::test]
    async fn the_condition_is_a_strategic_merge_patch_of_the_status_keeping_the_transition() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let client = mock_client(log.clone(), |_, _| (200, NODE.into()));
        let writer = KubeNodeHealthWriter::new(client, "gpu-7", "example.org/gpu-unhealthy");
        let faulted = GpuHealthCondition {
            status: false,
            reason: REASON_FAULTS.into(),
            message: "GPU-B (XID 79): 1 of 1 devices faulted".into(),
            no_healthy_gpu: false,
        };
        writer.set_condition(&faulted).await.unwrap();
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0].0, "GET");
        assert!(
            log[0].1.starts_with("/api/v1/nodes/gpu-7") && !log[0].1.contains("/status"),
            "{}",
            log[0].1
        );
        let (method, uri, content_type, body) = &log[1];
        assert_eq!(method, "PATCH");
        assert!(uri.starts_with("/api/v1/nodes/gpu-7/status"), "{uri}");
        assert_eq!(content_type, "application/strategic-merge-patch+json");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        let written = &body["status"]["conditions"][0];
        assert_eq!(body["status"]["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(written["type"], "GPUHealthy");
        assert_eq!(written["status"], "False");
        assert_eq!(written["reason"], REASON_FAULTS);
        assert_eq!(written["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert!(written["lastHeartbeatTime"].is_string());
    }

    #[tokio::test]
    async fn the_taint_is_added_with_the_resource_version_and_retried_on_conflict() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let client = mock_client(log.clone(), |seen: &Seen, n| {
            if seen.0 == "PATCH" && n == 2 {
                (
                    409,
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,"message":"the object has been modified"}"#.into(),
                )
            } else {
                (200, NODE.into())
            }
        });
        let writer = KubeNodeHealthWriter::new(client, "gpu-7", "example.org/gpu-unhealthy");
        writer.set_taint(true).await.unwrap();
        let log = log.lock().unwrap().clone();
        let methods: Vec<&str> = log.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(methods, ["GET", "PATCH", "GET", "PATCH"]);
        let (_, uri, content_type, body) = &log[3];
        assert!(uri.starts_with("/api/v1/nodes/gpu-7"), "{uri}");
        assert_eq!(content_type, "application/merge-patch+json");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        assert_eq!(
            body["spec"]["taints"],
            serde_json::json!([
                {"key": "dedicated", "value": "ml", "effect": "NoExecute"},
                {"key": "example.org/gpu-unhealthy", "value": "true", "effect": "NoSchedule"},
            ])
        );

        // Removing a taint the node does not have writes nothing.
        let quiet = Arc::new(Mutex::new(Vec::new()));
        let client = mock_client(quiet.clone(), |_, _| (200, NODE.into()));
        KubeNodeHealthWriter::new(client, "gpu-7", "example.org/gpu-unhealthy")
            .set_taint(false)
            .await
            .unwrap();
        assert_eq!(quiet.lock().unwrap().len(), 1);
    }
}

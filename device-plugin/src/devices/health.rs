//! Device health from NVML XID events. Application XIDs (13, 31, 43, 45, 68, 109: a user
//! program's fault, not the device's) are ignored; any other XID marks the affected devices
//! unhealthy: every slice of the GPU, or only the slice whose GPU instance the event names.
//! Unlike NVIDIA's plugin, devices recover: once no new XID arrived for the quiet period and
//! the GPU answers a probe again, the fault is cleared and the kubelet sees them Healthy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ResourceManager;

/// XIDs caused by applications, never by the device.
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// NVML's "whole GPU" GPU instance id in events.
pub const ALL_INSTANCES: u32 = u32::MAX;

/// One XID event as the event source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidEvent {
    /// UUID of the GPU the error was reported on (`GPU-...`), the parent GPU for a MIG slice.
    pub gpu_uuid: String,
    /// The GPU instance the error happened in; `None` or [`ALL_INSTANCES`] for the whole GPU.
    pub gpu_instance_id: Option<u32>,
    /// The XID error code (e.g. 79, the GPU fell off the bus).
    pub xid: u64,
}

/// Whether `xid` marks devices unhealthy: every XID but the [`APPLICATION_XIDS`].
pub fn is_critical(xid: u64) -> bool {
    !APPLICATION_XIDS.contains(&xid)
}

/// Asks whether a GPU works again (NVML answers for it), before a fault is cleared.
pub trait HealthProbe: Send + Sync {
    /// Whether the GPU with UUID `gpu_uuid` answers a simple query again; `false` keeps its
    /// devices' faults in place.
    fn gpu_ok(&self, gpu_uuid: &str) -> bool;
}

/// Tracks faults on the manager's devices and clears them when they recover.
pub struct HealthTracker {
    manager: Arc<ResourceManager>,
    quiet_period: Duration,
    /// Faulted device -> (its GPU, time of the last critical XID).
    faulted: HashMap<String, (String, Instant)>,
}

impl HealthTracker {
    /// A tracker of `manager`'s devices, clearing a fault once no critical XID arrived for
    /// `quiet_period` and the probe passes.
    pub fn new(manager: Arc<ResourceManager>, quiet_period: Duration) -> Self {
        HealthTracker {
            manager,
            quiet_period,
            faulted: HashMap::new(),
        }
    }

    /// Applies one event; returns the devices it marked unhealthy (empty for ignored XIDs).
    pub fn on_xid(&mut self, event: &XidEvent, now: Instant) -> Vec<String> {
        if !is_critical(event.xid) {
            tracing::debug!(gpu = %event.gpu_uuid, xid = event.xid, "application XID ignored");
            return Vec::new();
        }
        let instance = event.gpu_instance_id.filter(|id| *id != ALL_INSTANCES);
        let affected: Vec<String> = self
            .manager
            .all_devices()
            .into_iter()
            .filter(|d| d.gpu_uuid == event.gpu_uuid)
            .filter(|d| match (instance, &d.mig) {
                (None, _) | (Some(_), None) => true,
                (Some(gi), Some(slice)) => slice.gpu_instance_id.is_none_or(|id| id == gi),
            })
            .map(|d| d.id)
            .collect();
        let reason = format!("XID {}", event.xid);
        self.manager.set_fault(&affected, Some(&reason));
        for id in &affected {
            self.faulted
                .insert(id.clone(), (event.gpu_uuid.clone(), now));
        }
        tracing::warn!(gpu = %event.gpu_uuid, xid = event.xid, devices = ?affected, "critical XID: devices unhealthy");
        affected
    }

    /// Clears faults that have been quiet long enough on GPUs the probe finds working again.
    /// Returns the recovered devices.
    pub fn recover(&mut self, now: Instant, probe: &dyn HealthProbe) -> Vec<String> {
        let mut ok_cache: HashMap<String, bool> = HashMap::new();
        let ready: Vec<String> = self
            .faulted
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) >= self.quiet_period)
            .filter(|(_, (gpu, _))| {
                *ok_cache
                    .entry(gpu.clone())
                    .or_insert_with(|| probe.gpu_ok(gpu))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ready {
            self.faulted.remove(id);
        }
        self.manager.set_fault(&ready, None);
        if !ready.is_empty() {
            tracing::info!(devices = ?ready, "fault cleared: devices healthy again");
        }
        ready
    }
}

/// Applies XID events as they come and checks for recovery every `check_every`.
pub async fn run_health(
    mut tracker: HealthTracker,
    mut events: mpsc::Receiver<XidEvent>,
    probe: Arc<dyn HealthProbe>,
    check_every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(check_every);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => { tracker.on_xid(&event, Instant::now()); }
                // The event source is gone (no driver): recovery checks still run.
                None => events = mpsc::channel(1).1,
            },
            _ = ticker.tick() => { tracker.recover(Instant::now(), probe.as_ref()); }
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::devices::{AdvertisedDevice, MigSlice, ResourcePlan};

    fn slice(id: &str, gi: u32) -> AdvertisedDevice {
        AdvertisedDevice {
            id: id.into(),
            resource: "r/mig".into(),
            numa_node: None,
            healthy: true,
            gpu_uuid: "GPU-A".into(),
            gpu_index: 0,
            mig: Some(MigSlice {
                profile: "1g.10gb".into(),
                start: gi as u8,
                gpu_instance_id: Some(gi),
            }),
        }
    }

    fn manager() -> Arc<ResourceManager> {
        let whole = AdvertisedDevice {
            id: "GPU-B".into(),
            resource: "r/gpu".into(),
            gpu_uuid: "GPU-B".into(),
            mig: None,
            ..slice("x", 0)
        };
        Arc::new(ResourceManager::new(ResourcePlan::from([
            (
                "r/mig".to_string(),
                vec![slice("MIG-1", 1), slice("MIG-2", 2)],
            ),
            ("r/gpu".to_string(), vec![whole]),
        ])))
    }

    struct Probe(AtomicBool);
    impl HealthProbe for Probe {
        fn gpu_ok(&self, _: &str) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn application_xids_are_ignored() {
        let manager = manager();
        let mut tracker = HealthTracker::new(manager.clone(), Duration::from_secs(1));
        for xid in APPLICATION_XIDS {
            let event = XidEvent {
                gpu_uuid: "GPU-B".into(),
                gpu_instance_id: None,
                xid,
            };
            assert!(
                tracker.on_xid(&event, Instant::now()).is_empty(),
                "xid {xid}"
            );
        }
        assert!(manager.lookup("GPU-B").unwrap().healthy);
    }

    #[test]
    fn an_instance_xid_marks_only_that_slice_and_a_gpu_xid_marks_all() {
        let manager = manager();
        let mut tracker = HealthTracker::new(manager.clone(), Duration::from_secs(1));
        let now = Instant::now();
        let hit = tracker.on_xid(
            &XidEvent {
                gpu_uuid: "GPU-A".into(),
                gpu_instance_id: Some(2),
                xid: 94,
            },
            now,
        );
        assert_eq!(hit, vec!["MIG-2".to_string()]);
        assert!(manager.lookup("MIG-1").unwrap().healthy);
        let hit = tracker.on_xid(
            &XidEvent {
                gpu_uuid: "GPU-A".into(),
                gpu_instance_id: Some(ALL_INSTANCES),
                xid: 79,
            },
            now,
        );
        assert_eq!(hit.len(), 2);
        assert!(!manager.lookup("MIG-1").unwrap().healthy);
        assert!(
            manager.lookup("GPU-B").unwrap().healthy,
            "other GPUs untouched"
        );
    }

    #[test]
    fn devices_recover_after_a_quiet_period_when_the_probe_passes() {
        let manager = manager();
        let mut tracker = HealthTracker::new(manager.clone(), Duration::from_secs(60));
        let t0 = Instant::now();
        tracker.on_xid(
            &XidEvent {
                gpu_uuid: "GPU-B".into(),
                gpu_instance_id: None,
                xid: 48,
            },
            t0,
        );
        let probe = Probe(AtomicBool::new(false));
        assert!(
            tracker
                .recover(t0 + Duration::from_secs(30), &probe)
                .is_empty(),
            "too early"
        );
        assert!(
            tracker
                .recover(t0 + Duration::from_secs(61), &probe)
                .is_empty(),
            "GPU still failing"
        );
        assert!(!manager.lookup("GPU-B").unwrap().healthy);
        probe.0.store(true, Ordering::SeqCst);
        assert_eq!(
            tracker.recover(t0 + Duration::from_secs(62), &probe),
            vec!["GPU-B".to_string()]
        );
        assert!(manager.lookup("GPU-B").unwrap().healthy);
        assert!(manager.faults().is_empty());
    }
}

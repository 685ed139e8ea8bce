//! What to do with the dynamic-MIG instances of the node, decided from plain data: which
//! instances pods claim (pod annotations and the kubelet's PodResources), which belong to pods
//! that ended, which are orphans and for how long, and which GPUs must not be touched.
//! No I/O here: `dynamic` gathers the inputs and carries the decisions out.
//!
//! Rules: a claimed instance is never destroyed; an instance with a process in it is never
//! destroyed; a GPU with a pending MIG mode change or with processes outside the instances
//! pods hold is blocked (nothing is created or destroyed on it); an instance whose pod ended
//! goes at once; any other unclaimed instance goes once it has been unclaimed for the grace
//! period (after an agent restart, or when the kubelet cannot be asked).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{GpuCondition, LiveInstance};

/// A placement on a GPU: the GPU's UUID and the start position.
pub type SlotKey = (String, u8);

/// A pod's claim on a placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// MIG profile the pod claims at the placement, e.g. `1g.10gb`.
    pub profile: String,
    /// `namespace/name`.
    pub pod: String,
    /// From the pod's annotation (the instance may be created ahead of admission), rather
    /// than only from what the kubelet says the pod holds.
    pub annotated: bool,
}

/// One dynamic GPU as the backend reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuSnapshot {
    /// The GPU's live instances, lowest start first.
    pub instances: Vec<LiveInstance>,
    /// The GPU's pending MIG mode change and running processes, which can block it.
    pub condition: GpuCondition,
}

/// The decisions of one reconciliation pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Placements to create ahead of Allocate: (slot, profile, pod).
    pub create: Vec<(SlotKey, String, String)>,
    /// Instances to destroy: (slot, why).
    pub destroy: Vec<(SlotKey, String)>,
    /// GPUs not to touch, with the reason.
    pub blocked: BTreeMap<String, String>,
    /// Orphans still inside their grace period, with the time left.
    pub waiting: Vec<(SlotKey, Duration)>,
}

/// When each unclaimed instance was first seen unclaimed.
#[derive(Debug, Clone, Default)]
pub struct OrphanTracker {
    since: BTreeMap<(SlotKey, String), Instant>,
}

impl OrphanTracker {
    /// Forgets an instance (claimed, created or destroyed since).
    pub fn forget(&mut self, slot: &SlotKey) {
        self.since.retain(|(s, _), _| s != slot);
    }
}

fn blocked_reason(
    condition: &GpuCondition,
    gpu: &str,
    ours: &dyn Fn(&SlotKey) -> bool,
) -> Option<String> {
    if condition.pending_mode_change {
        return Some("a MIG mode change is pending a GPU reset".into());
    }
    let foreign: Vec<String> = condition
        .processes
        .iter()
        .filter(|p| p.start.is_none_or(|start| !ours(&(gpu.to_string(), start))))
        .map(|p| match p.start {
            Some(start) => format!("pid {} in the instance at position {start}", p.pid),
            None => format!("pid {} on the whole GPU", p.pid),
        })
        .collect();
    (!foreign.is_empty()).then(|| format!("processes outside our pods: {}", foreign.join(", ")))
}

/// Decides one pass. `ended` are placements this agent handed to pods that are gone from
/// both the pod source and the kubelet.
pub fn decide(
    gpus: &BTreeMap<String, GpuSnapshot>,
    claims: &BTreeMap<SlotKey, Claim>,
    ended: &BTreeSet<SlotKey>,
    tracker: &mut OrphanTracker,
    now: Instant,
    grace: Duration,
) -> Decisions {
    let mut decisions = Decisions::default();
    let mut still_orphan = BTreeSet::new();
    for (gpu, snapshot) in gpus {
        let live_claimed = |slot: &SlotKey| {
            snapshot.instances.iter().any(|i| {
                i.start == slot.1 && claims.get(slot).is_some_and(|c| c.profile == i.profile)
            })
        };
        let ours = |slot: &SlotKey| live_claimed(slot) || ended.contains(slot);
        if let Some(reason) = blocked_reason(&snapshot.condition, gpu, &ours) {
            decisions.blocked.insert(gpu.clone(), reason);
            continue;
        }
        let busy: BTreeSet<u8> = snapshot
            .condition
            .processes
            .iter()
            .filter_map(|p| p.start)
            .collect();
        for instance in &snapshot.instances {
            let slot = (gpu.clone(), instance.start);
            if live_claimed(&slot) || busy.contains(&instance.start) {
                continue;
            }
            if ended.contains(&slot) {
                decisions.destroy.push((slot, "its pod ended".to_string()));
                continue;
            }
            let key = (slot.clone(), instance.profile.clone());
            let since = *tracker.since.entry(key.clone()).or_insert(now);
            still_orphan.insert(key);
            let age = now.saturating_duration_since(since);
            if age >= grace {
                decisions.destroy.push((
                    slot,
                    format!("no running pod holds it (unclaimed for {age:?})"),
                ));
            } else {
                decisions.waiting.push((slot, grace - age));
            }
        }
        for (slot, claim) in claims.range((gpu.clone(), 0)..=(gpu.clone(), u8::MAX)) {
            let exists = snapshot.instances.iter().any(|i| i.start == slot.1);
            if claim.annotated && !exists {
                decisions
                    .create
                    .push((slot.clone(), claim.profile.clone(), claim.pod.clone()));
            }
        }
    }
    // Blocked GPUs keep their clocks: an orphan there is destroyed once the GPU is clear.
    tracker
        .since
        .retain(|key, _| still_orphan.contains(key) || decisions.blocked.contains_key(&key.0.0));
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mig::GpuProcess;

    fn live(profile: &str, start: u8) -> LiveInstance {
        LiveInstance {
            profile: profile.into(),
            start,
            uuid: Some(format!("MIG-{start}")),
        }
    }

    fn claim(profile: &str, pod: &str, annotated: bool) -> Claim {
        Claim {
            profile: profile.into(),
            pod: pod.into(),
            annotated,
        }
    }

    fn slot(start: u8) -> SlotKey {
        ("GPU-a".to_string(), start)
    }

    #[test]
    fn orphans_wait_for_the_grace_period_and_claims_are_kept() {
        let gpus = BTreeMap::from([(
            "GPU-a".to_string(),
            GpuSnapshot {
                instances: vec![live("3g.40gb", 0), live("1g.10gb", 4), live("1g.10gb", 5)],
                condition: GpuCondition::default(),
            },
        )]);
        // 4 is held per PodResources; 5 is a claim of another profile: not a match.
        let claims = BTreeMap::from([
            (slot(4), claim("1g.10gb", "ns/a", false)),
            (slot(5), claim("2g.20gb", "ns/b", true)),
            (slot(6), claim("1g.10gb", "ns/c", true)),
        ]);
        let mut tracker = OrphanTracker::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        let first = decide(&gpus, &claims, &BTreeSet::new(), &mut tracker, t0, grace);
        assert!(first.destroy.is_empty());
        assert_eq!(
            first.waiting,
            [(slot(0), grace), (slot(5), grace)],
            "orphans start their clock"
        );
        assert_eq!(
            first.create,
            [(slot(6), "1g.10gb".to_string(), "ns/c".to_string())],
            "an annotated placement without an instance is created ahead"
        );
        let later = decide(
            &gpus,
            &claims,
            &BTreeSet::new(),
            &mut tracker,
            t0 + Duration::from_secs(61),
            grace,
        );
        let destroyed: Vec<u8> = later.destroy.iter().map(|(s, _)| s.1).collect();
        assert_eq!(destroyed, [0, 5]);
    }

    #[test]
    fn ended_pods_go_at_once_busy_instances_stay_and_foreign_processes_block() {
        let mut gpus = BTreeMap::from([(
            "GPU-a".to_string(),
            GpuSnapshot {
                instances: vec![live("1g.10gb", 0), live("1g.10gb", 1)],
                condition: GpuCondition {
                    pending_mode_change: false,
                    // The container of the ended pod on 1 is still stopping.
                    processes: vec![GpuProcess {
                        pid: 7,
                        start: Some(1),
                    }],
                },
            },
        )]);
        let ended = BTreeSet::from([slot(0), slot(1)]);
        let mut tracker = OrphanTracker::default();
        let now = Instant::now();
        let d = decide(
            &gpus,
            &BTreeMap::new(),
            &ended,
            &mut tracker,
            now,
            Duration::from_secs(60),
        );
        assert_eq!(d.destroy, [(slot(0), "its pod ended".to_string())]);
        assert!(d.blocked.is_empty());

        // A process in an instance nobody holds: the whole GPU is left alone.
        let d = decide(
            &gpus,
            &BTreeMap::new(),
            &BTreeSet::new(),
            &mut tracker,
            now,
            Duration::ZERO,
        );
        assert!(d.destroy.is_empty() && d.create.is_empty());
        assert!(
            d.blocked["GPU-a"].contains("pid 7 in the instance at position 1"),
            "{:?}",
            d.blocked
        );
        if let Some(g) = gpus.get_mut("GPU-a") {
            g.condition = GpuCondition {
                pending_mode_change: true,
                processes: vec![],
            };
        }
        let d = decide(
            &gpus,
            &BTreeMap::from([(slot(3), claim("1g.10gb", "ns/x", true))]),
            &ended,
            &mut tracker,
            now,
            Duration::ZERO,
        );
        assert!(d.destroy.is_empty() && d.create.is_empty());
        assert!(d.blocked["GPU-a"].contains("mode change"));
    }
}

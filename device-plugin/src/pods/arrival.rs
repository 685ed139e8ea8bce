//! The order in which pods arrived on this node, as the agent's pod watch saw them bound here.
//!
//! The device plugin API gives `GetPreferredAllocation` and `Allocate` no pod identity, so the
//! agent has to tell which waiting pod the kubelet is admitting. The kubelet admits pods in
//! the order its own watch delivers them (it sorts by creation time only within one delivery,
//! and each watch event delivers one pod), and both watches see the API server's events in the
//! same order. Arrival order therefore tells two pods apart where the creation timestamp, with
//! its one-second resolution, cannot.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;

/// Arrival positions of the pods on this node, fed with the pod watch's events.
#[derive(Debug, Default)]
pub struct ArrivalOrder {
    next: u64,
    /// uid -> position; equal positions for pods first seen in the same (re)list.
    seen: HashMap<String, u64>,
    /// The position given to every pod first seen in the list now in progress, and the pods
    /// that list holds so far.
    relist: Option<(u64, HashSet<String>)>,
}

impl ArrivalOrder {
    /// Records one pod watch event: a pod seen for the first time gets the next position (all
    /// pods first seen in one (re)list share one), a deleted pod is forgotten, and pods missing
    /// from a finished relist are dropped.
    pub fn observe(&mut self, event: &Event<Pod>) {
        match event {
            Event::Init => {
                let at = self.tick();
                self.relist = Some((at, HashSet::new()));
            }
            Event::InitApply(pod) => {
                let Some(uid) = uid(pod) else { return };
                let at = match &mut self.relist {
                    Some((at, listed)) => {
                        listed.insert(uid.clone());
                        *at
                    }
                    None => self.tick(),
                };
                self.seen.entry(uid).or_insert(at);
            }
            Event::InitDone => {
                // Pods missing from the new list left while the watch was down.
                if let Some((_, listed)) = self.relist.take() {
                    self.seen.retain(|uid, _| listed.contains(uid));
                }
            }
            Event::Apply(pod) => {
                let Some(uid) = uid(pod) else { return };
                if !self.seen.contains_key(&uid) {
                    let at = self.tick();
                    self.seen.insert(uid, at);
                }
            }
            Event::Delete(pod) => {
                if let Some(uid) = uid(pod) {
                    self.seen.remove(&uid);
                }
            }
        }
    }

    /// A pod's arrival position; one not seen yet comes last (the cache it was read from can
    /// be a moment ahead of this record).
    pub fn position(&self, uid: &str) -> u64 {
        self.seen.get(uid).copied().unwrap_or(u64::MAX)
    }

    fn tick(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

fn uid(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone()
}

/// Sorts pods the way the kubelet admits them: by arrival, then (for pods that arrived in one
/// list, e.g. after the agent restarted) by creation time, then by name for a stable order.
pub fn sort_by_arrival(pods: &mut [std::sync::Arc<Pod>], order: &ArrivalOrder) {
    pods.sort_by_cached_key(|p| {
        (
            p.metadata
                .uid
                .as_deref()
                .map_or(u64::MAX, |u| order.position(u)),
            p.metadata.creation_timestamp.clone(),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn pod(name: &str, created: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                         "creationTimestamp": created}
        }))
        .unwrap()
    }

    fn sorted(pods: &[Pod], order: &ArrivalOrder) -> Vec<String> {
        let mut pods: Vec<Arc<Pod>> = pods.iter().cloned().map(Arc::new).collect();
        sort_by_arrival(&mut pods, order);
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    const T: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn pods_created_in_one_second_keep_the_order_they_were_bound_in() {
        let (a, z) = (pod("a", T), pod("z", T));
        let mut order = ArrivalOrder::default();
        order.observe(&Event::Init);
        order.observe(&Event::InitDone);
        // z is bound first; a name or creation-time order would put a first.
        order.observe(&Event::Apply(z.clone()));
        order.observe(&Event::Apply(a.clone()));
        // A later update of z (status, annotation) does not move it.
        order.observe(&Event::Apply(z.clone()));
        assert_eq!(sorted(&[a.clone(), z.clone()], &order), ["z", "a"]);
        // A pod the watch has not delivered yet comes after both.
        let b = pod("b", "2025-01-01T00:00:00Z");
        assert_eq!(sorted(&[b, a, z], &order), ["z", "a", "b"]);
    }

    #[test]
    fn a_relist_keeps_known_pods_orders_new_ones_by_creation_and_drops_vanished_ones() {
        let (old, gone) = (pod("old", T), pod("gone", T));
        let mut order = ArrivalOrder::default();
        order.observe(&Event::Apply(gone.clone()));
        order.observe(&Event::Apply(old.clone()));
        // The watch broke; two pods were bound meanwhile, and `gone` finished.
        let (late, early) = (pod("late", "2026-01-01T00:00:09Z"), pod("early", T));
        order.observe(&Event::Init);
        for p in [&late, &old, &early] {
            order.observe(&Event::InitApply((*p).clone()));
        }
        order.observe(&Event::InitDone);
        assert_eq!(order.position("uid-gone"), u64::MAX);
        assert_eq!(
            sorted(&[late, early, old], &order),
            ["old", "early", "late"]
        );
    }

    #[test]
    fn deleted_pods_are_forgotten() {
        let a = pod("a", T);
        let mut order = ArrivalOrder::default();
        order.observe(&Event::Apply(a.clone()));
        assert!(order.position("uid-a") < u64::MAX);
        order.observe(&Event::Delete(a));
        assert_eq!(order.position("uid-a"), u64::MAX);
    }
}

//! In-memory reservations: the devices a bind has chosen but the watch has
//! not yet shown on an annotated, bound pod. They count as occupied, so two
//! concurrent binds can never pick the same slot.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kubesched_core::placement::Candidate;
use kubesched_core::request::PodRequest;

/// One in-flight placement, keyed by pod UID.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// Namespace of the pod being bound.
    pub namespace: String,
    /// Name of the pod being bound, for logs.
    pub name: String,
    /// Node the bind chose for the pod.
    pub node: String,
    /// The pod's CPU, memory and GPU request, applied to the node with the candidate.
    pub request: PodRequest,
    /// The devices (GPUs, MIG slots, NUMA node) chosen for the pod on that node.
    pub candidate: Candidate,
    /// When the bind made it; reservations older than the TTL expire.
    pub created: Instant,
}

/// In-flight reservations, keyed by pod UID.
#[derive(Debug, Default)]
pub struct Reservations {
    by_uid: HashMap<String, Reservation>,
}

impl Reservations {
    /// Records a reservation; returns the one it replaced (same pod bound again).
    pub fn insert(&mut self, uid: &str, r: Reservation) -> Option<Reservation> {
        self.by_uid.insert(uid.to_string(), r)
    }

    /// Drops the pod's reservation (confirmed, released or the pod gone); returns it.
    pub fn remove(&mut self, uid: &str) -> Option<Reservation> {
        self.by_uid.remove(uid)
    }

    /// The reservation held by the pod with this UID, if any.
    pub fn get(&self, uid: &str) -> Option<&Reservation> {
        self.by_uid.get(uid)
    }

    /// Number of reservations held.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether no reservation is held.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    /// Reservations on `node`, in a stable order (by UID).
    pub fn on_node<'a>(&'a self, node: &str) -> Vec<(&'a str, &'a Reservation)> {
        let mut v: Vec<_> = self
            .by_uid
            .iter()
            .filter(|(_, r)| r.node == node)
            .map(|(u, r)| (u.as_str(), r))
            .collect();
        v.sort_by_key(|(u, _)| *u);
        v
    }

    /// Copies of the reservations made more than `age` before `now`, by UID.
    pub fn older_than(&self, now: Instant, age: Duration) -> Vec<(String, Reservation)> {
        let mut v: Vec<_> = self
            .by_uid
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.created) > age)
            .map(|(u, r)| (u.clone(), r.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Drops reservations older than `ttl` (the watch never confirmed them,
    /// e.g. the pod vanished while we were not watching); returns them.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<(String, Reservation)> {
        self.drop_where(|_, r| now.saturating_duration_since(r.created) > ttl)
    }

    /// Drops reservations of pods a full list no longer has (deleted while the watch was
    /// down, so no delete event will come), made more than `min_age` before `now`: a younger
    /// one may belong to a pod created after the list was taken. Returns them.
    pub fn drop_unlisted(
        &mut self,
        listed: &dyn Fn(&str) -> bool,
        now: Instant,
        min_age: Duration,
    ) -> Vec<(String, Reservation)> {
        self.drop_where(|uid, r| !listed(uid) && now.saturating_duration_since(r.created) > min_age)
    }

    fn drop_where(
        &mut self,
        gone: impl Fn(&str, &Reservation) -> bool,
    ) -> Vec<(String, Reservation)> {
        let old: Vec<String> = self
            .by_uid
            .iter()
            .filter(|(u, r)| gone(u, r))
            .map(|(u, _)| u.clone())
            .collect();
        old.into_iter()
            .filter_map(|u| self.by_uid.remove(&u).map(|r| (u, r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesched_core::placement::DeviceChoice;

    fn res(node: &str, created: Instant) -> Reservation {
        Reservation {
            namespace: "ns".into(),
            name: "p".into(),
            node: node.into(),
            request: PodRequest::cpu_only(0, 0),
            candidate: Candidate {
                choice: DeviceChoice::None,
                numa: None,
            },
            created,
        }
    }

    #[test]
    fn per_node_listing_and_expiry() {
        let t0 = Instant::now();
        let mut r = Reservations::default();
        r.insert("b", res("n1", t0));
        r.insert("a", res("n1", t0 + Duration::from_secs(10)));
        r.insert("c", res("n2", t0));
        let uids: Vec<&str> = r.on_node("n1").iter().map(|(u, _)| *u).collect();
        assert_eq!(uids, vec!["a", "b"]);
        let gone = r.expire(t0 + Duration::from_secs(8), Duration::from_secs(5));
        let mut gone: Vec<String> = gone.into_iter().map(|(u, _)| u).collect();
        gone.sort();
        assert_eq!(gone, vec!["b", "c"]);
        assert_eq!(r.len(), 1);
        assert!(r.get("a").is_some());
        assert!(r.remove("a").is_some());
        assert!(r.is_empty());
    }

    #[test]
    fn a_full_list_drops_reservations_of_pods_it_lacks_unless_just_made() {
        let t0 = Instant::now();
        let mut r = Reservations::default();
        r.insert("listed", res("n", t0));
        r.insert("deleted", res("n", t0));
        r.insert("young", res("n", t0 + Duration::from_secs(9)));
        let gone = r.drop_unlisted(
            &|uid| uid == "listed",
            t0 + Duration::from_secs(10),
            Duration::from_secs(2),
        );
        let gone: Vec<String> = gone.into_iter().map(|(u, _)| u).collect();
        assert_eq!(gone, vec!["deleted"]);
        assert!(r.get("listed").is_some() && r.get("young").is_some());
    }
}

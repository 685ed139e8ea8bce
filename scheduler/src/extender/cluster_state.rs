//! The extender's in-memory picture of the cluster: per node, the empty
//! state from its inventory plus every non-terminal pod bound there (at the
//! devices its annotation names) plus in-flight reservations. Filter and
//! prioritize read it without I/O; results are memoised per distinct node
//! state ([`super::shapes`]), so a node's change moves it to another memo.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::catalogue;
use kubesched_core::fragmentation::{NodeFrag, Workload};
use kubesched_core::node::{GpuSlots, NodeState};
use kubesched_core::placement::{self, Candidate, Cause, DeviceChoice, PlacementError, Unfit};
use kubesched_core::request::PodRequest;
use kubesched_core::scoring::{Choice, Policy, ScoreContext};

use super::reservations::{Reservation, Reservations};
use super::shapes::{MEMO_CAPACITY, Shape, Shapes};

/// A reservation this old whose pod a full list lacks belongs to a deleted pod: binds
/// happen to pods that exist, so a list taken before the bind has the pod, and lists take
/// well under this long. A younger one is kept: its pod may have been created after the
/// list was taken, or bound and deleted before it; `reservation_check` asks the API server
/// which.
const UNLISTED_RESERVATION_AGE: Duration = Duration::from_secs(2);

/// A node's empty state, from its inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBase {
    /// Free CPU, memory, NUMA and GPU capacity of the node with nothing running on it.
    pub state: NodeState,
    /// The agent reported free CPUs per NUMA node (from the kubelet), so the
    /// CPUs pinned by running pods are already subtracted there.
    pub live_numa_cpus: bool,
    /// The pool the node belongs to, for the cost figures ([`super::reflectors::node_pool`]).
    pub pool: String,
    /// The agent says it is draining: nothing new is placed here (running pods still count).
    pub draining: bool,
}

/// What the extender knows about a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    /// Namespace the pod lives in.
    pub namespace: String,
    /// Pod name within its namespace (`metadata.name`).
    pub name: String,
    /// `spec.nodeName`: set once bound.
    pub node: Option<String>,
    /// The pod's CPU, memory and GPU request, as parsed from its spec.
    pub request: PodRequest,
    /// The devices annotation, parsed and its signature checked (or why it is unusable).
    pub devices: Option<Result<DevicesAnnotation, String>>,
}

impl PodRecord {
    fn annotated_for(&self, node: &str) -> Option<&DevicesAnnotation> {
        match &self.devices {
            Some(Ok(d)) if d.node == node => Some(d),
            _ => None,
        }
    }
}

/// How one node looks to a filter or prioritize call.
pub enum NodeView<'a> {
    /// No inventory annotation: not a node we place GPUs on.
    Unknown,
    /// The inventory is there but unusable.
    Invalid(&'a str),
    /// The node's agent is draining: the kubelet would refuse our devices now.
    Draining,
    /// The node was evaluated: the policy's chosen placement and score, or why
    /// the pod does not fit.
    Evaluated(&'a Result<Choice, Unfit>),
}

/// Everything an evaluation depends on besides the node.
pub struct EvalContext<'a> {
    /// The scoring policy in force (FGD, best fit, ...), which picks a placement per node.
    pub policy: &'a dyn Policy,
    /// The target workload that fragmentation is measured against.
    pub workload: Arc<Workload>,
    /// Changes whenever `workload` does, so memoised scores are dropped.
    pub workload_gen: u64,
    /// The request of the pod being filtered or prioritised.
    pub request: &'a PodRequest,
    /// `shapes::request_key(request)`, computed once per call.
    pub request_key: u64,
    /// Per-pod seed (derived from the pod UID) for policies that draw at random.
    pub seed: u64,
}

struct NodeEntry {
    base: Result<NodeBase, String>,
    state: NodeState,
    /// The memo shared with every node in the same state.
    shape: Arc<Shape>,
    /// Whether a request fits the empty node: depends on the inventory only, so kept
    /// across pod changes (a new inventory makes a new entry).
    empty: Mutex<Vec<EmptyFit>>,
}

/// A request (with its `shapes::request_key`) and whether it fits a node with nothing on it.
type EmptyFit = (u64, PodRequest, Result<(), Unfit>);

/// Node names are looked up thousands of times per filter call; a fast
/// non-cryptographic hash is enough (the names come from the API server).
type NodeMap = HashMap<String, NodeEntry, foldhash::fast::RandomState>;

/// The extender's in-memory cluster picture: nodes, pods keyed by UID,
/// which pods are bound where, and in-flight bind reservations.
pub struct ClusterState {
    nodes: NodeMap,
    /// Every node the API server has, GPU node or not: a bind names one of these.
    node_names: HashSet<String>,
    pods: HashMap<String, PodRecord>,
    on_node: HashMap<String, BTreeSet<String>>,
    reservations: Reservations,
    /// Full pod lists loaded so far: an answer read from the API before a list is older
    /// than the list, so it must not be applied after it.
    pod_lists: u64,
    known_profiles: HashSet<String>,
    shapes: Shapes,
}

/// A node as the cost figures need it ([`ClusterState::cost_view`]).
#[derive(Debug, Clone)]
pub struct CostedNode {
    /// Its occupancy.
    pub state: NodeState,
    /// Its pool.
    pub pool: String,
    /// Milli-GPU each namespace's pods (and reservations) hold there.
    pub held: Vec<(String, u64)>,
}

impl CostedNode {
    /// The node as the core cost model takes it.
    pub fn as_cost(&self) -> kubesched_core::planning::cost::NodeCost<'_> {
        kubesched_core::planning::cost::NodeCost {
            node: &self.state,
            pool: &self.pool,
            held: &self.held,
        }
    }
}

/// What settling a reservation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The pod is gone: the reservation was dropped.
    Released,
    /// The pod is bound: it is recorded as the API shows it, in place of the reservation.
    Recorded,
    /// The pod is not bound yet (its bind is still in flight): the reservation stands.
    Kept,
    /// Nothing done: the reservation changed, or a full list was loaded since the answer
    /// was read.
    Stale,
}

impl Default for ClusterState {
    fn default() -> Self {
        Self::new(false)
    }
}

impl ClusterState {
    /// An empty picture with no nodes or pods, knowing the catalogue's MIG profiles.
    /// `per_node_memo`: the policy's outcome depends on which node it is
    /// ([`Policy::uses_node_identity`]), so nodes in equal states do not share evaluations.
    pub fn new(per_node_memo: bool) -> Self {
        let known_profiles = catalogue::models()
            .iter()
            .filter_map(|m| m.mig.as_ref())
            .flat_map(|g| g.profiles.iter().map(|p| p.name.clone()))
            .collect();
        ClusterState {
            nodes: NodeMap::default(),
            node_names: HashSet::new(),
            pods: HashMap::new(),
            on_node: HashMap::new(),
            reservations: Reservations::default(),
            pod_lists: 0,
            known_profiles,
            shapes: Shapes::new(per_node_memo),
        }
    }

    /// Whether any GPU model (catalogue or a node's own geometry) has `profile`.
    pub fn knows_profile(&self, profile: &str) -> bool {
        self.known_profiles.contains(profile)
    }

    /// Number of GPU nodes with an inventory annotation (usable or not).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of distinct node states: the most evaluations the first pod of a new request
    /// shape costs.
    pub fn distinct_states(&self) -> usize {
        self.shapes.live()
    }

    /// Number of binds reserved but not yet confirmed by the pod watch.
    pub fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Adds or replaces a node: `base` is its empty state from the inventory,
    /// or why the inventory is unusable.
    pub fn upsert_node(&mut self, name: &str, base: Result<NodeBase, String>) {
        if !self.node_names.contains(name) {
            self.node_names.insert(name.to_string());
        }
        // Node status heartbeats re-send unchanged nodes: keep their memos.
        if self.nodes.get(name).is_some_and(|e| e.base == base) {
            return;
        }
        if let Ok(b) = &base {
            for g in &b.state.gpus {
                if let GpuSlots::Mig(m) = &g.slots {
                    self.known_profiles
                        .extend(m.gpu.geometry().profiles.iter().map(|p| p.name.clone()));
                }
            }
        }
        let state = match &base {
            Ok(b) => b.state.clone(),
            Err(_) => NodeState::new(name, 0, 0),
        };
        let shape = self.shapes.intern(&state);
        self.nodes.insert(
            name.to_string(),
            NodeEntry {
                base,
                state,
                shape,
                empty: Mutex::new(Vec::new()),
            },
        );
        self.rebuild(name);
    }

    /// Forgets a deleted node, with its inventory and memoised results.
    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
        self.node_names.remove(name);
    }

    /// Records a node that publishes no inventory (not ours to place GPUs on).
    pub fn upsert_other_node(&mut self, name: &str) {
        self.nodes.remove(name);
        if !self.node_names.contains(name) {
            self.node_names.insert(name.to_string());
        }
    }

    /// Whether the API server has a node of this name, with or without GPUs.
    pub fn has_node(&self, name: &str) -> bool {
        self.node_names.contains(name)
    }

    /// Replaces every node at once (after a full list from the API); nodes without an
    /// inventory are added after with [`ClusterState::upsert_other_node`].
    pub fn reset_nodes(&mut self, nodes: Vec<(String, Result<NodeBase, String>)>) {
        self.nodes.clear();
        self.node_names.clear();
        for (name, base) in nodes {
            self.upsert_node(&name, base);
        }
    }

    /// Replaces every pod at once (after a full list from the API). Reservations of pods the
    /// list does not have are dropped: those pods were deleted while the watch was down.
    pub fn reset_pods(&mut self, pods: Vec<(String, PodRecord)>) {
        self.pod_lists += 1;
        let listed: HashSet<&str> = pods.iter().map(|(uid, _)| uid.as_str()).collect();
        let gone = self.reservations.drop_unlisted(
            &|uid| listed.contains(uid),
            Instant::now(),
            UNLISTED_RESERVATION_AGE,
        );
        for (uid, r) in &gone {
            tracing::info!(pod_uid = %uid, node = %r.node, pod = %r.name,
                "reservation dropped: the pod is gone from a full list");
        }
        self.pods.clear();
        self.on_node.clear();
        for (uid, p) in pods {
            if let Some(n) = &p.node {
                self.on_node
                    .entry(n.clone())
                    .or_default()
                    .insert(uid.clone());
            }
            if p.node.is_some() && p.devices.is_some() {
                self.reservations.remove(&uid);
            }
            self.pods.insert(uid, p);
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in names {
            self.rebuild(&n);
        }
    }

    /// Adds or updates a pod. A bound pod carrying its devices annotation
    /// confirms (and so replaces) its reservation; returns whether it did.
    pub fn upsert_pod(&mut self, uid: &str, pod: PodRecord) -> bool {
        let old_node = self.pods.get(uid).and_then(|p| p.node.clone());
        let confirmed = match (&pod.node, &pod.devices) {
            (Some(n), Some(_)) => self
                .reservations
                .get(uid)
                .is_some_and(|r| &r.node == n)
                .then(|| self.reservations.remove(uid))
                .is_some(),
            _ => false,
        };
        let new_node = pod.node.clone();
        let unchanged = self.pods.get(uid) == Some(&pod);
        self.pods.insert(uid.to_string(), pod);
        if unchanged && !confirmed {
            return false;
        }
        if let Some(o) = &old_node
            && old_node != new_node
        {
            if let Some(set) = self.on_node.get_mut(o) {
                set.remove(uid);
            }
            self.rebuild(o);
        }
        if let Some(n) = &new_node {
            self.on_node
                .entry(n.clone())
                .or_default()
                .insert(uid.to_string());
            self.rebuild(n);
        }
        confirmed
    }

    /// Forgets a pod (deleted or terminal) and any reservation it held.
    pub fn remove_pod(&mut self, uid: &str) {
        let mut touched = Vec::new();
        if let Some(p) = self.pods.remove(uid)
            && let Some(n) = p.node
        {
            if let Some(set) = self.on_node.get_mut(&n) {
                set.remove(uid);
            }
            touched.push(n);
        }
        if let Some(r) = self.reservations.remove(uid) {
            touched.push(r.node);
        }
        for n in touched {
            self.rebuild(&n);
        }
    }

    /// The recorded pod with this UID, or `None` if the extender has not seen it.
    pub fn pod(&self, uid: &str) -> Option<&PodRecord> {
        self.pods.get(uid)
    }

    /// The node's current state (inventory + pods + reservations).
    pub fn node_state(&self, name: &str) -> Option<&NodeState> {
        self.nodes
            .get(name)
            .and_then(|e| e.base.as_ref().ok().map(|_| &e.state))
    }

    /// Every node with a usable inventory with its pool and the milli-GPU each namespace's
    /// pods hold there: what the cost figures are made of.
    pub fn cost_view(&self) -> Vec<CostedNode> {
        let mut out = Vec::new();
        for (name, entry) in &self.nodes {
            let Ok(base) = &entry.base else { continue };
            // Bound pods, and binds the watch has not shown yet.
            let pods = self.on_node.get(name).into_iter().flatten();
            let holders = pods
                .filter_map(|uid| self.pods.get(uid))
                .map(|p| (&p.namespace, &p.request))
                .chain(
                    self.reservations
                        .on_node(name)
                        .into_iter()
                        .map(|(_, r)| (&r.namespace, &r.request)),
                );
            let mut held: BTreeMap<String, u64> = BTreeMap::new();
            for (namespace, request) in holders {
                let milli = kubesched_core::planning::cost::held_milli(&entry.state, &request.gpu);
                if milli > 0 {
                    let sum = held.entry(namespace.clone()).or_default();
                    *sum = sum.saturating_add(milli);
                }
            }
            out.push(CostedNode {
                state: entry.state.clone(),
                pool: base.pool.clone(),
                held: held.into_iter().collect(),
            });
        }
        out.sort_by(|a, b| a.state.name.cmp(&b.state.name));
        out
    }

    /// Every node with a usable inventory, for metrics.
    pub fn node_states(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes
            .values()
            .filter(|e| e.base.is_ok())
            .map(|e| &e.state)
    }

    /// Records the placement a bind chose, on top of the node's state.
    pub fn reserve(&mut self, uid: &str, r: Reservation) -> Result<(), PlacementError> {
        let Some(entry) = self.nodes.get(&r.node) else {
            return Err(PlacementError::Mismatch);
        };
        // Check it applies before recording it, so a stale choice is refused.
        let mut probe = entry.state.clone();
        placement::apply(&mut probe, &r.request, &r.candidate)?;
        let node = r.node.clone();
        if let Some(old) = self.reservations.insert(uid, r)
            && old.node != node
        {
            self.rebuild(&old.node);
        }
        self.rebuild(&node);
        Ok(())
    }

    /// Drops a reservation (bind failed); returns it.
    pub fn release(&mut self, uid: &str) -> Option<Reservation> {
        let r = self.reservations.remove(uid)?;
        self.rebuild(&r.node);
        Some(r)
    }

    /// The in-flight reservation held by the pod with this UID, if any.
    pub fn reservation(&self, uid: &str) -> Option<&Reservation> {
        self.reservations.get(uid)
    }

    /// How many full pod lists have been loaded; [`Self::settle_reservation`] takes the
    /// count read before asking the API server.
    pub fn pod_list_generation(&self) -> u64 {
        self.pod_lists
    }

    /// Reservations made more than `age` before `now` that the watch has not confirmed.
    pub fn unconfirmed_reservations(
        &self,
        now: Instant,
        age: Duration,
    ) -> Vec<(String, Reservation)> {
        self.reservations.older_than(now, age)
    }

    /// Applies what the API server said of the pod holding reservation `uid` (the one made
    /// at `made`): `found` is the pod as it is now, `None` when there is no such pod (deleted,
    /// replaced by a namesake, or finished), read when `generation` full lists had been
    /// loaded. A delete event or a list that came meanwhile knows better, so then nothing is
    /// done.
    pub fn settle_reservation(
        &mut self,
        uid: &str,
        made: Instant,
        generation: u64,
        found: Option<PodRecord>,
    ) -> Settled {
        let standing = self
            .reservations
            .get(uid)
            .is_some_and(|r| r.created == made);
        if !standing || generation != self.pod_lists {
            return Settled::Stale;
        }
        match found {
            None => {
                self.release(uid);
                Settled::Released
            }
            Some(record) if record.node.is_none() => Settled::Kept,
            Some(record) => {
                self.upsert_pod(uid, record);
                // Bound elsewhere, or without our annotation: the record says what it holds.
                self.release(uid);
                Settled::Recorded
            }
        }
    }

    /// Drops reservations the watch never confirmed within `ttl`.
    pub fn expire_reservations(&mut self, now: Instant, ttl: Duration) -> usize {
        let gone = self.reservations.expire(now, ttl);
        for (uid, r) in &gone {
            tracing::warn!(pod_uid = %uid, node = %r.node, pod = %r.name, "reservation expired unconfirmed");
            self.rebuild(&r.node);
        }
        gone.len()
    }

    /// Runs `f` on how node `name` looks for `ctx`'s request, memoising the
    /// policy's choice until the node or the workload changes.
    pub fn evaluate<R>(
        &self,
        name: &str,
        ctx: &EvalContext<'_>,
        f: impl FnOnce(NodeView<'_>) -> R,
    ) -> R {
        let Some(entry) = self.nodes.get(name) else {
            return f(NodeView::Unknown);
        };
        match &entry.base {
            Err(e) => return f(NodeView::Invalid(e)),
            Ok(base) if base.draining => return f(NodeView::Draining),
            Ok(_) => {}
        }
        let shape = &entry.shape;
        let mut memo = shape.memo();
        memo.for_generation(ctx.workload_gen);
        let outcome = memo.get_or_compute(ctx.request_key, ctx.request, |frag| {
            let frag =
                frag.get_or_insert_with(|| Arc::new(NodeFrag::new(shape.state(), &ctx.workload)));
            let score_ctx = ScoreContext {
                workload: &ctx.workload,
                seed: ctx.seed,
                frag: Some(frag),
            };
            ctx.policy.choose(shape.state(), ctx.request, &score_ctx)
        });
        f(NodeView::Evaluated(outcome))
    }

    /// Recomputes a node's state from its inventory, its pods and its reservations.
    fn rebuild(&mut self, name: &str) {
        let Some(state) = self.compute_state(name, &HashSet::new()) else {
            return;
        };
        let shape = self.shapes.intern(&state);
        if let Some(entry) = self.nodes.get_mut(name) {
            entry.shape = shape;
            entry.state = state;
        }
    }

    /// Whether `request` fits node `name` with nothing on it but what no eviction can free
    /// (the inventory's own state: static instances, unhealthy devices, and, where the agent
    /// reports live NUMA CPUs, CPUs pinned by running pods). `None` for a node without a
    /// usable inventory. Memoised until the inventory changes; `key` is the request's
    /// `shapes::request_key`, computed once per call by the caller.
    pub fn fits_empty(
        &self,
        name: &str,
        request: &PodRequest,
        key: u64,
    ) -> Option<Result<(), Unfit>> {
        let entry = self.nodes.get(name)?;
        let base = entry.base.as_ref().ok()?;
        let mut empty = entry.empty.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, outcome)) = empty.iter().find(|(k, r, _)| *k == key && r == request) {
            return Some(outcome.clone());
        }
        let outcome = placement::fits(&base.state, request);
        if empty.len() >= MEMO_CAPACITY {
            let _evicted = empty.remove(0);
        }
        empty.push((key, request.clone(), outcome.clone()));
        Some(outcome)
    }

    /// Whether evicting pods can never make `request` fit node `name`: it does not fit the
    /// empty node. CPU and NUMA refusals on a node whose NUMA CPUs are reported live are not
    /// counted (pinned CPUs of running pods are missing from its empty state).
    pub fn never_fits(&self, name: &str, ctx: &EvalContext<'_>) -> bool {
        match self.fits_empty(name, ctx.request, ctx.request_key) {
            Some(Err(unfit)) => {
                !(self.live_numa_cpus(name) && matches!(unfit.cause(), Cause::NoCpu | Cause::Numa))
            }
            _ => false,
        }
    }

    /// Whether the node's inventory reports free NUMA CPUs live from the kubelet (then CPUs
    /// pinned by running pods are already missing from its empty state).
    pub fn live_numa_cpus(&self, name: &str) -> bool {
        self.nodes
            .get(name)
            .and_then(|e| e.base.as_ref().ok())
            .is_some_and(|b| b.live_numa_cpus)
    }

    /// Whether `request` would fit node `name` once the pods with UIDs in `evicted` are gone.
    /// `None` for a node without a usable inventory.
    pub fn fits_without(
        &self,
        name: &str,
        evicted: &HashSet<&str>,
        request: &PodRequest,
    ) -> Option<Result<(), Unfit>> {
        let state = self.compute_state(name, evicted)?;
        Some(placement::fits(&state, request))
    }

    /// A node's state from its inventory, its pods (but those in `excluded`) and its
    /// reservations. Pods with an annotation go first (they hold real devices), then
    /// reservations, then GPU pods we have no record of devices for, which are given the
    /// first feasible placement so that counts stay right.
    fn compute_state(&self, name: &str, excluded: &HashSet<&str>) -> Option<NodeState> {
        let entry = self.nodes.get(name)?;
        let base = entry.base.as_ref().ok()?;
        let mut state = base.state.clone();
        let live = base.live_numa_cpus;
        // Running pods' pinned CPUs are already out of a live NUMA report;
        // only in-flight reservations must still be taken from it.
        let pod_numa = |c: Candidate| {
            if live {
                Candidate { numa: None, ..c }
            } else {
                c
            }
        };
        let mut unplaced: Vec<&str> = Vec::new();
        let empty = BTreeSet::new();
        for uid in self.on_node.get(name).unwrap_or(&empty) {
            if excluded.contains(uid.as_str()) {
                continue;
            }
            let Some(pod) = self.pods.get(uid) else {
                continue;
            };
            if self.reservations.get(uid).is_some_and(|r| r.node == name) {
                continue;
            }
            let req = &pod.request;
            let placed = if req.gpu.is_none() {
                let none = Candidate {
                    choice: DeviceChoice::None,
                    numa: None,
                };
                placement::apply(&mut state, req, &none).is_ok()
            } else {
                pod.annotated_for(name).is_some_and(|ann| {
                    match ann
                        .to_candidate(&state, &req.gpu)
                        .map_err(|e| e.to_string())
                        .and_then(|c| {
                            placement::apply(&mut state, req, &pod_numa(c))
                                .map_err(|e| e.to_string())
                        }) {
                        Ok(()) => true,
                        Err(error) => {
                            tracing::warn!(pod_uid = %uid, pod = %pod.name, node = %name, %error,
                                "devices annotation does not apply to the node; assuming a placement");
                            false
                        }
                    }
                })
            };
            if !placed {
                unplaced.push(uid);
            }
        }
        for (uid, r) in self.reservations.on_node(name) {
            if let Err(error) = placement::apply(&mut state, &r.request, &r.candidate) {
                tracing::warn!(pod_uid = %uid, node = %name, %error, "reservation no longer applies");
            }
        }
        for uid in unplaced {
            let Some(pod) = self.pods.get(uid) else {
                continue;
            };
            let first = placement::candidates(&state, &pod.request)
                .ok()
                .and_then(|c| c.into_iter().next());
            let applied = first
                .is_some_and(|c| placement::apply(&mut state, &pod.request, &pod_numa(c)).is_ok());
            if !applied {
                // Overcommitted (or devices unknown): still count CPU and memory.
                state.cpu_free_milli = state.cpu_free_milli.saturating_sub(pod.request.cpu_milli);
                state.memory_free_mib =
                    state.memory_free_mib.saturating_sub(pod.request.memory_mib);
                tracing::warn!(pod_uid = %uid, pod = %pod.name, node = %name,
                    "bound pod does not fit its node's recorded free devices");
            }
        }
        Some(state)
    }
}

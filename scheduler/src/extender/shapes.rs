//! Nodes in the same state share one memo of evaluations. A cluster's GPU nodes are mostly
//! alike (empty, full, or filled the same way by this very policy), so the first pod of a new
//! request shape is evaluated once per distinct node state rather than once per node.
//!
//! States are compared exactly, after blanking what cannot change an evaluation: the node's
//! name and its device UUIDs (placements name GPUs by position). A policy that draws per node
//! (`random`) keeps them, so its nodes never share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use kubesched_core::fragmentation::{self, NodeFrag};
use kubesched_core::node::{GpuSlots, NodeState};
use kubesched_core::placement::Unfit;
use kubesched_core::request::PodRequest;
use kubesched_core::scoring::Choice;

/// Memoised outcomes kept per state; a state rarely sees more request shapes than this
/// before it changes.
pub const MEMO_CAPACITY: usize = 32;

/// Interned states between two sweeps of the ones no node is in any more.
const SWEEP_EVERY: usize = 4096;

/// One distinct node state and what has been worked out for it.
pub struct Shape {
    state: NodeState,
    memo: Mutex<Memo>,
}

/// Evaluations of one state, for one workload generation.
#[derive(Default)]
pub struct Memo {
    /// The workload generation the entries below were computed for.
    workload_gen: u64,
    /// `NodeFrag::new(state, workload)`, once computed.
    frag: Option<Arc<NodeFrag>>,
    /// A policy's choice (or why the pod does not fit) per request, with the request's
    /// [`request_key`], oldest first.
    outcomes: Vec<(u64, PodRequest, Result<Choice, Unfit>)>,
}

/// A hash of a request, computed once per verb call: memo lookups compare it before the
/// request itself (thousands of nodes, up to [`MEMO_CAPACITY`] entries each).
pub fn request_key(request: &PodRequest) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::default().hash_one(request)
}

impl Memo {
    /// Drops everything computed against another workload generation.
    pub fn for_generation(&mut self, workload_gen: u64) {
        if self.workload_gen != workload_gen {
            self.outcomes.clear();
            self.frag = None;
            self.workload_gen = workload_gen;
        }
    }

    /// Where the outcome for `request` (whose [`request_key`] is `key`) is, if known.
    fn find(&self, key: u64, request: &PodRequest) -> Option<usize> {
        self.outcomes
            .iter()
            .rposition(|(k, r, _)| *k == key && r == request)
    }

    /// The outcome for `request` (whose [`request_key`] is `key`), computed by `compute`
    /// (given the memo's `NodeFrag` slot) and recorded when not known yet.
    pub fn get_or_compute(
        &mut self,
        key: u64,
        request: &PodRequest,
        compute: impl FnOnce(&mut Option<Arc<NodeFrag>>) -> Result<Choice, Unfit>,
    ) -> &Result<Choice, Unfit> {
        let index = match self.find(key, request) {
            Some(index) => index,
            None => {
                let outcome = compute(&mut self.frag);
                self.push(key, request.clone(), outcome)
            }
        };
        &self.outcomes[index].2
    }

    /// Records an outcome, evicting the oldest past [`MEMO_CAPACITY`]; returns its index.
    fn push(&mut self, key: u64, request: PodRequest, outcome: Result<Choice, Unfit>) -> usize {
        if self.outcomes.len() >= MEMO_CAPACITY {
            let _evicted = self.outcomes.remove(0);
        }
        self.outcomes.push((key, request, outcome));
        self.outcomes.len() - 1
    }
}

impl Shape {
    /// The state, identity blanked (unless kept): what evaluations run on.
    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// The memo, locked (a panic while it was held leaves it usable).
    pub fn memo(&self) -> MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The distinct node states in use, found by an exact comparison within a hash bucket.
pub struct Shapes {
    buckets: HashMap<u64, Vec<Weak<Shape>>>,
    keep_identity: bool,
    since_sweep: usize,
}

impl Shapes {
    /// No states yet. `keep_identity`: the policy's outcome depends on which node it is, so
    /// nodes never share.
    pub fn new(keep_identity: bool) -> Self {
        Shapes {
            buckets: HashMap::new(),
            keep_identity,
            since_sweep: 0,
        }
    }

    /// The shared entry for `state`: an existing one for an equal state, else a new one.
    pub fn intern(&mut self, state: &NodeState) -> Arc<Shape> {
        let canonical = self.canonical(state);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.sweep();
        }
        let bucket = self
            .buckets
            .entry(fragmentation::state_key(&canonical))
            .or_default();
        bucket.retain(|w| w.strong_count() > 0);
        if let Some(shape) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.state == canonical)
        {
            return shape;
        }
        let shape = Arc::new(Shape {
            state: canonical,
            memo: Mutex::new(Memo::default()),
        });
        bucket.push(Arc::downgrade(&shape));
        shape
    }

    /// Distinct states some node is in.
    pub fn live(&self) -> usize {
        self.buckets
            .values()
            .flatten()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    fn sweep(&mut self) {
        self.since_sweep = 0;
        self.buckets.retain(|_, bucket| {
            bucket.retain(|w| w.strong_count() > 0);
            !bucket.is_empty()
        });
    }

    fn canonical(&self, state: &NodeState) -> NodeState {
        let mut out = state.clone();
        if self.keep_identity {
            return out;
        }
        let blank: Arc<str> = Arc::from("");
        out.name.clear();
        for gpu in &mut out.gpus {
            gpu.uuid = blank.clone();
            if let GpuSlots::Mig(m) = &mut gpu.slots {
                for (_, uuid) in &mut m.uuids {
                    *uuid = blank.clone();
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesched_core::node::GpuState;

    fn node(name: &str, used_milli: u32) -> NodeState {
        let mut n = NodeState::new(name, 8000, 16384);
        for i in 0..2 {
            n.gpus.push(GpuState::plain(
                i,
                &format!("GPU-{name}-{i}"),
                "L4",
                Some(0),
            ));
        }
        if let GpuSlots::Plain { used_milli: used } = &mut n.gpus[0].slots {
            *used = used_milli;
        }
        n
    }

    #[test]
    fn equal_states_share_whatever_their_names_and_uuids() {
        let mut shapes = Shapes::new(false);
        let a = shapes.intern(&node("a", 0));
        let b = shapes.intern(&node("b", 0));
        let c = shapes.intern(&node("c", 500));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(shapes.live(), 2);
        assert_eq!(a.state().name, "");
        assert!(a.state().gpus.iter().all(|g| g.uuid.is_empty()));
    }

    #[test]
    fn identity_kept_means_no_sharing() {
        let mut shapes = Shapes::new(true);
        let a = shapes.intern(&node("a", 0));
        let b = shapes.intern(&node("b", 0));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a.state().name, "a");
    }

    #[test]
    fn states_no_node_holds_are_forgotten() {
        let mut shapes = Shapes::new(false);
        let a = shapes.intern(&node("a", 0));
        let kept = shapes.intern(&node("b", 100));
        drop(a);
        assert_eq!(shapes.live(), 1);
        // Each state distinct and gone at once: only a sweep keeps the table small.
        for i in 0..SWEEP_EVERY as u64 {
            drop(shapes.intern(&NodeState::new("x", 10_000 + i, 1)));
        }
        assert!(
            shapes.buckets.len() < 10,
            "{} buckets",
            shapes.buckets.len()
        );
        assert!(Arc::ptr_eq(&kept, &shapes.intern(&node("c", 100))));
    }

    #[test]
    fn a_memo_is_dropped_with_its_workload_generation() {
        let mut memo = Memo::default();
        memo.for_generation(1);
        let request = |i: usize| PodRequest::cpu_only(i as u64, 0);
        for i in 0..MEMO_CAPACITY + 3 {
            let unfit = Err(Unfit::Cpu {
                need: i as u64,
                free: 0,
            });
            memo.push(request_key(&request(i)), request(i), unfit);
        }
        assert_eq!(memo.outcomes.len(), MEMO_CAPACITY);
        assert_eq!(memo.find(request_key(&request(2)), &request(2)), None);
        let newest = memo.find(
            request_key(&request(MEMO_CAPACITY + 2)),
            &request(MEMO_CAPACITY + 2),
        );
        assert_eq!(newest, Some(MEMO_CAPACITY - 1));
        // The key only narrows the search: the request itself must match.
        assert_eq!(memo.find(request_key(&request(5)), &request(6)), None);
        memo.for_generation(1);
        assert_eq!(memo.outcomes.len(), MEMO_CAPACITY);
        memo.for_generation(2);
        assert!(memo.outcomes.is_empty());
    }
}

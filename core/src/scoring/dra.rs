//! `nvidia-dra`: a model of NVIDIA's DRA driver for GPUs (k8s-dra-driver-gpu) under
//! Kubernetes' structured-parameters allocator (churn.md §3, "NVIDIA DRA driver"), which this
//! file owns:
//!
//! - the node is chosen by kube-scheduler's default scoring, which does not see DRA devices:
//!   NodeResourcesFit's `LeastAllocated` over CPU and memory (each resource scores
//!   (allocatable − requested after placing) × 100 / allocatable in integers, zero requests
//!   counted as kube-scheduler's non-zero defaults of 100m and 200Mi, and the node's score is
//!   their integer mean), ties at random;
//! - on the node the allocator takes the first device that fits in ResourceSlice order (it
//!   does not score devices; KEP-4970 deferred that): GPUs in order, and on each GPU its
//!   placements by ascending start, i.e. the lowest GPU position, then the lowest start.
//!
//! The integer node score carries the device order as a fraction below 1 (higher for earlier
//! devices), and `normalize` drops it, so nodes compare on the integer as kube-scheduler
//! returns it. A model: the other default score plugins (BalancedAllocation, affinities,
//! spreading, image locality) are left out, and so are the pods already on the node being
//! counted at their non-zero defaults.

use super::{Policy, ScoreContext, TieBreak, first_slot, truncate};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::PodRequest;

/// kube-scheduler's `MaxNodeScore`.
const MAX_NODE_SCORE: u64 = 100;
/// CPU kube-scheduler's scoring counts for a pod that requests none, in millicores.
const DEFAULT_CPU_MILLI: u64 = 100;
/// Memory kube-scheduler's scoring counts for a pod that requests none, in MiB.
const DEFAULT_MEMORY_MIB: u64 = 200;

/// The `nvidia-dra` policy: kube-scheduler's least-allocated CPU and memory score across
/// nodes, ties at random, and on the node the first device in ResourceSlice order.
#[derive(Debug, Clone, Copy, Default)]
pub struct NvidiaDra;

/// kube-scheduler's `leastRequestedScore`: (capacity − requested) × 100 / capacity in
/// integers, with `requested` what is already held plus the pod's `request`; 0 when the node
/// has none of the resource or the pod would not fit.
fn least_requested(free: u64, request: u64, capacity: u64) -> u64 {
    if capacity == 0 {
        return 0;
    }
    let requested = capacity.saturating_sub(free).saturating_add(request);
    if requested > capacity {
        return 0;
    }
    let score =
        u128::from(capacity - requested) * u128::from(MAX_NODE_SCORE) / u128::from(capacity);
    u64::try_from(score).unwrap_or(MAX_NODE_SCORE)
}

impl Policy for NvidiaDra {
    fn name(&self) -> &'static str {
        "nvidia-dra"
    }

    fn score(
        &self,
        node: &NodeState,
        req: &PodRequest,
        cand: &Candidate,
        _ctx: &ScoreContext,
    ) -> (f64, String) {
        let (cpu_cap, memory_cap) = (node.cpu_allocatable_milli, node.memory_allocatable_mib);
        let cpu_req = if req.cpu_milli == 0 {
            DEFAULT_CPU_MILLI
        } else {
            req.cpu_milli
        };
        let memory_req = if req.memory_mib == 0 {
            DEFAULT_MEMORY_MIB
        } else {
            req.memory_mib
        };
        let cpu = least_requested(node.cpu_free_milli, cpu_req, cpu_cap);
        let memory = least_requested(node.memory_free_mib, memory_req, memory_cap);
        let node_score = (cpu + memory) / 2;
        let (gpu, start) = first_slot(cand);
        // In (0, 1/2]: the earlier the device in ResourceSlice order, the larger.
        let order = 1.0 / (2.0 + gpu as f64 * 8.0 + f64::from(start));
        (
            node_score as f64 + order,
            format!(
                "least allocated {node_score} (cpu {cpu}, memory {memory}); first device: \
                 GPU #{gpu} position {start}"
            ),
        )
    }

    /// Nodes compare on kube-scheduler's integer score: the device order is dropped.
    fn normalize(&self, scores: &mut [f64]) {
        truncate(scores);
    }

    fn tie_break(&self) -> TieBreak {
        TieBreak::Random
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{self, DeviceChoice};
    use crate::scoring::mig_test::{h100_node, pick, put, slice, slots};

    #[test]
    fn dra_takes_the_first_device_and_the_least_allocated_node() {
        let mut node = h100_node("n", 2);
        put(&mut node, 0, "1g.10gb", 3);
        let policy = NvidiaDra;
        assert_eq!(slots(&pick(&policy, &node, &slice("1g.10gb", 1))), [(0, 0)]);
        // GPU 1 is empty, but GPU 0 still has a 3g placement (at 4) and comes first.
        assert_eq!(slots(&pick(&policy, &node, &slice("3g.40gb", 1))), [(0, 4)]);

        // 32 CPUs and 64 GiB, first seen empty: a 1-CPU, 1-GiB pod leaves
        // cpu (32000 − 1000) × 100 / 32000 = 96 and memory (65536 − 1024) × 100 / 65536 = 98.
        let policy = NvidiaDra;
        let mut node = h100_node("a", 1);
        let one = slice("1g.10gb", 1);
        let on_empty = pick(&policy, &node, &one);
        assert_eq!(on_empty.score.trunc(), 97.0);
        assert!(on_empty.score.fract() > 0.0, "{}", on_empty.score);
        // Half the node's CPU and memory taken: 46 and 48.
        let half = PodRequest::cpu_only(16_000, 32_768);
        let none = Candidate {
            choice: DeviceChoice::None,
            numa: None,
        };
        placement::apply(&mut node, &half, &none).unwrap();
        let on_half = pick(&policy, &node, &one);
        assert_eq!(on_half.score.trunc(), 47.0);
        let mut scores = [on_empty.score, on_half.score];
        policy.normalize(&mut scores);
        assert_eq!(scores, [97.0, 47.0]);
        assert_eq!(policy.tie_break(), TieBreak::Random);
    }

    #[test]
    fn least_requested_is_zero_without_room_or_capacity() {
        assert_eq!(least_requested(0, 1, 0), 0);
        assert_eq!(least_requested(500, 1000, 1000), 0);
        assert_eq!(least_requested(1000, 0, 1000), 100);
        assert_eq!(least_requested(u64::MAX / 4, 0, u64::MAX / 4), 100);
    }
}

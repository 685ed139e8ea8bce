//! The production policy: FGD's fragmentation delta, unquantised, plus NUMA
//! alignment and a packing tie-breaker.
//!
//! - the fragmentation increase, in milli-GPU, is the main term;
//! - a placement that keeps devices and pinned CPUs on one NUMA node is
//!   preferred (under `none`/`best-effort` the kubelet would not enforce it,
//!   but the pod runs faster);
//! - among equal deltas, fuller nodes win so that empty nodes stay empty for
//!   large requests.

use super::{Policy, ScoreContext, frag_before_after};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::{GpuDemand, PodRequest};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProductionWeights {
    /// Score per milli-GPU of fragmentation increase (negative effect).
    pub fragmentation: f64,
    /// Bonus for a NUMA-aligned GPU placement, in the same units.
    pub numa_alignment: f64,
    /// Bonus per milli-GPU already allocated on the node (packing).
    pub packing: f64,
}

impl Default for ProductionWeights {
    fn default() -> Self {
        ProductionWeights {
            fragmentation: 1.0,
            numa_alignment: 50.0,
            packing: 0.01,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Production {
    pub weights: ProductionWeights,
}

impl Policy for Production {
    fn name(&self) -> &'static str {
        "kubesched"
    }

    fn score(
        &self,
        node: &NodeState,
        req: &PodRequest,
        cand: &Candidate,
        ctx: &ScoreContext,
    ) -> (f64, String) {
        let w = &self.weights;
        let (before, after) = frag_before_after(node, req, cand, ctx);
        let delta = after - before;
        let has_numa = !node.numa.is_empty() && !matches!(req.gpu, GpuDemand::None);
        let aligned = has_numa && cand.numa.is_some();
        let used = (node.capacity_milli() - node.free_milli()) as f64;
        let score = -w.fragmentation * delta
            + if aligned { w.numa_alignment } else { 0.0 }
            + w.packing * used;
        let numa = match (has_numa, cand.numa) {
            (false, _) => String::new(),
            (true, Some(n)) => format!(", aligned on NUMA {n}"),
            (true, None) => ", not NUMA-aligned".to_string(),
        };
        (
            score,
            format!("fragmentation {before:.0}m -> {after:.0}m (delta {delta:+.0}m){numa}"),
        )
    }
}

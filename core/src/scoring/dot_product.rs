//! Dot product (Tetris-style), as the ATC '23 artifact configures it for its
//! baseline (merged GPU dimension, max-spec normalisation): the node's free
//! (CPU, GPU) vector dotted with the pod's request; a smaller product scores
//! higher. The GPU inside the node is the tightest that fits.

use super::{MAX_SPEC_CPU, MAX_SPEC_GPU, Policy, ScoreContext, TieBreak, tightness, truncate};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::PodRequest;

/// The `dot-product` policy: the smallest product of the node's free (CPU, GPU) and the
/// pod's request wins (ATC '23 artifact's baseline).
#[derive(Debug, Clone, Copy, Default)]
pub struct DotProduct;

impl Policy for DotProduct {
    fn name(&self) -> &'static str {
        "dot-product"
    }

    fn score(
        &self,
        node: &NodeState,
        req: &PodRequest,
        cand: &Candidate,
        _ctx: &ScoreContext,
    ) -> (f64, String) {
        let node_vec = [
            node.cpu_free_milli as f64 / MAX_SPEC_CPU,
            node.free_milli() as f64 / MAX_SPEC_GPU,
        ];
        let pod_vec = [
            req.cpu_milli as f64 / MAX_SPEC_CPU,
            req.gpu.milli() as f64 / MAX_SPEC_GPU,
        ];
        let dot = (node_vec[0] * pod_vec[0] + node_vec[1] * pod_vec[1]) / 2.0;
        (
            ((1.0 - dot) * 100.0).trunc() + tightness(node, cand),
            format!("dot product {dot:.4}"),
        )
    }

    fn normalize(&self, scores: &mut [f64]) {
        truncate(scores);
    }

    /// The artifact's scheduler gives ties to the smallest node name, and
    /// node names carry a per-seed random prefix: a fixed node order.
    fn tie_break(&self) -> TieBreak {
        TieBreak::First
    }
}

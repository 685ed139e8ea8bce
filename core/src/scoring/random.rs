//! Random fit: a uniformly random feasible node and GPU, drawn from the
//! per-pod seed so runs are reproducible.

use std::hash::{Hash, Hasher};

use super::{Policy, ScoreContext, mix};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::PodRequest;

/// The `random` policy: a uniformly random feasible node and placement, reproducible from
/// the per-pod seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn score(
        &self,
        node: &NodeState,
        _req: &PodRequest,
        cand: &Candidate,
        ctx: &ScoreContext,
    ) -> (f64, String) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        node.name.hash(&mut h);
        cand.choice.hash(&mut h);
        let draw = mix(ctx.seed ^ h.finish());
        (
            (draw >> 11) as f64 / (1u64 << 53) as f64,
            "random draw".to_string(),
        )
    }

    /// The draw mixes in the node's name.
    fn uses_node_identity(&self) -> bool {
        true
    }
}

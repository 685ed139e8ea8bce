//! FGD, as the ATC '23 artifact scores it: the decrease of the node's expected
//! fragmentation, squashed as ⌊sigmoid(-Δ/1000)·100⌋, so nodes whose deltas
//! differ by less than a step tie (and the scheduler breaks the tie).

use super::{Policy, ScoreContext, TieBreak, frag_before_after};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::PodRequest;

/// The `fgd` policy: the placement that adds the least expected fragmentation wins (ATC '23
/// artifact's scoring).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fgd;

impl Policy for Fgd {
    fn name(&self) -> &'static str {
        "fgd"
    }

    fn score(
        &self,
        node: &NodeState,
        req: &PodRequest,
        cand: &Candidate,
        ctx: &ScoreContext,
    ) -> (f64, String) {
        let (before, after) = frag_before_after(node, req, cand, ctx);
        let delta = after - before;
        let score = (sigmoid(-delta / 1000.0) * 100.0).floor();
        (
            score,
            format!("fragmentation {before:.0}m -> {after:.0}m (delta {delta:+.0}m)"),
        )
    }

    /// The artifact's scheduler gives ties to the smallest node name, and
    /// node names carry a per-seed random prefix: a fixed node order.
    fn tie_break(&self) -> TieBreak {
        TieBreak::First
    }
}

pub(crate) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

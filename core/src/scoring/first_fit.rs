//! `first-fit`, the plainest MIG baseline (churn.md §3, "First fit"): the first node in the
//! caller's order that fits, on it the lowest GPU position, and on that GPU the lowest legal
//! start. This file owns that rule and nothing else; it models no one project's code but the
//! rule a scheduler without placement scoring ends up with.
//!
//! For several slices, `placement::candidates` offers greedy lowest-start fills; they are
//! ranked by their first slice.

use super::{Policy, ScoreContext, TieBreak, first_slot, in_order_score};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::PodRequest;

/// The `first-fit` policy: the first node in order, the lowest GPU and the lowest start.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstFit;

impl Policy for FirstFit {
    fn name(&self) -> &'static str {
        "first-fit"
    }

    fn score(
        &self,
        _node: &NodeState,
        _req: &PodRequest,
        cand: &Candidate,
        _ctx: &ScoreContext,
    ) -> (f64, String) {
        let (gpu, start) = first_slot(cand);
        (
            in_order_score(gpu, start, false),
            format!("first fit: GPU #{gpu} position {start}"),
        )
    }

    /// Nodes are not ranked: the first one in order that fits wins.
    fn normalize(&self, scores: &mut [f64]) {
        scores.fill(0.0);
    }

    fn tie_break(&self) -> TieBreak {
        TieBreak::First
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::mig_test::{h100_node, pick, put, slice, slots};

    #[test]
    fn first_fit_takes_the_lowest_gpu_then_the_lowest_start() {
        let mut node = h100_node("n", 2);
        put(&mut node, 0, "1g.10gb", 0);
        assert_eq!(
            slots(&pick(&FirstFit, &node, &slice("1g.10gb", 1))),
            [(0, 1)]
        );
        // GPU 1 is empty and offers start 0, but GPU 0 comes first.
        assert_eq!(
            slots(&pick(&FirstFit, &node, &slice("3g.40gb", 1))),
            [(0, 4)]
        );
        // Across nodes: no ranking, the first in order.
        let mut scores = [3.0, 5.0];
        FirstFit.normalize(&mut scores);
        assert_eq!(scores, [0.0, 0.0]);
        assert_eq!(FirstFit.tie_break(), TieBreak::First);
    }
}

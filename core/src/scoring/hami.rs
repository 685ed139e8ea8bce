//! `hami`: a model of HAMi's current dynamic-MIG placement (PR #2855, 2026; churn.md §3,
//! "HAMi, dynamic MIG"), which this file owns:
//!
//! - each candidate position is scored by the longest run of free memory positions it leaves
//!   on the GPU once placed, then by how many legal placements survive there (every profile of
//!   the geometry but the `+me` variants, counted as `MigGpu::placements`); for several slices
//!   the terms are summed over the GPUs touched;
//! - the node is HAMi's default node policy, binpack: the node with the largest share of its
//!   GPU already allocated (before placing) wins, the first in order on ties. The node term
//!   dominates the score (×1e9, against ×1e3 for the free run and ×1 for the survivors), so
//!   it orders nodes and the position terms only order candidates within one.
//!
//! A model, not HAMi's code. Left out: HAMi places the profile with the fewest free legal
//! positions first when a container asks for several profiles (a pod here asks for one), and
//! falls back to a backtracking search (4096 candidates) when a greedy plan of several slices
//! fails; here `placement::candidates` already offers the joint placements and the score
//! picks among them. HAMi's own node score (device count, cores and memory used) is reduced to
//! the allocated share, and the GPU is not chosen by HAMi's GPU policy but by the same
//! position score, which favours emptier GPUs much as its default `spread` does. In static MIG
//! mode positions held by pods count as used and free static instances as placements.

use super::{Policy, ScoreContext, TieBreak, mig_layout};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::PodRequest;

/// Weight of the node's allocated share: above any sum of the position terms.
const NODE_WEIGHT: f64 = 1e9;
/// Weight of the longest free run: above any count of surviving placements.
const RUN_WEIGHT: f64 = 1e3;

/// The `hami` policy: binpack across nodes, and on a node the position that leaves the longest
/// free run, then the most legal placements.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hami;

impl Policy for Hami {
    fn name(&self) -> &'static str {
        "hami"
    }

    fn score(
        &self,
        node: &NodeState,
        _req: &PodRequest,
        cand: &Candidate,
        _ctx: &ScoreContext,
    ) -> (f64, String) {
        let capacity = node.capacity_milli();
        let used = if capacity == 0 {
            0.0
        } else {
            capacity.saturating_sub(node.free_milli()) as f64 / capacity as f64
        };
        let (run, survivors) = mig_layout::leaves(node, cand);
        (
            used * NODE_WEIGHT + f64::from(run) * RUN_WEIGHT + f64::from(survivors),
            format!(
                "node {:.1}% GPU allocated; leaves a free run of {run} position(s) and \
                 {survivors} legal placement(s)",
                used * 100.0
            ),
        )
    }

    fn tie_break(&self) -> TieBreak {
        TieBreak::First
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::HamiLegacy;
    use crate::scoring::mig_test::{h100_node, pick, put, slice, slots};

    #[test]
    fn hami_keeps_the_longest_free_run_then_the_most_placements_and_packs_nodes() {
        // A 1g slice at 0: the next 1g at 1 leaves positions 2-7 free in one run, where the
        // rule before #2855 took the highest start.
        let mut node = h100_node("n", 1);
        put(&mut node, 0, "1g.10gb", 0);
        let one = slice("1g.10gb", 1);
        assert_eq!(slots(&pick(&Hami, &node, &one)), [(0, 1)]);
        assert_eq!(slots(&pick(&HamiLegacy, &node, &one)), [(0, 6)]);
        // A 3g slice on an empty GPU leaves a run of 4 either way; at 4 it leaves 10 legal
        // placements (4 + 2 + 2 + 1 + 1), at 0 only 7 (3 + 2 + 1 + 1).
        let empty = h100_node("e", 1);
        let three = pick(&Hami, &empty, &slice("3g.40gb", 1));
        assert_eq!(slots(&three), [(0, 4)]);
        assert_eq!(three.score, 4.0 * RUN_WEIGHT + 10.0);
        // Binpack: the same slice scores higher on the node with more GPU allocated.
        let mut fuller = h100_node("b", 2);
        put(&mut fuller, 0, "1g.10gb", 0);
        let on_empty = pick(&Hami, &h100_node("a", 2), &one);
        let on_fuller = pick(&Hami, &fuller, &one);
        assert!(
            on_fuller.score > on_empty.score,
            "{} vs {}",
            on_fuller.score,
            on_empty.score
        );
        assert_eq!(Hami.tie_break(), TieBreak::First);
    }
}

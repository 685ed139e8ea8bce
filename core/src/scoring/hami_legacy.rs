//! `hami-legacy`: HAMi's dynamic-MIG placement rule before its 2026 PR #2855 (churn.md §3,
//! "HAMi, dynamic MIG", the rule that PR replaced): 1g and 3g profiles (1 or 3 compute
//! slices) go to the highest free legal start of the GPU, every other profile to the lowest.
//! This file owns that rule, with the first node in order and the lowest GPU position, as
//! `first-fit` takes them. It was called `highest-start` here before, which put every profile
//! at the highest start; that name is kept as an alias.
//!
//! For several slices, `placement::candidates` offers greedy lowest-start fills; they are
//! ranked by their first slice.

use super::{Policy, ScoreContext, TieBreak, first_slot, in_order_score};
use crate::node::{GpuSlots, NodeState};
use crate::placement::{Candidate, DeviceChoice};
use crate::request::PodRequest;

/// The `hami-legacy` policy: the first node in order, the lowest GPU, and on it 1g and 3g
/// slices at the highest free start, others at the lowest.
#[derive(Debug, Clone, Copy, Default)]
pub struct HamiLegacy;

/// Whether the candidate's (first) slice is of a profile HAMi placed at the highest start:
/// one with 1 or 3 compute slices.
fn from_the_top(node: &NodeState, cand: &Candidate) -> bool {
    let DeviceChoice::Mig(picks) = &cand.choice else {
        return false;
    };
    let Some(pick) = picks.first() else {
        return false;
    };
    match node.gpus.get(pick.gpu).map(|g| &g.slots) {
        Some(GpuSlots::Mig(m)) => m
            .gpu
            .geometry()
            .profiles
            .get(pick.profile)
            .is_some_and(|p| matches!(p.compute_slices, 1 | 3)),
        _ => false,
    }
}

impl Policy for HamiLegacy {
    fn name(&self) -> &'static str {
        "hami-legacy"
    }

    fn score(
        &self,
        node: &NodeState,
        _req: &PodRequest,
        cand: &Candidate,
        _ctx: &ScoreContext,
    ) -> (f64, String) {
        let (gpu, start) = first_slot(cand);
        let top = from_the_top(node, cand);
        (
            in_order_score(gpu, start, top),
            format!(
                "HAMi before #2855: GPU #{gpu} position {start} ({} free start)",
                if top { "highest" } else { "lowest" }
            ),
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
    fn one_and_three_slice_profiles_go_high_the_others_low_on_the_lowest_gpu() {
        let mut node = h100_node("n", 2);
        // GPU 1 differs from GPU 0, so both are offered.
        put(&mut node, 1, "1g.10gb", 3);
        let on = |profile: &str| slots(&pick(&HamiLegacy, &node, &slice(profile, 1)));
        assert_eq!(on("1g.10gb"), [(0, 6)]);
        assert_eq!(on("1g.20gb"), [(0, 6)]);
        assert_eq!(on("3g.40gb"), [(0, 4)]);
        assert_eq!(on("2g.20gb"), [(0, 0)]);
        assert_eq!(on("4g.40gb"), [(0, 0)]);
        let mut scores = [3.0, 5.0];
        HamiLegacy.normalize(&mut scores);
        assert_eq!(scores, [0.0, 0.0]);
        assert_eq!(HamiLegacy.tie_break(), TieBreak::First);
    }
}

//! `mig-best-fit`, the best-fit MIG baseline (churn.md §3, "Best fit"), which this file owns:
//! the GPU left with the least free share, then the node left with the least free GPU. It
//! models the textbook best-fit rule rather than one project's code.

use super::{Policy, ScoreContext};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::PodRequest;

/// The `mig-best-fit` policy: the GPU left with the least free share, then the node left with
/// the least free GPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct MigBestFit;

impl Policy for MigBestFit {
    fn name(&self) -> &'static str {
        "mig-best-fit"
    }

    fn score(
        &self,
        node: &NodeState,
        _req: &PodRequest,
        cand: &Candidate,
        _ctx: &ScoreContext,
    ) -> (f64, String) {
        let touched = cand.choice.gpus();
        let gpu_free: u32 = touched
            .iter()
            .filter_map(|&g| node.gpus.get(g))
            .map(|g| g.free_milli())
            .sum();
        let node_free = node.free_milli() as f64;
        // The GPU's leftover dominates; the node's breaks ties between GPUs.
        (
            -(f64::from(gpu_free) * 100.0 + node_free / 100.0),
            format!("GPU free {gpu_free}m, node free {node_free:.0}m"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::mig_test::{h100_node, pick, put, slice, slots};

    #[test]
    fn mig_best_fit_fills_the_fuller_gpu_first() {
        let mut node = h100_node("n", 2);
        // A 3g slice on GPU 1: it is now the GPU with less left.
        put(&mut node, 1, "3g.40gb", 4);
        let one = slice("1g.10gb", 1);
        let choice = pick(&MigBestFit, &node, &one);
        assert_eq!(slots(&choice)[0].0, 1, "{:?}", choice.candidate);
        // The same slice on an empty pair of GPUs scores lower than on the fuller node.
        let on_empty = pick(&MigBestFit, &h100_node("e", 2), &one);
        assert!(
            choice.score > on_empty.score,
            "{} vs {}",
            choice.score,
            on_empty.score
        );
    }
}

//! Best fit, as the ATC '23 artifact scores it: the least CPU and GPU left on
//! the node after placement, each normalised by a maximal node spec and
//! weighted 1/2; the GPU with the least free share that fits is used.
//! Integer scores, min-max normalised across nodes like the artifact's plugin.

use super::{MAX_SPEC_CPU, MAX_SPEC_GPU, Policy, ScoreContext, TieBreak, tightness};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::PodRequest;

/// The `best-fit` policy: the node left with the least CPU and GPU free wins (ATC '23
/// artifact's scoring).
#[derive(Debug, Clone, Copy, Default)]
pub struct BestFit;

impl Policy for BestFit {
    fn name(&self) -> &'static str {
        "best-fit"
    }

    fn score(
        &self,
        node: &NodeState,
        req: &PodRequest,
        cand: &Candidate,
        _ctx: &ScoreContext,
    ) -> (f64, String) {
        let cpu_left = node.cpu_free_milli.saturating_sub(req.cpu_milli) as f64;
        let gpu_left = node.free_milli().saturating_sub(req.gpu.milli()) as f64;
        let waste = 0.5 * cpu_left / MAX_SPEC_CPU + 0.5 * gpu_left / MAX_SPEC_GPU;
        let node_score = ((1.0 - waste) * 100.0).trunc();
        (
            node_score + tightness(node, cand),
            format!("leaves {cpu_left:.0}m CPU and {gpu_left:.0}m GPU free"),
        )
    }

    fn normalize(&self, scores: &mut [f64]) {
        let ints: Vec<i64> = scores.iter().map(|s| s.trunc() as i64).collect();
        let (lo, hi) = (
            ints.iter().copied().min().unwrap_or(0),
            ints.iter().copied().max().unwrap_or(0),
        );
        for (s, i) in scores.iter_mut().zip(ints) {
            *s = if hi == lo {
                0.0
            } else {
                ((i - lo) * 100 / (hi - lo)) as f64
            };
        }
    }

    /// The artifact's scheduler gives ties to the smallest node name, and
    /// node names carry a per-seed random prefix: a fixed node order.
    fn tie_break(&self) -> TieBreak {
        TieBreak::First
    }
}

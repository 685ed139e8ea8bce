//! Best fit, as the ATC '23 artifact scores it: the least CPU and GPU left on
//! the node after placement, each normalised by a maximal node spec and
//! weighted 1/2; the GPU with the least free share that fits is used.
//! Integer scores, min-max normalised across nodes like the artifact's plugin.

use super::{Policy, ScoreContext};
use crate::node::NodeState;
use crate::placement::{Candidate, DeviceChoice};
use crate::request::{GpuDemand, PodRequest};

/// The artifact's normalisation constants (milli-CPU, milli-GPU).
const MAX_SPEC_CPU: f64 = 128_000.0;
const MAX_SPEC_GPU: f64 = 8_000.0;

#[derive(Debug, Clone, Copy, Default)]
pub struct BestFit;

fn requested_gpu_milli(d: &GpuDemand) -> u64 {
    match d {
        GpuDemand::None => 0,
        GpuDemand::Share { milli } => u64::from(*milli),
        GpuDemand::Whole { count } => u64::from(*count) * 1000,
        GpuDemand::Mig { count, .. } => u64::from(*count) * 125,
    }
}

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
        let gpu_left = node
            .free_milli()
            .saturating_sub(requested_gpu_milli(&req.gpu)) as f64;
        let waste = 0.5 * cpu_left / MAX_SPEC_CPU + 0.5 * gpu_left / MAX_SPEC_GPU;
        let node_score = ((1.0 - waste) * 100.0).trunc();
        // Within the node: the tightest GPU (a tiny bonus below one score step).
        let tight = match cand.choice {
            DeviceChoice::Share { gpu, .. } => node
                .gpus
                .get(gpu)
                .map_or(0.0, |g| 1.0 - f64::from(g.free_milli()) / 1000.0),
            _ => 0.0,
        };
        (
            node_score + tight * 1e-3,
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
}

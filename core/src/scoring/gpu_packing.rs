//! GPU packing, as the ATC '23 artifact scores it, best first: reuse GPUs
//! already shared (the fuller the better), then take fully free GPUs on a
//! partly used node (fewer is better), then an idle node.

use super::{Policy, ScoreContext, TieBreak, tightness, truncate};
use crate::node::{GPU_MILLI, NodeState};
use crate::placement::Candidate;
use crate::request::PodRequest;

/// The `gpu-packing` policy: shared GPUs are filled first, then free GPUs on used nodes, then
/// idle nodes (ATC '23 artifact's scoring).
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuPacking;

impl Policy for GpuPacking {
    fn name(&self) -> &'static str {
        "gpu-packing"
    }

    fn score(
        &self,
        node: &NodeState,
        req: &PodRequest,
        cand: &Candidate,
        _ctx: &ScoreContext,
    ) -> (f64, String) {
        if req.gpu.is_none() {
            return (0.0, "no GPU requested".into());
        }
        let fully_free = node
            .gpus
            .iter()
            .filter(|g| g.free_milli() == GPU_MILLI)
            .count() as i64;
        let bonus = tightness(node, cand);
        if fully_free == node.gpus.len() as i64 {
            return (
                (33 - fully_free).max(fully_free) as f64 + bonus,
                "idle node".into(),
            );
        }
        let touched = cand.choice.gpus();
        let free_used: i64 = touched
            .iter()
            .filter_map(|&g| node.gpus.get(g))
            .filter(|g| g.free_milli() == GPU_MILLI)
            .count() as i64;
        if free_used > 0 {
            return (
                (50 - free_used).max(33) as f64 + bonus,
                format!("takes {free_used} free GPU(s) on a used node"),
            );
        }
        let free_pct: i64 = touched
            .iter()
            .filter_map(|&g| node.gpus.get(g))
            .map(|g| i64::from(g.free_milli()) * 100 / 1000)
            .sum();
        (
            (100 - free_pct / 10).max(50) as f64 + bonus,
            "shares a used GPU".into(),
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

//! GPU clustering, as the ATC '23 artifact scores it: pods of one GPU request
//! class go together. Bands, best first: a node running only that class; a
//! node running it among others; an idle node; a node of other classes.
//! Within a band, less free GPU is better. Classes: GPU shares, and
//! whole-GPU pods by count.

use super::{Policy, ScoreContext, TieBreak, tightness, truncate};
use crate::node::NodeState;
use crate::placement::Candidate;
use crate::request::{GpuDemand, PodRequest};

const MAX_SPEC_GPU: i64 = 8000;

/// The artifact's affinity classes: shares together, and whole-GPU pods by
/// GPU count (exact share sizes do not split a class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Affinity {
    Share,
    Gpus(u32),
    Mig,
    None,
}

fn affinity(d: &GpuDemand) -> Affinity {
    match d {
        GpuDemand::Share { .. } => Affinity::Share,
        GpuDemand::Whole { count } => Affinity::Gpus(*count),
        GpuDemand::Mig { .. } => Affinity::Mig,
        GpuDemand::None => Affinity::None,
    }
}

/// The `gpu-clustering` policy: pods go to nodes already running their GPU request class
/// (ATC '23 artifact's scoring).
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuClustering;

impl Policy for GpuClustering {
    fn name(&self) -> &'static str {
        "gpu-clustering"
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
        let left = (node.free_milli() as i64).min(MAX_SPEC_GPU);
        let within = 25 * (MAX_SPEC_GPU - left) / MAX_SPEC_GPU;
        let class = affinity(&req.gpu);
        let mut here: Vec<Affinity> = node.classes.iter().map(|(d, _)| affinity(d)).collect();
        here.sort_unstable();
        here.dedup();
        let same = here.contains(&class);
        let (band, why) = match (same, here.len()) {
            (true, 1) => (75, "only this request class here"),
            (true, _) => (50, "this class among others"),
            (false, 0) => (25, "idle node"),
            (false, _) => (0, "other classes only"),
        };
        (
            (band + within) as f64 + tightness(node, cand),
            why.to_string(),
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

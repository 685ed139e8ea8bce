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
    use crate::catalogue::mig_geometry;
    use crate::fragmentation::Workload;
    use crate::node::GpuState;
    use crate::placement::{self, DeviceChoice, MigPick};
    use crate::request::GpuDemand;

    fn slice(profile: &str) -> PodRequest {
        PodRequest {
            cpu_milli: 1000,
            memory_mib: 1024,
            gpu: GpuDemand::Mig {
                profile: profile.into(),
                count: 1,
            },
            exclusive_cpus: false,
            gpu_models: vec![],
        }
    }

    fn two_gpus() -> NodeState {
        let mut node = NodeState::new("n", 32_000, 65_536);
        for i in 0..2 {
            node.gpus.push(GpuState::dynamic_mig(
                i,
                &format!("M{i}"),
                "H100-80GB",
                Some(0),
                mig_geometry("H100-80GB").unwrap(),
            ));
        }
        node
    }

    fn gpu_of(choice: &DeviceChoice) -> Vec<MigPick> {
        match choice {
            DeviceChoice::Mig(p) => p.clone(),
            other => panic!("not a MIG choice: {other:?}"),
        }
    }

    #[test]
    fn mig_best_fit_fills_the_fuller_gpu_first() {
        let mut node = two_gpus();
        // A 3g slice on one GPU: it is now the GPU with less left.
        let three = slice("3g.40gb");
        let first = placement::candidates(&node, &three).unwrap().remove(0);
        let fuller = gpu_of(&first.choice)[0].gpu;
        placement::apply(&mut node, &three, &first).unwrap();
        // The empty GPU is offered too.
        let one = slice("1g.10gb");
        let offered: Vec<usize> = placement::candidates(&node, &one)
            .unwrap()
            .iter()
            .map(|c| gpu_of(&c.choice)[0].gpu)
            .collect();
        assert!(offered.iter().any(|g| *g != fuller), "{offered:?}");
        let workload = Workload::from_counts(vec![(one.clone(), 1)]);
        let ctx = ScoreContext {
            workload: &workload,
            seed: 0,
            frag: None,
        };
        let choice = MigBestFit.choose(&node, &one, &ctx).unwrap();
        assert_eq!(
            gpu_of(&choice.candidate.choice)[0].gpu,
            fuller,
            "{:?}",
            choice.candidate
        );
        // The same slice on an empty pair of GPUs scores higher than on a fuller node.
        let empty = two_gpus();
        let on_empty = MigBestFit.choose(&empty, &one, &ctx).unwrap();
        assert!(
            choice.score > on_empty.score,
            "{} vs {}",
            choice.score,
            on_empty.score
        );
    }
}

//! The measurements of a replay, bucketed by arrived load: after each pod,
//! the allocation ratio, fragmentation amount and ratio, averaged within
//! each whole percent of arrived GPU demand (the artifact's analysis).

use serde::Serialize;

use super::{Outcome, Replay};
use crate::request::{GpuDemand, PodRequest};

/// Means over the pod events whose arrived load rounds to one percent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Bucket {
    /// Pod events (placements and failures) that fell in this percent.
    pub events: u32,
    /// Allocated GPU share, in percent of the cluster's GPU capacity.
    pub alloc_pct: f64,
    /// Fragmented GPU share (Σ_n F_n(M)), in percent of the cluster's GPU capacity.
    pub frag_amount_pct: f64,
    /// Fragmented GPU share, in percent of the GPU share still unallocated.
    pub frag_ratio_pct: f64,
}

/// Kinds of pods that failed, as the artifact breaks them down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct FailedPods {
    pub cpu_only: u32,
    pub share: u32,
    pub one_gpu: u32,
    pub multi_gpu: u32,
    pub mig: u32,
    pub model_constrained: u32,
}

impl FailedPods {
    pub fn total(&self) -> u32 {
        self.cpu_only + self.share + self.one_gpu + self.multi_gpu + self.mig
    }

    fn count(&mut self, req: &PodRequest) {
        match &req.gpu {
            GpuDemand::None => self.cpu_only += 1,
            GpuDemand::Share { .. } => self.share += 1,
            GpuDemand::Whole { count: 1 } => self.one_gpu += 1,
            GpuDemand::Whole { .. } => self.multi_gpu += 1,
            GpuDemand::Mig { .. } => self.mig += 1,
        }
        if !req.gpu_models.is_empty() {
            self.model_constrained += 1;
        }
    }
}

/// The measurements of one replay: per-percent sums of the figures after each pod, and
/// counts of placed and failed pods.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    capacity_milli: u64,
    /// Sums per percent of arrived load, turned into means by `bucket`.
    sums: Vec<Bucket>,
    failed: FailedPods,
    /// Failures up to 100% arrived load.
    failed_by_100: FailedPods,
    placed: u32,
}

impl Curve {
    /// An empty curve for a cluster of `capacity_milli` milli-GPU.
    pub fn new(capacity_milli: u64) -> Self {
        Curve {
            capacity_milli,
            sums: Vec::new(),
            failed: FailedPods::default(),
            failed_by_100: FailedPods::default(),
            placed: 0,
        }
    }

    /// Records the cluster's figures after `req` met `outcome`, under the percent of GPU
    /// demand arrived so far.
    pub fn record(&mut self, replay: &Replay, req: &PodRequest, outcome: &Outcome) {
        let cap = self.capacity_milli.max(1) as f64;
        let arrived_pct = replay.arrived_milli() as f64 * 100.0 / cap;
        match outcome {
            Outcome::Placed { .. } => self.placed += 1,
            Outcome::Failed => {
                self.failed.count(req);
                if arrived_pct <= 100.0 {
                    self.failed_by_100.count(req);
                }
            }
        }
        let idx = arrived_pct.round() as usize;
        if self.sums.len() <= idx {
            self.sums.resize(idx + 1, Bucket::default());
        }
        let frag = replay.fragment_milli();
        let idle = (replay.capacity_milli() - replay.used_milli()) as f64;
        let b = &mut self.sums[idx];
        b.events += 1;
        b.alloc_pct += replay.used_milli() as f64 * 100.0 / cap;
        b.frag_amount_pct += frag * 100.0 / cap;
        b.frag_ratio_pct += if idle > 0.0 { frag * 100.0 / idle } else { 0.0 };
    }

    /// Mean figures at `pct` arrived load; like the artifact, falls back to
    /// the neighbouring percents when no pod event landed exactly there.
    pub fn bucket(&self, pct: usize) -> Option<Bucket> {
        let mean = |i: usize| {
            self.sums.get(i).filter(|b| b.events > 0).map(|b| {
                let n = f64::from(b.events);
                Bucket {
                    events: b.events,
                    alloc_pct: b.alloc_pct / n,
                    frag_amount_pct: b.frag_amount_pct / n,
                    frag_ratio_pct: b.frag_ratio_pct / n,
                }
            })
        };
        mean(pct)
            .or_else(|| mean(pct + 1))
            .or_else(|| pct.checked_sub(1).and_then(mean))
    }

    /// Percent points with data.
    pub fn max_pct(&self) -> usize {
        self.sums.len().saturating_sub(1)
    }

    /// Pods that could not be placed, by kind, over the whole replay.
    pub fn failed(&self) -> FailedPods {
        self.failed
    }

    /// Pods that could not be placed, by kind, counting only failures while the GPU demand
    /// arrived so far was at most 100% of capacity.
    pub fn failed_by_100(&self) -> FailedPods {
        self.failed_by_100
    }

    /// Number of pods that could not be placed on any node.
    pub fn failed_pods(&self) -> u32 {
        self.failed.total()
    }

    /// Number of pods placed.
    pub fn placed_pods(&self) -> u32 {
        self.placed
    }
}

//! A job of a timed replay: a pod request with an arrival time and how long it
//! runs once placed (a fixed duration, or compute work whose runtime follows
//! from the compute share it was granted).

use crate::node::{GPU_MILLI, GpuSlots, NodeState};
use crate::placement::{Candidate, DeviceChoice};
use crate::request::PodRequest;

/// How long a job runs once its devices are ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// A fixed run time, whatever the job was granted.
    Duration {
        /// Run time in milliseconds.
        ms: u64,
    },
    /// Compute work in milliseconds of one whole GPU: the run time is the work divided
    /// by the compute share granted (a 3g slice of a 7-slice GPU is 3/7, two whole GPUs 2).
    Work {
        /// Work in whole-GPU milliseconds.
        ms: u64,
    },
}

/// One pod of a timed workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's name, for errors and per-pod output.
    pub id: String,
    /// When the pod is created, in milliseconds from the start of the workload.
    pub arrival_ms: u64,
    /// How long it runs once placed.
    pub length: Length,
    /// What it asks for.
    pub request: PodRequest,
}

impl Job {
    /// Run time in milliseconds once placed as `cand` on `node`; at least 1 ms, so
    /// every job ends after it starts.
    pub fn runtime_ms(&self, node: &NodeState, cand: &Candidate) -> u64 {
        let ms = match self.length {
            Length::Duration { ms } => ms,
            Length::Work { ms } => {
                let share = compute_share(node, &cand.choice);
                if share > 0.0 {
                    (ms as f64 / share).ceil() as u64
                } else {
                    // A job without devices runs on CPUs: its work is its run time.
                    ms
                }
            }
        };
        ms.max(1)
    }
}

/// Compute granted by a device choice, in whole GPUs (a 3g of a 7-slice GPU is 3/7).
pub fn compute_share(node: &NodeState, choice: &DeviceChoice) -> f64 {
    match choice {
        DeviceChoice::None => 0.0,
        DeviceChoice::Share { milli, .. } => f64::from(*milli) / f64::from(GPU_MILLI),
        DeviceChoice::Gpus(gpus) => gpus.len() as f64,
        DeviceChoice::Mig(picks) => picks
            .iter()
            .filter_map(|p| {
                let GpuSlots::Mig(m) = &node.gpus.get(p.gpu)?.slots else {
                    return None;
                };
                let geometry = m.gpu.geometry();
                let profile = geometry.profiles.get(p.profile)?;
                Some(f64::from(profile.compute_slices) / f64::from(geometry.compute_slices))
            })
            .sum(),
    }
}

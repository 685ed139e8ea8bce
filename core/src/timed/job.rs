//! A job of a timed replay: a pod request with an arrival time and how long it
//! runs once placed (a fixed duration, or compute work whose runtime follows
//! from the compute share it was granted).

use crate::catalogue::MigGeometry;
use crate::node::{GPU_MILLI, GpuSlots, NodeState};
use crate::placement::{Candidate, DeviceChoice};
use crate::request::{GpuDemand, PodRequest};

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
                profile_share(m.gpu.geometry(), p.profile)
            })
            .sum(),
    }
}

/// Compute a demand asks for, in whole GPUs, with MIG profiles read on the first of `nodes`'
/// MIG GPUs that offers the profile (0 when none does).
pub fn demand_share(demand: &GpuDemand, nodes: &[NodeState]) -> f64 {
    match demand {
        GpuDemand::None => 0.0,
        GpuDemand::Share { milli } => f64::from(*milli) / f64::from(GPU_MILLI),
        GpuDemand::Whole { count } => f64::from(*count),
        GpuDemand::Mig { profile, count } => nodes
            .iter()
            .flat_map(|n| &n.gpus)
            .find_map(|g| match &g.slots {
                GpuSlots::Mig(m) => {
                    let (idx, _) = m.gpu.geometry().profile(profile).ok()?;
                    profile_share(m.gpu.geometry(), idx)
                }
                GpuSlots::Plain { .. } => None,
            })
            .map_or(0.0, |share| f64::from(*count) * share),
    }
}

/// One instance of profile `idx`'s share of its GPU's compute.
fn profile_share(geometry: &MigGeometry, idx: usize) -> Option<f64> {
    let profile = geometry.profiles.get(idx)?;
    Some(f64::from(profile.compute_slices) / f64::from(geometry.compute_slices.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::mig_geometry;
    use crate::node::GpuState;
    use crate::placement;

    #[test]
    fn a_demand_and_its_placement_hold_the_same_share() {
        let mut node = NodeState::new("n", 64_000, 1 << 20);
        node.gpus.push(GpuState::dynamic_mig(
            0,
            "G0",
            "H100-80GB",
            None,
            mig_geometry("H100-80GB").unwrap(),
        ));
        node.gpus.push(GpuState::plain(1, "P1", "L40S", None));
        let three = GpuDemand::Mig {
            profile: "3g.40gb".into(),
            count: 2,
        };
        let nodes = std::slice::from_ref(&node);
        assert!((demand_share(&three, nodes) - 6.0 / 7.0).abs() < 1e-12);
        assert_eq!(demand_share(&GpuDemand::Whole { count: 2 }, nodes), 2.0);
        assert_eq!(demand_share(&GpuDemand::Share { milli: 250 }, nodes), 0.25);
        let unknown = GpuDemand::Mig {
            profile: "9g.900gb".into(),
            count: 1,
        };
        assert_eq!(demand_share(&unknown, nodes), 0.0);
        let one = PodRequest::cpu_only(0, 0).with_gpu(GpuDemand::Mig {
            profile: "3g.40gb".into(),
            count: 1,
        });
        let cand = placement::candidates(&node, &one).unwrap().remove(0);
        assert!((compute_share(&node, &cand.choice) - 3.0 / 7.0).abs() < 1e-12);
    }
}

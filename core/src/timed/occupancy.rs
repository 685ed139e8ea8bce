//! What one GPU holds at an instant, in the units the timed replay reports:
//! compute and memory in use, and, on MIG GPUs, the capacity stranded (free
//! compute no packing of catalogue profiles can use) and the physical
//! fragmentation of its free memory positions.

use std::collections::HashMap;

use crate::catalogue::MigGeometry;
use crate::inventory::MigMode;
use crate::mig::longest_free_run;
use crate::node::{GPU_MILLI, GpuSlots, GpuState, NodeState};

/// One GPU's (or, summed, a node's or a cluster's) occupancy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Occupancy {
    /// GPUs counted.
    pub gpus: f64,
    /// Compute in use, in whole GPUs (a 3g of 7 slices is 3/7).
    pub compute_used: f64,
    /// GPU memory in use, in whole GPUs (MIG: memory positions held / positions).
    pub memory_used: f64,
    /// MIG GPUs counted.
    pub mig_gpus: f64,
    /// Σ over MIG GPUs of (free compute − compute a packing of profiles can still use) /
    /// free compute; 0 on a GPU with nothing free.
    pub stranded: f64,
    /// Σ over MIG GPUs of (free positions − longest free run) / free positions.
    pub physical: f64,
    /// Plain (non-MIG) GPUs counted.
    pub plain_gpus: f64,
    /// Σ over plain GPUs of the share allocated (0 to 1).
    pub plain_used: f64,
}

impl Occupancy {
    /// Adds `other` to `self`, times `sign` (1 or −1).
    pub fn add(&mut self, other: &Occupancy, sign: f64) {
        self.gpus += sign * other.gpus;
        self.compute_used += sign * other.compute_used;
        self.memory_used += sign * other.memory_used;
        self.mig_gpus += sign * other.mig_gpus;
        self.stranded += sign * other.stranded;
        self.physical += sign * other.physical;
        self.plain_gpus += sign * other.plain_gpus;
        self.plain_used += sign * other.plain_used;
    }
}

/// Computes occupancies, remembering how much compute each free MIG layout can still use.
#[derive(Debug, Default)]
pub struct Meter {
    /// (geometry identity, free mask, compute budget) → the most compute a packing uses.
    usable: HashMap<(usize, u8, u8), u8>,
}

impl Meter {
    /// The summed occupancy of a node's GPUs.
    pub fn node(&mut self, node: &NodeState) -> Occupancy {
        let mut sum = Occupancy::default();
        for gpu in &node.gpus {
            sum.add(&self.gpu(gpu), 1.0);
        }
        sum
    }

    /// One GPU's occupancy. An unhealthy GPU counts as a GPU with nothing in use.
    pub fn gpu(&mut self, gpu: &GpuState) -> Occupancy {
        match &gpu.slots {
            GpuSlots::Plain { used_milli } => {
                let used = f64::from((*used_milli).min(GPU_MILLI)) / f64::from(GPU_MILLI);
                Occupancy {
                    gpus: 1.0,
                    compute_used: used,
                    memory_used: used,
                    plain_gpus: 1.0,
                    plain_used: used,
                    ..Occupancy::default()
                }
            }
            GpuSlots::Mig(m) => {
                let geometry = m.gpu.geometry();
                let held = |s: &&crate::mig::MigSlot| match m.mode {
                    MigMode::Dynamic => true,
                    MigMode::Static => m.allocated & (1 << s.start) != 0,
                };
                let compute_held: u32 = m
                    .gpu
                    .slots()
                    .iter()
                    .filter(held)
                    .filter_map(|s| geometry.profiles.get(s.profile))
                    .map(|p| u32::from(p.compute_slices))
                    .sum();
                let slices = u32::from(geometry.compute_slices).max(1);
                let positions = u32::from(geometry.positions).max(1);
                let free_mask = m.free_mask();
                let free_compute = slices.saturating_sub(compute_held);
                let usable = match m.mode {
                    // Idle pre-created instances are what a pod can still get.
                    MigMode::Static => m
                        .gpu
                        .slots()
                        .iter()
                        .filter(|s| m.allocated & (1 << s.start) == 0)
                        .filter_map(|s| geometry.profiles.get(s.profile))
                        .map(|p| u32::from(p.compute_slices))
                        .sum::<u32>(),
                    MigMode::Dynamic => u32::from(self.usable_compute(
                        geometry,
                        free_mask,
                        free_compute.min(u32::from(u8::MAX)) as u8,
                    )),
                };
                let free_positions = free_mask.count_ones();
                let stranded = if free_compute == 0 {
                    0.0
                } else {
                    f64::from(free_compute.saturating_sub(usable)) / f64::from(free_compute)
                };
                let physical = if free_positions == 0 {
                    0.0
                } else {
                    f64::from(free_positions - longest_free_run(free_mask))
                        / f64::from(free_positions)
                };
                Occupancy {
                    gpus: 1.0,
                    compute_used: f64::from(compute_held.min(slices)) / f64::from(slices),
                    memory_used: f64::from(positions - free_positions.min(positions))
                        / f64::from(positions),
                    mig_gpus: 1.0,
                    stranded,
                    physical,
                    ..Occupancy::default()
                }
            }
        }
    }

    /// The most compute slices any packing of the geometry's profiles (`+me` variants aside)
    /// onto the free positions can use, within `budget` slices.
    fn usable_compute(&mut self, geometry: &MigGeometry, free: u8, budget: u8) -> u8 {
        let key = (std::ptr::from_ref(geometry) as usize, free, budget);
        if let Some(&known) = self.usable.get(&key) {
            return known;
        }
        let mut best = 0u8;
        for p in geometry.profiles.iter().filter(|p| !p.is_media_extension()) {
            if p.compute_slices > budget {
                continue;
            }
            for &start in &p.starts {
                let mask = p.mask_at(start);
                if mask == 0 || mask & !free != 0 {
                    continue;
                }
                let rest = self.usable_compute(geometry, free & !mask, budget - p.compute_slices);
                best = best.max(p.compute_slices + rest);
            }
        }
        self.usable.insert(key, best);
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::mig_geometry;
    use crate::placement::{self, Candidate, DeviceChoice, MigPick};
    use crate::request::{GpuDemand, PodRequest};

    fn h100() -> NodeState {
        let mut node = NodeState::new("n", 64_000, 1 << 20);
        node.gpus.push(GpuState::dynamic_mig(
            0,
            "G0",
            "H100-80GB",
            None,
            mig_geometry("H100-80GB").unwrap(),
        ));
        node
    }

    fn place(node: &mut NodeState, profile: &str, start: u8) {
        let geometry = mig_geometry("H100-80GB").unwrap();
        let (idx, _) = geometry.profile(profile).unwrap();
        let req = PodRequest::cpu_only(0, 0).with_gpu(GpuDemand::Mig {
            profile: profile.into(),
            count: 1,
        });
        let cand = Candidate {
            choice: DeviceChoice::Mig(vec![MigPick {
                gpu: 0,
                profile: idx,
                start,
            }]),
            numa: None,
        };
        placement::apply(node, &req, &cand).unwrap();
    }

    #[test]
    fn an_empty_gpu_strands_nothing_and_is_unfragmented() {
        let node = h100();
        let o = Meter::default().node(&node);
        assert_eq!((o.gpus, o.mig_gpus, o.compute_used), (1.0, 1.0, 0.0));
        assert_eq!((o.stranded, o.physical), (0.0, 0.0));
    }

    #[test]
    fn slices_in_the_middle_fragment_and_strand() {
        let mut node = h100();
        // 1g slices at 0, 2 and 4: free positions 1, 3, 5, 6, 7; longest run 3.
        for start in [0, 2, 4] {
            place(&mut node, "1g.10gb", start);
        }
        let o = Meter::default().node(&node);
        assert!((o.compute_used - 3.0 / 7.0).abs() < 1e-9, "{o:?}");
        assert!((o.memory_used - 3.0 / 8.0).abs() < 1e-9, "{o:?}");
        assert!((o.physical - 2.0 / 5.0).abs() < 1e-9, "{o:?}");
        // Four compute slices are free; 1g at 1, 3, 5, 6 uses all four.
        assert_eq!(o.stranded, 0.0, "{o:?}");
    }

    #[test]
    fn free_compute_without_memory_is_stranded() {
        let mut node = h100();
        // Four 1g.20gb slices hold every memory position and four compute slices:
        // three slices are free and no profile can use them.
        for start in [0, 2, 4, 6] {
            place(&mut node, "1g.20gb", start);
        }
        let o = Meter::default().node(&node);
        assert!((o.compute_used - 4.0 / 7.0).abs() < 1e-9, "{o:?}");
        assert_eq!((o.memory_used, o.stranded, o.physical), (1.0, 1.0, 0.0));
        // Free one: two positions and a slice come back, usable by a 1g.
        let mut node = h100();
        for start in [0, 2, 4] {
            place(&mut node, "1g.20gb", start);
        }
        place(&mut node, "1g.10gb", 6);
        let o = Meter::default().node(&node);
        // Free compute 3; position 7 only: no profile starts at 7.
        assert_eq!((o.stranded, o.physical), (1.0, 0.0), "{o:?}");
        assert_eq!(longest_free_run(0b1100_0000), 2);
    }
}

//! The cluster's free capacity in total, ignoring where it lies: what a
//! waiting job is compared with to tell "the cluster is full" from "the
//! cluster is fragmented" (a request-fragmented job).

use std::sync::Arc;

use crate::catalogue::MigGeometry;
use crate::inventory::MigMode;
use crate::node::{GPU_MILLI, GpuSlots, NodeState};
use crate::request::{GpuDemand, PodRequest};

/// Free compute and memory positions on the MIG GPUs of one geometry.
#[derive(Debug, Clone)]
struct MigFree {
    geometry: Arc<MigGeometry>,
    compute: i64,
    positions: i64,
}

/// Free capacity summed over nodes (signed, so node totals can be taken out and put back).
#[derive(Debug, Clone, Default)]
pub struct FreeTotals {
    cpu_milli: i64,
    memory_mib: i64,
    plain_milli: i64,
    mig: Vec<MigFree>,
}

impl FreeTotals {
    /// One node's free capacity (unhealthy GPUs count for nothing).
    pub fn of(node: &NodeState) -> FreeTotals {
        let mut t = FreeTotals {
            cpu_milli: i64::try_from(node.cpu_free_milli).unwrap_or(i64::MAX),
            memory_mib: i64::try_from(node.memory_free_mib).unwrap_or(i64::MAX),
            ..FreeTotals::default()
        };
        for gpu in node.gpus.iter().filter(|g| g.healthy) {
            match &gpu.slots {
                GpuSlots::Plain { used_milli } => {
                    t.plain_milli += i64::from(GPU_MILLI.saturating_sub(*used_milli));
                }
                GpuSlots::Mig(m) => {
                    let geometry = m.gpu.geometry();
                    let (compute, positions) = match m.mode {
                        MigMode::Dynamic => {
                            let held: u32 = m
                                .gpu
                                .slots()
                                .iter()
                                .filter_map(|s| geometry.profiles.get(s.profile))
                                .map(|p| u32::from(p.compute_slices))
                                .sum();
                            (
                                u32::from(geometry.compute_slices).saturating_sub(held),
                                m.gpu.free_positions(),
                            )
                        }
                        // What pods can still get: the idle pre-created instances.
                        MigMode::Static => m
                            .gpu
                            .slots()
                            .iter()
                            .filter(|s| (m.allocated | m.unhealthy) & (1 << s.start) == 0)
                            .filter_map(|s| geometry.profiles.get(s.profile))
                            .fold((0, 0), |(c, w), p| {
                                (c + u32::from(p.compute_slices), w + u32::from(p.width))
                            }),
                    };
                    t.add_mig(geometry, i64::from(compute), i64::from(positions));
                }
            }
        }
        t
    }

    fn add_mig(&mut self, geometry: &Arc<MigGeometry>, compute: i64, positions: i64) {
        match self
            .mig
            .iter_mut()
            .find(|m| Arc::ptr_eq(&m.geometry, geometry) || *m.geometry == **geometry)
        {
            Some(m) => {
                m.compute += compute;
                m.positions += positions;
            }
            None => self.mig.push(MigFree {
                geometry: geometry.clone(),
                compute,
                positions,
            }),
        }
    }

    /// Adds `other` times `sign` (1 or −1).
    pub fn add(&mut self, other: &FreeTotals, sign: i64) {
        // Node sizes come from Node objects and snapshots: sums saturate, never wrap.
        self.cpu_milli = self
            .cpu_milli
            .saturating_add(sign.saturating_mul(other.cpu_milli));
        self.memory_mib = self
            .memory_mib
            .saturating_add(sign.saturating_mul(other.memory_mib));
        self.plain_milli = self
            .plain_milli
            .saturating_add(sign.saturating_mul(other.plain_milli));
        for m in &other.mig {
            self.add_mig(&m.geometry, sign * m.compute, sign * m.positions);
        }
    }

    /// Whether the free capacity in total, wherever it lies, would hold `req`.
    pub fn would_hold(&self, req: &PodRequest) -> bool {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if self.cpu_milli < as_i64(req.cpu_milli) || self.memory_mib < as_i64(req.memory_mib) {
            return false;
        }
        match &req.gpu {
            GpuDemand::None => true,
            GpuDemand::Share { milli } => self.plain_milli >= i64::from(*milli),
            GpuDemand::Whole { count } => {
                self.plain_milli >= i64::from(*count) * i64::from(GPU_MILLI)
            }
            GpuDemand::Mig { profile, count } => {
                let (mut compute, mut positions, mut need) = (0, 0, None);
                for m in &self.mig {
                    if let Ok((_, p)) = m.geometry.profile(profile) {
                        compute += m.compute;
                        positions += m.positions;
                        need.get_or_insert((p.compute_slices, p.width));
                    }
                }
                need.is_some_and(|(c, w)| {
                    compute >= i64::from(*count) * i64::from(c)
                        && positions >= i64::from(*count) * i64::from(w)
                })
            }
        }
    }
}

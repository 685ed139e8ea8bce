//! The report's data: plain serialisable structs computed from node states.

use std::collections::BTreeMap;

use kubesched_core::fragmentation::{FragCause, Workload, cluster_fragmentation, mig_capacity};
use kubesched_core::inventory::MigMode;
use kubesched_core::node::{GPU_MILLI, GpuSlots, GpuState, NodeState};
use kubesched_core::numa::TopologyPolicy;
use serde::Serialize;

/// One memory position of a MIG GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Position {
    Free,
    /// Held by an instance (in static mode: one handed to a pod).
    Used {
        profile: String,
        start: u8,
    },
    /// A static instance nobody uses yet.
    Idle {
        profile: String,
        start: u8,
    },
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuReport {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub numa: Option<u32>,
    pub healthy: bool,
    /// `whole`, `static` or `dynamic`.
    pub mode: String,
    pub free_milli: u32,
    /// MIG GPUs only: one entry per memory position.
    pub positions: Vec<Position>,
    pub largest_placeable: Option<String>,
    /// (profile, how many more fit on this GPU).
    pub fits: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub topology_policy: TopologyPolicy,
    pub cpu_free_milli: u64,
    pub memory_free_mib: u64,
    pub gpus: Vec<GpuReport>,
    /// Whole GPUs still free (non-MIG GPUs).
    pub whole_gpus_free: u32,
    /// Per profile: slices that could still be created on this node (each
    /// GPU on its own; profiles compete for the same positions).
    pub profile_fits: BTreeMap<String, u32>,
    pub numa_problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ClusterTotals {
    pub nodes: usize,
    pub gpus: usize,
    pub capacity_milli: u64,
    pub unallocated_milli: u64,
    pub fragment_milli: f64,
    pub fragmentation_ratio_pct: f64,
    /// Stranded milli-GPU by cause, weighted by the target workload.
    pub stranded_by_cause: BTreeMap<String, f64>,
    /// Per task type of the target workload: stranded milli-GPU by cause.
    pub stranded_by_task: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub nodes: Vec<NodeReport>,
    pub totals: ClusterTotals,
}

fn positions(g: &GpuState) -> Vec<Position> {
    let GpuSlots::Mig(m) = &g.slots else {
        return Vec::new();
    };
    let geo = m.gpu.geometry();
    let mut out = vec![Position::Free; usize::from(geo.positions)];
    for slot in m.gpu.slots() {
        let Some(p) = geo.profiles.get(slot.profile) else {
            continue;
        };
        let bit = 1u8 << slot.start;
        let state = if m.mode == MigMode::Static && m.unhealthy & bit != 0 {
            Position::Unhealthy
        } else if m.mode == MigMode::Static && m.allocated & bit == 0 {
            Position::Idle {
                profile: p.name.clone(),
                start: slot.start,
            }
        } else {
            Position::Used {
                profile: p.name.clone(),
                start: slot.start,
            }
        };
        for pos in slot.start..slot.start + p.width {
            if let Some(cell) = out.get_mut(usize::from(pos)) {
                *cell = state.clone();
            }
        }
    }
    if !g.healthy {
        out.fill(Position::Unhealthy);
    }
    out
}

fn gpu_report(g: &GpuState) -> GpuReport {
    let cap = mig_capacity(g);
    let mode = match &g.slots {
        GpuSlots::Plain { .. } => "whole",
        GpuSlots::Mig(m) if m.mode == MigMode::Static => "static",
        GpuSlots::Mig(_) => "dynamic",
    };
    GpuReport {
        index: g.index,
        uuid: g.uuid.to_string(),
        model: g.model.to_string(),
        numa: g.numa,
        healthy: g.healthy,
        mode: mode.to_string(),
        free_milli: g.free_milli(),
        positions: positions(g),
        largest_placeable: cap.as_ref().and_then(|c| c.largest_placeable.clone()),
        fits: cap.map(|c| c.fits).unwrap_or_default(),
    }
}

/// Problems that make the Topology Manager refuse pods a count-based view
/// would think fit.
fn numa_problems(n: &NodeState) -> Vec<String> {
    let mut out = Vec::new();
    if !n.policy.rejects_misalignment() {
        return out;
    }
    let unknown: Vec<String> = n
        .gpus
        .iter()
        .filter(|g| g.numa.is_none())
        .map(|g| format!("GPU{}", g.index))
        .collect();
    if !unknown.is_empty() && !n.numa.is_empty() {
        out.push(format!(
            "{} report no NUMA node: their hints cannot be aligned",
            unknown.join(", ")
        ));
    }
    for numa in &n.numa {
        let free: u64 = n
            .gpus
            .iter()
            .filter(|g| g.numa == Some(numa.id))
            .map(|g| u64::from(g.free_milli()))
            .sum();
        if free > 0 && numa.cpus_free == 0 {
            out.push(format!(
                "NUMA {}: {free}m GPU free but no CPU left to pin next to it",
                numa.id
            ));
        }
    }
    out
}

fn node_report(n: &NodeState) -> NodeReport {
    let gpus: Vec<GpuReport> = n.gpus.iter().map(gpu_report).collect();
    let mut profile_fits = BTreeMap::new();
    for (profile, count) in gpus.iter().flat_map(|g| g.fits.iter()) {
        *profile_fits.entry(profile.clone()).or_insert(0) += count;
    }
    NodeReport {
        name: n.name.clone(),
        topology_policy: n.policy,
        cpu_free_milli: n.cpu_free_milli,
        memory_free_mib: n.memory_free_mib,
        whole_gpus_free: n
            .gpus
            .iter()
            .filter(|g| !g.is_mig() && g.free_milli() == GPU_MILLI)
            .count() as u32,
        gpus,
        profile_fits,
        numa_problems: numa_problems(n),
    }
}

/// The report of a set of nodes against a target workload.
pub fn build<'a>(nodes: impl IntoIterator<Item = &'a NodeState>, workload: &Workload) -> Report {
    let mut nodes: Vec<&NodeState> = nodes.into_iter().collect();
    // Callers may hold nodes in a hash map: sort for a stable report.
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let frag = cluster_fragmentation(nodes.iter().copied(), workload);
    let cause = |c: &FragCause| c.as_str().to_string();
    let totals = ClusterTotals {
        nodes: nodes.len(),
        gpus: nodes.iter().map(|n| n.gpus.len()).sum(),
        capacity_milli: frag.capacity_milli,
        unallocated_milli: frag.unallocated_milli,
        fragment_milli: frag.fragment_milli,
        fragmentation_ratio_pct: frag.ratio_pct(),
        stranded_by_cause: frag.by_cause.iter().map(|(c, v)| (cause(c), *v)).collect(),
        stranded_by_task: frag
            .per_task
            .iter()
            .map(|t| {
                (
                    t.task.clone(),
                    t.by_cause.iter().map(|(c, v)| (cause(c), *v)).collect(),
                )
            })
            .collect(),
    };
    Report {
        nodes: nodes.into_iter().map(node_report).collect(),
        totals,
    }
}

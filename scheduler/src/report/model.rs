//! The report's data: plain serialisable structs computed from node states.

use std::collections::BTreeMap;

use kubesched_core::fragmentation::{
    FragCause, Workload, cluster_fragmentation, mig_capacity, node_fragmentation,
};
use kubesched_core::inventory::MigMode;
use kubesched_core::node::{GPU_MILLI, GpuSlots, GpuState, NodeState};
use kubesched_core::numa::TopologyPolicy;
use kubesched_core::planning::cost::CostReport;
use serde::Serialize;

/// One memory position of a MIG GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Position {
    /// No instance covers this position.
    Free,
    /// Held by an instance (in static mode: one handed to a pod).
    Used {
        /// MIG profile of the instance, e.g. `3g.40gb`.
        profile: String,
        /// Memory position the instance starts at.
        start: u8,
    },
    /// A static instance nobody uses yet.
    Idle {
        /// MIG profile of the instance, e.g. `3g.40gb`.
        profile: String,
        /// Memory position the instance starts at.
        start: u8,
    },
    /// The GPU, or this static instance, is unhealthy.
    Unhealthy,
}

/// One GPU of a node as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuReport {
    /// The GPU's index on its node.
    pub index: u32,
    /// The GPU's device UUID.
    pub uuid: String,
    /// GPU model, e.g. `H100-80GB`.
    pub model: String,
    /// NUMA node the GPU is attached to, if known.
    pub numa: Option<u32>,
    /// False when the node's inventory reports the GPU unhealthy (its positions then show
    /// as unhealthy).
    pub healthy: bool,
    /// `whole`, `static` or `dynamic`.
    pub mode: String,
    /// Free share of the GPU in milli-GPU (thousandths of a GPU).
    pub free_milli: u32,
    /// MIG GPUs only: one entry per memory position.
    pub positions: Vec<Position>,
    /// Largest MIG profile that could still be placed on this GPU (`None` for whole GPUs or
    /// when nothing fits).
    pub largest_placeable: Option<String>,
    /// (profile, how many more fit on this GPU).
    pub fits: Vec<(String, u32)>,
}

/// One node as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeReport {
    /// The node's Kubernetes name.
    pub name: String,
    /// The node's pool (a pool label, else its GPU model); empty when not known.
    pub pool: String,
    /// The kubelet Topology Manager policy on the node.
    pub topology_policy: TopologyPolicy,
    /// Unallocated CPU in millicores.
    pub cpu_free_milli: u64,
    /// Unallocated memory in MiB.
    pub memory_free_mib: u64,
    /// The node's GPUs, in the order of its inventory.
    pub gpus: Vec<GpuReport>,
    /// Whole GPUs still free (non-MIG GPUs).
    pub whole_gpus_free: u32,
    /// Free GPU share the target workload cannot use here (FGD's fragment), in milli-GPU.
    pub stranded_milli: f64,
    /// Per profile: slices that could still be created on this node (each
    /// GPU on its own; profiles compete for the same positions).
    pub profile_fits: BTreeMap<String, u32>,
    /// Why the Topology Manager may refuse pods that the free counts say fit (GPUs without a
    /// NUMA node, free GPU share with no CPU left to pin beside it).
    pub numa_problems: Vec<String>,
}

/// Cluster-wide figures at the foot of the report.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ClusterTotals {
    /// Number of nodes in the report.
    pub nodes: usize,
    /// Number of GPUs across those nodes.
    pub gpus: usize,
    /// Total GPU capacity in milli-GPU.
    pub capacity_milli: u64,
    /// Unallocated GPU share in milli-GPU.
    pub unallocated_milli: u64,
    /// Expected fragmentation (FGD) summed over nodes, in milli-GPU.
    pub fragment_milli: f64,
    /// Fragmentation over the unallocated GPU share, in percent.
    pub fragmentation_ratio_pct: f64,
    /// Stranded milli-GPU by cause, weighted by the target workload.
    pub stranded_by_cause: BTreeMap<String, f64>,
    /// Per task type of the target workload: stranded milli-GPU by cause.
    pub stranded_by_task: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The capacity report: every node (sorted by name) and the cluster totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Per-node reports, sorted by node name.
    pub nodes: Vec<NodeReport>,
    /// Cluster-wide totals and stranded capacity.
    pub totals: ClusterTotals,
    /// GPUs and their cost by state, per pool and per namespace (live state only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostReport>,
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

fn node_report(n: &NodeState, workload: &Workload) -> NodeReport {
    let gpus: Vec<GpuReport> = n.gpus.iter().map(gpu_report).collect();
    let mut profile_fits = BTreeMap::new();
    for (profile, count) in gpus.iter().flat_map(|g| g.fits.iter()) {
        *profile_fits.entry(profile.clone()).or_insert(0) += count;
    }
    NodeReport {
        name: n.name.clone(),
        pool: String::new(),
        topology_policy: n.policy,
        cpu_free_milli: n.cpu_free_milli,
        memory_free_mib: n.memory_free_mib,
        whole_gpus_free: n
            .gpus
            .iter()
            .filter(|g| !g.is_mig() && g.free_milli() == GPU_MILLI)
            .count() as u32,
        stranded_milli: node_fragmentation(n, workload),
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
        nodes: nodes
            .into_iter()
            .map(|n| node_report(n, workload))
            .collect(),
        totals,
        cost: None,
    }
}

//! Fragmentation: the FGD measure (Weng et al., USENIX ATC '23) and its MIG
//! form, per node, as a placement's delta, and as cluster aggregates broken
//! down by cause.
//!
//! For a target workload M of task types m with popularity p_m, a node's
//! fragmentation is F_n(M) = Σ p_m F_n(m). F_n(m) is all of the node's
//! unallocated GPU share when m cannot run there (or is CPU-only), otherwise
//! the share on GPUs that cannot host m's per-GPU demand (a free share below
//! m's request; MIG positions where m's profile has no valid placement).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::node::{GpuSlots, GpuState, NodeState};
use crate::placement::{self, Candidate, Cause, PlacementError, units};
use crate::request::{GpuDemand, PodRequest};

/// One task type of the target workload and how often it arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskType {
    /// The pod request shared by every task of this type.
    pub request: PodRequest,
    /// Share of arrivals that are of this type, between 0 and 1.
    pub popularity: f64,
}

/// The target workload M; popularities sum to 1.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Workload {
    /// The task types making up the workload.
    pub types: Vec<TaskType>,
}

impl Workload {
    /// Task types from observed requests, most frequent first, keeping the
    /// most frequent ones up to `coverage` (0..=1) of all requests, then
    /// renormalised: FGD's "typical pods" (the artifact uses 0.95).
    pub fn from_requests<'a>(
        requests: impl IntoIterator<Item = &'a PodRequest>,
        coverage: f64,
    ) -> Self {
        let mut counts: Vec<(PodRequest, u64)> = Vec::new();
        let mut index: std::collections::HashMap<&PodRequest, usize> =
            std::collections::HashMap::new();
        let mut total = 0u64;
        for r in requests {
            total += 1;
            match index.get(r) {
                Some(&i) => counts[i].1 += 1,
                None => {
                    index.insert(r, counts.len());
                    counts.push((r.clone(), 1));
                }
            }
        }
        // Stable order for equal counts: first seen first.
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        let mut kept = Vec::new();
        let mut covered = 0u64;
        for (req, n) in counts {
            if total > 0 && covered as f64 / total as f64 >= coverage {
                break;
            }
            covered += n;
            kept.push((req, n));
        }
        Self::from_counts(kept)
    }

    /// Normalises explicit (request, weight) pairs.
    pub fn from_counts(pairs: impl IntoIterator<Item = (PodRequest, u64)>) -> Self {
        let pairs: Vec<(PodRequest, u64)> = pairs.into_iter().filter(|(_, n)| *n > 0).collect();
        let total: u64 = pairs.iter().map(|(_, n)| n).sum();
        Workload {
            types: pairs
                .into_iter()
                .map(|(request, n)| TaskType {
                    request,
                    popularity: n as f64 / total as f64,
                })
                .collect(),
        }
    }

    /// Whether the workload has no task types (no requests were observed or kept).
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

/// Units of the demand a task needs on one node (1 for a share).
fn needed_units(d: &GpuDemand) -> u32 {
    match d {
        GpuDemand::None => 0,
        GpuDemand::Share { .. } => 1,
        GpuDemand::Whole { count } | GpuDemand::Mig { count, .. } => *count,
    }
}

/// Per-node, per-task-type summary from which F_n(M) and the delta of a
/// placement follow without rescanning every GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFrag {
    free_milli: u64,
    /// Per task type: units the node's GPUs can host, and free milli on GPUs
    /// that host none.
    per_task: Vec<(u32, u64)>,
}

impl NodeFrag {
    /// Summarises `node` against every task type of `workload`.
    pub fn new(node: &NodeState, workload: &Workload) -> Self {
        let per_task = workload
            .types
            .iter()
            .map(|t| {
                node.gpus.iter().fold((0u32, 0u64), |(u, s), g| {
                    let k = units_for(g, &t.request);
                    (
                        u + k,
                        s + if k == 0 { u64::from(g.free_milli()) } else { 0 },
                    )
                })
            })
            .collect();
        NodeFrag {
            free_milli: node.free_milli(),
            per_task,
        }
    }

    /// F_n(M) in milli-GPU, for a node with this much free CPU and memory.
    pub fn value(&self, cpu_free: u64, mem_free: u64, workload: &Workload) -> f64 {
        workload
            .types
            .iter()
            .zip(&self.per_task)
            .map(|(t, &(u, s))| {
                t.popularity
                    * task_value(self.free_milli, u, s, cpu_free, mem_free, &t.request) as f64
            })
            .sum()
    }

    /// F_n(M) after `cand` is placed for `req` (devices, CPU and memory).
    pub fn value_after(
        &self,
        node: &NodeState,
        workload: &Workload,
        req: &PodRequest,
        cand: &Candidate,
    ) -> Result<f64, PlacementError> {
        let mut touched = cand.choice.gpus();
        touched.sort_unstable();
        touched.dedup();
        let mut before = Vec::with_capacity(touched.len());
        let mut after = Vec::with_capacity(touched.len());
        for &i in &touched {
            before.push(node.gpus.get(i).ok_or(PlacementError::NoSuchGpu(i))?);
            after.push(placement::gpu_after(node, i, &cand.choice)?);
        }
        let free_delta: i64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| i64::from(b.free_milli()) - i64::from(a.free_milli()))
            .sum();
        let free = self.free_milli.saturating_add_signed(-free_delta);
        let cpu = node.cpu_free_milli.saturating_sub(req.cpu_milli);
        let mem = node.memory_free_mib.saturating_sub(req.memory_mib);
        let mut total = 0.0;
        for (t, &(u, s)) in workload.types.iter().zip(&self.per_task) {
            let (mut u, mut s) = (i64::from(u), s as i64);
            for (b, a) in before.iter().zip(&after) {
                let (kb, ka) = (units_for(b, &t.request), units_for(a, &t.request));
                u += i64::from(ka) - i64::from(kb);
                s += stranded(a, ka) - stranded(b, kb);
            }
            total += t.popularity
                * task_value(free, u.max(0) as u32, s.max(0) as u64, cpu, mem, &t.request) as f64;
        }
        Ok(total)
    }
}

fn stranded(g: &GpuState, units: u32) -> i64 {
    if units == 0 {
        i64::from(g.free_milli())
    } else {
        0
    }
}

/// Units of `req` a GPU could host, honouring the request's model list.
fn units_for(g: &GpuState, req: &PodRequest) -> u32 {
    if req.allows_model(&g.model) {
        units(g, &req.gpu)
    } else {
        0
    }
}

fn task_value(
    free: u64,
    units: u32,
    stranded: u64,
    cpu_free: u64,
    mem_free: u64,
    req: &PodRequest,
) -> u64 {
    let fits = !req.gpu.is_none()
        && units >= needed_units(&req.gpu)
        && req.cpu_milli <= cpu_free
        && req.memory_mib <= mem_free;
    if fits { stranded } else { free }
}

/// F_n(M) of a node, in milli-GPU.
pub fn node_fragmentation(node: &NodeState, workload: &Workload) -> f64 {
    NodeFrag::new(node, workload).value(node.cpu_free_milli, node.memory_free_mib, workload)
}

/// Why idle GPU share is unusable for a task type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FragCause {
    /// The node cannot host the task at all, for this reason.
    Unfit(Cause),
    /// The task fits the node, but this GPU's free share is too small for it.
    TooSmall,
    /// CPU-only tasks cannot use idle GPUs at all (FGD counts them).
    CpuOnlyTask,
}

impl FragCause {
    /// Stable snake_case label of the cause, for metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FragCause::Unfit(c) => c.as_str(),
            FragCause::TooSmall => "too_small",
            FragCause::CpuOnlyTask => "cpu_only_task",
        }
    }
}

/// Stranded share of one task type across a set of nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStranded {
    /// Readable name of the task type (`mig 3g.40gb`, `2 gpu`, `share 470m`).
    pub task: String,
    /// Share of the workload's arrivals that are of this task type, between 0 and 1.
    pub popularity: f64,
    /// Free milli-GPU this task type could not use, by cause (not weighted).
    pub by_cause: BTreeMap<FragCause, u64>,
}

/// Cluster-wide fragmentation figures.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterFragmentation {
    /// Total GPU capacity of the nodes, in milli-GPU.
    pub capacity_milli: u64,
    /// GPU share not allocated to any pod, in milli-GPU.
    pub unallocated_milli: u64,
    /// Σ_n F_n(M), in milli-GPU.
    pub fragment_milli: f64,
    /// The same amount split by cause (popularity-weighted).
    pub by_cause: BTreeMap<FragCause, f64>,
    /// Stranded share per task type of the workload, in workload order.
    pub per_task: Vec<TaskStranded>,
}

impl ClusterFragmentation {
    /// Fragment / idle GPU, in percent (the paper's "fragmentation ratio").
    pub fn ratio_pct(&self) -> f64 {
        if self.unallocated_milli == 0 {
            0.0
        } else {
            100.0 * self.fragment_milli / self.unallocated_milli as f64
        }
    }

    /// Fragment / GPU capacity, in percent (the paper's "fragmentation amount").
    pub fn amount_pct(&self) -> f64 {
        if self.capacity_milli == 0 {
            0.0
        } else {
            100.0 * self.fragment_milli / self.capacity_milli as f64
        }
    }

    /// Unallocated GPU share / GPU capacity, in percent (0 when there is no GPU).
    pub fn unallocated_pct(&self) -> f64 {
        if self.capacity_milli == 0 {
            0.0
        } else {
            100.0 * self.unallocated_milli as f64 / self.capacity_milli as f64
        }
    }
}

/// Readable name of a task type (`mig 3g.40gb`, `2 gpu`, `share 470m`), with the allowed
/// GPU models appended when the request restricts them.
pub fn task_label(req: &PodRequest) -> String {
    let base = match &req.gpu {
        GpuDemand::None => "cpu only".to_string(),
        GpuDemand::Share { milli } => format!("share {milli}m"),
        GpuDemand::Whole { count } => format!("{count} gpu"),
        GpuDemand::Mig { profile, count } if *count == 1 => format!("mig {profile}"),
        GpuDemand::Mig { profile, count } => format!("{count}x mig {profile}"),
    };
    if req.gpu_models.is_empty() {
        base
    } else {
        format!("{base} on {}", req.gpu_models.join("|"))
    }
}

/// Cluster aggregates with the cause of every stranded share.
pub fn cluster_fragmentation<'a>(
    nodes: impl IntoIterator<Item = &'a NodeState>,
    workload: &Workload,
) -> ClusterFragmentation {
    let mut out = ClusterFragmentation {
        per_task: workload
            .types
            .iter()
            .map(|t| TaskStranded {
                task: task_label(&t.request),
                popularity: t.popularity,
                by_cause: BTreeMap::new(),
            })
            .collect(),
        ..Default::default()
    };
    for node in nodes {
        out.capacity_milli += node.capacity_milli();
        out.unallocated_milli += node.free_milli();
        for (t, stranded) in workload.types.iter().zip(out.per_task.iter_mut()) {
            for (cause, milli) in task_breakdown(node, &t.request) {
                *stranded.by_cause.entry(cause).or_default() += milli;
                *out.by_cause.entry(cause).or_default() += t.popularity * milli as f64;
                out.fragment_milli += t.popularity * milli as f64;
            }
        }
    }
    out
}

/// F_n(m) split by cause.
fn task_breakdown(node: &NodeState, req: &PodRequest) -> Vec<(FragCause, u64)> {
    let free = node.free_milli();
    if free == 0 {
        return Vec::new();
    }
    if req.gpu.is_none() {
        return vec![(FragCause::CpuOnlyTask, free)];
    }
    match placement::fits(node, req) {
        Err(unfit) => vec![(FragCause::Unfit(unfit.cause()), free)],
        Ok(()) => {
            let s: u64 = node
                .gpus
                .iter()
                .filter(|g| units_for(g, req) == 0)
                .map(|g| u64::from(g.free_milli()))
                .sum();
            if s == 0 {
                Vec::new()
            } else {
                vec![(FragCause::TooSmall, s)]
            }
        }
    }
}

/// What a MIG GPU can still host: the capacity planner's per-GPU view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigCapacity {
    /// Memory positions not occupied by any MIG instance.
    pub free_positions: u32,
    /// Name of the largest profile (by compute slices, then width; `+me` variants left out) that
    /// can still be placed, or `None` if none fits.
    pub largest_placeable: Option<String>,
    /// (profile, how many more fit), in catalogue order.
    pub fits: Vec<(String, u32)>,
}

/// The MIG capacity of a GPU in MIG mode; `None` for a GPU that is not in MIG mode.
pub fn mig_capacity(gpu: &GpuState) -> Option<MigCapacity> {
    let GpuSlots::Mig(m) = &gpu.slots else {
        return None;
    };
    let fits: Vec<(String, u32)> = m
        .gpu
        .geometry()
        .profiles
        .iter()
        .map(|p| {
            let demand = GpuDemand::Mig {
                profile: p.name.clone(),
                count: 1,
            };
            (p.name.clone(), units(gpu, &demand))
        })
        .collect();
    let largest = fits
        .iter()
        // Attribute variants (`+me`, `-me`, `+gfx`, ...) repeat their base profile's size.
        .filter(|(name, n)| *n > 0 && crate::mig_name::split_attribute(name).1.is_none())
        .filter_map(|(name, _)| m.gpu.geometry().profile(name).ok())
        .max_by_key(|(_, p)| (p.compute_slices, p.width))
        .map(|(_, p)| p.name.clone());
    Some(MigCapacity {
        free_positions: m.free_positions(),
        largest_placeable: largest,
        fits,
    })
}

/// A cheap fingerprint of everything fragmentation depends on, so callers can
/// cache `NodeFrag` per node state.
pub fn state_key(node: &NodeState) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.cpu_free_milli.hash(&mut h);
    node.memory_free_mib.hash(&mut h);
    for g in &node.gpus {
        g.model.hash(&mut h);
        g.healthy.hash(&mut h);
        match &g.slots {
            GpuSlots::Plain { used_milli } => used_milli.hash(&mut h),
            GpuSlots::Mig(m) => {
                m.gpu.used_mask().hash(&mut h);
                m.allocated.hash(&mut h);
                m.unhealthy.hash(&mut h);
                m.gpu.slots().hash(&mut h);
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::GpuState;

    fn plain_node(used: &[u32]) -> NodeState {
        let mut n = NodeState::new("n", 32_000, 1 << 20);
        for (i, u) in used.iter().enumerate() {
            let mut g = GpuState::plain(i as u32, "u", "T4", None);
            g.slots = GpuSlots::Plain { used_milli: *u };
            n.gpus.push(g);
        }
        n
    }

    fn share(m: u32) -> PodRequest {
        PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Share { milli: m })
    }

    #[test]
    fn matches_the_paper_definition_by_hand() {
        // GPUs with 300m, 600m and 1000m free.
        let n = plain_node(&[700, 400, 0]);
        let w = Workload::from_counts([
            (share(500), 1),
            (
                PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Whole { count: 2 }),
                1,
            ),
        ]);
        // share 500: fits; the 300m GPU is too small -> 300.
        // 2 whole GPUs: only one fully free GPU -> cannot fit -> all 1900 free.
        let f = node_fragmentation(&n, &w);
        assert!((f - (0.5 * 300.0 + 0.5 * 1900.0)).abs() < 1e-9, "{f}");
    }

    #[test]
    fn cpu_only_tasks_see_all_idle_gpu_as_fragment() {
        let n = plain_node(&[0, 0]);
        let w = Workload::from_counts([(PodRequest::cpu_only(1000, 0), 1)]);
        assert_eq!(node_fragmentation(&n, &w), 2000.0);
    }

    #[test]
    fn lack_of_cpu_strands_everything() {
        let mut n = plain_node(&[0]);
        n.cpu_free_milli = 0;
        let w = Workload::from_counts([(share(500), 1)]);
        assert_eq!(node_fragmentation(&n, &w), 1000.0);
        let c = cluster_fragmentation([&n], &w);
        assert_eq!(
            c.by_cause.get(&FragCause::Unfit(Cause::NoCpu)),
            Some(&1000.0)
        );
    }

    #[test]
    fn delta_equals_recomputation() {
        let n = plain_node(&[200, 0, 500]);
        let w = Workload::from_counts([
            (share(500), 3),
            (share(250), 1),
            (
                PodRequest::cpu_only(2000, 0).with_gpu(GpuDemand::Whole { count: 1 }),
                2,
            ),
        ]);
        let req = share(300);
        let frag = NodeFrag::new(&n, &w);
        for cand in placement::candidates(&n, &req).unwrap() {
            let mut after = n.clone();
            placement::apply(&mut after, &req, &cand).unwrap();
            let fast = frag.value_after(&n, &w, &req, &cand).unwrap();
            assert!((fast - node_fragmentation(&after, &w)).abs() < 1e-9);
        }
    }

    #[test]
    fn mig_capacity_reports_the_largest_placeable_profile() {
        let mut n = NodeState::new("m", 1000, 1000);
        n.gpus.push(GpuState::dynamic_mig(
            0,
            "G",
            "H100-80GB",
            None,
            crate::catalogue::mig_geometry("H100-80GB").unwrap(),
        ));
        let GpuSlots::Mig(m) = &mut n.gpus[0].slots else {
            unreachable!()
        };
        m.gpu.place(0, 6).unwrap();
        let cap = mig_capacity(&n.gpus[0]).unwrap();
        assert_eq!(cap.free_positions, 7);
        assert_eq!(cap.largest_placeable.as_deref(), Some("4g.40gb"));
        assert!(cap.fits.contains(&("1g.10gb".into(), 6)));
        assert!(cap.fits.contains(&("3g.40gb".into(), 1)));
    }
}

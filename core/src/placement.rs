//! Where a pod can go on a node: the feasibility check with a human-readable
//! reason when it cannot (the extender's `FailedNodes` text), the candidate
//! device choices a policy picks from, and applying/releasing a choice.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::inventory::MigMode;
use crate::mig::MigGpu;
use crate::node::{GPU_MILLI, GpuSlots, GpuState, NodeState};
use crate::numa::{self, NumaReject};
use crate::request::{GpuDemand, PodRequest};

/// One MIG slice picked on a GPU (by position in `NodeState::gpus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MigPick {
    /// Position of the GPU in `NodeState::gpus`.
    pub gpu: usize,
    /// Index of the profile in the GPU's `MigGeometry::profiles`.
    pub profile: usize,
    /// Memory position the instance starts at.
    pub start: u8,
}

/// The concrete devices a pod gets on a node. GPUs are positions in `NodeState::gpus`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceChoice {
    /// No devices: the pod asks for no GPU.
    None,
    /// A fractional share of one plain GPU.
    Share {
        /// Position of the GPU in `NodeState::gpus`.
        gpu: usize,
        /// Milli-GPU taken on it.
        milli: u32,
    },
    /// Whole plain GPUs, one position per GPU.
    Gpus(Vec<usize>),
    /// MIG instances, one pick per instance asked for.
    Mig(Vec<MigPick>),
}

impl DeviceChoice {
    /// Positions of the GPUs the choice touches (one entry per pick or GPU, possibly repeated).
    pub fn gpus(&self) -> Vec<usize> {
        match self {
            DeviceChoice::None => Vec::new(),
            DeviceChoice::Share { gpu, .. } => vec![*gpu],
            DeviceChoice::Gpus(g) => g.clone(),
            DeviceChoice::Mig(p) => p.iter().map(|p| p.gpu).collect(),
        }
    }
}

/// A feasible placement on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The devices the pod gets.
    pub choice: DeviceChoice,
    /// The NUMA node the pod is aligned to, if one.
    pub numa: Option<u32>,
}

/// Why a pod does not fit a node. `Display` is the text users see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// The node has less unrequested CPU than the pod asks for.
    Cpu {
        /// CPU the pod requests, in millicores.
        need: u64,
        /// CPU still free on the node, in millicores.
        free: u64,
    },
    /// The node has less unrequested memory than the pod asks for.
    Memory {
        /// Memory the pod requests, in MiB.
        need: u64,
        /// Memory still free on the node, in MiB.
        free: u64,
    },
    /// The pod restricts GPU models and the node has none of them.
    ModelMismatch {
        /// GPU models the pod accepts.
        wanted: Vec<String>,
        /// GPU models the node has.
        node: Vec<String>,
    },
    /// Too few GPUs (or no GPU with a large enough free share) can take the pod's demand.
    NoGpu {
        /// GPUs the pod needs.
        need: u32,
        /// Suitable GPUs found free.
        free: u32,
        /// What kind of GPU was needed, for the message (`whole GPU(s)`, a share size).
        what: String,
    },
    /// No GPU the pod may use on the node offers the requested MIG profile.
    UnknownProfile {
        /// The MIG profile asked for.
        profile: String,
    },
    /// The profile exists, but no valid placement of it is left on enough GPUs.
    MigGeometry {
        /// The MIG profile asked for.
        profile: String,
        /// Per-GPU reasons (occupied positions, unhealthy GPUs, no free static instance).
        detail: String,
    },
    /// Devices fit, but the kubelet's Topology Manager would refuse every choice.
    Numa(NumaReject),
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::Cpu { need, free } => write!(f, "insufficient cpu: need {need}m, {free}m free"),
            Unfit::Memory { need, free } => {
                write!(f, "insufficient memory: need {need}Mi, {free}Mi free")
            }
            Unfit::ModelMismatch { wanted, node } => {
                write!(f, "GPU model {node:?} not in requested {wanted:?}")
            }
            Unfit::NoGpu { need, free, what } => write!(f, "needs {need} {what}, {free} free"),
            Unfit::UnknownProfile { profile } => {
                write!(f, "no GPU on this node offers MIG profile {profile}")
            }
            Unfit::MigGeometry { profile, detail } => {
                write!(f, "no {profile} placement left: {detail}")
            }
            Unfit::Numa(r) => write!(f, "topology manager would reject: {r}"),
        }
    }
}

/// Coarse cause of an `Unfit`, for fragmentation breakdowns and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Too few GPUs, or GPU share, free for the demand.
    NoGpu,
    /// Too little CPU or memory free on the node.
    NoCpu,
    /// The node has none of the GPU models the pod accepts.
    ModelMismatch,
    /// The MIG profile is unknown on the node or has no placement left.
    MigGeometry,
    /// Refused by the Topology Manager's NUMA alignment rule.
    Numa,
}

impl Cause {
    /// Every cause, e.g. to list all metric labels.
    pub const ALL: [Cause; 5] = [
        Cause::NoGpu,
        Cause::NoCpu,
        Cause::ModelMismatch,
        Cause::MigGeometry,
        Cause::Numa,
    ];

    /// Stable snake_case label of the cause, for metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::NoGpu => "no_gpu",
            Cause::NoCpu => "no_cpu",
            Cause::ModelMismatch => "model_mismatch",
            Cause::MigGeometry => "mig_geometry",
            Cause::Numa => "numa",
        }
    }
}

impl Unfit {
    /// The coarse cause of this reason.
    pub fn cause(&self) -> Cause {
        match self {
            Unfit::Cpu { .. } | Unfit::Memory { .. } => Cause::NoCpu,
            Unfit::ModelMismatch { .. } => Cause::ModelMismatch,
            Unfit::NoGpu { .. } => Cause::NoGpu,
            Unfit::UnknownProfile { .. } | Unfit::MigGeometry { .. } => Cause::MigGeometry,
            Unfit::Numa(_) => Cause::Numa,
        }
    }
}

/// Why a device choice could not be applied to, or released from, a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The choice names a GPU position the node does not have.
    #[error("GPU position {0} does not exist on this node")]
    NoSuchGpu(usize),
    /// The GPU (by NVML index) cannot take or give back these devices: not enough free share,
    /// unhealthy, not in the needed mode, or the static instance is not free.
    #[error("GPU {0} cannot take this (busy, unhealthy or wrong kind)")]
    GpuBusy(u32),
    /// The MIG allocator refused to create or remove an instance.
    #[error("MIG: {0}")]
    Mig(#[from] crate::mig::MigError),
    /// The device choice is of another kind than the pod's GPU demand.
    #[error("the choice does not match the request")]
    Mismatch,
    /// A MIG start position past the eighth, which no GPU has.
    #[error("memory position {0} does not exist on a GPU")]
    NoSuchPosition(u8),
}

/// The bit of memory position `start` in an occupancy mask, refusing positions past the
/// eighth (a start read from outside can be anything).
pub fn position_bit(start: u8) -> Result<u8, PlacementError> {
    1u8.checked_shl(u32::from(start))
        .ok_or(PlacementError::NoSuchPosition(start))
}

/// The profile index of `name` on a MIG GPU, if its geometry has it.
pub fn profile_on(gpu: &GpuState, name: &str) -> Option<usize> {
    match &gpu.slots {
        GpuSlots::Mig(m) => m.gpu.geometry().profile(name).ok().map(|(i, _)| i),
        GpuSlots::Plain { .. } => None,
    }
}

/// How many units of `demand` this GPU alone could still host (its share of
/// a whole-node fit). 0 for unhealthy GPUs.
pub fn units(gpu: &GpuState, demand: &GpuDemand) -> u32 {
    if !gpu.healthy {
        return 0;
    }
    match (demand, &gpu.slots) {
        (GpuDemand::Share { milli }, GpuSlots::Plain { used_milli }) => {
            u32::from(GPU_MILLI - used_milli.min(&GPU_MILLI) >= *milli)
        }
        (GpuDemand::Whole { .. }, GpuSlots::Plain { used_milli }) => u32::from(*used_milli == 0),
        (GpuDemand::Mig { profile, .. }, GpuSlots::Mig(m)) => {
            match m.gpu.geometry().profile(profile) {
                Ok((idx, _)) => match m.mode {
                    MigMode::Dynamic => m.gpu.fit_count(idx),
                    MigMode::Static => m.free_static(idx).count() as u32,
                },
                Err(_) => 0,
            }
        }
        _ => 0,
    }
}

/// GPUs of the node that the request may use by model.
fn allowed<'a>(
    node: &'a NodeState,
    req: &'a PodRequest,
) -> impl Iterator<Item = (usize, &'a GpuState)> + 'a {
    node.gpus
        .iter()
        .enumerate()
        .filter(|(_, g)| req.allows_model(&g.model))
}

/// Checks the node-wide resources (CPU, memory, GPU model) before devices.
fn check_node_resources(node: &NodeState, req: &PodRequest) -> Result<(), Unfit> {
    if req.cpu_milli > node.cpu_free_milli {
        return Err(Unfit::Cpu {
            need: req.cpu_milli,
            free: node.cpu_free_milli,
        });
    }
    if req.memory_mib > node.memory_free_mib {
        return Err(Unfit::Memory {
            need: req.memory_mib,
            free: node.memory_free_mib,
        });
    }
    if !req.gpu.is_none() && !req.gpu_models.is_empty() && allowed(node, req).next().is_none() {
        let mut models: Vec<String> = node.gpus.iter().map(|g| g.model.to_string()).collect();
        models.dedup();
        return Err(Unfit::ModelMismatch {
            wanted: req.gpu_models.clone(),
            node: models,
        });
    }
    Ok(())
}

/// Every feasible placement of `req` on `node` (deduplicated where two
/// choices are equivalent), or the reason there is none.
pub fn candidates(node: &NodeState, req: &PodRequest) -> Result<Vec<Candidate>, Unfit> {
    check_node_resources(node, req)?;
    let raw = device_choices(node, req)?;
    let cpus = req.exclusive_cpu_count();
    let narrowest = narrowest_span(node, req);
    let mut out = Vec::with_capacity(raw.len());
    let mut last_reject = None;
    for choice in raw {
        let numa_of: Vec<Option<u32>> = choice
            .gpus()
            .iter()
            .map(|&g| node.gpus.get(g).and_then(|g| g.numa))
            .collect();
        match numa::admit(node.policy, &node.numa, &numa_of, narrowest, cpus) {
            Ok(numa) => out.push(Candidate { choice, numa }),
            Err(r) => last_reject = Some(r),
        }
    }
    match (out.is_empty(), last_reject) {
        (true, Some(r)) => Err(Unfit::Numa(r)),
        _ => Ok(out),
    }
}

/// The fewest NUMA nodes whose devices could satisfy the request if all were free.
fn narrowest_span(node: &NodeState, req: &PodRequest) -> usize {
    let need = match &req.gpu {
        GpuDemand::Whole { count } | GpuDemand::Mig { count, .. } => *count,
        GpuDemand::Share { .. } => 1,
        GpuDemand::None => return 0,
    };
    let mut per_numa: Vec<(Option<u32>, u32)> = Vec::new();
    for (_, g) in allowed(node, req).filter(|(_, g)| g.healthy) {
        let cap = match (&req.gpu, &g.slots) {
            (GpuDemand::Mig { profile, .. }, GpuSlots::Mig(m)) => {
                match m.gpu.geometry().profile(profile) {
                    Ok((i, _)) => MigGpu::new(m.gpu.geometry().clone()).fit_count(i),
                    Err(_) => 0,
                }
            }
            (GpuDemand::Mig { .. }, _) | (_, GpuSlots::Mig(_)) => 0,
            _ => 1,
        };
        match per_numa.iter_mut().find(|(n, _)| *n == g.numa) {
            Some((_, c)) => *c += cap,
            None => per_numa.push((g.numa, cap)),
        }
    }
    per_numa.sort_by_key(|c| std::cmp::Reverse(c.1));
    let mut got = 0;
    for (i, (_, c)) in per_numa.iter().enumerate() {
        got += c;
        if got >= need {
            return i + 1;
        }
    }
    per_numa.len().max(1)
}

fn device_choices(node: &NodeState, req: &PodRequest) -> Result<Vec<DeviceChoice>, Unfit> {
    match &req.gpu {
        GpuDemand::None => Ok(vec![DeviceChoice::None]),
        GpuDemand::Share { milli } => share_choices(node, req, *milli),
        GpuDemand::Whole { count } => whole_choices(node, req, *count),
        GpuDemand::Mig { profile, count } => mig_choices(node, req, profile, *count),
    }
}

fn share_choices(
    node: &NodeState,
    req: &PodRequest,
    milli: u32,
) -> Result<Vec<DeviceChoice>, Unfit> {
    let mut seen: Vec<(u32, Option<u32>)> = Vec::new();
    let mut out = Vec::new();
    for (i, g) in allowed(node, req) {
        if units(g, &req.gpu) == 0 {
            continue;
        }
        // GPUs with equal free share on the same NUMA node are interchangeable.
        let key = (g.free_milli(), g.numa);
        if !seen.contains(&key) {
            seen.push(key);
            out.push(DeviceChoice::Share { gpu: i, milli });
        }
    }
    if out.is_empty() {
        let best = allowed(node, req)
            .map(|(_, g)| g.free_milli())
            .max()
            .unwrap_or(0);
        return Err(Unfit::NoGpu {
            need: 1,
            free: 0,
            what: format!("GPU with {milli}m free (most free: {best}m)"),
        });
    }
    Ok(out)
}

fn whole_choices(
    node: &NodeState,
    req: &PodRequest,
    count: u32,
) -> Result<Vec<DeviceChoice>, Unfit> {
    let free: Vec<(usize, Option<u32>)> = allowed(node, req)
        .filter(|(_, g)| units(g, &req.gpu) > 0)
        .map(|(i, g)| (i, g.numa))
        .collect();
    let need = count as usize;
    if free.len() < need {
        return Err(Unfit::NoGpu {
            need: count,
            free: free.len() as u32,
            what: "whole GPU(s)".into(),
        });
    }
    let mut out = Vec::new();
    let mut numas: Vec<Option<u32>> = free.iter().map(|(_, n)| *n).collect();
    numas.sort_unstable();
    numas.dedup();
    for n in numas {
        let within: Vec<usize> = free
            .iter()
            .filter(|(_, m)| *m == n)
            .map(|(i, _)| *i)
            .take(need)
            .collect();
        if within.len() == need {
            out.push(DeviceChoice::Gpus(within));
        }
    }
    let first: Vec<usize> = free.iter().map(|(i, _)| *i).take(need).collect();
    let spread = DeviceChoice::Gpus(first);
    if !out.contains(&spread) {
        out.push(spread);
    }
    Ok(out)
}

fn mig_choices(
    node: &NodeState,
    req: &PodRequest,
    profile: &str,
    count: u32,
) -> Result<Vec<DeviceChoice>, Unfit> {
    let mut singles: Vec<MigPick> = Vec::new();
    let mut knows_profile = false;
    let mut details = Vec::new();
    let mut seen: Vec<GpuKey> = Vec::new();
    for (i, g) in allowed(node, req) {
        let GpuSlots::Mig(m) = &g.slots else { continue };
        let Ok((idx, _)) = m.gpu.geometry().profile(profile) else {
            continue;
        };
        knows_profile = true;
        // Identical GPUs on one NUMA node offer identical placements: the
        // first stands for all (eight empty GPUs give 7 candidates, not 56).
        let key = GpuKey::of(g, m);
        if count <= 1 && seen.contains(&key) {
            continue;
        }
        seen.push(key);
        if !g.healthy {
            details.push(format!("GPU{} unhealthy", g.index));
            continue;
        }
        let starts: Vec<u8> = match m.mode {
            MigMode::Dynamic => m.gpu.placements(idx),
            MigMode::Static => m.free_static(idx).collect(),
        };
        if starts.is_empty() {
            details.push(match m.mode {
                MigMode::Dynamic => {
                    format!("GPU{} positions used: {}", g.index, m.gpu.describe_used())
                }
                MigMode::Static => format!("GPU{} has no free {profile} instance", g.index),
            });
        }
        singles.extend(starts.into_iter().map(|start| MigPick {
            gpu: i,
            profile: idx,
            start,
        }));
    }
    if !knows_profile {
        return Err(Unfit::UnknownProfile {
            profile: profile.to_string(),
        });
    }
    if count <= 1 {
        if singles.is_empty() {
            return Err(Unfit::MigGeometry {
                profile: profile.to_string(),
                detail: details.join("; "),
            });
        }
        return Ok(singles
            .into_iter()
            .map(|p| DeviceChoice::Mig(vec![p]))
            .collect());
    }
    multi_mig(node, req, count, profile, details)
}

/// What makes two MIG GPUs interchangeable for placement.
#[derive(PartialEq)]
struct GpuKey {
    numa: Option<u32>,
    model: std::sync::Arc<str>,
    healthy: bool,
    mode: MigMode,
    used: u8,
    allocated: u8,
    unhealthy: u8,
    slots: Vec<crate::mig::MigSlot>,
}

impl GpuKey {
    fn of(g: &GpuState, m: &crate::node::MigSlots) -> Self {
        let mut slots = m.gpu.slots().to_vec();
        slots.sort_by_key(|s| s.start);
        GpuKey {
            numa: g.numa,
            model: g.model.clone(),
            healthy: g.healthy,
            mode: m.mode,
            used: m.gpu.used_mask(),
            allocated: m.allocated,
            unhealthy: m.unhealthy,
            slots,
        }
    }
}

/// Several slices of one profile: fill greedily, NUMA node by NUMA node, then
/// across the whole node.
fn multi_mig(
    node: &NodeState,
    req: &PodRequest,
    count: u32,
    profile: &str,
    details: Vec<String>,
) -> Result<Vec<DeviceChoice>, Unfit> {
    let mut groups: Vec<Option<Option<u32>>> = node.gpus.iter().map(|g| Some(g.numa)).collect();
    groups.sort_unstable();
    groups.dedup();
    groups.push(None);
    let mut out = Vec::new();
    for group in groups {
        let mut scratch = node.clone();
        let mut picks = Vec::new();
        for i in 0..scratch.gpus.len() {
            if group.is_some_and(|n| scratch.gpus[i].numa != n)
                || !req.allows_model(&scratch.gpus[i].model)
            {
                continue;
            }
            while picks.len() < count as usize {
                let Some(pick) = first_pick(&scratch.gpus[i], i, profile) else {
                    break;
                };
                if apply_mig(&mut scratch, &pick).is_err() {
                    break;
                }
                picks.push(pick);
            }
        }
        let choice = DeviceChoice::Mig(picks);
        if choice.gpus().len() == count as usize && !out.contains(&choice) {
            out.push(choice);
        }
    }
    if out.is_empty() {
        return Err(Unfit::MigGeometry {
            profile: profile.to_string(),
            detail: format!("fewer than {count} free; {}", details.join("; ")),
        });
    }
    Ok(out)
}

fn first_pick(g: &GpuState, i: usize, profile: &str) -> Option<MigPick> {
    let GpuSlots::Mig(m) = &g.slots else {
        return None;
    };
    if !g.healthy {
        return None;
    }
    let (idx, _) = m.gpu.geometry().profile(profile).ok()?;
    let start = match m.mode {
        MigMode::Dynamic => m.gpu.placements(idx).first().copied(),
        MigMode::Static => m.free_static(idx).next(),
    }?;
    Some(MigPick {
        gpu: i,
        profile: idx,
        start,
    })
}

/// Feasibility only: `Ok` when at least one candidate exists.
pub fn fits(node: &NodeState, req: &PodRequest) -> Result<(), Unfit> {
    candidates(node, req).map(|_| ())
}

fn apply_mig(node: &mut NodeState, pick: &MigPick) -> Result<(), PlacementError> {
    let g = node
        .gpus
        .get_mut(pick.gpu)
        .ok_or(PlacementError::NoSuchGpu(pick.gpu))?;
    take_mig(g, pick)
}

fn take_mig(g: &mut GpuState, pick: &MigPick) -> Result<(), PlacementError> {
    let index = g.index;
    let GpuSlots::Mig(m) = &mut g.slots else {
        return Err(PlacementError::GpuBusy(index));
    };
    let bit = position_bit(pick.start)?;
    match m.mode {
        MigMode::Dynamic => {
            let exists = m
                .gpu
                .slots()
                .iter()
                .any(|s| s.start == pick.start && s.profile == pick.profile);
            // An instance the agent already created for this pod is claimed,
            // not created twice; any other overlap is refused by `place`.
            if !(exists && m.allocated & bit == 0) {
                m.gpu.place(pick.profile, pick.start)?;
            }
            m.allocated |= bit;
        }
        MigMode::Static => {
            if !m.free_static(pick.profile).any(|s| s == pick.start) {
                return Err(PlacementError::GpuBusy(index));
            }
            m.allocated |= bit;
        }
    }
    Ok(())
}

fn release_mig(node: &mut NodeState, pick: &MigPick) -> Result<(), PlacementError> {
    let g = node
        .gpus
        .get_mut(pick.gpu)
        .ok_or(PlacementError::NoSuchGpu(pick.gpu))?;
    let index = g.index;
    let GpuSlots::Mig(m) = &mut g.slots else {
        return Err(PlacementError::GpuBusy(index));
    };
    let bit = position_bit(pick.start)?;
    match m.mode {
        MigMode::Dynamic => {
            m.gpu.free(pick.start)?;
            m.allocated &= !bit;
        }
        MigMode::Static => m.allocated &= !bit,
    }
    Ok(())
}

/// Takes the devices, CPU and memory of a placement. On error nothing changes.
pub fn apply(
    node: &mut NodeState,
    req: &PodRequest,
    cand: &Candidate,
) -> Result<(), PlacementError> {
    let mut next = node.clone();
    apply_devices(&mut next, &req.gpu, &cand.choice)?;
    next.cpu_free_milli = next.cpu_free_milli.saturating_sub(req.cpu_milli);
    next.memory_free_mib = next.memory_free_mib.saturating_sub(req.memory_mib);
    next.count_class(&req.gpu, 1);
    if let (Some(c), Some(n)) = (req.exclusive_cpu_count(), cand.numa)
        && let Some(numa) = next.numa.iter_mut().find(|x| x.id == n)
    {
        numa.cpus_free = numa.cpus_free.saturating_sub(c);
    }
    *node = next;
    Ok(())
}

/// Applies only the device part of a choice (no CPU/memory): what the
/// fragmentation delta and the extender's annotation replay need.
pub fn apply_devices(
    node: &mut NodeState,
    demand: &GpuDemand,
    choice: &DeviceChoice,
) -> Result<(), PlacementError> {
    match (demand, choice) {
        (GpuDemand::None, DeviceChoice::None) => Ok(()),
        (GpuDemand::Share { .. }, DeviceChoice::Share { gpu, milli }) => {
            take_plain(node, *gpu, *milli)
        }
        (GpuDemand::Whole { .. }, DeviceChoice::Gpus(gpus)) => gpus
            .iter()
            .try_for_each(|&g| take_plain(node, g, GPU_MILLI)),
        (GpuDemand::Mig { .. }, DeviceChoice::Mig(picks)) => {
            picks.iter().try_for_each(|p| apply_mig(node, p))
        }
        _ => Err(PlacementError::Mismatch),
    }
}

fn take_plain(node: &mut NodeState, gpu: usize, milli: u32) -> Result<(), PlacementError> {
    take_share(
        node.gpus
            .get_mut(gpu)
            .ok_or(PlacementError::NoSuchGpu(gpu))?,
        milli,
    )
}

fn take_share(g: &mut GpuState, milli: u32) -> Result<(), PlacementError> {
    match &mut g.slots {
        GpuSlots::Plain { used_milli }
            if g.healthy && used_milli.saturating_add(milli) <= GPU_MILLI =>
        {
            *used_milli += milli;
            Ok(())
        }
        _ => Err(PlacementError::GpuBusy(g.index)),
    }
}

/// The state GPU `gpu` would have after `choice`: what a fragmentation
/// delta needs without copying the whole node.
pub fn gpu_after(
    node: &NodeState,
    gpu: usize,
    choice: &DeviceChoice,
) -> Result<GpuState, PlacementError> {
    let mut g = node
        .gpus
        .get(gpu)
        .ok_or(PlacementError::NoSuchGpu(gpu))?
        .clone();
    match choice {
        DeviceChoice::None => {}
        DeviceChoice::Share { milli, .. } => take_share(&mut g, *milli)?,
        DeviceChoice::Gpus(_) => take_share(&mut g, GPU_MILLI)?,
        DeviceChoice::Mig(picks) => picks
            .iter()
            .filter(|p| p.gpu == gpu)
            .try_for_each(|p| take_mig(&mut g, p))?,
    }
    Ok(g)
}

/// Gives back what `apply` took.
pub fn release(
    node: &mut NodeState,
    req: &PodRequest,
    cand: &Candidate,
) -> Result<(), PlacementError> {
    let mut next = node.clone();
    match (&req.gpu, &cand.choice) {
        (GpuDemand::None, DeviceChoice::None) => {}
        (GpuDemand::Share { .. }, DeviceChoice::Share { gpu, milli }) => {
            give_plain(&mut next, *gpu, *milli)?
        }
        (GpuDemand::Whole { .. }, DeviceChoice::Gpus(gpus)) => gpus
            .iter()
            .try_for_each(|&g| give_plain(&mut next, g, GPU_MILLI))?,
        (GpuDemand::Mig { .. }, DeviceChoice::Mig(picks)) => {
            picks.iter().try_for_each(|p| release_mig(&mut next, p))?
        }
        _ => return Err(PlacementError::Mismatch),
    }
    next.cpu_free_milli += req.cpu_milli;
    next.memory_free_mib += req.memory_mib;
    next.count_class(&req.gpu, -1);
    if let (Some(c), Some(n)) = (req.exclusive_cpu_count(), cand.numa)
        && let Some(numa) = next.numa.iter_mut().find(|x| x.id == n)
    {
        numa.cpus_free += c;
    }
    *node = next;
    Ok(())
}

fn give_plain(node: &mut NodeState, gpu: usize, milli: u32) -> Result<(), PlacementError> {
    let g = node
        .gpus
        .get_mut(gpu)
        .ok_or(PlacementError::NoSuchGpu(gpu))?;
    match &mut g.slots {
        GpuSlots::Plain { used_milli } if *used_milli >= milli => {
            *used_milli -= milli;
            Ok(())
        }
        _ => Err(PlacementError::GpuBusy(g.index)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::mig_geometry;
    use crate::numa::{NumaState, TopologyPolicy};

    fn mig_node() -> NodeState {
        let mut n = NodeState::new("m", 64_000, 1 << 20);
        for i in 0..2 {
            n.gpus.push(GpuState::dynamic_mig(
                i,
                &format!("G{i}"),
                "H100-80GB",
                Some(i),
                mig_geometry("H100-80GB").unwrap(),
            ));
        }
        n
    }

    fn mig(profile: &str, count: u32) -> PodRequest {
        PodRequest::cpu_only(1000, 1024).with_gpu(GpuDemand::Mig {
            profile: profile.into(),
            count,
        })
    }

    #[test]
    fn reason_names_the_blocking_slices() {
        let mut n = mig_node();
        n.gpus.truncate(1);
        let one = mig("1g.10gb", 1);
        let c = Candidate {
            choice: DeviceChoice::Mig(vec![MigPick {
                gpu: 0,
                profile: 0,
                start: 1,
            }]),
            numa: Some(0),
        };
        apply(&mut n, &one, &c).unwrap();
        let err = fits(&n, &mig("4g.40gb", 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no 4g.40gb placement left: GPU0 positions used: 1 (1g.10gb)"
        );
        assert_eq!(err.cause(), Cause::MigGeometry);
        assert!(matches!(
            fits(&n, &mig("5g.50gb", 1)),
            Err(Unfit::UnknownProfile { .. })
        ));
    }

    #[test]
    fn identical_gpus_are_enumerated_once() {
        let mut n = mig_node();
        for i in 2..8 {
            n.gpus.push(GpuState::dynamic_mig(
                i,
                &format!("G{i}"),
                "H100-80GB",
                Some(i % 2),
                mig_geometry("H100-80GB").unwrap(),
            ));
        }
        // 8 empty GPUs on two NUMA nodes: one representative per NUMA node.
        let cands = candidates(&n, &mig("1g.10gb", 1)).unwrap();
        assert_eq!(cands.len(), 2 * 7);
        let c = Candidate {
            choice: DeviceChoice::Mig(vec![MigPick {
                gpu: 2,
                profile: 0,
                start: 0,
            }]),
            numa: Some(0),
        };
        apply(&mut n, &mig("1g.10gb", 1), &c).unwrap();
        // GPU 2 now differs from GPU 0: its free starts are offered too.
        assert_eq!(candidates(&n, &mig("1g.10gb", 1)).unwrap().len(), 2 * 7 + 6);
    }

    #[test]
    fn live_dynamic_instances_occupy_and_are_claimed_not_doubled() {
        let mut n = mig_node();
        n.gpus.truncate(1);
        // The agent created a 3g at 4 (for a pod the extender has not seen yet).
        let GpuSlots::Mig(m) = &mut n.gpus[0].slots else {
            unreachable!()
        };
        let three = m.gpu.geometry().profile("3g.40gb").unwrap().0;
        m.gpu.place(three, 4).unwrap();
        assert_eq!(
            candidates(&n, &mig("3g.40gb", 1)).unwrap().len(),
            1,
            "only start 0 is free"
        );
        // That pod's annotation names the live instance: claimed once...
        let live = Candidate {
            choice: DeviceChoice::Mig(vec![MigPick {
                gpu: 0,
                profile: three,
                start: 4,
            }]),
            numa: Some(0),
        };
        apply(&mut n, &mig("3g.40gb", 1), &live).unwrap();
        assert_eq!(n.free_milli(), 500);
        // ...and a second claim on it is refused.
        assert!(apply(&mut n, &mig("3g.40gb", 1), &live).is_err());
    }

    #[test]
    fn apply_then_release_restores_the_node() {
        let n0 = mig_node();
        let req = mig("2g.20gb", 3);
        let cands = candidates(&n0, &req).unwrap();
        let mut n = n0.clone();
        apply(&mut n, &req, &cands[0]).unwrap();
        assert_ne!(n, n0);
        release(&mut n, &req, &cands[0]).unwrap();
        assert_eq!(n, n0);
    }

    #[test]
    fn whole_gpus_prefer_one_numa_node_and_single_numa_policy_enforces_it() {
        let mut n = NodeState::new("w", 64_000, 1 << 20);
        for i in 0..4u32 {
            n.gpus
                .push(GpuState::plain(i, &format!("G{i}"), "L4", Some(i / 2)));
        }
        n.numa = (0..2)
            .map(|id| NumaState {
                id,
                cpus_free: 16,
                cpus_total: 16,
                memory_free_mib: 1 << 16,
            })
            .collect();
        n.policy = TopologyPolicy::SingleNumaNode;
        let req = PodRequest::cpu_only(2000, 0).with_gpu(GpuDemand::Whole { count: 2 });
        let cands = candidates(&n, &req).unwrap();
        assert_eq!(cands.len(), 2);
        assert!(cands.iter().all(|c| c.numa.is_some()));
        let three = PodRequest::cpu_only(2000, 0).with_gpu(GpuDemand::Whole { count: 3 });
        assert!(matches!(fits(&n, &three), Err(Unfit::Numa(_))));
        n.policy = TopologyPolicy::BestEffort;
        assert!(fits(&n, &three).is_ok());
    }

    #[test]
    fn cpu_memory_and_model_are_checked_first() {
        let mut n = mig_node();
        n.cpu_free_milli = 500;
        assert!(matches!(
            fits(&n, &mig("1g.10gb", 1)),
            Err(Unfit::Cpu { .. })
        ));
        let mut n = mig_node();
        let mut req = mig("1g.10gb", 1);
        req.gpu_models = vec!["A100-80GB".into()];
        assert_eq!(fits(&n, &req).unwrap_err().cause(), Cause::ModelMismatch);
        n.memory_free_mib = 0;
        assert!(matches!(
            fits(&n, &mig("1g.10gb", 1)),
            Err(Unfit::Memory { .. })
        ));
    }
}

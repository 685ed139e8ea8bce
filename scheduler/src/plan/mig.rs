//! `kubesched plan mig`'s engine: the demand of a static MIG pool (declared, from a job
//! file, or from a snapshot's pods), the per-GPU layouts that serve it best for one node
//! (mig-parted configures nodes, so every node of the pool gets the same), the config file
//! in NVIDIA's mig-parted format, the change from the layouts a snapshot shows, and a
//! timed replay of the demand on each candidate set of layouts.

use std::fmt::Write as _;
use std::sync::Arc;

use kubesched_core::catalogue::MigGeometry;
use kubesched_core::fragmentation::Workload;
use kubesched_core::node::{GpuSlots, NodeState};
use kubesched_core::numa::TopologyPolicy;
use kubesched_core::planning::mig_layouts::{self, Counts};
use kubesched_core::request::{GpuDemand, PodRequest};
use kubesched_core::scoring::Policy;
use kubesched_core::text::quote;
use kubesched_core::timed::{Job, Length, TimedConfig, TimedMetrics, TimedReplay};

use crate::simulate::builtin;
use crate::simulate::timed::workload_of;

/// Why a demand could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemandError {
    /// A term is not `PROFILE=COUNT`.
    #[error("demand term {} is not PROFILE=COUNT (e.g. 1g.10gb=30)", quote(.0))]
    Malformed(String),
    /// The profile is not one of the model's.
    #[error("{0}")]
    UnknownProfile(String),
    /// Nothing is asked for.
    #[error("the demand asks for no MIG instance of this model")]
    Empty,
}

/// Instances wanted at once, per profile index of the geometry.
pub type Demand = Vec<f64>;

/// Reads `1g.10gb=30,3g.40gb=5`.
pub fn parse_demand(text: &str, geometry: &MigGeometry) -> Result<Demand, DemandError> {
    let mut demand = vec![0.0; geometry.profiles.len()];
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (name, count) = term
            .split_once('=')
            .ok_or_else(|| DemandError::Malformed(term.to_string()))?;
        let count: f64 = count
            .trim()
            .parse()
            .ok()
            .filter(|c: &f64| c.is_finite() && *c >= 0.0 && *c <= 1e7)
            .ok_or_else(|| DemandError::Malformed(term.to_string()))?;
        let (idx, _) = geometry
            .profile(name.trim())
            .map_err(|e| DemandError::UnknownProfile(e.to_string()))?;
        demand[idx] += count;
    }
    nonempty(demand)
}

fn nonempty(demand: Demand) -> Result<Demand, DemandError> {
    if demand.iter().any(|&d| d > 0.0) {
        Ok(demand)
    } else {
        Err(DemandError::Empty)
    }
}

/// The MIG instances `requests` ask for (pods present at once, as in a snapshot).
pub fn demand_of_requests(
    requests: &[PodRequest],
    geometry: &MigGeometry,
) -> Result<Demand, DemandError> {
    let mut demand = vec![0.0; geometry.profiles.len()];
    for r in requests {
        if let GpuDemand::Mig { profile, count } = &r.gpu
            && let Ok((idx, _)) = geometry.profile(profile)
        {
            demand[idx] += f64::from(*count);
        }
    }
    nonempty(demand)
}

/// The instances a job file keeps busy on average (Little's law: each job's instances
/// times its run time, over the span of arrivals and runs).
pub fn demand_of_jobs(jobs: &[Job], geometry: &MigGeometry) -> Result<Demand, DemandError> {
    let mut busy_ms = vec![0.0; geometry.profiles.len()];
    let mut end = 0u64;
    let start = jobs.iter().map(|j| j.arrival_ms).min().unwrap_or(0);
    for j in jobs {
        if let GpuDemand::Mig { profile, count } = &j.request.gpu
            && let Ok((idx, p)) = geometry.profile(profile)
        {
            let run = match j.length {
                Length::Duration { ms } => ms as f64,
                // Work is in whole-GPU time: a slice of s out of S runs S/s times as long.
                Length::Work { ms } => {
                    ms as f64 * f64::from(geometry.compute_slices)
                        / f64::from(p.compute_slices.max(1))
                }
            };
            busy_ms[idx] += f64::from(*count) * run;
            end = end.max(j.arrival_ms.saturating_add(run as u64));
        }
    }
    let span = end.saturating_sub(start).max(1) as f64;
    nonempty(busy_ms.into_iter().map(|b| b / span).collect())
}

/// The recommended layouts for one node of `gpus` GPUs, when `nodes` such nodes share
/// `demand`: among every maximal layout of the profiles the demand names.
pub fn recommend(
    geometry: &Arc<MigGeometry>,
    demand: &Demand,
    gpus: usize,
    nodes: usize,
) -> Vec<Counts> {
    let profiles: Vec<usize> = (0..demand.len()).filter(|&i| demand[i] > 0.0).collect();
    let options = mig_layouts::maximal_layouts(geometry, &profiles);
    let per_node: Demand = demand.iter().map(|d| d / nodes.max(1) as f64).collect();
    mig_layouts::recommend(geometry, &options, gpus, &per_node)
        .into_iter()
        .filter_map(|i| options.get(i).cloned())
        .collect()
}

/// Share of the demand's compute the pool's layouts (every GPU of every node) can serve at
/// once, %.
pub fn served_pct<'a>(
    geometry: &MigGeometry,
    demand: &Demand,
    layouts: impl IntoIterator<Item = &'a Counts>,
) -> f64 {
    let mut supply = vec![0u32; geometry.profiles.len()];
    for layout in layouts {
        for (s, &n) in supply.iter_mut().zip(layout) {
            *s = s.saturating_add(n);
        }
    }
    let (served, _) = mig_layouts::served(geometry, demand, &supply);
    let (wanted, _) = mig_layouts::served(geometry, demand, &vec![u32::MAX; supply.len()]);
    if wanted > 0.0 {
        100.0 * served / wanted
    } else {
        100.0
    }
}

/// The layouts as a mig-parted config (`version: v1`, `mig-configs`), one entry `name`
/// whose GPUs with the same layout share one `devices` list.
pub fn mig_parted_yaml(geometry: &MigGeometry, name: &str, per_gpu: &[Counts]) -> String {
    let mut groups: Vec<(&Counts, Vec<usize>)> = Vec::new();
    for (index, layout) in per_gpu.iter().enumerate() {
        match groups.iter_mut().find(|(l, _)| *l == layout) {
            Some((_, devices)) => devices.push(index),
            None => groups.push((layout, vec![index])),
        }
    }
    let mut out = String::from("version: v1\nmig-configs:\n");
    let _ = writeln!(out, "  {name}:");
    for (layout, devices) in groups {
        let devices: Vec<String> = devices.iter().map(usize::to_string).collect();
        let _ = writeln!(out, "    - devices: [{}]", devices.join(", "));
        let _ = writeln!(out, "      mig-enabled: true");
        let _ = writeln!(out, "      mig-devices:");
        for (profile, count) in mig_layouts::named(geometry, layout) {
            let _ = writeln!(out, "        \"{profile}\": {count}");
        }
    }
    out
}

/// A layout in words: `2×1g.10gb + 1×3g.40gb`, or `(no instance)`.
pub fn describe(geometry: &MigGeometry, layout: &[u32]) -> String {
    let named = mig_layouts::named(geometry, layout);
    if named.is_empty() {
        return "(no instance)".into();
    }
    named
        .iter()
        .map(|(p, n)| format!("{n}×{p}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// A static MIG GPU's instances as counts per profile; `None` for other GPUs.
pub fn layout_of(gpu: &kubesched_core::node::GpuState, geometry: &MigGeometry) -> Option<Counts> {
    let GpuSlots::Mig(m) = &gpu.slots else {
        return None;
    };
    if m.mode != kubesched_core::inventory::MigMode::Static {
        return None;
    }
    let mut counts = vec![0u32; geometry.profiles.len()];
    for slot in m.gpu.slots() {
        let name = &m.gpu.geometry().profiles.get(slot.profile)?.name;
        let (idx, _) = geometry.profile(name).ok()?;
        counts[idx] += 1;
    }
    Some(counts)
}

/// Per node and GPU, what changes from the layouts `current` shows to `proposed` (the same
/// for every node).
pub fn diff(
    geometry: &MigGeometry,
    current: &[(String, Vec<Counts>)],
    proposed: &[Counts],
) -> String {
    let mut out = String::new();
    let mut unchanged = 0;
    for (node, gpus) in current {
        for (index, now) in gpus.iter().enumerate() {
            match proposed.get(index) {
                Some(next) if next == now => unchanged += 1,
                Some(next) => {
                    let _ = writeln!(
                        out,
                        "  {node} GPU {index}: {} -> {}",
                        describe(geometry, now),
                        describe(geometry, next)
                    );
                }
                None => {
                    let _ = writeln!(out, "  {node} GPU {index}: not in the proposal");
                }
            }
        }
    }
    let _ = writeln!(out, "  {unchanged} GPU(s) keep their layout");
    out
}

/// Static MIG nodes of `model`, one per entry of `layouts`, each GPU cut as its entry says.
pub fn pool(model: &str, geometry: &Arc<MigGeometry>, layouts: &[Vec<Counts>]) -> Vec<NodeState> {
    layouts
        .iter()
        .enumerate()
        .map(|(n, per_gpu)| {
            let mut node = builtin::sized_node(
                format!("pool-{n:03}"),
                model,
                per_gpu.len() as u32,
                (224, 2 << 20),
                TopologyPolicy::SingleNumaNode,
                Some(kubesched_core::inventory::MigMode::Dynamic),
            );
            for (gpu, layout) in node.gpus.iter_mut().zip(per_gpu) {
                let placements = mig_layouts::place(geometry, layout).unwrap_or_default();
                builtin::cut_static(gpu, &placements);
            }
            node
        })
        .collect()
}

/// One candidate: a name and the layouts of every node of the pool.
pub type Candidate = (String, Vec<Vec<Counts>>);

/// One candidate set of layouts, replayed.
#[derive(Debug, Clone)]
pub struct Compared {
    /// `proposed`, `today`, `all-1g`, ...
    pub name: String,
    /// The layouts of every node.
    pub layouts: Vec<Vec<Counts>>,
    /// Share of the demand's compute the layouts can serve at once, %.
    pub served_pct: f64,
    /// The replay's figures.
    pub metrics: TimedMetrics,
}

/// The jobs and how to replay them on each candidate pool.
pub struct Replay<'a> {
    /// The GPU model of the pool.
    pub model: &'a str,
    /// Its MIG geometry.
    pub geometry: &'a Arc<MigGeometry>,
    /// The demand the served share is measured against.
    pub demand: &'a Demand,
    /// The jobs replayed.
    pub jobs: &'a [Job],
    /// The placement policy.
    pub policy: &'a dyn Policy,
    /// Replay settings.
    pub cfg: TimedConfig,
}

/// Replays the jobs on each candidate pool.
pub fn compare(replay: &Replay<'_>, candidates: Vec<Candidate>) -> Vec<Compared> {
    let workload: Workload = workload_of(replay.jobs, 0.95);
    candidates
        .into_iter()
        .map(|(name, layouts)| {
            let cluster = pool(replay.model, replay.geometry, &layouts);
            let run = TimedReplay::new(cluster, replay.jobs, replay.policy, &workload, &replay.cfg)
                .finish(|_, _| {});
            Compared {
                served_pct: served_pct(replay.geometry, replay.demand, layouts.iter().flatten()),
                name,
                layouts,
                metrics: run.metrics,
            }
        })
        .collect()
}

/// The comparison as a table.
pub fn table(geometry: &MigGeometry, rows: &[Compared]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<10} {:>9} {:>11} {:>11} {:>9} {:>12}  GPUs of the pool by layout",
        "layouts", "served %", "wait p95 s", "wait p99 s", "util %", "never placed"
    );
    for r in rows {
        let mut layouts: Vec<(String, usize)> = Vec::new();
        for l in r.layouts.iter().flatten() {
            let d = describe(geometry, l);
            match layouts.iter_mut().find(|(x, _)| *x == d) {
                Some((_, n)) => *n += 1,
                None => layouts.push((d, 1)),
            }
        }
        let _ = writeln!(
            out,
            "  {:<10} {:>9.1} {:>11.1} {:>11.1} {:>9.1} {:>12}  {}",
            r.name,
            r.served_pct,
            r.metrics.wait_p95_s,
            r.metrics.wait_p99_s,
            r.metrics.compute_util_pct,
            r.metrics.never_placed,
            layouts
                .iter()
                .map(|(d, n)| format!("{n} × {d}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesched_core::catalogue::mig_geometry;

    #[test]
    fn the_config_file_is_mig_parted_v1() {
        let g = mig_geometry("H100-80GB").unwrap_or_else(|e| panic!("{e}"));
        let demand = parse_demand("1g.10gb=10, 3g.40gb=2", &g).unwrap_or_else(|e| panic!("{e}"));
        let per_gpu = recommend(&g, &demand, 3, 1);
        assert_eq!(served_pct(&g, &demand, &per_gpu), 100.0);
        // GPUs with the same layout share a devices list, in GPU order.
        let mut all_1g = vec![0; g.profiles.len()];
        all_1g[g.profile("1g.10gb").map(|p| p.0).unwrap_or(0)] = 7;
        let mut mixed = vec![0; g.profiles.len()];
        mixed[g.profile("1g.10gb").map(|p| p.0).unwrap_or(0)] = 1;
        mixed[g.profile("3g.40gb").map(|p| p.0).unwrap_or(0)] = 2;
        let yaml = mig_parted_yaml(
            &g,
            "kubesched-pool",
            &[mixed.clone(), all_1g.clone(), mixed],
        );
        assert_eq!(
            yaml,
            "version: v1\nmig-configs:\n  kubesched-pool:\n    - devices: [0, 2]\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb\": 1\n        \"3g.40gb\": 2\n    - devices: [1]\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb\": 7\n"
        );
        let parsed: serde_yaml::Value =
            serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed["version"], "v1");
        assert_eq!(parsed["mig-configs"]["kubesched-pool"][0]["devices"][1], 2);
        assert_eq!(
            parsed["mig-configs"]["kubesched-pool"][1]["mig-devices"]["1g.10gb"],
            7
        );
    }

    #[test]
    fn a_job_file_keeps_its_instances_busy_on_average() {
        let g = mig_geometry("H100-80GB").unwrap_or_else(|e| panic!("{e}"));
        // Over 1,000 s: two 1g jobs of 500 s (one busy on average), one 3g of 1,000 s,
        // and 3/7 of a GPU's work for 1,000 s on a 3g (its whole share: 1,000 s busy).
        let text = r#"{"id": "a", "arrival_ms": 0, "duration_ms": 500000, "profile": "1g.10gb"}
{"id": "b", "arrival_ms": 500000, "duration_ms": 500000, "profile": "1g.10gb"}
{"id": "c", "arrival_ms": 0, "duration_ms": 1000000, "profile": "3g.40gb"}
{"id": "d", "arrival_ms": 0, "work_ms": 428571, "profile": "3g.40gb"}"#;
        let jobs =
            crate::simulate::jobs::parse_jobs(text, Some(&g)).unwrap_or_else(|e| panic!("{e}"));
        let d = demand_of_jobs(&jobs, &g).unwrap_or_else(|e| panic!("{e}"));
        let of = |p: &str| d[g.profile(p).map(|x| x.0).unwrap_or(0)];
        assert!((of("1g.10gb") - 1.0).abs() < 1e-3, "{d:?}");
        assert!((of("3g.40gb") - 2.0).abs() < 1e-3, "{d:?}");
    }

    #[test]
    fn bad_demands_say_why() {
        let g = mig_geometry("H100-80GB").unwrap_or_else(|e| panic!("{e}"));
        for (text, says) in [
            ("1g.10gb", "PROFILE=COUNT"),
            ("1g.10gb=-1", "PROFILE=COUNT"),
            ("5g.50gb=1", "5g.50gb"),
            ("1g.10gb=0", "no MIG instance"),
        ] {
            let err = parse_demand(text, &g).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}

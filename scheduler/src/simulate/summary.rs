//! The summary of many runs: per policy, means and 95% confidence intervals over seeds at the
//! arrived-load points planners read (90/95/100/130%), as a table and as the
//! artifact-compatible allocation CSV.

use std::fmt::Write as _;

use kubesched_core::stats::Estimate;

use super::{RunResult, by_policy};

/// Arrived-load points of the summary table.
pub const POINTS: [usize; 4] = [90, 95, 100, 130];

/// Mean and 95% confidence interval of one figure over a policy's seeds; `None` when no
/// seed measured it.
fn estimate(values: &[f64]) -> Option<Estimate> {
    (!values.is_empty()).then(|| Estimate::of(values.iter().copied()))
}

/// Summary of one policy over its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySummary {
    /// Name of the policy these figures are for.
    pub policy: String,
    /// Number of runs (seeds) summarised.
    pub seeds: usize,
    /// Unallocated GPU % at each of `POINTS`.
    pub unallocated: Vec<Option<Estimate>>,
    /// Fragmentation ratio (% of unallocated GPU share) at 80% arrived load.
    pub frag_ratio_80: Option<Estimate>,
    /// Fragmentation ratio (% of unallocated GPU share) at 90% arrived load.
    pub frag_ratio_90: Option<Estimate>,
    /// Fragmentation amount (% of GPU capacity) at 100% arrived load.
    pub frag_amount_100: Option<Estimate>,
    /// Mean number of pods that failed to place up to 100% arrived load.
    pub failed_100: f64,
    /// Mean number of pods that failed to place over the whole stream.
    pub failed_all: f64,
    /// Mean wall-clock seconds per replay.
    pub seconds_per_run: f64,
}

/// Summarises the runs per policy (policies in the order they first ran) over their seeds.
pub fn summarize(runs: &[RunResult]) -> Vec<PolicySummary> {
    by_policy(runs)
        .into_iter()
        .map(|(p, rs)| {
            let at = |pct: usize, f: fn(&kubesched_core::replay::Bucket) -> f64| {
                estimate(
                    &rs.iter()
                        .filter_map(|r| r.curve.bucket(pct))
                        .map(|b| f(&b))
                        .collect::<Vec<_>>(),
                )
            };
            let n = rs.len().max(1) as f64;
            PolicySummary {
                policy: p.to_string(),
                seeds: rs.len(),
                unallocated: POINTS
                    .iter()
                    .map(|&x| at(x, |b| 100.0 - b.alloc_pct))
                    .collect(),
                frag_ratio_80: at(80, |b| b.frag_ratio_pct),
                frag_ratio_90: at(90, |b| b.frag_ratio_pct),
                frag_amount_100: at(100, |b| b.frag_amount_pct),
                failed_100: rs
                    .iter()
                    .map(|r| f64::from(r.curve.failed_by_100().total()))
                    .sum::<f64>()
                    / n,
                failed_all: rs
                    .iter()
                    .map(|r| f64::from(r.curve.failed_pods()))
                    .sum::<f64>()
                    / n,
                seconds_per_run: rs.iter().map(|r| r.elapsed.as_secs_f64()).sum::<f64>() / n,
            }
        })
        .collect()
}

fn cell(s: &Option<Estimate>) -> String {
    s.as_ref()
        .map_or("-".into(), |s| format!("{:.2}±{:.2}", s.mean, s.ci95))
}

/// A plain-text table, one row per policy.
pub fn table(title: &str, summaries: &[PolicySummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:<11} {:>5} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>8}",
        "policy",
        "seeds",
        "unalloc@90",
        "unalloc@95",
        "unalloc@100",
        "unalloc@130",
        "fragR@80",
        "fragR@90",
        "fragA@100",
        "fail@100",
        "fail@130",
        "s/run"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<11} {:>5} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>9.1} {:>9.1} {:>8.2}",
            s.policy,
            s.seeds,
            cell(&s.unallocated[0]),
            cell(&s.unallocated[1]),
            cell(&s.unallocated[2]),
            cell(&s.unallocated[3]),
            cell(&s.frag_ratio_80),
            cell(&s.frag_ratio_90),
            cell(&s.frag_amount_100),
            s.failed_100,
            s.failed_all,
            s.seconds_per_run
        );
    }
    out
}

/// Allocation curves in the artifact's `analysis_allo_discrete.csv` layout:
/// `workload,sc_policy,tune,seed,total_gpus,0,1,...,130`.
pub fn allocation_csv(
    workload: &str,
    tune: f64,
    total_gpus: usize,
    runs: &[RunResult],
    max_pct: usize,
) -> String {
    let mut out = String::from("workload,sc_policy,tune,seed,total_gpus");
    for p in 0..=max_pct {
        let _ = write!(out, ",{p}");
    }
    out.push('\n');
    for r in runs {
        let _ = write!(
            out,
            "{workload},{},{tune},{},{total_gpus}",
            r.policy, r.seed
        );
        for p in 0..=max_pct {
            match r.curve.bucket(p) {
                Some(b) => {
                    let _ = write!(out, ",{:.4}", b.alloc_pct);
                }
                None => out.push(','),
            }
        }
        out.push('\n');
    }
    out
}

/// The MIG view of a policy's runs: placed pods and what the GPUs can still
/// host at the end (mean over seeds).
#[derive(Debug, Clone, PartialEq)]
pub struct MigSummary {
    /// Name of the policy these figures are for.
    pub policy: String,
    /// Pods placed by the end of the run (mean over seeds).
    pub placed: f64,
    /// Pods that failed to place over the whole run (mean over seeds).
    pub failed: f64,
    /// Free MIG memory positions across all MIG GPUs at the end (mean over seeds).
    pub free_positions: f64,
    /// Free positions the target workload's GPU task types cannot use,
    /// weighted by popularity (the fragmentation amount, in positions,
    /// without CPU-only types).
    pub stranded_positions: f64,
    /// GPUs whose largest placeable profile has at least 7, 4, 3, 2, 1 slices.
    pub gpus_hosting: [f64; 5],
}

const SIZES: [u8; 5] = [7, 4, 3, 2, 1];

/// The MIG view of each policy's runs (policies in the order they first ran), with
/// stranded positions measured against `workload`.
pub fn mig_summaries(
    runs: &[RunResult],
    workload: &kubesched_core::fragmentation::Workload,
) -> Vec<MigSummary> {
    use kubesched_core::fragmentation::{FragCause, cluster_fragmentation, mig_capacity};
    by_policy(runs)
        .into_iter()
        .map(|(p, rs)| {
            let n = rs.len().max(1) as f64;
            let mut out = MigSummary {
                policy: p.to_string(),
                placed: 0.0,
                failed: 0.0,
                free_positions: 0.0,
                stranded_positions: 0.0,
                gpus_hosting: [0.0; 5],
            };
            for r in &rs {
                out.placed += f64::from(r.curve.placed_pods()) / n;
                out.failed += f64::from(r.curve.failed_pods()) / n;
                let frag = cluster_fragmentation(&r.nodes, workload);
                // CPU-only task types count every idle position; leave them out here.
                let cpu_only = frag
                    .by_cause
                    .get(&FragCause::CpuOnlyTask)
                    .copied()
                    .unwrap_or(0.0);
                out.stranded_positions += (frag.fragment_milli - cpu_only) / 125.0 / n;
                for gpu in r.nodes.iter().flat_map(|node| &node.gpus) {
                    let Some(cap) = mig_capacity(gpu) else {
                        continue;
                    };
                    out.free_positions += f64::from(cap.free_positions) / n;
                    let largest = cap
                        .largest_placeable
                        .as_deref()
                        .and_then(|name| name.split('g').next()?.parse::<u8>().ok())
                        .unwrap_or(0);
                    for (i, size) in SIZES.iter().enumerate() {
                        if largest >= *size {
                            out.gpus_hosting[i] += 1.0 / n;
                        }
                    }
                }
            }
            out
        })
        .collect()
}

/// A plain-text table of MIG summaries under `title`, one row per policy.
pub fn mig_table(title: &str, rows: &[MigSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:<14} {:>9} {:>8} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "policy", "placed", "failed", "free pos", "stranded", "GPUs≥7g", "≥4g", "≥3g", "≥2g", "≥1g"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<14} {:>9.1} {:>8.1} {:>10.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            r.policy,
            r.placed,
            r.failed,
            r.free_positions,
            r.stranded_positions,
            r.gpus_hosting[0],
            r.gpus_hosting[1],
            r.gpus_hosting[2],
            r.gpus_hosting[3],
            r.gpus_hosting[4]
        );
    }
    out
}

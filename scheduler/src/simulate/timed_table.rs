//! The timed replays' report: per scenario one table, a row per metric and a
//! column per policy (the first policy given first), each cell the mean and
//! 95% confidence interval over seeds, the best cell of each row marked; and
//! the per-run and over-time CSV files.

use std::fmt::Write as _;

use kubesched_core::stats::Estimate;
use kubesched_core::timed::TimedMetrics;

use super::by_policy;
use super::timed::TimedResult;

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Higher is better.
    Higher,
    /// Lower is better.
    Lower,
}

/// One metric of the report.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Row label.
    pub name: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Its value in a run's figures (NaN when the run cannot measure it).
    pub get: fn(&TimedMetrics) -> f64,
    /// Its definition, for `--help`.
    pub help: &'static str,
}

/// Every metric, in report order.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "compute util %",
        better: Better::Higher,
        get: |m| m.compute_util_pct,
        help: "GPU compute in use (MIG: compute slices held / all slices; whole GPUs and \
               shares by their fraction), time-averaged over the window",
    },
    Metric {
        name: "memory util %",
        better: Better::Higher,
        get: |m| m.memory_util_pct,
        help: "GPU memory in use (MIG: memory positions held / all positions), time-averaged",
    },
    Metric {
        name: "stranded %",
        better: Better::Lower,
        get: |m| m.stranded_pct,
        help: "MIG GPUs: (free compute slices - the most slices any packing of catalogue \
               profiles can still use) / free slices, 0 on a GPU with nothing free; mean over \
               MIG GPUs, time-averaged (static MIG: free = idle pre-created instances)",
    },
    Metric {
        name: "physical frag %",
        better: Better::Lower,
        get: |m| m.physical_frag_pct,
        help: "MIG GPUs: (free memory positions - longest free run) / free positions; mean \
               over MIG GPUs, time-averaged",
    },
    Metric {
        name: "unallocated GPU %",
        better: Better::Lower,
        get: |m| m.unallocated_gpu_pct,
        help: "Plain (non-MIG) GPUs: share unallocated, time-averaged (the series in \
               timed-series.csv gives it over time)",
    },
    Metric {
        name: "request-frag %",
        better: Better::Lower,
        get: |m| m.request_fragmented_pct,
        help: "Jobs arriving in the window that had to wait at some point although the \
               cluster's free CPU, memory and GPU capacity in total (MIG: free slices and \
               memory positions) would have held them, % of those jobs",
    },
    Metric {
        name: "wait p50 s",
        better: Better::Lower,
        get: |m| m.wait_p50_s,
        help: "Waiting time from arrival to placement of the jobs arriving in the window, \
               median (nearest rank)",
    },
    Metric {
        name: "wait p95 s",
        better: Better::Lower,
        get: |m| m.wait_p95_s,
        help: "The same, 95th percentile",
    },
    Metric {
        name: "wait p99 s",
        better: Better::Lower,
        get: |m| m.wait_p99_s,
        help: "The same, 99th percentile",
    },
    Metric {
        name: "completed / h",
        better: Better::Higher,
        get: |m| m.completed_per_hour,
        help: "Jobs completed in the window per hour of virtual time",
    },
    Metric {
        name: "makespan h",
        better: Better::Lower,
        get: |m| m.makespan_s / 3600.0,
        help: "From the first arrival to the last completion",
    },
    Metric {
        name: "queue non-empty %",
        better: Better::Lower,
        get: |m| m.queue_nonempty_pct,
        help: "Share of the window with at least one job waiting (a saturated run should \
               keep it near 100%)",
    },
    Metric {
        name: "peak compute %",
        better: Better::Higher,
        get: |m| m.peak_compute_pct,
        help: "Highest compute in use at any instant of the window",
    },
    Metric {
        name: "never placed",
        better: Better::Lower,
        get: |m| m.never_placed as f64,
        help: "Jobs that fit no node even when it is empty (left out on arrival: they \
               neither wait nor count in the other figures)",
    },
];

/// The metric definitions, for `simulate --help`.
pub fn metrics_help() -> String {
    let mut out = String::from(
        "Timed replay metrics (over the measured window: from the warm-up's end to the last \
         arrival; mean ± 95% confidence interval over seeds; * marks the best mean):\n",
    );
    for m in METRICS {
        let _ = writeln!(out, "  {:<18} {}", m.name, m.help);
    }
    out
}

/// Each policy's estimate of `metric` over its seeds, policies in the order they first ran.
pub fn estimates(runs: &[TimedResult], metric: &Metric) -> Vec<(String, Estimate)> {
    by_policy(runs)
        .into_iter()
        .map(|(p, rs)| {
            (
                p.to_string(),
                Estimate::of(rs.iter().map(|r| (metric.get)(&r.metrics))),
            )
        })
        .collect()
}

/// The table: a row per metric any run measured, a column per policy.
pub fn table(title: &str, runs: &[TimedResult]) -> String {
    let groups = by_policy(runs);
    let mut out = String::new();
    let seeds = groups.first().map_or(0, |(_, rs)| rs.len());
    let _ = writeln!(out, "{title} ({seeds} seeds, mean ± 95% CI; * best)");
    let _ = write!(out, "{:<18}", "");
    for (policy, _) in &groups {
        let _ = write!(out, " {policy:>16}");
    }
    let _ = writeln!(out);
    for metric in METRICS {
        let row = estimates(runs, metric);
        if row.iter().all(|(_, e)| e.mean.is_nan()) {
            continue;
        }
        let best = row
            .iter()
            .map(|(_, e)| e.mean)
            .filter(|m| !m.is_nan())
            .reduce(|a, b| match metric.better {
                Better::Higher => a.max(b),
                Better::Lower => a.min(b),
            });
        let _ = write!(out, "{:<18}", metric.name);
        for (_, e) in &row {
            // Equal up to rounding noise in the last bits counts as equally best.
            let is_best = best.is_some_and(|b| (e.mean - b).abs() <= 1e-9 * b.abs().max(1.0));
            let mark = if is_best { "*" } else { " " };
            let _ = write!(out, " {:>16}", format!("{}{mark}", cell(e)));
        }
        let _ = writeln!(out);
    }
    let _ = write!(out, "{:<18}", "s / run");
    for (_, rs) in &groups {
        let secs = rs.iter().map(|r| r.elapsed.as_secs_f64()).sum::<f64>() / rs.len().max(1) as f64;
        let _ = write!(out, " {:>16}", format!("{secs:.2} "));
    }
    let _ = writeln!(out);
    out
}

fn cell(e: &Estimate) -> String {
    if e.mean.is_nan() {
        return "-".into();
    }
    let digits = if e.mean.abs() >= 100.0 { 0 } else { 2 };
    format!("{:.*}±{:.*}", digits, e.mean, digits, e.ci95)
}

/// Per run: policy, seed and every metric (CSV).
pub fn runs_csv(scenario: &str, runs: &[TimedResult]) -> String {
    let mut out = String::from("scenario,policy,seed,jobs");
    for m in METRICS {
        let _ = write!(out, ",{}", m.name);
    }
    out.push('\n');
    for r in runs {
        let _ = write!(
            out,
            "{},{},{},{}",
            csv_field(scenario),
            r.policy,
            r.seed,
            r.jobs
        );
        for m in METRICS {
            let _ = write!(out, ",{:.4}", (m.get)(&r.metrics));
        }
        out.push('\n');
    }
    out
}

/// Per run and sample time: compute %, plain GPUs unallocated %, stranded % and waiting
/// jobs (CSV).
pub fn series_csv(runs: &[TimedResult]) -> String {
    let mut out =
        String::from("policy,seed,t_s,compute_pct,unallocated_gpu_pct,stranded_pct,pending\n");
    for r in runs {
        for p in &r.series {
            let _ = writeln!(
                out,
                "{},{},{:.1},{:.3},{:.3},{:.3},{}",
                r.policy,
                r.seed,
                p.t_ms as f64 / 1000.0,
                p.compute_pct,
                p.unallocated_gpu_pct,
                p.stranded_pct,
                p.pending
            );
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

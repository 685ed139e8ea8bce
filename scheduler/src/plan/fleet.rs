//! `kubesched plan fleet`'s engine: each fleet the search asks about is replayed with the
//! timed engine (the same jobs per seed for every fleet, so fleets are compared on equal
//! terms), and judged by its worst seed against the target.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kubesched_core::planning::{self, Search, Verdict};
use kubesched_core::scoring::Policy;
use kubesched_core::timed::{Job, TimedConfig, TimedMetrics, TimedReplay};

use super::node_types::{NodeType, fleet};
use crate::simulate::timed::workload_of;

/// What a fleet must achieve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The 95th percentile wait of the jobs arriving in the window, at most this many seconds.
    WaitP95 {
        /// Seconds.
        max_s: f64,
    },
    /// The share of the window with at least one job waiting, at most this many percent.
    Queued {
        /// Percent.
        max_pct: f64,
    },
}

impl Target {
    /// The measure the target bounds.
    pub fn metric(&self, m: &TimedMetrics) -> f64 {
        match self {
            Target::WaitP95 { .. } => m.wait_p95_s,
            Target::Queued { .. } => m.queue_nonempty_pct,
        }
    }

    fn bound(&self) -> f64 {
        match *self {
            Target::WaitP95 { max_s } => max_s,
            Target::Queued { max_pct } => max_pct,
        }
    }

    /// The measure's name, with its unit, for tables.
    pub fn name(&self) -> &'static str {
        match self {
            Target::WaitP95 { .. } => "wait p95 s",
            Target::Queued { .. } => "queued %",
        }
    }

    /// The target in words.
    pub fn describe(&self) -> String {
        format!("{} <= {}", self.name(), self.bound())
    }
}

/// The jobs of each seed, by seed.
pub type SeedJobs = Vec<(u64, Vec<Job>)>;

/// A sizing question: the node types, the jobs of each seed, and the target.
pub struct FleetQuestion<'a> {
    /// Node types fleets are made of.
    pub types: &'a [NodeType],
    /// The jobs, one list per seed.
    pub jobs: SeedJobs,
    /// Share of jobs the target workload's task types cover.
    pub coverage: f64,
    /// What a fleet must achieve.
    pub target: Target,
    /// Replay settings (the seed is each job list's).
    pub cfg: TimedConfig,
}

/// The answer for one policy.
pub struct FleetAnswer {
    /// The policy replayed.
    pub policy: String,
    /// The search: every fleet evaluated and the cheapest that met the target.
    pub search: Search,
    /// The worst seed's figures of every fleet evaluated.
    pub metrics: HashMap<Vec<u32>, TimedMetrics>,
    /// Wall-clock time of the search.
    pub elapsed: Duration,
}

impl FleetAnswer {
    /// The figures of the chosen fleet, if one met the target.
    pub fn best_metrics(&self) -> Option<&TimedMetrics> {
        self.search
            .best
            .as_ref()
            .and_then(|b| self.metrics.get(&b.counts))
    }
}

/// How fleets are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The staircase of minimal fleets ([`planning::cheapest`]).
    Staircase,
    /// Every fleet within the bounds ([`planning::exhaustive`]): for checking small cases.
    Exhaustive,
}

/// Searches the cheapest fleet meeting the target under `policy`; `progress` hears of each
/// fleet evaluated.
pub fn answer(
    question: &FleetQuestion<'_>,
    policy: &dyn Policy,
    method: Method,
    mut progress: impl FnMut(&[u32], &Verdict),
) -> FleetAnswer {
    let start = Instant::now();
    let priced: Vec<_> = question.types.iter().map(NodeType::priced).collect();
    let workloads: Vec<_> = question
        .jobs
        .iter()
        .map(|(_, jobs)| workload_of(jobs, question.coverage))
        .collect();
    let mut metrics = HashMap::new();
    let evaluate = |counts: &[u32]| {
        let verdict = match evaluate(question, &workloads, policy, counts) {
            // A fleet that cannot run some job at all has no wait to speak of.
            Some(worst) if worst.never_placed > 0 => {
                metrics.insert(counts.to_vec(), worst);
                Verdict {
                    metric: f64::INFINITY,
                    meets: false,
                }
            }
            Some(worst) => {
                let value = question.target.metric(&worst);
                metrics.insert(counts.to_vec(), worst);
                Verdict {
                    metric: value,
                    meets: value <= question.target.bound(),
                }
            }
            None => Verdict {
                metric: f64::INFINITY,
                meets: false,
            },
        };
        progress(counts, &verdict);
        verdict
    };
    let search = match method {
        Method::Staircase => planning::cheapest(&priced, evaluate),
        Method::Exhaustive => planning::exhaustive(&priced, evaluate),
    };
    FleetAnswer {
        policy: policy.name().to_string(),
        search,
        metrics,
        elapsed: start.elapsed(),
    }
}

/// The worst seed's figures on the fleet; `None` for a fleet with no node.
fn evaluate(
    question: &FleetQuestion<'_>,
    workloads: &[kubesched_core::fragmentation::Workload],
    policy: &dyn Policy,
    counts: &[u32],
) -> Option<TimedMetrics> {
    let nodes = fleet(question.types, counts);
    if nodes.is_empty() {
        return None;
    }
    let mut worst: Option<TimedMetrics> = None;
    for ((seed, jobs), workload) in question.jobs.iter().zip(workloads) {
        let cfg = TimedConfig {
            seed: *seed,
            ..question.cfg
        };
        let run = TimedReplay::new(nodes.clone(), jobs, policy, workload, &cfg).finish(|_, _| {});
        let m = run.metrics;
        let value = question.target.metric(&m);
        let worse = worst.is_none_or(|w| {
            (m.never_placed, value).partial_cmp(&(w.never_placed, question.target.metric(&w)))
                == Some(std::cmp::Ordering::Greater)
        });
        if worse {
            worst = Some(m);
        }
    }
    worst
}

/// A fleet as `2×a + 0×b`.
pub fn fleet_name(types: &[NodeType], counts: &[u32]) -> String {
    types
        .iter()
        .zip(counts)
        .map(|(t, n)| format!("{n}×{}", t.name))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The answer as text: every fleet evaluated (by cost), the chosen one and the curve.
pub fn table(question: &FleetQuestion<'_>, answer: &FleetAnswer) -> String {
    let types = question.types;
    let metric = question.target.name();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy {}: {} fleets evaluated in {:.1} s (target {}, worst of {} seed(s))",
        answer.policy,
        answer.search.evaluated.len(),
        answer.elapsed.as_secs_f64(),
        question.target.describe(),
        question.jobs.len()
    );
    let _ = writeln!(
        out,
        "  the cost curve: the cheapest fleet evaluated for each lower {metric} (all in the CSV)"
    );
    let _ = writeln!(
        out,
        "  {:<36} {:>9} {:>12} {:>10} {:>6}",
        "fleet", "cost/h", metric, "util %", "meets"
    );
    for p in answer.search.curve() {
        let m = answer.metrics.get(&p.counts);
        let _ = writeln!(
            out,
            "  {:<36} {:>9.2} {:>12} {:>10} {:>6}",
            fleet_name(types, &p.counts),
            p.cost_per_hour,
            shown(p.verdict.metric),
            m.map_or("-".into(), |m| format!("{:.1}", m.compute_util_pct)),
            if p.verdict.meets { "yes" } else { "no" }
        );
    }
    match (&answer.search.best, answer.best_metrics()) {
        (Some(best), Some(m)) => {
            let _ = writeln!(
                out,
                "  chosen: {} at {:.2}/h: {metric} {}, wait p99 {:.1} s, compute in use {:.1} %, \
                 unused {:.1} %",
                fleet_name(types, &best.counts),
                best.cost_per_hour,
                shown(best.verdict.metric),
                m.wait_p99_s,
                m.compute_util_pct,
                100.0 - m.compute_util_pct
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  chosen: none: no fleet within the types' maxNodes meets the target"
            );
        }
    }
    out
}

fn shown(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

/// Every fleet evaluated, as CSV: policy, counts per type, cost, the target metric and the
/// worst seed's main figures.
pub fn csv(question: &FleetQuestion<'_>, answers: &[FleetAnswer]) -> String {
    let mut out = String::from("policy");
    for t in question.types {
        let _ = write!(out, ",{}", t.name);
    }
    out.push_str(
        ",cost_per_hour,metric,meets,chosen,wait_p95_s,wait_p99_s,compute_util_pct,never_placed\n",
    );
    for a in answers {
        for p in &a.search.evaluated {
            let _ = write!(out, "{}", a.policy);
            for c in &p.counts {
                let _ = write!(out, ",{c}");
            }
            let m = a.metrics.get(&p.counts);
            let chosen = a.search.best.as_ref().is_some_and(|b| b.counts == p.counts);
            let _ = writeln!(
                out,
                ",{:.4},{},{},{},{},{},{},{}",
                p.cost_per_hour,
                p.verdict.metric,
                p.verdict.meets,
                chosen,
                m.map_or(f64::NAN, |m| m.wait_p95_s),
                m.map_or(f64::NAN, |m| m.wait_p99_s),
                m.map_or(f64::NAN, |m| m.compute_util_pct),
                m.map_or(0, |m| m.never_placed)
            );
        }
    }
    out
}

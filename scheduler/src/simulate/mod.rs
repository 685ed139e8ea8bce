//! The `simulate` command's engine: a scenario (cluster, pod stream, target
//! workload) replayed under several policies and seeds with the core replay,
//! and the per-run results the report, CSV and chart are made from.

pub mod builtin;
pub mod chart;
pub mod cluster_spec;
pub mod explain;
pub mod jobs;
pub mod mig_mapping;
pub mod progress;
pub mod summary;
pub mod timed;
pub mod timed_table;
pub mod trace;

use std::time::{Duration, Instant};

use kubesched_core::fragmentation::Workload;
use kubesched_core::node::NodeState;
use kubesched_core::replay::{self, Curve, Replay, ReplayConfig};
use kubesched_core::request::PodRequest;
use kubesched_core::scoring::Policy;

/// What to replay.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Scenario name, shown in the tables, the CSV and the chart title.
    pub name: String,
    /// The cluster's nodes, empty, at the start of every replay.
    pub nodes: Vec<NodeState>,
    /// The original pod list (before tuning and shuffling).
    pub pods: Vec<PodRequest>,
    /// The target workload M given to fragmentation-aware policies.
    pub workload: Workload,
}

impl Scenario {
    /// A scenario whose target workload is the pod list's own task-type
    /// distribution, most frequent types up to `coverage` (FGD's "typical
    /// pods"; memory is not part of a task type).
    pub fn from_trace(
        name: impl Into<String>,
        nodes: Vec<NodeState>,
        pods: Vec<PodRequest>,
        coverage: f64,
    ) -> Self {
        let types: Vec<PodRequest> = pods
            .iter()
            .map(|p| PodRequest {
                memory_mib: 0,
                ..p.clone()
            })
            .collect();
        let workload = Workload::from_requests(&types, coverage);
        Scenario {
            name: name.into(),
            nodes,
            pods,
            workload,
        }
    }

    /// Number of GPUs across the scenario's nodes.
    pub fn gpu_count(&self) -> usize {
        self.nodes.iter().map(|n| n.gpus.len()).sum()
    }

    /// Total GPU capacity of the scenario's nodes, in milli-GPU.
    pub fn capacity_milli(&self) -> u64 {
        self.nodes.iter().map(NodeState::capacity_milli).sum()
    }
}

/// A run of one policy, as the summaries group them.
pub trait PolicyRun {
    /// Name of the policy the run replayed.
    fn policy(&self) -> &str;
}

impl PolicyRun for RunResult {
    fn policy(&self) -> &str {
        &self.policy
    }
}

impl PolicyRun for timed::TimedResult {
    fn policy(&self) -> &str {
        &self.policy
    }
}

/// The runs of each policy, policies in the order they first ran.
pub fn by_policy<R: PolicyRun>(runs: &[R]) -> Vec<(&str, Vec<&R>)> {
    let mut groups: Vec<(&str, Vec<&R>)> = Vec::new();
    for run in runs {
        match groups.iter_mut().find(|(p, _)| *p == run.policy()) {
            Some((_, rs)) => rs.push(run),
            None => groups.push((run.policy(), vec![run])),
        }
    }
    groups
}

/// One (policy, seed) replay.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Name of the policy replayed.
    pub policy: String,
    /// Replay seed: drives pod and node shuffling, resampling and random tie-breaks.
    pub seed: u64,
    /// Allocation and fragmentation per percent of arrived load, and the failed pods.
    pub curve: Curve,
    /// Number of pods in the replayed stream (after tuning and shuffling).
    pub pods: usize,
    /// Wall-clock time the replay took.
    pub elapsed: Duration,
    /// Final state, for the stranded-capacity views.
    pub nodes: Vec<NodeState>,
}

/// Replays the scenario once; `progress` gets (pods done, pods total).
pub fn run_one(
    scenario: &Scenario,
    policy: &dyn Policy,
    cfg: &ReplayConfig,
    mut progress: impl FnMut(usize, usize),
) -> RunResult {
    let start = Instant::now();
    let stream = replay::tune_and_shuffle(&scenario.pods, scenario.capacity_milli(), cfg);
    let mut r = Replay::new(scenario.nodes.clone(), policy, &scenario.workload, cfg);
    let total = stream.len();
    let curve = replay::run(&mut r, &stream, |done| progress(done, total));
    RunResult {
        policy: policy.name().to_string(),
        seed: cfg.seed,
        curve,
        pods: total,
        elapsed: start.elapsed(),
        nodes: r.nodes().to_vec(),
    }
}

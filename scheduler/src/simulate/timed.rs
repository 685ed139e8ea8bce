//! The `simulate` command's timed replays: a cluster and a timed workload
//! (a job file, the Alibaba trace with its own timing, or a built-in seeded
//! generator) replayed under several policies and seeds with the core's
//! timed engine.

use std::time::{Duration, Instant};

use kubesched_core::fragmentation::Workload;
use kubesched_core::node::NodeState;
use kubesched_core::request::PodRequest;
use kubesched_core::scoring::Policy;
use kubesched_core::timed::{
    Generator, Job, MixEntry, SeriesPoint, TimedConfig, TimedMetrics, TimedReplay, demand_share,
};

/// Where a timed scenario's jobs come from.
#[derive(Debug, Clone)]
pub enum JobSource {
    /// The same jobs for every seed (a job file, the trace); the seed moves node order
    /// and tie-breaks only.
    Fixed(Vec<Job>),
    /// A new draw per seed.
    Generated(Generator),
}

/// A cluster and a timed workload.
#[derive(Debug, Clone)]
pub struct TimedScenario {
    /// Scenario name, shown in the tables and files.
    pub name: String,
    /// The cluster's nodes, empty, at the start of every replay.
    pub nodes: Vec<NodeState>,
    /// The jobs.
    pub jobs: JobSource,
    /// Share of jobs the target workload's task types cover (FGD's "typical pods").
    pub coverage: f64,
}

impl TimedScenario {
    /// The jobs of one seed.
    pub fn jobs(&self, seed: u64) -> Vec<Job> {
        match &self.jobs {
            JobSource::Fixed(jobs) => jobs.clone(),
            JobSource::Generated(g) => Generator { seed, ..g.clone() }.generate(),
        }
    }

    /// Number of GPUs across the scenario's nodes.
    pub fn gpu_count(&self) -> usize {
        self.nodes.iter().map(|n| n.gpus.len()).sum()
    }
}

/// The target workload of a job list: its task types (memory left out, as FGD does).
pub fn workload_of(jobs: &[Job], coverage: f64) -> Workload {
    let types: Vec<PodRequest> = jobs
        .iter()
        .map(|j| PodRequest {
            memory_mib: 0,
            ..j.request.clone()
        })
        .collect();
    Workload::from_requests(&types, coverage)
}

/// A generator's mix from (request, weight) pairs on `nodes`.
pub fn mix_on(pairs: &[(PodRequest, u32)], nodes: &[NodeState]) -> Vec<MixEntry> {
    pairs
        .iter()
        .map(|(request, weight)| MixEntry {
            share: demand_share(&request.gpu, nodes),
            request: request.clone(),
            weight: f64::from(*weight),
        })
        .collect()
}

/// One (policy, seed) timed replay.
#[derive(Debug, Clone)]
pub struct TimedResult {
    /// Name of the policy replayed.
    pub policy: String,
    /// Seed of the run.
    pub seed: u64,
    /// Jobs replayed.
    pub jobs: usize,
    /// The measured window's figures.
    pub metrics: TimedMetrics,
    /// Cluster figures over time.
    pub series: Vec<SeriesPoint>,
    /// Wall-clock time the replay took.
    pub elapsed: Duration,
}

/// Replays the scenario once; `progress` gets (jobs arrived, jobs total).
pub fn run_one(
    scenario: &TimedScenario,
    policy: &dyn Policy,
    cfg: &TimedConfig,
    progress: impl FnMut(usize, usize),
) -> TimedResult {
    let start = Instant::now();
    let jobs = scenario.jobs(cfg.seed);
    let workload = workload_of(&jobs, scenario.coverage);
    let run =
        TimedReplay::new(scenario.nodes.clone(), &jobs, policy, &workload, cfg).finish(progress);
    TimedResult {
        policy: policy.name().to_string(),
        seed: cfg.seed,
        jobs: jobs.len(),
        metrics: run.metrics,
        series: run.series,
        elapsed: start.elapsed(),
    }
}

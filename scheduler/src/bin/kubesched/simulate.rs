//! `kubesched simulate`: a workload replayed on a simulated cluster under
//! several policies and seeds. Two replays: `fill` (the FGD protocol: arrivals
//! only, allocation at each arrived load) and `timed` (jobs arrive, run and
//! leave; utilisation, fragmentation and waits over a measured window).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use kubesched_core::catalogue::MigGeometry;
use kubesched_core::inventory::MigMode;
use kubesched_core::node::{GpuSlots, NodeState};
use kubesched_core::placement;
use kubesched_core::replay::{Outcome, Replay, ReplayConfig};
use kubesched_core::scoring::{self, Policy};
use kubesched_core::timed::{Arrivals, Generator, Job, TimedConfig};
use kubesched_scheduler::simulate::mig_mapping::{self, MigMapping};
use kubesched_scheduler::simulate::timed::{self, JobSource, TimedScenario};
use kubesched_scheduler::simulate::{
    self, Scenario, builtin, chart, cluster_spec, explain, jobs, progress::Progress, summary,
    timed_table, trace,
};

use super::{ClusterSource, load_cluster};

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Static,
    Dynamic,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReplayKind {
    /// The FGD protocol: arrivals only, no departures; allocation at each arrived load.
    Fill,
    /// Jobs arrive at their time, run and leave; metrics over a measured window.
    Timed,
}

#[derive(Clone, Copy, ValueEnum)]
enum Model {
    /// Exponential gaps between arrivals.
    Poisson,
    /// Bursts of jobs (mean 20, within a few seconds), the bursts Poisson.
    Bursts,
    /// Poisson, the mix reweighted towards small profiles (weight / share²).
    Skewed,
    /// Poisson, alternating a small job (≤ 2/7 GPU) and a large one.
    Adversarial,
    /// Prefilled to the cluster's compute at time 0, then 1.5× the load: a queue all along.
    Saturated,
}

impl Model {
    fn arrivals(self) -> Arrivals {
        match self {
            Model::Poisson => Arrivals::Poisson,
            Model::Bursts => Arrivals::Bursts,
            Model::Skewed => Arrivals::Skewed,
            Model::Adversarial => Arrivals::Adversarial,
            Model::Saturated => Arrivals::Saturated,
        }
    }
}

/// Policies compared when none are given: the fill replay's published baselines, and the
/// timed replay's churn baselines.
const FILL_POLICIES: &str = "kubesched,fgd,best-fit,random";
const TIMED_POLICIES: &str = "kubesched,fgd,mig-best-fit,first-fit,hami,hami-legacy,nvidia-dra";

#[derive(Args)]
pub(crate) struct SimulateArgs {
    /// Folder with the Alibaba GPU trace CSVs (cluster-trace-gpu-v2023/csv). Without it, the built-in scenario runs.
    #[arg(long)]
    trace_dir: Option<PathBuf>,
    /// Pod list variant of the trace: `default`, `cpu050`, `multigpu20`, ... (file `openb_pod_list_<NAME>.csv`).
    #[arg(long, default_value = "default")]
    pods: String,
    /// Node list file inside --trace-dir.
    #[arg(long, default_value = "openb_node_list_gpu_node.csv")]
    nodes: String,
    /// Which replay: `fill` (FGD protocol) or `timed` (with departures). Default: `fill` with --trace-dir, else `timed`.
    #[arg(long, value_enum)]
    replay: Option<ReplayKind>,
    /// Comma-separated policies to compare, ours first. Default: kubesched,fgd,best-fit,random (fill); kubesched,fgd,mig-best-fit,first-fit,hami,hami-legacy,nvidia-dra (timed).
    #[arg(long, value_delimiter = ',')]
    policies: Option<Vec<String>>,
    /// First seed; runs use seeds first..first+count.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of seeds per policy.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Fill: top the workload up to this multiple of GPU capacity (the FGD artifact uses 1.3).
    #[arg(long, default_value_t = 1.3)]
    tune: f64,
    /// Share of pods the target workload's task types must cover (FGD's "typical pods").
    #[arg(long, default_value_t = 0.95)]
    coverage: f64,
    /// MIG mode of the built-in scenario's GPUs (and of the trace's, with --mig).
    #[arg(long, value_enum, default_value = "dynamic")]
    mig_mode: Mode,
    /// MIG track: turn every trace GPU into an H100-80GB in MIG mode and map fractional requests to profiles.
    #[arg(long)]
    mig: bool,
    /// How --mig maps a GPU share to a profile: round or ceil of share×7 slices.
    #[arg(long, value_enum, default_value = "round")]
    mig_mapping: MigMapping,
    /// Fill: original pod count of the built-in scenario (before topping up).
    #[arg(long, default_value_t = 1000)]
    builtin_pods: usize,
    /// A saved cluster (`kubesched snapshot`). Alone: what-if, the snapshot's pending pods placed on its nodes as they are now, under each policy. With --jobs or --replay timed: the timed replay's cluster, its running pods holding what they hold.
    #[arg(long, conflicts_with_all = ["trace_dir", "mig", "cluster_nodes"])]
    cluster: Option<PathBuf>,
    /// Fill: print the first N placements of the first policy and seed, with the policy's reasons.
    #[arg(long, default_value_t = 5)]
    explain: usize,
    /// Timed: a job file, JSON Lines, one job per line (format in the README).
    #[arg(long, conflicts_with = "trace_dir")]
    jobs: Option<PathBuf>,
    /// Timed: the cluster, as NODESxGPUSxMODEL terms separated by commas (`2x4xH100-80GB,1x8xL40S`); MIG-capable models are in dynamic MIG mode. Default: the built-in cluster, or the trace's nodes.
    #[arg(long = "cluster-nodes")]
    cluster_nodes: Option<String>,
    /// Timed, without --jobs or a trace: the built-in generator's arrival model.
    #[arg(long, value_enum, default_value = "poisson")]
    generate: Model,
    /// Timed, generated: number of jobs per seed.
    #[arg(long, default_value_t = 6000)]
    generate_jobs: usize,
    /// Timed, generated: offered load, the GPU compute arriving jobs ask for per unit of time as a share of the cluster's.
    #[arg(long, default_value_t = 0.95)]
    load: f64,
    /// Timed, generated: mean run time of a job, seconds (log-normal, σ = 1).
    #[arg(long, default_value_t = 600.0)]
    mean_runtime_s: f64,
    /// Timed, from the trace: multiply the trace's arrival times by this (below 1 squeezes them: more load; lengths are kept).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Timed: creating a dynamic MIG instance holds its positions this long before the pod runs (assumed; real GPUs take seconds).
    #[arg(long, default_value_t = 2000)]
    create_delay_ms: u64,
    /// Timed: destroying a dynamic MIG instance keeps its positions held this long after the pod ends (assumed).
    #[arg(long, default_value_t = 1000)]
    destroy_delay_ms: u64,
    /// Timed: share of the arrival span left out of the measured window at its start (the drain after the last arrival is always left out).
    #[arg(long, default_value_t = 0.25)]
    warmup: f64,
    /// Write the results here: allocation.csv and allocation.svg (fill), timed-runs.csv and timed-series.csv (timed).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl SimulateArgs {
    fn mode(&self) -> MigMode {
        match self.mig_mode {
            Mode::Static => MigMode::Static,
            Mode::Dynamic => MigMode::Dynamic,
        }
    }

    fn kind(&self) -> ReplayKind {
        self.replay.unwrap_or(if self.trace_dir.is_some() {
            ReplayKind::Fill
        } else {
            ReplayKind::Timed
        })
    }

    fn policies(&self) -> anyhow::Result<Vec<Box<dyn Policy>>> {
        let default = match self.kind() {
            ReplayKind::Fill => FILL_POLICIES,
            ReplayKind::Timed => TIMED_POLICIES,
        };
        let names: Vec<String> = match &self.policies {
            Some(names) => names.clone(),
            None => default.split(',').map(str::to_string).collect(),
        };
        Ok(names
            .iter()
            .map(|name| scoring::lookup(name))
            .collect::<Result<Vec<_>, _>>()?)
    }
}

pub(crate) fn simulate_cmd(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.cluster
        && args.replay.is_none()
        && args.jobs.is_none()
    {
        return what_if(path, &args.policies()?);
    }
    let policies = args.policies()?;
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    match args.kind() {
        ReplayKind::Fill => {
            if args.jobs.is_some() || args.cluster_nodes.is_some() || args.cluster.is_some() {
                bail!(
                    "--jobs, --cluster-nodes and --cluster with --replay are for the timed \
                     replay (--replay timed)"
                );
            }
            fill_cmd(&args, &policies)
        }
        ReplayKind::Timed => timed_cmd(&args, &policies),
    }
}

/// Replays a snapshot's pending pods, in file order, on its nodes as they
/// are, once per policy, and says which fit.
fn what_if(path: &Path, policies: &[Box<dyn Policy>]) -> anyhow::Result<()> {
    let source = ClusterSource::snapshot(path);
    let (snapshot, ext) = load_cluster(&source)?;
    let pending = snapshot.pending(&ext);
    let workload = ext.workload().current().0;
    let nodes: Vec<NodeState> = ext.state().node_states().cloned().collect();
    println!("{} nodes, {} pending pods", nodes.len(), pending.len());
    for policy in policies {
        let cfg = ReplayConfig {
            shuffle_nodes: false,
            shuffle_pods: false,
            ..Default::default()
        };
        let mut replay = Replay::new(nodes.clone(), policy.as_ref(), &workload, &cfg);
        let mut failed = Vec::new();
        for (pod, req) in &pending {
            if let Outcome::Failed = replay.step(req) {
                failed.push(pod.as_str());
            }
        }
        let placed = pending.len() - failed.len();
        println!(
            "{:<14} fits {placed}/{}{}",
            policy.name(),
            pending.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; left pending: {}", failed.join(", "))
            }
        );
    }
    Ok(())
}

fn load(args: &SimulateArgs) -> anyhow::Result<Scenario> {
    match &args.trace_dir {
        Some(dir) => {
            let nodes = trace::load_nodes(&dir.join(&args.nodes))?;
            let pods = trace::load_pods(&dir.join(format!("openb_pod_list_{}.csv", args.pods)))?;
            let scenario = Scenario::from_trace(args.pods.clone(), nodes, pods, args.coverage);
            Ok(if args.mig {
                mig_mapping::to_mig(&scenario, args.mig_mapping, args.mode(), args.coverage)
            } else {
                scenario
            })
        }
        None if args.mig => bail!(
            "--mig maps a trace onto MIG GPUs: give --trace-dir (the built-in scenario is MIG already)"
        ),
        None => Ok(builtin::scenario(args.mode(), args.builtin_pods)),
    }
}

fn fill_cmd(args: &SimulateArgs, policies: &[Box<dyn Policy>]) -> anyhow::Result<()> {
    if !(0.0..=10.0).contains(&args.tune) {
        bail!("--tune must be between 0 and 10");
    }
    let scenario = load(args)?;
    println!(
        "scenario {}: {} nodes, {} GPUs, {} pods, {} task types in the target workload",
        scenario.name,
        scenario.nodes.len(),
        scenario.gpu_count(),
        scenario.pods.len(),
        scenario.workload.types.len()
    );
    if let (Some(policy), true) = (policies.first(), args.explain > 0) {
        let cfg = ReplayConfig {
            seed: args.seed,
            tune_ratio: args.tune,
            ..Default::default()
        };
        println!(
            "first placements by {} (seed {}):",
            policy.name(),
            args.seed
        );
        for line in explain::first_placements(&scenario, policy.as_ref(), &cfg, args.explain) {
            println!("  {line}");
        }
    }
    let mut runs = Vec::new();
    for policy in policies {
        for seed in args.seed..args.seed + args.seeds {
            let cfg = ReplayConfig {
                seed,
                tune_ratio: args.tune,
                ..Default::default()
            };
            let mut bar = Progress::new(format!("{} seed {seed}", policy.name()));
            runs.push(simulate::run_one(
                &scenario,
                policy.as_ref(),
                &cfg,
                |d, t| bar.update(d, t),
            ));
        }
    }
    let max_pct = (args.tune * 100.0).round() as usize;
    let title = format!(
        "{}: unallocated GPU % (mean ± 95% CI over seeds) at arrived load",
        scenario.name
    );
    print!("{}", summary::table(&title, &summary::summarize(&runs)));
    if scenario
        .nodes
        .iter()
        .flat_map(|n| &n.gpus)
        .any(|g| g.is_mig())
    {
        let rows = summary::mig_summaries(&runs, &scenario.workload);
        print!(
            "{}",
            summary::mig_table(
                "MIG GPUs at the end of the run (mean over seeds): positions and the largest profile each GPU can still host",
                &rows
            )
        );
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let csv = summary::allocation_csv(
            &scenario.name,
            args.tune,
            scenario.gpu_count(),
            &runs,
            max_pct,
        );
        std::fs::write(out.join("allocation.csv"), csv).context("writing allocation.csv")?;
        let svg = chart::allocation_svg(
            &format!("GPU allocation vs arrived load: {}", scenario.name),
            &runs,
            max_pct,
        );
        std::fs::write(out.join("allocation.svg"), svg).context("writing allocation.svg")?;
        println!(
            "wrote {} and {}",
            out.join("allocation.csv").display(),
            out.join("allocation.svg").display()
        );
    }
    Ok(())
}

/// The MIG geometry job files resolve `memory_mib` against: the most common one of the
/// cluster's MIG GPUs.
fn cluster_geometry(nodes: &[NodeState]) -> Option<MigGeometry> {
    let mut counts: Vec<(MigGeometry, usize)> = Vec::new();
    for gpu in nodes.iter().flat_map(|n| &n.gpus) {
        if let GpuSlots::Mig(m) = &gpu.slots {
            let geometry = m.gpu.geometry().as_ref();
            match counts.iter_mut().find(|(g, _)| g == geometry) {
                Some((_, n)) => *n += 1,
                None => counts.push((geometry.clone(), 1)),
            }
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(g, _)| g)
}

/// The cluster of a timed replay: a snapshot's nodes as they are (its running pods keep
/// what they hold), --cluster-nodes, the trace's nodes, or the built-in one.
fn timed_nodes(args: &SimulateArgs) -> anyhow::Result<Vec<NodeState>> {
    if let Some(path) = &args.cluster {
        let source = ClusterSource::snapshot(path);
        let (_, ext) = load_cluster(&source)?;
        return Ok(ext.state().node_states().cloned().collect());
    }
    if let Some(spec) = &args.cluster_nodes {
        return Ok(cluster_spec::parse_node_spec(spec)?);
    }
    match &args.trace_dir {
        Some(dir) => Ok(trace::load_nodes(&dir.join(&args.nodes))?),
        None => Ok(builtin::scenario(args.mode(), 0).nodes),
    }
}

/// Jobs with the trace's requests mapped onto MIG profiles, and the MIG cluster.
fn to_mig_jobs(
    args: &SimulateArgs,
    nodes: Vec<NodeState>,
    jobs: Vec<Job>,
) -> (String, Vec<NodeState>, Vec<Job>) {
    let scenario = Scenario::from_trace(
        args.pods.clone(),
        nodes,
        jobs.iter().map(|j| j.request.clone()).collect(),
        args.coverage,
    );
    let mig = mig_mapping::to_mig(&scenario, args.mig_mapping, args.mode(), args.coverage);
    let jobs = jobs
        .into_iter()
        .zip(mig.pods)
        .map(|(job, request)| Job { request, ..job })
        .collect();
    (mig.name, mig.nodes, jobs)
}

fn timed_scenario(args: &SimulateArgs) -> anyhow::Result<TimedScenario> {
    if !(args.load > 0.0 && args.load <= 10.0) {
        bail!("--load must be above 0 and at most 10");
    }
    if !(args.time_scale > 0.0 && args.time_scale <= 1000.0) {
        bail!("--time-scale must be above 0 and at most 1000");
    }
    let nodes = timed_nodes(args)?;
    let (name, nodes, source) = if let Some(path) = &args.jobs {
        let jobs = jobs::read_jobs(path, cluster_geometry(&nodes).as_ref())?;
        let name = format!("jobs from {}", path.display());
        (name, nodes, JobSource::Fixed(jobs))
    } else if let Some(dir) = &args.trace_dir {
        let path = dir.join(format!("openb_pod_list_{}.csv", args.pods));
        let jobs = trace::load_timed_pods(&path)?;
        let (name, nodes, mut jobs) = if args.mig {
            to_mig_jobs(args, nodes, jobs)
        } else {
            (args.pods.clone(), nodes, jobs)
        };
        // The pod list is a sample of the cluster's pods: on its own clock it keeps about 1%
        // of the node list's GPUs busy. --time-scale squeezes its arrivals for a what-if.
        if args.time_scale != 1.0 {
            for job in &mut jobs {
                job.arrival_ms = (job.arrival_ms as f64 * args.time_scale) as u64;
            }
        }
        let name = format!("{name}, timed (arrival times x{})", args.time_scale);
        (name, nodes, JobSource::Fixed(jobs))
    } else {
        if args.mig {
            bail!("--mig maps a trace onto MIG GPUs: give --trace-dir");
        }
        if !(1.0..=1e9).contains(&args.mean_runtime_s) {
            bail!("--mean-runtime-s must be at least 1 and at most 1e9");
        }
        // Only the kinds of job this cluster can run at all.
        let mix: Vec<_> = builtin::mix()
            .into_iter()
            .filter(|(req, _)| nodes.iter().any(|n| placement::candidates(n, req).is_ok()))
            .collect();
        if mix.is_empty() {
            bail!("no job of the built-in mix fits this cluster");
        }
        let generator = Generator {
            arrivals: args.generate.arrivals(),
            jobs: args.generate_jobs,
            load: args.load,
            mean_runtime_ms: args.mean_runtime_s * 1000.0,
            capacity_gpus: nodes.iter().map(|n| n.gpus.len()).sum::<usize>() as f64,
            mix: timed::mix_on(&mix, &nodes),
            seed: args.seed,
        };
        let cluster = if args.cluster_nodes.is_some() {
            "the given cluster"
        } else {
            "the built-in cluster"
        };
        let name = format!(
            "{} arrivals at {:.0}% load on {cluster} ({} MIG)",
            generator.arrivals.name(),
            args.load * 100.0,
            match args.mig_mode {
                Mode::Static => "static",
                Mode::Dynamic => "dynamic",
            }
        );
        (name, nodes, JobSource::Generated(generator))
    };
    Ok(TimedScenario {
        name,
        nodes,
        jobs: source,
        coverage: args.coverage,
    })
}

fn timed_cmd(args: &SimulateArgs, policies: &[Box<dyn Policy>]) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.warmup) {
        bail!("--warmup must be at least 0 and below 1");
    }
    let scenario = timed_scenario(args)?;
    let jobs = scenario.jobs(args.seed).len();
    println!(
        "scenario {}: {} nodes, {} GPUs, {jobs} jobs per seed",
        scenario.name,
        scenario.nodes.len(),
        scenario.gpu_count(),
    );
    let mut runs = Vec::new();
    for policy in policies {
        for seed in args.seed..args.seed + args.seeds {
            let cfg = TimedConfig {
                seed,
                create_delay_ms: args.create_delay_ms,
                destroy_delay_ms: args.destroy_delay_ms,
                warmup: args.warmup,
                ..TimedConfig::default()
            };
            let mut bar = Progress::new(format!("{} seed {seed}", policy.name()));
            runs.push(timed::run_one(&scenario, policy.as_ref(), &cfg, |d, t| {
                bar.update(d, t)
            }));
        }
    }
    print!("{}", timed_table::table(&scenario.name, &runs));
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let (runs_path, series_path) = (out.join("timed-runs.csv"), out.join("timed-series.csv"));
        std::fs::write(&runs_path, timed_table::runs_csv(&scenario.name, &runs))
            .with_context(|| format!("writing {}", runs_path.display()))?;
        std::fs::write(&series_path, timed_table::series_csv(&runs))
            .with_context(|| format!("writing {}", series_path.display()))?;
        println!(
            "wrote {} and {}",
            runs_path.display(),
            series_path.display()
        );
    }
    Ok(())
}

//! `kubesched plan`: the capacity planner's answers. `plan fleet` finds the cheapest fleet
//! of given node types that meets a wait target, under each policy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kubesched_core::catalogue::MigGeometry;
use kubesched_core::inventory::MigMode;
use kubesched_core::node::NodeState;
use kubesched_core::planning::mig_layouts::{self, Counts};
use kubesched_core::request::PodRequest;
use kubesched_core::scoring::{self, Policy};
use kubesched_core::timed::{Arrivals, Generator, Job, TimedConfig};
use kubesched_scheduler::plan::fleet::{self, FleetQuestion, SeedJobs, Target};
use kubesched_scheduler::plan::mig;
use kubesched_scheduler::plan::node_types::{self, NodeType};
use kubesched_scheduler::simulate::{builtin, jobs, timed, trace};

use super::{ClusterSource, load_cluster};

#[derive(Subcommand)]
pub(crate) enum PlanCommand {
    /// The cheapest fleet of the given node types that meets a wait target, under each policy, with the cost curve.
    Fleet(FleetArgs),
    /// MIG layouts for a static pool that serve a demand mix best, as a mig-parted config, compared by replay with today's layouts and the usual hand-picked ones.
    Mig(MigArgs),
}

#[derive(Args)]
pub(crate) struct MigArgs {
    /// GPU model of the pool (a MIG-capable catalogue model).
    #[arg(long, default_value = "H100-80GB")]
    model: String,
    /// GPUs per node: mig-parted configures a node, so every node of the pool gets the same layouts.
    #[arg(long, default_value_t = 8)]
    gpus_per_node: usize,
    /// Nodes in the pool. Default: the snapshot's static MIG nodes of --model, else 1.
    #[arg(long)]
    nodes: Option<usize>,
    /// The demand: MIG instances wanted at once across the pool, e.g. `1g.10gb=30,3g.40gb=5`.
    #[arg(long, conflicts_with_all = ["jobs", "snapshot"])]
    demand: Option<String>,
    /// The demand: a job file (JSON Lines); the instances it keeps busy on average. Its jobs are also what is replayed.
    #[arg(long, conflicts_with = "snapshot")]
    jobs: Option<PathBuf>,
    /// The demand: the MIG pods of a saved cluster (bound and pending); the pool and today's layouts are its static MIG nodes of --model.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Name of the entry in the mig-parted config (the value of the node label `nvidia.com/mig.config`).
    #[arg(long, default_value = "kubesched-recommended")]
    config_name: String,
    /// Write the mig-parted config here instead of printing it.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Policy of the replays.
    #[arg(long, default_value = "kubesched")]
    policy: String,
    /// Replays of --demand or --snapshot: jobs generated (one instance each, Poisson arrivals keeping the demand busy on average).
    #[arg(long, default_value_t = 3000)]
    replay_jobs: usize,
    /// Replays of --demand or --snapshot: mean run time of a job, seconds.
    #[arg(long, default_value_t = 600.0)]
    mean_runtime_s: f64,
    /// Seed of the generated jobs and the replays.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Args)]
pub(crate) struct FleetArgs {
    /// Node types to build fleets from (YAML, `nodeTypes:` list; format in the README). Default: two example types with placeholder prices.
    #[arg(long)]
    node_types: Option<PathBuf>,
    /// The workload: a job file (JSON Lines, as `simulate --jobs`).
    #[arg(long, conflicts_with_all = ["trace_dir", "snapshot"])]
    jobs: Option<PathBuf>,
    /// The workload: the Alibaba GPU trace's pods with their own timing (folder of the CSVs).
    #[arg(long, conflicts_with = "snapshot")]
    trace_dir: Option<PathBuf>,
    /// With --trace-dir: pod list variant (file `openb_pod_list_<NAME>.csv`).
    #[arg(long, default_value = "default")]
    pods: String,
    /// With --trace-dir: multiply the trace's arrival times by this (below 1: more load).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// The workload: the GPU pods of a saved cluster (`kubesched snapshot`), as a mix arriving at --load of that cluster's GPUs.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Generated workloads (built-in mix or --snapshot): offered load as a share of the reference cluster's GPU compute (the built-in cluster's 192 GPUs, or the snapshot's).
    #[arg(long, default_value_t = 0.95)]
    load: f64,
    /// Generated workloads: jobs per seed.
    #[arg(long, default_value_t = 3000)]
    generate_jobs: usize,
    /// Generated workloads: mean run time of a job, seconds.
    #[arg(long, default_value_t = 600.0)]
    mean_runtime_s: f64,
    /// Target: the 95th percentile wait of the jobs at most this many seconds (default 60, unless --max-queued-pct is given).
    #[arg(long, conflicts_with = "max_queued_pct")]
    max_wait_p95_s: Option<f64>,
    /// Target: the share of time with at least one job waiting at most this many percent.
    #[arg(long)]
    max_queued_pct: Option<f64>,
    /// Comma-separated policies; the search runs for each.
    #[arg(long, value_delimiter = ',', default_value = "kubesched,first-fit")]
    policies: Vec<String>,
    /// First seed; a fleet must meet the target in every seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of seeds.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Share of jobs the target workload's task types cover.
    #[arg(long, default_value_t = 0.95)]
    coverage: f64,
    /// Share of the arrival span left out of the measured window at its start.
    #[arg(long, default_value_t = 0.25)]
    warmup: f64,
    /// Evaluate every fleet within the types' maxNodes instead of searching (slow: for checking the search on small cases).
    #[arg(long)]
    exhaustive: bool,
    /// Write every fleet evaluated here, as plan-fleets.csv.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn plan_cmd(command: PlanCommand) -> anyhow::Result<()> {
    match command {
        PlanCommand::Fleet(args) => fleet_cmd(&args),
        PlanCommand::Mig(args) => mig_cmd(&args),
    }
}

fn fleet_cmd(args: &FleetArgs) -> anyhow::Result<()> {
    let types = match &args.node_types {
        Some(path) => node_types::read(path)?,
        None => {
            println!("node types: the built-in examples (placeholder prices; give --node-types)");
            node_types::examples()
        }
    };
    let target = match (args.max_wait_p95_s, args.max_queued_pct) {
        (_, Some(pct)) if (0.0..=100.0).contains(&pct) => Target::Queued { max_pct: pct },
        (_, Some(_)) => bail!("--max-queued-pct must be between 0 and 100"),
        (Some(s), None) if s.is_finite() && s >= 0.0 => Target::WaitP95 { max_s: s },
        (Some(_), None) => bail!("--max-wait-p95-s must be 0 or more"),
        (None, None) => Target::WaitP95 { max_s: 60.0 },
    };
    if args.seeds == 0 || args.seeds > 100 {
        bail!("--seeds must be 1 to 100");
    }
    if !(0.0..1.0).contains(&args.warmup) {
        bail!("--warmup must be at least 0 and below 1");
    }
    let policies: Vec<Box<dyn Policy>> = args
        .policies
        .iter()
        .map(|name| scoring::lookup(name))
        .collect::<Result<_, _>>()?;
    let (name, jobs) = workload(args, &types)?;
    println!(
        "workload: {name}, {} jobs per seed; node types: {}",
        jobs.first().map_or(0, |(_, j)| j.len()),
        types
            .iter()
            .map(|t| format!(
                "{} ({}x{}{}, {:.2}/h, up to {})",
                t.name,
                t.gpus,
                t.model,
                if t.mig == node_types::MigSetting::Dynamic {
                    " MIG"
                } else {
                    ""
                },
                t.price_per_hour,
                t.max_nodes
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let question = FleetQuestion {
        types: &types,
        jobs,
        coverage: args.coverage,
        target,
        cfg: TimedConfig {
            warmup: args.warmup,
            ..TimedConfig::default()
        },
    };
    let mut answers = Vec::new();
    for policy in &policies {
        let method = if args.exhaustive {
            fleet::Method::Exhaustive
        } else {
            fleet::Method::Staircase
        };
        let answer = fleet::answer(&question, policy.as_ref(), method, |counts, verdict| {
            eprintln!(
                "  [{}] {}: {} {}",
                policy.name(),
                fleet::fleet_name(&types, counts),
                target.name(),
                if verdict.metric.is_finite() {
                    format!("{:.1}", verdict.metric)
                } else {
                    "-".into()
                }
            );
        });
        print!("{}", fleet::table(&question, &answer));
        answers.push(answer);
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let path = out.join("plan-fleets.csv");
        std::fs::write(&path, fleet::csv(&question, &answers))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The jobs of each seed, and the workload's name.
fn workload(args: &FleetArgs, types: &[NodeType]) -> anyhow::Result<(String, SeedJobs)> {
    let seeds = args.seed..args.seed + args.seeds;
    let fixed = |jobs: Vec<Job>| seeds.clone().map(|s| (s, jobs.clone())).collect();
    if let Some(path) = &args.jobs {
        let geometry = types
            .iter()
            .find_map(|t| kubesched_core::catalogue::mig_geometry(&t.model).ok())
            .map(|g| MigGeometry::clone(&g));
        let jobs = jobs::read_jobs(path, geometry.as_ref())?;
        return Ok((format!("jobs from {}", path.display()), fixed(jobs)));
    }
    if let Some(dir) = &args.trace_dir {
        if !(args.time_scale > 0.0 && args.time_scale <= 1000.0) {
            bail!("--time-scale must be above 0 and at most 1000");
        }
        let mut jobs =
            trace::load_timed_pods(&dir.join(format!("openb_pod_list_{}.csv", args.pods)))?;
        for job in &mut jobs {
            job.arrival_ms = (job.arrival_ms as f64 * args.time_scale) as u64;
        }
        let name = format!("trace {} (arrival times x{})", args.pods, args.time_scale);
        return Ok((name, fixed(jobs)));
    }
    if !(args.load > 0.0 && args.load <= 10.0) {
        bail!("--load must be above 0 and at most 10");
    }
    if !(1.0..=1e9).contains(&args.mean_runtime_s) {
        bail!("--mean-runtime-s must be at least 1 and at most 1e9");
    }
    if args.generate_jobs == 0 || args.generate_jobs > 1_000_000 {
        bail!("--generate-jobs must be 1 to 1000000");
    }
    let (name, reference, mix) = match &args.snapshot {
        Some(path) => {
            let (snapshot, ext) = load_cluster(&ClusterSource::snapshot(path))?;
            let nodes: Vec<NodeState> = ext.state().node_states().cloned().collect();
            let mix = counted(snapshot.gpu_demand(&ext));
            if mix.is_empty() {
                bail!("{} has no pod asking for a GPU", path.display());
            }
            (format!("the GPU pods of {}", path.display()), nodes, mix)
        }
        None => (
            "the built-in inference mix".to_string(),
            builtin::scenario(MigMode::Dynamic, 0).nodes,
            builtin::mix(),
        ),
    };
    let capacity: usize = reference.iter().map(|n| n.gpus.len()).sum();
    if capacity == 0 {
        bail!("the reference cluster has no GPU");
    }
    let generator = Generator {
        arrivals: Arrivals::Poisson,
        jobs: args.generate_jobs,
        load: args.load,
        mean_runtime_ms: args.mean_runtime_s * 1000.0,
        capacity_gpus: capacity as f64,
        mix: timed::mix_on(&mix, &reference),
        seed: args.seed,
    };
    let name = format!(
        "{name}, Poisson arrivals at {:.0}% of {capacity} reference GPUs",
        args.load * 100.0
    );
    let jobs = seeds
        .map(|seed| {
            (
                seed,
                Generator {
                    seed,
                    ..generator.clone()
                }
                .generate(),
            )
        })
        .collect();
    Ok((name, jobs))
}

/// Requests with how often each occurs, in first-seen order.
fn counted(requests: Vec<PodRequest>) -> Vec<(PodRequest, u32)> {
    let mut index: HashMap<PodRequest, usize> = HashMap::new();
    let mut out: Vec<(PodRequest, u32)> = Vec::new();
    for r in requests {
        match index.get(&r) {
            Some(&i) => out[i].1 += 1,
            None => {
                index.insert(r.clone(), out.len());
                out.push((r, 1));
            }
        }
    }
    out
}

fn mig_cmd(args: &MigArgs) -> anyhow::Result<()> {
    let geometry = kubesched_core::catalogue::mig_geometry(&args.model)?;
    if !(1..=16).contains(&args.gpus_per_node) {
        bail!("--gpus-per-node must be 1 to 16");
    }
    if args.nodes.is_some_and(|n| n == 0 || n > 10_000) {
        bail!("--nodes must be 1 to 10000");
    }
    if !(1.0..=1e9).contains(&args.mean_runtime_s) {
        bail!("--mean-runtime-s must be at least 1 and at most 1e9");
    }
    if args.replay_jobs == 0 || args.replay_jobs > 1_000_000 {
        bail!("--replay-jobs must be 1 to 1000000");
    }
    let policy = scoring::lookup(&args.policy)?;
    // The demand, today's layouts (from a snapshot) and the jobs a job file gives.
    let mut today: Vec<(String, Vec<Counts>)> = Vec::new();
    let mut file_jobs = None;
    let (source, demand) = if let Some(text) = &args.demand {
        ("declared".to_string(), mig::parse_demand(text, &geometry)?)
    } else if let Some(path) = &args.jobs {
        let jobs = jobs::read_jobs(path, Some(&geometry))?;
        let demand = mig::demand_of_jobs(&jobs, &geometry)?;
        file_jobs = Some(jobs);
        (format!("jobs of {}", path.display()), demand)
    } else if let Some(path) = &args.snapshot {
        let (snapshot, ext) = load_cluster(&ClusterSource::snapshot(path))?;
        let wanted = kubesched_core::catalogue::model(&args.model)?.name;
        for node in ext.state().node_states() {
            let model_matches = node.gpus.iter().all(|g| {
                kubesched_core::catalogue::model(&g.model).is_ok_and(|m| m.name == wanted)
            });
            let layouts: Option<Vec<Counts>> = node
                .gpus
                .iter()
                .map(|g| mig::layout_of(g, &geometry))
                .collect();
            if let (true, Some(layouts)) = (model_matches && !node.gpus.is_empty(), layouts) {
                today.push((node.name.clone(), layouts));
            }
        }
        today.sort();
        let demand = mig::demand_of_requests(&snapshot.gpu_demand(&ext), &geometry)?;
        (format!("MIG pods of {}", path.display()), demand)
    } else {
        bail!("give the demand: --demand, --jobs or --snapshot");
    };
    let nodes = args.nodes.unwrap_or(today.len().max(1));
    println!(
        "demand ({source}), instances wanted at once across {nodes} node(s) of {}x{}: {}",
        args.gpus_per_node,
        args.model,
        geometry
            .profiles
            .iter()
            .zip(&demand)
            .filter(|(_, d)| **d > 0.0)
            .map(|(p, d)| format!("{}={d:.1}", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let proposed = mig::recommend(&geometry, &demand, args.gpus_per_node, nodes);
    let yaml = mig::mig_parted_yaml(&geometry, &args.config_name, &proposed);
    match &args.output {
        Some(path) => {
            std::fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote the mig-parted config to {}", path.display());
        }
        None => print!("{yaml}"),
    }
    if !today.is_empty() {
        println!("change from the snapshot's layouts:");
        print!("{}", mig::diff(&geometry, &today, &proposed));
    }
    // The replay: the job file's jobs, or jobs generated to keep the demand busy.
    let jobs = match file_jobs {
        Some(jobs) => jobs,
        None => generated_mig_jobs(args, &geometry, &demand, nodes)?,
    };
    let mut candidates: Vec<mig::Candidate> = vec![("proposed".into(), vec![proposed; nodes])];
    if !today.is_empty() {
        candidates.push(("today".into(), today.into_iter().map(|(_, l)| l).collect()));
    }
    for (name, layout) in mig_layouts::hand_layouts(&geometry) {
        candidates.push((name.into(), vec![vec![layout; args.gpus_per_node]; nodes]));
    }
    let replay = mig::Replay {
        model: &args.model,
        geometry: &geometry,
        demand: &demand,
        jobs: &jobs,
        policy: policy.as_ref(),
        cfg: TimedConfig {
            seed: args.seed,
            warmup: 0.25,
            ..TimedConfig::default()
        },
    };
    let rows = mig::compare(&replay, candidates);
    println!(
        "replay of {} jobs under {} (served %: the demand's compute the layouts hold at once):",
        jobs.len(),
        policy.name()
    );
    print!("{}", mig::table(&geometry, &rows));
    if let (Some(p), Some(best_hand)) = (
        rows.first(),
        rows.iter()
            .filter(|r| r.name != "proposed" && r.name != "today")
            .max_by(|a, b| a.served_pct.total_cmp(&b.served_pct)),
    ) {
        println!(
            "proposed serves {:.1} % of the demand, the best hand layout ({}) {:.1} %: {:+.1} points",
            p.served_pct,
            best_hand.name,
            best_hand.served_pct,
            p.served_pct - best_hand.served_pct
        );
    }
    Ok(())
}

/// One instance per job, profiles drawn in proportion to the demand, Poisson arrivals at
/// the rate that keeps the demand busy on average (arrival rate x mean run time).
fn generated_mig_jobs(
    args: &MigArgs,
    geometry: &Arc<MigGeometry>,
    demand: &[f64],
    nodes: usize,
) -> anyhow::Result<Vec<Job>> {
    let reference: Vec<NodeState> = (0..nodes)
        .map(|n| {
            builtin::node(
                format!("ref-{n}"),
                &args.model,
                args.gpus_per_node as u32,
                kubesched_core::numa::TopologyPolicy::SingleNumaNode,
                Some(MigMode::Dynamic),
            )
        })
        .collect();
    let mix: Vec<(PodRequest, u32)> = geometry
        .profiles
        .iter()
        .zip(demand)
        .filter(|(_, d)| **d > 0.0)
        .map(|(p, d)| {
            let request = PodRequest::cpu_only(1000, 1024).with_gpu(
                kubesched_core::request::GpuDemand::Mig {
                    profile: p.name.clone(),
                    count: 1,
                },
            );
            // Weights in hundredths of an instance.
            (request, (d * 100.0).round().max(1.0) as u32)
        })
        .collect();
    let entries = timed::mix_on(&mix, &reference);
    let capacity = (nodes * args.gpus_per_node) as f64;
    // The compute the demand holds at once, as a share of the pool's.
    let busy: f64 = geometry
        .profiles
        .iter()
        .zip(demand)
        .map(|(p, d)| d * f64::from(p.compute_slices) / f64::from(geometry.compute_slices))
        .sum();
    let load = busy / capacity;
    if !(load > 0.0 && load <= 10.0) {
        bail!("the demand is {load:.2} times the pool's compute: give more --nodes");
    }
    Ok(Generator {
        arrivals: Arrivals::Poisson,
        jobs: args.replay_jobs,
        load,
        mean_runtime_ms: args.mean_runtime_s * 1000.0,
        capacity_gpus: capacity,
        mix: entries,
        seed: args.seed,
    }
    .generate())
}

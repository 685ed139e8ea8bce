//! `kubesched plan`: the capacity planner's answers. `plan fleet` finds the cheapest fleet
//! of given node types that meets a wait target, under each policy.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kubesched_core::catalogue::MigGeometry;
use kubesched_core::inventory::MigMode;
use kubesched_core::node::NodeState;
use kubesched_core::request::PodRequest;
use kubesched_core::scoring::{self, Policy};
use kubesched_core::timed::{Arrivals, Generator, Job, TimedConfig};
use kubesched_scheduler::plan::fleet::{self, FleetQuestion, SeedJobs, Target};
use kubesched_scheduler::plan::node_types::{self, NodeType};
use kubesched_scheduler::simulate::{builtin, jobs, timed, trace};

use super::{ClusterSource, load_cluster};

#[derive(Subcommand)]
pub(crate) enum PlanCommand {
    /// The cheapest fleet of the given node types that meets a wait target, under each policy, with the cost curve.
    Fleet(FleetArgs),
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

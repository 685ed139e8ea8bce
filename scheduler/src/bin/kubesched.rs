//! `kubesched`: the capacity planner's command line. `simulate` replays a
//! trace (or the built-in scenario, or a cluster snapshot's pending pods)
//! under several placement policies; `report` shows where GPU capacity is
//! stranded; `snapshot` saves a cluster's state for offline use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kubesched_core::inventory::MigMode;
use kubesched_core::node::NodeState;
use kubesched_core::replay::{Outcome, Replay, ReplayConfig};
use kubesched_core::scoring;
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::config::{Config, Overrides};
use kubesched_scheduler::offline::OfflineBinder;
use kubesched_scheduler::report;
use kubesched_scheduler::simulate::mig_mapping::{self, MigMapping};
use kubesched_scheduler::simulate::{
    self, Scenario, builtin, chart, explain, progress::Progress, summary, trace,
};
use kubesched_scheduler::snapshot::Snapshot;

#[derive(Parser)]
#[command(
    name = "kubesched",
    version,
    about = "GPU-aware scheduling for Kubernetes: capacity planning tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a workload on a simulated cluster under several placement policies.
    Simulate(SimulateArgs),
    /// Per node and GPU: MIG occupancy, free positions, what still fits, NUMA problems, stranded capacity by cause.
    Report(ReportArgs),
    /// Save the cluster's Nodes and Pods to a file for offline `report` and `simulate --cluster`.
    Snapshot(SnapshotArgs),
}

#[derive(Args)]
struct ClusterSource {
    /// Read a saved snapshot instead of the live cluster.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Kubeconfig of the live cluster (default: KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Annotation key prefix the agents and extender use.
    #[arg(long)]
    annotation_prefix: Option<String>,
    /// Resource name domain (nvidia.com/gpu, nvidia.com/mig-...).
    #[arg(long)]
    resource_domain: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    source: ClusterSource,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Args)]
struct SnapshotArgs {
    /// Kubeconfig of the cluster (default: KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// File to write.
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Static,
    Dynamic,
}

#[derive(Args)]
struct SimulateArgs {
    /// Folder with the Alibaba GPU trace CSVs (cluster-trace-gpu-v2023/csv). Without it, the built-in scenario runs.
    #[arg(long)]
    trace_dir: Option<PathBuf>,
    /// Pod list variant of the trace: `default`, `cpu050`, `multigpu20`, ... (file `openb_pod_list_<NAME>.csv`).
    #[arg(long, default_value = "default")]
    pods: String,
    /// Node list file inside --trace-dir.
    #[arg(long, default_value = "openb_node_list_gpu_node.csv")]
    nodes: String,
    /// Comma-separated policies to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kubesched,fgd,best-fit,random"
    )]
    policies: Vec<String>,
    /// First seed; runs use seeds first..first+count.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of seeds per policy.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Top the workload up to this multiple of GPU capacity (the FGD artifact uses 1.3).
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
    /// Original pod count of the built-in scenario (before topping up).
    #[arg(long, default_value_t = 1000)]
    builtin_pods: usize,
    /// What-if on a saved cluster: replay the snapshot's pending pods on its nodes (as they are now) under each policy.
    #[arg(long, conflicts_with_all = ["trace_dir", "mig"])]
    cluster: Option<PathBuf>,
    /// Print the first N placements of the first policy and seed, with the policy's reasons.
    #[arg(long, default_value_t = 5)]
    explain: usize,
    /// Write allocation.csv (artifact layout) and allocation.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Simulate(args) => simulate_cmd(args),
        Command::Report(args) => report_cmd(args),
        Command::Snapshot(args) => snapshot_cmd(args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig (give --kubeconfig or --snapshot)")?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn snapshot_cmd(args: SnapshotArgs) -> anyhow::Result<()> {
    let snapshot = runtime()?.block_on(async {
        Ok::<_, anyhow::Error>(Snapshot::take(client(args.kubeconfig.as_deref()).await?).await?)
    })?;
    std::fs::write(&args.output, snapshot.to_json())
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "saved {} nodes and {} pods to {}",
        snapshot.nodes.len(),
        snapshot.pods.len(),
        args.output.display()
    );
    Ok(())
}

/// The snapshot (read or taken live) and an extender state loaded from it.
fn load_cluster(source: &ClusterSource) -> anyhow::Result<(Snapshot, Arc<Extender>)> {
    let snapshot = match &source.snapshot {
        Some(path) => Snapshot::read(path)?,
        None => runtime()?.block_on(async {
            Ok::<_, anyhow::Error>(
                Snapshot::take(client(source.kubeconfig.as_deref()).await?).await?,
            )
        })?,
    };
    let overrides = Overrides {
        annotation_prefix: source.annotation_prefix.clone(),
        resource_domain: source.resource_domain.clone(),
        ..Default::default()
    };
    let (binder, _updates) = OfflineBinder::new(&snapshot);
    let ext = Arc::new(Extender::new(Config::load(None, &overrides)?, binder)?);
    snapshot.load_into(&ext);
    Ok((snapshot, ext))
}

fn report_cmd(args: ReportArgs) -> anyhow::Result<()> {
    let (_, ext) = load_cluster(&args.source)?;
    let workload = ext.workload().current().0;
    let state = ext.state();
    let rep = report::build(state.node_states(), &workload);
    match args.output {
        Output::Table => print!("{}", report::render(&rep)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&rep)?),
    }
    Ok(())
}

/// Replays a snapshot's pending pods, in file order, on its nodes as they
/// are, once per policy, and says which fit.
fn what_if(path: &Path, policies: &[String]) -> anyhow::Result<()> {
    let source = ClusterSource {
        snapshot: Some(path.to_path_buf()),
        kubeconfig: None,
        annotation_prefix: None,
        resource_domain: None,
    };
    let (snapshot, ext) = load_cluster(&source)?;
    let pending = snapshot.pending(&ext);
    let workload = ext.workload().current().0;
    let nodes: Vec<NodeState> = ext.state().node_states().cloned().collect();
    println!("{} nodes, {} pending pods", nodes.len(), pending.len());
    for name in policies {
        let policy = scoring::lookup(name)?;
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
    let mode = match args.mig_mode {
        Mode::Static => MigMode::Static,
        Mode::Dynamic => MigMode::Dynamic,
    };
    match &args.trace_dir {
        Some(dir) => {
            let nodes = trace::load_nodes(&dir.join(&args.nodes))?;
            let pods = trace::load_pods(&dir.join(format!("openb_pod_list_{}.csv", args.pods)))?;
            let scenario = Scenario::from_trace(args.pods.clone(), nodes, pods, args.coverage);
            Ok(if args.mig {
                mig_mapping::to_mig(&scenario, args.mig_mapping, mode, args.coverage)
            } else {
                scenario
            })
        }
        None if args.mig => bail!(
            "--mig maps a trace onto MIG GPUs: give --trace-dir (the built-in scenario is MIG already)"
        ),
        None => Ok(builtin::scenario(mode, args.builtin_pods)),
    }
}

fn simulate_cmd(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.cluster {
        return what_if(path, &args.policies);
    }
    let policies = args
        .policies
        .iter()
        .map(|name| scoring::lookup(name))
        .collect::<Result<Vec<_>, _>>()?;
    if !(0.0..=10.0).contains(&args.tune) {
        bail!("--tune must be between 0 and 10");
    }
    let scenario = load(&args)?;
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
    for policy in &policies {
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
        "{}: unallocated GPU % (mean±sd over seeds) at arrived load",
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

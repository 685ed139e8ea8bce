//! `kubesched`: the capacity planner's command line. `simulate` replays a
//! trace (or the built-in scenario) under several placement policies.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kubesched_core::inventory::MigMode;
use kubesched_core::replay::ReplayConfig;
use kubesched_core::scoring;
use kubesched_scheduler::simulate::mig_mapping::MigMapping;
use kubesched_scheduler::simulate::{
    self, Scenario, builtin, chart, progress::Progress, summary, trace,
};

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
    /// Pod list variant of the trace: `default`, `cpu050`, `multigpu20`, ... (file openb_pod_list_<NAME>.csv).
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
    /// Write allocation.csv (artifact layout) and allocation.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Simulate(args) => simulate_cmd(args),
    }
}

fn load(args: &SimulateArgs) -> anyhow::Result<Scenario> {
    match &args.trace_dir {
        Some(dir) => {
            let nodes = trace::load_nodes(&dir.join(&args.nodes))?;
            let pods = trace::load_pods(&dir.join(format!("openb_pod_list_{}.csv", args.pods)))?;
            Ok(Scenario::from_trace(
                args.pods.clone(),
                nodes,
                pods,
                args.coverage,
            ))
        }
        None => {
            let mode = match args.mig_mode {
                Mode::Static => MigMode::Static,
                Mode::Dynamic => MigMode::Dynamic,
            };
            Ok(builtin::scenario(mode, args.builtin_pods))
        }
    }
}

fn simulate_cmd(args: SimulateArgs) -> anyhow::Result<()> {
    let mut policies = Vec::new();
    for name in &args.policies {
        match scoring::by_name(name) {
            Some(p) => policies.push(p),
            None => bail!(
                "unknown policy {name:?}; known: {}",
                scoring::POLICY_NAMES.join(", ")
            ),
        }
    }
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

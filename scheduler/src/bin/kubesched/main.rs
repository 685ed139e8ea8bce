//! `kubesched`: the capacity planner's command line. `simulate` replays a
//! trace (or the built-in scenario, or a cluster snapshot's pending pods)
//! under several placement policies; `report` shows where GPU capacity is
//! stranded; `snapshot` saves a cluster's state for offline use; `plan` answers sizing
//! questions.

mod plan;
mod simulate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::config::{Config, Overrides};
use kubesched_scheduler::offline::OfflineBinder;
use kubesched_scheduler::report;
use kubesched_scheduler::simulate::timed_table;
use kubesched_scheduler::snapshot::Snapshot;

use simulate::SimulateArgs;

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
    /// Per node and GPU: MIG occupancy, free positions, what still fits, NUMA problems, stranded capacity by cause; GPUs and their cost by state per pool and namespace.
    Report(ReportArgs),
    /// Save the cluster's Nodes and Pods to a file for offline `report` and `simulate --cluster`.
    Snapshot(SnapshotArgs),
    /// Capacity planning: the cheapest fleet that meets a wait target.
    #[command(subcommand)]
    Plan(plan::PlanCommand),
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
    /// The extender's configuration file (as the chart's ConfigMap holds it): its target workload, policy and pricing.gpuHourly.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ClusterSource {
    /// A saved snapshot, with the default annotation prefix and resource domain.
    fn snapshot(path: &Path) -> Self {
        ClusterSource {
            snapshot: Some(path.to_path_buf()),
            kubeconfig: None,
            annotation_prefix: None,
            resource_domain: None,
            config: None,
        }
    }
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

fn main() -> anyhow::Result<()> {
    // The timed metrics' definitions come from the one table the report prints from.
    let command = Cli::command().mut_subcommand("simulate", |c| {
        c.after_long_help(timed_table::metrics_help())
    });
    let cli = Cli::from_arg_matches(&command.get_matches())?;
    match cli.command {
        Command::Simulate(args) => simulate::simulate_cmd(args),
        Command::Report(args) => report_cmd(args),
        Command::Snapshot(args) => snapshot_cmd(args),
        Command::Plan(command) => plan::plan_cmd(command),
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
    let ext = Arc::new(Extender::new(
        Config::load(source.config.as_deref(), &overrides)?,
        binder,
    )?);
    snapshot.load_into(&ext);
    Ok((snapshot, ext))
}

fn report_cmd(args: ReportArgs) -> anyhow::Result<()> {
    let (_, ext) = load_cluster(&args.source)?;
    let rep = report::build_live(&ext);
    match args.output {
        Output::Table => print!("{}", report::render(&rep)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&rep)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` documents every flag of every command.
    #[test]
    fn every_flag_of_every_command_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && id != "help" && id != "version" {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no description)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "kubesched", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:?}");
        // And the planner's commands are there.
        let plan = cmd.find_subcommand("plan").map(|p| {
            p.get_subcommands()
                .map(|s| s.get_name().to_string())
                .collect::<Vec<_>>()
        });
        assert_eq!(plan, Some(vec!["fleet".to_string(), "mig".to_string()]));
    }
}

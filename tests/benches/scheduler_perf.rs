//! scheduler_perf-style benchmark through the real API server and kube-scheduler: N fake GPU
//! nodes (Node objects with capacity and our inventory annotation, no kubelet) and a burst of
//! whole-GPU and MIG pods, scheduled (a) by kube-scheduler alone on extended resources, the
//! in-tree path, and (b) by the same kube-scheduler with our extender and the chart's
//! profile. Each phase runs on a fresh cluster (`scripts/cluster.sh`, an empty etcd).
//!
//! Run it with `scripts/scheduler-perf.sh` (root, Debian; it builds the release binaries and
//! brings the cluster up); `--help` lists the knobs. It prints one table: pods/s and
//! creation-to-binding latency for both paths at each size, their ratio, CPU per process,
//! and the memory of the scheduler, the extender and the node agent.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "scheduler_perf/agent_memory.rs"]
mod agent_memory;
#[path = "scheduler_perf/measure.rs"]
mod measure;
#[path = "scheduler_perf/procs.rs"]
mod procs;
#[path = "scheduler_perf/report.rs"]
mod report;
#[path = "scheduler_perf/schedulers.rs"]
mod schedulers;
#[path = "scheduler_perf/workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kubesched_core::inventory::NodeInventory;
use kubesched_e2e::extender::{Extender, start_scheduler_with};
use kubesched_e2e::fake_node::{check_no_device_twice, create_node_with};
use kubesched_e2e::{Cluster, pods, rbac};

use measure::BindWatch;
use report::Phase;
use schedulers::SchedPath;

/// Fake nodes created at once.
const NODE_CREATORS: usize = 32;

#[derive(Parser, Debug)]
#[command(about = "kube-scheduler alone vs with the kubesched extender, on fake GPU nodes")]
struct Args {
    /// Cluster sizes in nodes (8 GPUs each), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "500,5000")]
    nodes: Vec<usize>,
    /// Burst pods per node (eight fill the whole GPUs exactly: five GPUs' worth).
    #[arg(long, default_value_t = 8)]
    pods_per_node: usize,
    /// Clients creating the burst's pods concurrently.
    #[arg(long, default_value_t = 16)]
    creators: usize,
    /// Pods created one at a time after the burst (latency with nothing queued).
    #[arg(long, default_value_t = 100)]
    probes: usize,
    /// Pods of a request shape not seen before, one at a time, after the probes.
    #[arg(long, default_value_t = 5)]
    new_shapes: usize,
    /// Skip measuring the node agent's memory.
    #[arg(long)]
    no_agent: bool,
    /// Also run the extender with kube-scheduler's default node sampling, path (c).
    #[arg(long)]
    sampled: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var("KUBESCHED_E2E").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED scheduler_perf: it brings up a fresh cluster per phase with \
             scripts/cluster.sh; run scripts/scheduler-perf.sh (root, Debian)"
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut phases = Vec::new();
    let mut agent = None;
    for &nodes in &args.nodes {
        let mut paths = vec![SchedPath::InTree, SchedPath::Extender];
        if args.sampled {
            paths.push(SchedPath::ExtenderSampled);
        }
        for path in paths {
            eprintln!("[perf] === {nodes} nodes, {}", path.label());
            let measure_agent = path == SchedPath::Extender && !args.no_agent && agent.is_none();
            let (phase, agent_memory) = phase(&args, nodes, path, measure_agent).await?;
            agent = agent.or(agent_memory);
            report::print_phase(&phase);
            phases.push(phase);
        }
    }
    report::print_table(&args_line(&args), &phases, agent);
    Ok(())
}

fn args_line(args: &Args) -> String {
    format!(
        "{} pods per node ({} of every 8: {}), {} creators, {} one-at-a-time probes",
        args.pods_per_node,
        workload::MIX.len(),
        workload::MIX.join(" "),
        args.creators,
        args.probes
    )
}

/// One size and path on a fresh cluster.
async fn phase(
    args: &Args,
    nodes: usize,
    path: SchedPath,
    measure_agent: bool,
) -> anyhow::Result<(Phase, Option<(f64, f64)>)> {
    let cluster = Cluster::fresh("scheduler-perf").await?;
    let mut agent_memory = None;
    let extender = if path.uses_extender() {
        rbac::install(&cluster).await?;
        if measure_agent {
            let memory = agent_memory::measure(&cluster).await?;
            eprintln!(
                "[perf] agent with {} MIG instances: {:.1} MiB resident, {:.1} MiB peak",
                agent_memory::INSTANCES,
                memory.0,
                memory.1
            );
            agent_memory = Some(memory);
        }
        let start = Instant::now();
        let inventories = create_nodes(&cluster, nodes).await?;
        eprintln!(
            "[perf] {nodes} fake nodes in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Some((Extender::start_alone(&cluster).await?, inventories))
    } else {
        let start = Instant::now();
        create_nodes(&cluster, nodes).await?;
        eprintln!(
            "[perf] {nodes} fake nodes in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        None
    };
    start_scheduler_with(&cluster, &schedulers::config(path, &cluster)?).await?;
    let api = pods::api(&cluster.client);
    let watch = BindWatch::start(api.clone()).await?;
    warm_up(&api, &watch).await?;

    let components = procs::components(extender.as_ref().and_then(|(e, _)| e.proc.pid()));
    let cpu_before = procs::cpu_snapshot(&components);
    let started = Instant::now();
    let burst = measure::burst(
        &api,
        &watch,
        workload::burst(nodes, args.pods_per_node)?,
        args.creators,
    )
    .await?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = procs::cpu_snapshot(&components);
    let cpu: Vec<(&'static str, f64)> = components
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|(c, (b, a))| (c.name, (a - b) / wall))
        .collect();
    let probes = (0..args.probes)
        .map(|i| workload::pod(&format!("probe-{i:04}"), "mig-1g.10gb", "1"))
        .collect::<anyhow::Result<Vec<Pod>>>()?;
    let probe = measure::one_at_a_time(&api, &watch, probes).await?;
    // A CPU request the burst never used makes a request shape the extender has not scored.
    let fresh = (0..args.new_shapes)
        .map(|i| {
            workload::pod(
                &format!("shape-{i:02}"),
                "mig-1g.10gb",
                &format!("{}m", 1100 + i),
            )
        })
        .collect::<anyhow::Result<Vec<Pod>>>()?;
    let new_shape = measure::one_at_a_time(&api, &watch, fresh).await?;
    let memory: Vec<(&'static str, f64, f64)> = components
        .iter()
        .filter_map(|c| procs::memory_mib(c.pid).map(|(rss, hwm)| (c.name, rss, hwm)))
        .collect();
    let devices_checked = match &extender {
        Some((ext, inventories)) => {
            ext.proc.ensure_running()?;
            let bound = list_bound(&api).await?;
            Some(check_no_device_twice(&bound, inventories)?.len())
        }
        None => None,
    };
    Ok((
        Phase {
            nodes,
            path,
            burst,
            probe,
            new_shape,
            cpu,
            memory,
            devices_checked,
        },
        agent_memory,
    ))
}

/// Creates `n` fake nodes, [`NODE_CREATORS`] at a time; returns their inventories.
async fn create_nodes(
    cluster: &Cluster,
    n: usize,
) -> anyhow::Result<BTreeMap<String, NodeInventory>> {
    let names: Vec<String> = (0..n).map(|i| format!("perf-node-{i:05}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in names.chunks(n.div_ceil(NODE_CREATORS).max(1)) {
        let (client, chunk) = (cluster.client.clone(), chunk.to_vec());
        tasks.spawn(async move {
            let mut made = Vec::new();
            for name in chunk {
                let inventory = workload::inventory(&name)?;
                create_node_with(&client, &name, &inventory, &[]).await?;
                made.push((name, inventory));
            }
            anyhow::Ok(made)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        out.extend(done??);
    }
    let listed = Api::<Node>::all(cluster.client.clone())
        .list(&ListParams::default().labels(kubesched_e2e::fake_node::FAKE_LABEL))
        .await?;
    anyhow::ensure!(
        listed.items.len() == n,
        "{} of {n} nodes listed",
        listed.items.len()
    );
    Ok(out)
}

/// One pod of each resource of the mix, bound and deleted: the scheduler has synced its
/// caches and is scheduling, and the extender has scored each shape once, before the clock
/// starts (the first pod of a new shape is measured on its own, after the burst).
async fn warm_up(api: &Api<Pod>, watch: &BindWatch) -> anyhow::Result<()> {
    let mut resources: Vec<&str> = workload::MIX.to_vec();
    resources.sort_unstable();
    resources.dedup();
    let specs = resources
        .iter()
        .map(|r| workload::pod(&format!("warm-{}", r.replace('.', "-")), r, "1"))
        .collect::<anyhow::Result<Vec<Pod>>>()?;
    let names: Vec<String> = specs
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    measure::one_at_a_time(api, watch, specs).await?;
    for name in &names {
        api.delete(name, &DeleteParams::default().grace_period(0))
            .await?;
    }
    // Gone from the API server; the extender frees them from its watch.
    for _ in 0..100 {
        let left = api
            .list(&ListParams::default().labels(&format!("{}={}", pods::LABEL, workload::SCENARIO)))
            .await?;
        if left.items.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the warm-up pods were not deleted")
}

/// Every bound pod of the benchmark, listed in pages.
async fn list_bound(api: &Api<Pod>) -> anyhow::Result<Vec<Pod>> {
    let mut out = Vec::new();
    let mut params = ListParams::default()
        .labels(&format!("{}={}", pods::LABEL, workload::SCENARIO))
        .limit(5000);
    loop {
        let page = api.list(&params).await?;
        out.extend(
            page.items
                .into_iter()
                .filter(|p| pods::node_name(p).is_some()),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

//! End-to-end scenarios through a real cluster (see `tests/README.md`). One test function
//! owns the cluster's lifecycle and runs the scenarios in order: the node has a single
//! kubelet device-plugin folder, so scenarios cannot run in parallel.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/burst.rs"]
mod burst;
#[path = "e2e/compat.rs"]
mod compat;
#[path = "e2e/deploy.rs"]
mod deploy;
#[path = "e2e/health.rs"]
mod health;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/restarts.rs"]
mod restarts;
#[path = "e2e/scheduling.rs"]
mod scheduling;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams};
use kubesched_core::inventory::{GpuInfo, INVENTORY_ANNOTATION, NodeInventory};
use kubesched_e2e::agent::node_resources;
use kubesched_e2e::fake_node::{ANNOTATION_PREFIX, DOMAIN};
use kubesched_e2e::rbac::{self, AGENT_SERVICE_ACCOUNT, NAMESPACE};
use kubesched_e2e::{Cluster, poll};
use serde::Deserialize;

const FIXTURE: &str = "two-numa-mig.json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: KUBESCHED_E2E=1 (root, Debian) or KUBESCHED_E2E_KUBECONFIG; \
            scripts/test.sh runs it under CI"]
async fn e2e() -> anyhow::Result<()> {
    // Asked for and no cluster is a failure, never a pass.
    let Some(cluster) = Cluster::find("e2e").await? else {
        anyhow::bail!("no cluster to run the end-to-end tests against");
    };
    let result = scenarios(&cluster).await;
    if result.is_err() {
        cluster.mark_failed();
    }
    result
}

async fn scenarios(cluster: &Cluster) -> anyhow::Result<()> {
    rbac::install(cluster).await?;
    run("agent_registers_with_real_kubelet", || {
        agent_registers_with_real_kubelet(cluster)
    })
    .await?;
    let mut stack = run("pods_scheduled_through_extender_get_their_devices", || {
        scheduling::pods_get_their_devices(cluster)
    })
    .await?;
    run(
        "kubelet_restart_plugin_reregisters_pods_keep_devices",
        || scheduling::kubelet_restart(cluster, &stack),
    )
    .await?;
    run("apiserver_restart_extender_and_agent_reconnect", || {
        restarts::apiserver_restart(cluster, &stack)
    })
    .await?;
    scheduling::cleanup_devices_pods(cluster).await?;
    scheduling::wait_node_free_in_extender(cluster, &stack.extender).await?;
    run(
        "forged_devices_annotation_refused_others_undisturbed",
        || hostile::forged_annotations_are_refused(cluster),
    )
    .await?;
    run("guaranteed_pod_devices_and_cpus_on_one_numa_node", || {
        scheduling::guaranteed_pod_on_one_numa_node(cluster)
    })
    .await?;
    run("xid_sets_node_condition_and_taint_then_clears", || {
        health::xid_condition_and_taint(cluster)
    })
    .await?;
    run("burst_on_fake_nodes", || burst::burst(cluster)).await?;
    run("unservable_reason_and_top_score", || {
        compat::compat(cluster, &stack.extender)
    })
    .await?;
    run("extender_killed_mid_burst", || {
        restarts::extender_killed_mid_burst(cluster, &mut stack.extender)
    })
    .await?;
    // The chart's own pods need the node's plugin folder and the scheduler name: ours stop.
    drop(stack);
    run("deploy_upgrade_failover_uninstall", || {
        deploy::deploy(cluster)
    })
    .await?;
    Ok(())
}

async fn run<T, F, Fut>(name: &str, scenario: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    eprintln!("[e2e] === {name}");
    let start = Instant::now();
    let result = scenario().await.with_context(|| format!("scenario {name}"));
    eprintln!(
        "[e2e] === {name}: {} in {:.1} s",
        if result.is_ok() { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    result
}

/// The part of the agent's `--fake-inventory` fixture the checks need.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    gpus: Vec<GpuInfo>,
}

fn load_fixture(path: &Path) -> anyhow::Result<Fixture> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// What the agent should advertise for a fixture: whole GPUs without MIG as `<domain>/gpu`,
/// every MIG instance as `<domain>/mig-<profile>`.
fn expected_resources(fixture: &Fixture) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for gpu in &fixture.gpus {
        match &gpu.mig {
            None => *out.entry(format!("{DOMAIN}/gpu")).or_insert(0) += 1,
            Some(mig) => {
                for instance in &mig.instances {
                    *out.entry(format!("{DOMAIN}/mig-{}", instance.profile))
                        .or_insert(0) += 1;
                }
            }
        }
    }
    out
}

/// The agent (`--fake-inventory`, MIG and whole GPUs on two NUMA nodes) registers with the real
/// kubelet under the chart's agent service account: the Node's capacity and allocatable show
/// our resources, and the inventory annotation is published.
async fn agent_registers_with_real_kubelet(cluster: &Cluster) -> anyhow::Result<()> {
    let fixture_path = cluster.fixture(FIXTURE)?;
    let fixture = load_fixture(&fixture_path)?;
    let expected = expected_resources(&fixture);

    let kubeconfig =
        rbac::service_account_kubeconfig(cluster, NAMESPACE, AGENT_SERVICE_ACCOUNT).await?;
    // The agent's identity is the chart's, not an administrator's.
    let agent_client = kubesched_e2e::cluster::client_from(&kubeconfig).await?;
    let secrets = Api::<Secret>::all(agent_client)
        .list(&ListParams::default().limit(1))
        .await;
    anyhow::ensure!(
        matches!(&secrets, Err(kube::Error::Api(status)) if status.code == 403),
        "the agent's service account can list secrets: its RBAC is not least-privilege"
    );

    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let key = format!("{ANNOTATION_PREFIX}/{INVENTORY_ANNOTATION}");
    kubesched_e2e::agent::remove_inventory_annotation(cluster).await?;
    let start = Instant::now();
    let agent = kubesched_e2e::agent::start_agent(cluster, &fixture_path, "agent.log").await?;

    // The inventory annotation does not depend on the kubelet: check it first.
    let (nodes, agent_ref) = (&nodes, &agent);
    let key_ref = &key;
    let published = poll(
        "the inventory annotation",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async move {
            agent_ref.ensure_running()?;
            let key = key_ref;
            let node = nodes.get(&cluster.node).await?;
            let Some(text) = node.metadata.annotations.as_ref().and_then(|a| a.get(key)) else {
                anyhow::bail!("annotation {key} not on node {}", cluster.node);
            };
            Ok(Some(NodeInventory::from_json(text).with_context(|| {
                format!("annotation {key} is not an inventory document")
            })?))
        },
    )
    .await;
    let inventory = match published {
        Ok(inventory) => inventory,
        Err(error) => anyhow::bail!("{error:#}\nagent log:\n{}", agent.log_tail(40)),
    };
    anyhow::ensure!(
        inventory.node == cluster.node,
        "inventory names node {:?}",
        inventory.node
    );
    let uuids = |gpus: &[GpuInfo]| {
        gpus.iter()
            .flat_map(|g| {
                std::iter::once(g.uuid.clone()).chain(
                    g.mig
                        .iter()
                        .flat_map(|m| m.instances.iter().map(|i| i.uuid.clone())),
                )
            })
            .collect::<BTreeSet<_>>()
    };
    anyhow::ensure!(
        uuids(&inventory.gpus) == uuids(&fixture.gpus),
        "inventory devices {:?} differ from the fixture's {:?}",
        uuids(&inventory.gpus),
        uuids(&fixture.gpus)
    );
    let numa: BTreeSet<u32> = inventory.numa_nodes.iter().map(|n| n.id).collect();
    anyhow::ensure!(
        numa == BTreeSet::from([0, 1]),
        "inventory NUMA nodes {numa:?}"
    );
    let policy = serde_json::to_value(inventory.topology_policy)?;
    anyhow::ensure!(
        policy == "single-numa-node",
        "inventory topology policy {policy}"
    );
    for gpu in &fixture.gpus {
        let published = inventory
            .gpus
            .iter()
            .find(|g| g.uuid == gpu.uuid)
            .context("GPU missing from the inventory")?;
        anyhow::ensure!(
            published.numa_node == gpu.numa_node,
            "GPU {} on NUMA {:?} in the inventory, {:?} in the fixture",
            gpu.uuid,
            published.numa_node,
            gpu.numa_node
        );
    }
    eprintln!(
        "[e2e] inventory annotation published: {} GPUs, NUMA nodes {numa:?}, policy {policy}",
        inventory.gpus.len()
    );

    let expected_ref = &expected;
    let checked = poll(
        "the Node's capacity and allocatable to show the agent's resources",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async move {
            agent_ref.ensure_running()?;
            let node = nodes.get(&cluster.node).await?;
            let (capacity, allocatable) = node_resources(&node);
            if &capacity == expected_ref && &allocatable == expected_ref {
                Ok(Some(()))
            } else if !capacity.is_empty() && capacity.values().all(|v| *v == 0) {
                anyhow::bail!(
                    "the kubelet registered {:?} but holds no devices for them: its \
                     ListAndWatch calls fail (see the kubelet log: `listAndWatch ended \
                     unexpectedly`)",
                    capacity.keys().collect::<Vec<_>>()
                )
            } else {
                anyhow::bail!(
                    "expected {expected_ref:?}; capacity {capacity:?}, allocatable {allocatable:?}"
                )
            }
        },
    )
    .await;
    if let Err(error) = checked {
        anyhow::bail!("{error:#}\nagent log:\n{}", agent.log_tail(40));
    }
    eprintln!(
        "[e2e] node {} advertises {expected:?} {:.1} s after the agent started",
        cluster.node,
        start.elapsed().as_secs_f64()
    );

    // The kubelet drops allocatable to 0 at once when the plugin goes away (capacity stays
    // for its grace period); this also leaves the node clean for the next scenario.
    agent.stop();
    poll(
        "allocatable to drop to 0 after the agent stopped",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async move {
            let node = nodes.get(&cluster.node).await?;
            let (_, allocatable) = node_resources(&node);
            if allocatable.values().all(|v| *v == 0) {
                Ok(Some(()))
            } else {
                anyhow::bail!("allocatable still {allocatable:?}")
            }
        },
    )
    .await?;
    Ok(())
}

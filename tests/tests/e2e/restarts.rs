//! Control-plane failures under load: the extender killed (SIGKILL) and started again in the
//! middle of a burst on fake nodes, and the API server restarted under the extender, the agent
//! and running pods.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubesched_core::inventory::{INVENTORY_ANNOTATION, NodeInventory};
use kubesched_e2e::{Cluster, cluster, pods, poll};

use kubesched_e2e::agent::wait_allocatable;
use kubesched_e2e::extender::{Extender, start_scheduler};
use kubesched_e2e::fake_node::{FAKE_LABEL, check_no_device_twice};

use super::burst::{create_fake_node, fitting_specs};
use super::scheduling::{self, Stack, check_pod_devices, check_pod_resources, device_requests};
use super::{ANNOTATION_PREFIX, DOMAIN};

const EXTENDER_SCENARIO: &str = "extender-restart";
const FAKE_NODES: usize = 10;

/// The pods of `scenario` that are bound (have a node).
async fn bound_pods(api: &Api<Pod>, scenario: &str) -> anyhow::Result<Vec<Pod>> {
    let list = api
        .list(&ListParams::default().labels(&format!("{}={scenario}", pods::LABEL)))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| pods::node_name(p).is_some())
        .collect())
}

/// The extender is killed with SIGKILL once a quarter of a burst is bound (the rest still
/// being created), and started again a few seconds later: while it is down nothing is bound
/// (it is the binder, and not ignorable); once it is ready again every pod is bound, none
/// twice, and no device is handed out twice (annotations checked against the inventory).
pub async fn extender_killed_mid_burst(
    cluster: &Cluster,
    extender: &mut Extender,
) -> anyhow::Result<()> {
    let client = &cluster.client;
    let mut inventories = BTreeMap::new();
    for i in 0..FAKE_NODES {
        let name = format!("e2e-fake-r{i:02}");
        inventories.insert(name.clone(), create_fake_node(client, &name).await?);
    }
    let result = killed_mid_burst(cluster, extender, &inventories).await;
    let pods_gone = pods::delete_scenario(client, EXTENDER_SCENARIO).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for name in inventories.keys() {
        nodes.delete(name, &DeleteParams::default()).await?;
    }
    result.and(pods_gone)
}

async fn killed_mid_burst(
    cluster: &Cluster,
    extender: &mut Extender,
    inventories: &BTreeMap<String, NodeInventory>,
) -> anyhow::Result<()> {
    let api = pods::api(&cluster.client);
    let specs = fitting_specs(inventories, EXTENDER_SCENARIO, "r")?;
    let n = specs.len();
    let start = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    for chunk in specs.chunks(n.div_ceil(8)) {
        let (api, chunk) = (api.clone(), chunk.to_vec());
        creators.spawn(async move {
            for pod in chunk {
                api.create(&PostParams::default(), &pod).await?;
            }
            anyhow::Ok(())
        });
    }

    // Kill it in the middle: a quarter bound.
    let api_ref = &api;
    let before_kill = poll(
        "a quarter of the burst to be bound",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || async move {
            let bound = bound_pods(api_ref, EXTENDER_SCENARIO).await?.len();
            Ok((bound >= n / 4).then_some(bound))
        },
    )
    .await?;
    extender.proc.kill();
    let killed = Instant::now();
    let at_kill = bound_pods(&api, EXTENDER_SCENARIO).await?.len();
    anyhow::ensure!(
        at_kill < n,
        "the whole burst ({n} pods) was bound before the extender was killed"
    );
    eprintln!(
        "[e2e] extender killed {:.2} s into the burst with {before_kill}-{at_kill} of {n} pods \
         bound",
        start.elapsed().as_secs_f64()
    );
    while let Some(done) = creators.join_next().await {
        done??;
    }

    // While it is down nothing is bound: a bind already on the wire may land just after the
    // kill, nothing later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = bound_pods(&api, EXTENDER_SCENARIO).await?.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let down = bound_pods(&api, EXTENDER_SCENARIO).await?.len();
    anyhow::ensure!(
        down == settled,
        "{} pods bound while the extender was down",
        down - settled
    );
    let waiting = api
        .list(&ListParams::default().labels(&format!("{}={EXTENDER_SCENARIO}", pods::LABEL)))
        .await?
        .items
        .into_iter()
        .find(|p| pods::node_name(p).is_none())
        .and_then(|p| p.metadata.name)
        .context("no pod waiting while the extender is down")?;
    let failed = pods::events(&cluster.client, &waiting).await?;
    eprintln!(
        "[e2e] {down} of {n} bound while the extender is down; {waiting}: {}",
        failed.last().map_or("(no event yet)", String::as_str)
    );

    extender.respawn(cluster, "extender-restarted.log")?;
    // Generous: readiness (both watches listed) is what is measured below, not asserted here.
    extender.wait_ready(Duration::from_secs(120)).await?;
    let ready = Instant::now();
    let mut first_bind = None;
    let all_bound = loop {
        let bound = bound_pods(&api, EXTENDER_SCENARIO).await?;
        if first_bind.is_none() && bound.len() > down {
            first_bind = Some(ready.elapsed());
        }
        if bound.len() == n {
            break bound;
        }
        extender.proc.ensure_running()?;
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(180),
            "{} of {n} bound 180 s after the extender was ready again",
            bound.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first_bind = first_bind.unwrap_or_default();
    eprintln!(
        "[e2e] extender down {:.1} s (killed -> ready again); first bind {:.2} s after ready, \
         all {n} bound {:.2} s after ready: scheduling paused {:.1} s in all",
        (ready - killed).as_secs_f64(),
        first_bind.as_secs_f64(),
        ready.elapsed().as_secs_f64(),
        (ready - killed + first_bind).as_secs_f64()
    );
    let used = check_no_device_twice(&all_bound, inventories)?;
    anyhow::ensure!(
        used.len() == n,
        "{} devices for {n} one-device pods",
        used.len()
    );
    eprintln!("[e2e] after the restart: {n} pods bound once each, {n} devices, none twice");
    Ok(())
}

/// The PID of a `cluster.sh` component, if it runs (from `cluster.sh status`).
async fn component_pid(component: &str) -> anyhow::Result<Option<u32>> {
    let status = tokio::task::spawn_blocking(|| {
        // `status` exits non-zero while something is down; its output is what counts.
        std::process::Command::new("bash")
            .arg(kubesched_e2e::cluster::repo_root().join("scripts/cluster.sh"))
            .arg("status")
            .output()
    })
    .await??;
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{component}: running (pid ")))
        .and_then(|rest| rest.trim_end_matches(')').parse().ok()))
}

const APISERVER_SCENARIO: &str = "apiserver-restart";
/// kube-apiserver stops and starts again (etcd keeps the objects) under the running extender,
/// agent, dedicated kube-scheduler and scenario (a)'s pods: the extender and the agent keep
/// running and reconnect, the inventory annotation stays, the running pods keep their
/// containers and devices, and a pod created after the restart is scheduled through the
/// extender with its devices annotated and handed to its container.
pub async fn apiserver_restart(cluster: &Cluster, stack: &Stack) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let key = format!("{ANNOTATION_PREFIX}/{INVENTORY_ANNOTATION}");
    let inventory_of = |node: &Node| {
        node.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&key))
            .cloned()
    };
    let inventory_before = inventory_of(&nodes.get(&cluster.node).await?)
        .context("no inventory annotation before the restart")?;
    let scheduler_before = component_pid("kubesched-scheduler")
        .await?
        .context("the dedicated kube-scheduler is not running")?;
    let api = pods::api(&cluster.client);
    let mut containers = BTreeMap::new();
    for (name, _) in device_requests() {
        let pod = api.get(name).await?;
        containers.insert(name, scheduling::container_id(&pod)?);
    }

    // A fake node known before the outage, for a pod created after it.
    let fake = "e2e-fake-apiserver";
    let inventories = BTreeMap::from([(
        fake.to_string(),
        create_fake_node(&cluster.client, fake).await?,
    )]);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let lists_before = stack.extender.watch_lists().await?;
    let stopped = Instant::now();
    tokio::task::spawn_blocking(|| cluster::script(&["restart-apiserver"])).await??;
    let outage = stopped.elapsed();
    eprintln!(
        "[e2e] kube-apiserver restarted: away for at most {:.1} s (stop + start until /readyz)",
        outage.as_secs_f64()
    );

    stack.agent.ensure_running()?;
    stack.extender.proc.ensure_running()?;
    stack.extender.wait_ready(Duration::from_secs(30)).await?;
    // The chart's scheduler renews its lease every 2 s and gives up leadership (the process
    // exits, as in any kube-scheduler) when it cannot renew for renewDeadline (10 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    match component_pid("kubesched-scheduler").await? {
        Some(pid) if pid == scheduler_before => {
            eprintln!("[e2e] the dedicated kube-scheduler kept running (pid {pid}) and its lease")
        }
        other => {
            eprintln!(
                "[e2e] the dedicated kube-scheduler exited during the outage ({other:?}; it lost \
                 its lease after renewDeadline): started again, as its Deployment would"
            );
            start_scheduler(cluster).await?;
        }
    }

    // A pod created right after the restart, for the fake node, is scheduled through the
    // extender (its API client reconnected) and its devices annotated.
    let created = Instant::now();
    let result = async {
        let spec = pods::pod(
            "e-fake-after-restart",
            APISERVER_SCENARIO,
            &format!("{DOMAIN}/mig-3g.40gb"),
            1,
            "true",
            Some((FAKE_LABEL, "true")),
        )?;
        api.create(&PostParams::default(), &spec).await?;
        let api_ref = &api;
        let pod = poll(
            "the pod created after the restart to be bound to the fake node",
            // kube-scheduler 1.20 parks a pod found unschedulable for 60 s, looked at every
            // 30 s: a pod tried while the extender was still catching up waits up to 90 s.
            Duration::from_secs(120),
            Duration::from_millis(100),
            || async move {
                let pod = api_ref.get("e-fake-after-restart").await?;
                Ok(pods::node_name(&pod).is_some().then_some(pod))
            },
        )
        .await?;
        let used = check_no_device_twice(std::slice::from_ref(&pod), &inventories)?;
        eprintln!(
            "[e2e] pod created after the restart bound through the extender in {:.2} s to {fake} \
             with {used:?}",
            created.elapsed().as_secs_f64()
        );
        anyhow::Ok(())
    }
    .await;
    let cleaned = pods::delete_scenario(&cluster.client, APISERVER_SCENARIO).await;
    Api::<Node>::all(cluster.client.clone())
        .delete(fake, &DeleteParams::default())
        .await?;
    result.and(cleaned)?;

    // Nothing lost: the inventory, the node's resources, the pods and their devices.
    let inventory_after = inventory_of(&nodes.get(&cluster.node).await?)
        .context("the inventory annotation is gone after the restart")?;
    anyhow::ensure!(
        NodeInventory::from_json(&inventory_after)?.gpus
            == NodeInventory::from_json(&inventory_before)?.gpus,
        "the inventory annotation changed across the restart"
    );
    wait_allocatable(
        cluster,
        &stack.agent,
        &stack.expected,
        Duration::from_secs(60),
    )
    .await?;
    for (name, resource) in &device_requests() {
        let pod = api.get(name).await?;
        anyhow::ensure!(
            pods::phase(&pod) == "Running" && scheduling::container_id(&pod)? == containers[name],
            "pod {name} after the API server restart: phase {}, container {:?}",
            pods::phase(&pod),
            scheduling::container_id(&pod).ok()
        );
        check_pod_devices(cluster, name, resource).await?;
    }
    check_pod_resources(cluster, &device_requests()).await?;

    // And one on the real node, through the agent, right away: the agent's pod watch is
    // still retrying (up to 8 s after the API server is back), and Allocate must wait for it
    // to see the pod rather than hand out another device.
    eprintln!(
        "[e2e] creating a pod for the real node {:.1} s after the API server was stopped",
        stopped.elapsed().as_secs_f64()
    );
    let resource = format!("{DOMAIN}/mig-1g.10gb");
    let spec = pods::pod(
        "e-after-restart",
        APISERVER_SCENARIO,
        &resource,
        1,
        "env; exec sleep 3600",
        None,
    )?;
    let result = async {
        let latency =
            pods::create_and_wait_running(&cluster.client, vec![spec], Duration::from_secs(120))
                .await?;
        let devices = check_pod_devices(cluster, "e-after-restart", &resource).await?;
        check_pod_resources(cluster, &[("e-after-restart", resource.clone())]).await?;
        let mut all = BTreeSet::new();
        for (name, resource) in &device_requests() {
            all.extend(check_pod_devices(cluster, name, resource).await?);
        }
        anyhow::ensure!(
            devices.is_disjoint(&all),
            "the new pod got {devices:?}, already held"
        );
        eprintln!(
            "[e2e] pod created after the restart Running in {:.2} s with {devices:?}",
            latency.values().next().map_or(0.0, Duration::as_secs_f64)
        );
        anyhow::Ok(())
    }
    .await;
    let cleaned = pods::delete_scenario(&cluster.client, APISERVER_SCENARIO).await;
    result.and(cleaned)?;

    // The extender's watches work again after the outage, so the scenarios after this one
    // meet an extender that sees their nodes and pods. A watch resumes from its last
    // resourceVersion, or lists again when the new API server answers 410 for it: which one
    // depends on what etcd wrote meanwhile, so what is checked is that a Node created now
    // reaches the extender (pods created after the restart were bound through it above).
    let late = "e2e-fake-after-restart";
    create_fake_node(&cluster.client, late).await?;
    let extender = &stack.extender;
    let label = format!("node=\"{late}\"");
    let seen = poll(
        "the extender to see a Node created after the restart",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let label = label.clone();
            async move {
                let (status, body) =
                    kubesched_e2e::http::get(&extender.metrics_addr, "/metrics").await?;
                anyhow::ensure!(status == 200, "/metrics {status}: {body}");
                Ok(body.contains(&label).then_some(()))
            }
        },
    )
    .await;
    Api::<Node>::all(cluster.client.clone())
        .delete(late, &DeleteParams::default())
        .await?;
    seen?;
    let lists = stack.extender.watch_lists().await?;
    eprintln!(
        "[e2e] the extender saw a Node created {:.1} s after the API server was stopped \
         (full lists before the restart {lists_before:?}, now {lists:?})",
        stopped.elapsed().as_secs_f64()
    );
    Ok(())
}

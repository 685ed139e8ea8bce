//! (d) What kube-scheduler makes of the extender's answers: a pod we cannot serve shows our
//! reason in its events; preemption of MIG pods evicts only victims whose slices give the pod
//! a legal placement; and the pod lands where the extender's prioritize scores highest (the
//! chart's profile leaves it the decision). Fake Nodes (no kubelet), as in the burst.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubesched_core::inventory::{INVENTORY_VERSION, NodeInventory};
use kubesched_e2e::{Cluster, http, pods, poll};

use super::burst::create_node_with;
use super::scheduling::Extender;
use super::{ANNOTATION_PREFIX, DOMAIN};

const SCENARIO: &str = "compat";
const PREEMPT_LABEL: &str = "kubesched-e2e/preempt";
const SCORE_LABEL: &str = "kubesched-e2e/score";
/// Priority classes of this scenario, low to high.
const PRIORITIES: [(&str, i32); 4] = [
    ("e2e-p10", 10),
    ("e2e-p100", 100),
    ("e2e-p1000", 1000),
    ("e2e-p2000", 2000),
];

/// Two single-numa-node NUMA nodes: GPU 0 (NUMA 0, A100-80GB) split into seven 1g.10gb,
/// GPU 1 (NUMA 1, H100-80GB) with one 1g.10gb. Two models, so a pod's `gpu-models`
/// annotation steers it to one GPU; the same resource name, so kube-scheduler counts eight.
fn preempt_inventory(node: &str) -> anyhow::Result<NodeInventory> {
    let mig = |gpu: u32, start: u8| {
        serde_json::json!({"profile": "1g.10gb", "start": start,
            "uuid": format!("MIG-{node}-{gpu}-{start}")})
    };
    let gpu = |index: u32, model: &str, instances: Vec<serde_json::Value>| {
        serde_json::json!({
            "index": index, "uuid": format!("GPU-{node}-{index}"), "model": model,
            "pciBusId": format!("00000000:{:02X}:00.0", index + 1), "numaNode": index,
            "memoryMib": 81559, "healthy": true,
            "mig": {"mode": "static", "instances": instances},
        })
    };
    let doc = serde_json::json!({
        "version": INVENTORY_VERSION, "node": node, "agentVersion": "e2e-fake",
        "topologyPolicy": "single-numa-node",
        "numaNodes": [
            {"id": 0, "cpus": (0..32).collect::<Vec<u32>>(), "memoryMib": 131072},
            {"id": 1, "cpus": (32..64).collect::<Vec<u32>>(), "memoryMib": 131072},
        ],
        "gpus": [
            gpu(0, "A100-80GB", (0..7).map(|s| mig(0, s)).collect()),
            gpu(1, "H100-80GB", vec![mig(1, 0)]),
        ],
    });
    Ok(NodeInventory::from_json(&doc.to_string())?)
}

/// A `mig-1g.10gb` pod of `priority`, pinned to `node` (by hostname) or to the nodes with
/// `label`, optionally restricted to a GPU model, with `cpu` Guaranteed CPUs when given.
fn slice_pod(
    name: &str,
    count: u32,
    priority: &str,
    pin: (&str, &str),
    model: Option<&str>,
    cpu: Option<&str>,
) -> anyhow::Result<Pod> {
    let mut pod = pods::pod(
        name,
        SCENARIO,
        &format!("{DOMAIN}/mig-1g.10gb"),
        count,
        "true",
        Some(pin),
    )?;
    let spec = pod.spec.as_mut().context("pod without spec")?;
    spec.priority_class_name = Some(priority.into());
    if let Some(cpu) = cpu {
        let limits = spec
            .containers
            .first_mut()
            .and_then(|c| c.resources.as_mut())
            .and_then(|r| r.limits.as_mut())
            .context("pod without limits")?;
        limits.insert("cpu".into(), Quantity(cpu.into()));
        limits.insert("memory".into(), Quantity("1Gi".into()));
    }
    if let Some(model) = model {
        pod.metadata.annotations =
            Some([(format!("{ANNOTATION_PREFIX}/gpu-models"), model.to_string())].into());
    }
    Ok(pod)
}

pub async fn compat(cluster: &Cluster, extender: &Extender) -> anyhow::Result<()> {
    let client = &cluster.client;
    let classes: Api<PriorityClass> = Api::all(client.clone());
    for (name, value) in PRIORITIES {
        let class: PriorityClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value,
        }))?;
        if let Err(error) = classes.create(&PostParams::default(), &class).await {
            anyhow::ensure!(
                matches!(&error, kube::Error::Api(e) if e.code == 409),
                "creating priority class {name}: {error}"
            );
        }
    }
    let nodes: Vec<String> = ["e2e-pre-a", "e2e-pre-b", "e2e-score-1", "e2e-score-2"]
        .map(String::from)
        .to_vec();
    for name in &nodes {
        let label = if name.contains("pre") {
            PREEMPT_LABEL
        } else {
            SCORE_LABEL
        };
        create_node_with(client, name, &preempt_inventory(name)?, &[(label, "true")]).await?;
    }
    let result = async {
        unservable_pod_shows_our_reason(cluster).await?;
        preemption_by_geometry(cluster, extender).await?;
        lands_on_the_extenders_top_score(cluster, extender).await
    }
    .await;
    let pods_gone = pods::delete_scenario(client, SCENARIO).await;
    let node_api: Api<Node> = Api::all(client.clone());
    for name in &nodes {
        node_api.delete(name, &DeleteParams::default()).await?;
    }
    for (name, _) in PRIORITIES {
        classes.delete(name, &DeleteParams::default()).await?;
    }
    result.and(pods_gone)
}

/// A pod asking whole GPUs and MIG slices at once is refused by the extender with a 200
/// whose reason kube-scheduler puts in the pod's `FailedScheduling` event.
async fn unservable_pod_shows_our_reason(cluster: &Cluster) -> anyhow::Result<()> {
    let client = &cluster.client;
    let mut pod = slice_pod("d-mixed", 1, "e2e-p10", (SCORE_LABEL, "true"), None, None)?;
    let limits = pod
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
        .and_then(|c| c.resources.as_mut())
        .and_then(|r| r.limits.as_mut())
        .context("pod without limits")?;
    limits.insert(format!("{DOMAIN}/gpu"), Quantity("1".into()));
    pods::api(client)
        .create(&PostParams::default(), &pod)
        .await?;
    let reason = poll(
        "our reason in the unservable pod's FailedScheduling event",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async move {
            let events = pods::events(client, "d-mixed").await?;
            Ok(events
                .into_iter()
                .find(|e| e.starts_with("FailedScheduling") && e.contains("kubesched: ")))
        },
    )
    .await?;
    eprintln!("[e2e] unservable pod Pending: {reason}");
    pods::api(client)
        .delete("d-mixed", &DeleteParams::default().grace_period(0))
        .await?;
    Ok(())
}

/// Bound pods of this scenario on `node`, by name.
async fn pods_on(client: &kube::Client, node: &str) -> anyhow::Result<BTreeMap<String, Pod>> {
    let list = pods::api(client)
        .list(&ListParams::default().labels(&format!("{}={SCENARIO}", pods::LABEL)))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| pods::node_name(p) == Some(node))
        .filter_map(|p| p.metadata.name.clone().map(|n| (n, p)))
        .collect())
}

/// Creates `pod` and waits until it is bound; returns its node.
async fn create_bound(client: &kube::Client, pod: &Pod) -> anyhow::Result<String> {
    let api = pods::api(client);
    api.create(&PostParams::default(), pod).await?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let (api, name) = (&api, name.as_str());
    poll(
        "the pod to be bound",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async move { Ok(pods::node_name(&api.get(name).await?).map(str::to_string)) },
    )
    .await
    .with_context(|| format!("pod {name}"))
}

/// Both nodes full of low-priority 1g.10gb pods; a priority-1000 pod asks two 1g.10gb with
/// Guaranteed CPUs under single-numa-node, so both must be on GPU 0. Counting resources,
/// kube-scheduler would evict on node A one GPU-0 pod and its priority-10 GPU-1 pod (the
/// lowest sum of priorities), freeing slices on two NUMA nodes: in vain. On B the GPU-1 pod
/// outranks the preemptor, so its victims are two GPU-0 pods. The preempt verb drops A.
async fn preemption_by_geometry(cluster: &Cluster, extender: &Extender) -> anyhow::Result<()> {
    let client = &cluster.client;
    let (a, b) = ("e2e-pre-a", "e2e-pre-b");
    for (node, gpu1_priority) in [(a, "e2e-p10"), (b, "e2e-p2000")] {
        let host = ("kubernetes.io/hostname", node);
        for i in 0..7 {
            let pod = slice_pod(
                &format!("d-{node}-g0-{i}"),
                1,
                "e2e-p100",
                host,
                Some("A100-80GB"),
                None,
            )?;
            create_bound(client, &pod).await?;
        }
        let pod = slice_pod(
            &format!("d-{node}-g1"),
            1,
            gpu1_priority,
            host,
            Some("H100-80GB"),
            None,
        )?;
        create_bound(client, &pod).await?;
    }
    let before_a: BTreeSet<String> = pods_on(client, a).await?.into_keys().collect();
    anyhow::ensure!(before_a.len() == 8, "node A holds {before_a:?}");

    let preemptor = slice_pod(
        "d-preemptor",
        2,
        "e2e-p1000",
        (PREEMPT_LABEL, "true"),
        None,
        Some("2"),
    )?;
    pods::api(client)
        .create(&PostParams::default(), &preemptor)
        .await?;
    // No kubelet runs on fake nodes: finish the victims' graceful deletion as one would.
    let api = pods::api(client);
    let api_ref = &api;
    let node = poll(
        "the preemptor to be bound after preemption",
        Duration::from_secs(180),
        Duration::from_millis(250),
        || async move {
            for p in api_ref
                .list(&ListParams::default().labels(&format!("{}={SCENARIO}", pods::LABEL)))
                .await?
                .items
            {
                if p.metadata.deletion_timestamp.is_some()
                    && let Some(name) = p.metadata.name.as_deref()
                {
                    let _gone = api_ref
                        .delete(name, &DeleteParams::default().grace_period(0))
                        .await;
                }
            }
            Ok(pods::node_name(&api_ref.get("d-preemptor").await?).map(str::to_string))
        },
    )
    .await?;
    anyhow::ensure!(node == b, "the preemptor was bound to {node}, not {b}");

    let after_a: BTreeSet<String> = pods_on(client, a).await?.into_keys().collect();
    anyhow::ensure!(
        after_a == before_a,
        "pods on A were evicted in vain: {before_a:?} -> {after_a:?}"
    );
    let on_b = pods_on(client, b).await?;
    let gpu0_left = on_b.keys().filter(|n| n.contains("-g0-")).count();
    anyhow::ensure!(
        gpu0_left == 5,
        "B keeps {gpu0_left} GPU-0 pods, not 5: {:?}",
        on_b.keys()
    );
    anyhow::ensure!(
        on_b.contains_key(&format!("d-{b}-g1")),
        "B's GPU-1 pod was evicted"
    );
    let mut used = BTreeSet::new();
    for (name, pod) in &on_b {
        let devices = pods::devices(pod, ANNOTATION_PREFIX)?
            .with_context(|| format!("{name} has no devices annotation"))?;
        for d in &devices.devices {
            anyhow::ensure!(
                used.insert(format!("{d:?}")),
                "device handed out twice: {d:?}"
            );
            if name == "d-preemptor" {
                anyhow::ensure!(
                    d.gpu_index == 0,
                    "preemptor got a slice of GPU {}",
                    d.gpu_index
                );
            }
        }
    }
    let (status, metrics) = http::get(&extender.metrics_addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics {status}");
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with(r#"kubesched_extender_preemption_nodes_total{outcome="dropped"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    anyhow::ensure!(
        dropped >= 1.0,
        "the extender dropped no preemption candidate"
    );
    eprintln!(
        "[e2e] preemption: bound to {node}; A untouched ({} pods), B gave up 2 GPU-0 pods; \
         candidates dropped by geometry: {dropped}",
        after_a.len()
    );
    Ok(())
}

/// The top of the extender's prioritize for `pod` on `nodes`, asked over its own HTTP port.
async fn top_scored(
    extender: &Extender,
    pod: &Pod,
    nodes: &[&str],
) -> anyhow::Result<BTreeSet<String>> {
    let body = serde_json::json!({"Pod": pod, "Nodes": null, "NodeNames": nodes});
    let reply = http::post(&extender.addr, "/prioritize", &body.to_string()).await?;
    let scores: Vec<serde_json::Value> = serde_json::from_str(&reply)?;
    let best = scores
        .iter()
        .filter_map(|s| s["Score"].as_i64())
        .max()
        .unwrap_or(0);
    Ok(scores
        .iter()
        .filter(|s| s["Score"].as_i64() == Some(best))
        .filter_map(|s| s["Host"].as_str().map(str::to_string))
        .collect())
}

/// A pod lands where the extender's score is highest, although CPU spreading (were it on)
/// would send it to the emptier node: the first pod takes 40 of a node's 64 CPUs.
async fn lands_on_the_extenders_top_score(
    cluster: &Cluster,
    extender: &Extender,
) -> anyhow::Result<()> {
    let client = &cluster.client;
    let first = slice_pod(
        "d-score-1",
        1,
        "e2e-p100",
        (SCORE_LABEL, "true"),
        None,
        Some("40"),
    )?;
    let busy = create_bound(client, &first).await?;
    let second = slice_pod(
        "d-score-2",
        1,
        "e2e-p100",
        (SCORE_LABEL, "true"),
        None,
        Some("4"),
    )?;
    let top = top_scored(extender, &second, &["e2e-score-1", "e2e-score-2"]).await?;
    let node = create_bound(client, &second).await?;
    anyhow::ensure!(
        top.contains(&node),
        "bound to {node}; the extender's top: {top:?}"
    );
    eprintln!("[e2e] score: first pod on {busy}, second bound to {node}, extender's top {top:?}");
    Ok(())
}

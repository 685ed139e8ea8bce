//! (d) What kube-scheduler makes of the extender's answers: a pod we cannot serve shows our
//! reason in its events, and a pod lands where the extender's prioritize scores highest (the
//! chart's profile leaves it the decision). Fake Nodes (no kubelet), as in the burst.
//!
//! Preemption through the `preempt` verb cannot be shown here: kube-scheduler 1.20 builds its
//! profiles without the extenders (`profile.NewMap` gets no `WithExtenders`), so its
//! DefaultPreemption never calls one; the verb is covered by `scheduler/tests/preempt.rs` and
//! the golden test of kube-scheduler's request.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, PostParams};
use kubesched_core::inventory::{INVENTORY_VERSION, NodeInventory};
use kubesched_e2e::extender::Extender;
use kubesched_e2e::fake_node::create_node_with;
use kubesched_e2e::{Cluster, http, pods, poll};

use super::DOMAIN;

const SCENARIO: &str = "compat";
const LABEL: &str = "kubesched-e2e/compat";

/// One NUMA node (`single-numa-node`) with a dynamic-MIG H100 (GPU 0) and a whole H100
/// (GPU 1), so a pod asking whole GPUs and slices passes kube-scheduler's own resource fit
/// and reaches the extender.
fn inventory(node: &str) -> anyhow::Result<NodeInventory> {
    let gpu = |index: u32| {
        serde_json::json!({
            "index": index, "uuid": format!("GPU-{node}-{index}"), "model": "H100-80GB",
            "pciBusId": format!("00000000:{:02X}:00.0", index + 1), "numaNode": 0,
            "memoryMib": 81559, "healthy": true,
        })
    };
    let mut dynamic = gpu(0);
    dynamic["mig"] = serde_json::json!({"mode": "dynamic", "instances": []});
    let doc = serde_json::json!({
        "version": INVENTORY_VERSION, "node": node, "agentVersion": "e2e-fake",
        "topologyPolicy": "single-numa-node",
        "numaNodes": [{"id": 0, "cpus": (0..64).collect::<Vec<u32>>(), "memoryMib": 262144}],
        "gpus": [dynamic, gpu(1)],
    });
    Ok(NodeInventory::from_json(&doc.to_string())?)
}

/// A pod asking `count` `mig-<profile>` on the nodes labelled [`LABEL`], with `cpu` CPUs
/// (Guaranteed) when given.
fn slice_pod(name: &str, profile: &str, count: u32, cpu: Option<&str>) -> anyhow::Result<Pod> {
    let mut pod = pods::pod(
        name,
        SCENARIO,
        &format!("{DOMAIN}/mig-{profile}"),
        count,
        "true",
        Some((LABEL, "true")),
    )?;
    let limits = pods::limits_mut(&mut pod)?;
    if let Some(cpu) = cpu {
        limits.insert("cpu".into(), Quantity(cpu.into()));
        limits.insert("memory".into(), Quantity("1Gi".into()));
    }
    Ok(pod)
}

pub async fn compat(cluster: &Cluster, extender: &Extender) -> anyhow::Result<()> {
    let client = &cluster.client;
    let nodes = ["e2e-compat-1", "e2e-compat-2"];
    for name in nodes {
        create_node_with(client, name, &inventory(name)?, &[(LABEL, "true")]).await?;
    }
    let result = async {
        unservable_pod_shows_our_reason(cluster).await?;
        lands_on_the_extenders_top_score(cluster, extender, &nodes).await
    }
    .await;
    let pods_gone = pods::delete_scenario(client, SCENARIO).await;
    let node_api: Api<Node> = Api::all(client.clone());
    for name in nodes {
        node_api.delete(name, &DeleteParams::default()).await?;
    }
    result.and(pods_gone)
}

/// A pod asking whole GPUs and MIG slices at once is refused by the extender with a 200
/// whose reason kube-scheduler puts in the pod's `FailedScheduling` event.
async fn unservable_pod_shows_our_reason(cluster: &Cluster) -> anyhow::Result<()> {
    let client = &cluster.client;
    let mut pod = slice_pod("d-mixed", "1g.10gb", 1, None)?;
    let limits = pods::limits_mut(&mut pod)?;
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
/// would send it to the emptier node. A first 3g.40gb takes half of one node's MIG GPU and 20
/// of its 64 CPUs; a second 3g.40gb fills that GPU's other half exactly, where on the other
/// node it would cost a fresh GPU its 7g and 4g: the extender must prefer the first node
/// alone.
async fn lands_on_the_extenders_top_score(
    cluster: &Cluster,
    extender: &Extender,
    nodes: &[&str],
) -> anyhow::Result<()> {
    let client = &cluster.client;
    let busy = create_bound(client, &slice_pod("d-score-1", "3g.40gb", 1, Some("20"))?).await?;
    let second = slice_pod("d-score-2", "3g.40gb", 1, Some("4"))?;
    let top = top_scored(extender, &second, nodes).await?;
    anyhow::ensure!(
        top == BTreeSet::from([busy.clone()]),
        "the extender's top for the second slice is {top:?}, not the split GPU's node {busy}"
    );
    let node = create_bound(client, &second).await?;
    anyhow::ensure!(node == busy, "bound to {node}; the extender's top: {top:?}");
    eprintln!(
        "[e2e] score: first 3g.40gb on {busy}; the second bound to {node}, the extender's only top"
    );
    Ok(())
}

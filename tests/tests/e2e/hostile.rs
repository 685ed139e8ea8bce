//! Hostile input through the real cluster: a pod creator forges a devices annotation (the
//! extender signs what it writes; this one is unsigned) on a pod bound straight to the node,
//! and a decoy pod that asks for no GPU names a free MIG device. The forged pod fails at once
//! with the reason, the decoy runs without devices, and pods scheduled through the extender
//! on the same node get exactly their annotated devices, without waiting on the others.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kubesched_e2e::pods::{self, BUSYBOX, LABEL, NAMESPACE};
use kubesched_e2e::{Cluster, poll};

use super::scheduling::check_pod_devices;
use super::{ANNOTATION_PREFIX, DOMAIN};

const SCENARIO: &str = "hostile";

/// The free MIG instance the forged annotations name (fixture GPU 3's 1g slice at 6).
const FORGED: (&str, u32, u8, &str) = ("GPU-e2e-3", 3, 6, "MIG-e2e-3-1g-6");

fn forged_annotation(node: &str) -> String {
    let (gpu, index, start, uuid) = FORGED;
    serde_json::json!({
        "version": 1, "node": node, "resource": format!("{DOMAIN}/mig-1g.10gb"),
        "devices": [{"gpuUuid": gpu, "gpuIndex": index,
                     "mig": {"profile": "1g.10gb", "start": start, "uuid": uuid}}]
    })
    .to_string()
}

/// A pod bound straight to the node (no scheduler) carrying `annotation`.
fn bound_pod(
    name: &str,
    node: &str,
    resource: Option<&str>,
    annotation: &str,
) -> anyhow::Result<Pod> {
    let mut container = serde_json::json!({
        "name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
        "command": ["sh", "-c", "env; exec sleep 3600"],
    });
    if let Some(resource) = resource {
        container["resources"] = serde_json::json!({"limits": {resource: "1"}});
    }
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {LABEL: SCENARIO},
                     "annotations": {format!("{ANNOTATION_PREFIX}/devices"): annotation}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [container]},
    }))?)
}

pub async fn forged_annotations_are_refused(cluster: &Cluster) -> anyhow::Result<()> {
    pods::delete_scenario(&cluster.client, SCENARIO).await?;
    let api = pods::api(&cluster.client);
    let forged = forged_annotation(&cluster.node);
    let mig = format!("{DOMAIN}/mig-1g.10gb");
    let started = Instant::now();
    // Bound before the scheduled pods, so the kubelet admits them first: a stalled or
    // misdirected admission would show on the pods after them.
    for pod in [
        bound_pod("h-forged", &cluster.node, Some(&mig), &forged)?,
        bound_pod("h-decoy", &cluster.node, None, &forged)?,
    ] {
        api.create(&PostParams::default(), &pod).await?;
    }
    let legit = [
        ("h-legit-1g", mig.clone()),
        ("h-legit-gpu", format!("{DOMAIN}/gpu")),
    ];
    let mut specs = Vec::new();
    for (name, resource) in &legit {
        specs.push(pods::pod(
            name,
            SCENARIO,
            resource,
            1,
            "env; exec sleep 3600",
            None,
        )?);
    }
    // kube-scheduler 1.20 parks a pod it found unschedulable for 60 s (checked every 30 s):
    // one judged while its caches still catch up after the API server restart before this
    // scenario runs only after up to 90 s. On 1.30+ the back-off is 1-10 s.
    let latency = pods::create_and_wait_running(&cluster.client, specs, Duration::from_secs(120))
        .await
        .context("the scheduled pods beside the forged one")?;
    let api = &api;
    let reason = poll(
        "the forged pod to fail its admission",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async move {
            let pod = api.get("h-forged").await?;
            match pods::phase(&pod) {
                "Failed" => Ok(Some(pod.status.and_then(|s| s.message).unwrap_or_default())),
                "Running" => anyhow::bail!("the forged pod runs"),
                _ => Ok(None),
            }
        },
    )
    .await?;
    anyhow::ensure!(
        reason.contains("not signed by the scheduler"),
        "the forged pod failed for another reason: {reason}"
    );
    eprintln!(
        "[e2e] forged pod refused after {:.1} s: {reason}",
        started.elapsed().as_secs_f64()
    );
    poll(
        "the decoy pod to run",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async move {
            let decoy = api.get("h-decoy").await?;
            match pods::phase(&decoy) {
                "Running" => Ok(Some(())),
                "Failed" | "Succeeded" => anyhow::bail!("decoy is {}", pods::phase(&decoy)),
                _ => Ok(None),
            }
        },
    )
    .await?;
    let decoy_env = pods::logs(&cluster.client, "h-decoy").await?;
    anyhow::ensure!(
        pods::env_value(&decoy_env, "NVIDIA_VISIBLE_DEVICES").is_none(),
        "the decoy got devices"
    );
    let mut handed = BTreeSet::new();
    for (name, resource) in &legit {
        for id in check_pod_devices(cluster, name, resource).await? {
            anyhow::ensure!(handed.insert(id.clone()), "device {id} handed out twice");
        }
    }
    // Before, a contradicting annotation held the node's admissions 15 s per call. What is
    // timed is the node's part, from the binding to the container being ready (the API's
    // condition times, in whole seconds), not how long kube-scheduler took to bind.
    for (name, _) in &legit {
        let pod = api.get(name).await?;
        let since_bound = bound_to_ready(&pod)
            .with_context(|| format!("pod {name} has no PodScheduled and Ready times"))?;
        anyhow::ensure!(
            since_bound < 20,
            "pod {name} took {since_bound} s from its binding to ready beside the forged one"
        );
    }
    eprintln!("[e2e] scheduled pods ran in {latency:?} with their annotated devices {handed:?}");
    pods::delete_scenario(&cluster.client, SCENARIO).await
}

/// Seconds from a pod's `PodScheduled` condition to its `Ready` condition.
fn bound_to_ready(pod: &Pod) -> Option<i64> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let at = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.as_second())
    };
    Some(at("Ready")? - at("PodScheduled")?)
}

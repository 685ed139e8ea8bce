//! Pods for the scheduling scenarios: built from JSON, created, waited on and cleaned up with
//! the admin client.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kubesched_core::annotation::{DEVICES_ANNOTATION, DevicesAnnotation, key};

use crate::poll;

/// Namespace of the test pods (exists in every cluster).
pub const NAMESPACE: &str = "default";
/// The dedicated kube-scheduler's name (chart and `cluster.sh`).
pub const SCHEDULER_NAME: &str = "kubesched-scheduler";
/// The cluster's locally built image (`cluster.sh build`).
pub const BUSYBOX: &str = "localhost/busybox:local";
/// Label on every pod a scenario creates, for cleaning up.
pub const LABEL: &str = "kubesched-e2e";

/// A pod for our scheduler whose one container asks `count` of `resource` (limits) and runs
/// `command`; `node_selector` pins it (e.g. to fake nodes).
pub fn pod(
    name: &str,
    scenario: &str,
    resource: &str,
    count: u32,
    command: &str,
    node_selector: Option<(&str, &str)>,
) -> anyhow::Result<Pod> {
    let mut spec = serde_json::json!({
        "schedulerName": SCHEDULER_NAME,
        "terminationGracePeriodSeconds": 0,
        "containers": [{
            "name": "main",
            "image": BUSYBOX,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", command],
            "resources": {"limits": {resource: count.to_string()}},
        }],
    });
    if let Some((k, v)) = node_selector {
        spec["nodeSelector"] = serde_json::json!({ k: v });
    }
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {LABEL: scenario}},
        "spec": spec,
    }))?)
}

/// The limits of the pod's first container, to add resources to.
pub fn limits_mut(
    pod: &mut Pod,
) -> anyhow::Result<&mut BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>
{
    pod.spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
        .and_then(|c| c.resources.as_mut())
        .and_then(|r| r.limits.as_mut())
        .context("pod without limits")
}

/// The Pod API of the test namespace ([`NAMESPACE`]), through `client`.
pub fn api(client: &kube::Client) -> Api<Pod> {
    Api::namespaced(client.clone(), NAMESPACE)
}

/// The devices our extender wrote on the pod, if any.
pub fn devices(pod: &Pod, prefix: &str) -> anyhow::Result<Option<DevicesAnnotation>> {
    let key = key(prefix, DEVICES_ANNOTATION);
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&key))
        .map(|text| DevicesAnnotation::from_json(text).with_context(|| format!("bad {key}")))
        .transpose()
}

/// The pod's `status.phase` (`Pending`, `Running`, ...), or `""` before it has a status.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The node the pod is bound to (`spec.nodeName`), or `None` while unscheduled.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// Creates `pods` and waits until each is Running; returns each pod's time from its create
/// call to Running as seen by polling every 100 ms.
pub async fn create_and_wait_running(
    client: &kube::Client,
    pods: Vec<Pod>,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Duration>> {
    let api = api(client);
    let mut created = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().context("pod without a name")?;
        api.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating pod {name}"))?;
        created.insert(name, Instant::now());
    }
    let mut latency = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while latency.len() < created.len() {
        for (name, at) in &created {
            if latency.contains_key(name) {
                continue;
            }
            let pod = api.get(name).await?;
            match phase(&pod) {
                "Running" => {
                    latency.insert(name.clone(), at.elapsed());
                }
                "Failed" | "Succeeded" => anyhow::bail!(
                    "pod {name} ended ({}): {}",
                    phase(&pod),
                    events(client, name).await?.join("; ")
                ),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            let mut waiting = Vec::new();
            for name in created.keys().filter(|n| !latency.contains_key(*n)) {
                waiting.push(format!(
                    "{name}: {}",
                    events(client, name).await?.join("; ")
                ));
            }
            anyhow::bail!(
                "pods not Running after {timeout:?}: {}",
                waiting.join(" | ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(latency)
}

/// "reason: message" of every event about pod `name`.
pub async fn events(client: &kube::Client, name: &str) -> anyhow::Result<Vec<String>> {
    let api: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let list = api
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect())
}

/// The container's log (our pods print their environment first).
pub async fn logs(client: &kube::Client, name: &str) -> anyhow::Result<String> {
    api(client)
        .logs(name, &LogParams::default())
        .await
        .with_context(|| format!("reading the log of pod {name}"))
}

/// The value of `var` in an `env` listing.
pub fn env_value<'a>(listing: &'a str, var: &str) -> Option<&'a str> {
    listing
        .lines()
        .find_map(|l| l.strip_prefix(var).and_then(|r| r.strip_prefix('=')))
}

/// Force-deletes the pods of `scenario` and waits until they are gone.
pub async fn delete_scenario(client: &kube::Client, scenario: &str) -> anyhow::Result<()> {
    let api = api(client);
    let selector = format!("{LABEL}={scenario}");
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    api.delete_collection(&params, &ListParams::default().labels(&selector))
        .await?;
    let api = &api;
    let selector = &selector;
    poll(
        "the scenario's pods to be deleted",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async move {
            let left = api.list(&ListParams::default().labels(selector)).await?;
            Ok(left.items.is_empty().then_some(()))
        },
    )
    .await
}

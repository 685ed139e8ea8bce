//! [`PodSource`] backed by the Kubernetes API: a reflector of the pods bound to this node
//! (field selector `spec.nodeName=<node>`, terminal phases excluded), so Allocate reads a local
//! cache and never waits on the API server. Each pod becomes a [`PodView`]: its GPU request
//! from container requests/limits and its devices annotation read with the core type. The
//! watch's events also record the pods' arrival order ([`crate::pod_arrival`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::request::{GpuDemand, ResourceNames};
use kubesched_core::retry;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;

use crate::agent::stop_requested;
use crate::pod_arrival::{ArrivalOrder, sort_by_arrival};
use crate::pods::{PodDevices, PodSource, PodSourceError, PodView};

/// The pods this agent cares about: bound here and not finished. The API server also sends a
/// deletion when a pod leaves the selection (it finished), which drops it from the cache.
pub fn field_selector(node: &str) -> String {
    format!("spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed")
}

/// Pods bound to this node, from a watch-fed cache.
pub struct KubePods {
    store: Store<Pod>,
    arrivals: Arc<Mutex<ArrivalOrder>>,
    names: ResourceNames,
    annotation_key: String,
    node: String,
    /// How long a call waits for the first full list before reporting the cache unavailable.
    sync_timeout: Duration,
}

impl KubePods {
    /// Starts watching the pods of `node`; the watch runs until `shutdown` turns true.
    /// `annotation_key` is the full devices annotation key (`kubesched.ai/devices`).
    pub fn spawn(
        client: kube::Client,
        node: &str,
        names: ResourceNames,
        annotation_key: String,
        mut shutdown: watch::Receiver<bool>,
    ) -> Self {
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&field_selector(node));
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, config))
            .backoff(watcher::ExponentialBackoff::from(retry::watch_backoff()));
        let node_name = node.to_string();
        let arrivals = Arc::new(Mutex::new(ArrivalOrder::default()));
        let record = Arc::clone(&arrivals);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    item = stream.next() => match item {
                        Some(Ok(event)) => record
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .observe(&event),
                        // The watcher recovers by itself (with back-off); the cache keeps its
                        // last state meanwhile.
                        Some(Err(error)) => tracing::warn!(node = %node_name, %error, "pod watch failed; retrying"),
                        None => return,
                    },
                    () = stop_requested(&mut shutdown) => return,
                }
            }
        });
        KubePods {
            store,
            arrivals,
            names,
            annotation_key,
            node: node.to_string(),
            sync_timeout: Duration::from_secs(10),
        }
    }
}

/// How long Allocate waits for a pod the cache has not seen yet. The cache trails the kubelet
/// by a moment normally, and by the watch's back-off after an API server outage
/// ([`retry::WATCH_RETRY_MAX`]). The kubelet puts no deadline on these calls.
pub const POD_WAIT: Duration = Duration::from_secs(15);

#[tonic::async_trait]
impl PodSource for KubePods {
    async fn pods_on_node(&self) -> Result<Vec<PodView>, PodSourceError> {
        match tokio::time::timeout(self.sync_timeout, self.store.wait_until_ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(PodSourceError("the pod watch has stopped".into())),
            Err(_) => {
                return Err(PodSourceError(format!(
                    "no pod list from the API server within {:?}",
                    self.sync_timeout
                )));
            }
        }
        let mut pods = self.store.state();
        sort_by_arrival(
            &mut pods,
            &self.arrivals.lock().unwrap_or_else(PoisonError::into_inner),
        );
        Ok(pods
            .iter()
            .filter_map(|pod| pod_view(pod, &self.names, &self.annotation_key, &self.node))
            .collect())
    }
}

/// A pod as allocation sees it; `None` for a finished pod or one without identity.
pub fn pod_view(
    pod: &Pod,
    names: &ResourceNames,
    annotation_key: &str,
    node: &str,
) -> Option<PodView> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone()?;
    let uid = pod.metadata.uid.clone()?;
    let demand = pod.spec.as_ref().map_or(Ok(GpuDemand::None), |spec| {
        pod_demand(
            names,
            &spec.containers,
            spec.init_containers.as_deref().unwrap_or_default(),
        )
    });
    let demand = demand.unwrap_or_else(|error| {
        tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "unusable GPU request; treated as none");
        GpuDemand::None
    });
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation_key));
    let devices = match annotation.map(|text| DevicesAnnotation::from_json(text)) {
        None => PodDevices::Unassigned,
        Some(Ok(annotation)) if annotation.node != node => PodDevices::Unreadable(format!(
            "{annotation_key} names node {}, but the pod is bound to {node}",
            annotation.node
        )),
        Some(Ok(annotation)) => PodDevices::Assigned(annotation),
        Some(Err(error)) => PodDevices::Unreadable(format!("{annotation_key}: {error}")),
    };
    Some(PodView {
        namespace,
        name,
        uid,
        demand,
        devices,
    })
}

/// The GPU resources of one container: requests, with limits standing in for names it does
/// not request (Kubernetes defaults an extended resource's request to its limit).
fn container_resources(container: &Container) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let Some(resources) = &container.resources else {
        return counts;
    };
    for source in [&resources.limits, &resources.requests]
        .into_iter()
        .flatten()
    {
        for (name, quantity) in source {
            // Extended resources are whole numbers (the API server enforces it).
            if let Ok(count) = quantity.0.trim().parse::<u64>() {
                counts.insert(name.clone(), count);
            }
        }
    }
    counts
}

fn demand_count(demand: &GpuDemand) -> u32 {
    match demand {
        GpuDemand::Whole { count } | GpuDemand::Mig { count, .. } => *count,
        GpuDemand::None | GpuDemand::Share { .. } => 0,
    }
}

/// The pod's effective GPU demand: app containers (and restartable init containers, which
/// run alongside them) add up; an ordinary init container runs alone, so only a larger one
/// raises the demand.
pub fn pod_demand(
    names: &ResourceNames,
    containers: &[Container],
    init_containers: &[Container],
) -> Result<GpuDemand, kubesched_core::request::RequestError> {
    let sidecar = |c: &&Container| c.restart_policy.as_deref() == Some("Always");
    let running: Vec<BTreeMap<String, u64>> = containers
        .iter()
        .chain(init_containers.iter().filter(sidecar))
        .map(container_resources)
        .collect();
    let mut demand = names.demand(
        running
            .iter()
            .flat_map(|m| m.iter().map(|(n, c)| (n.as_str(), *c))),
    )?;
    for init in init_containers.iter().filter(|c| !sidecar(c)) {
        let resources = container_resources(init);
        let alone = names.demand(resources.iter().map(|(n, c)| (n.as_str(), *c)))?;
        if demand_count(&alone) > demand_count(&demand) {
            if !demand.is_none() && names.for_demand(&alone) != names.for_demand(&demand) {
                return Err(kubesched_core::request::RequestError::MixedGpuResources(
                    names.for_demand(&demand).unwrap_or_default(),
                    names.for_demand(&alone).unwrap_or_default(),
                ));
            }
            demand = alone;
        }
    }
    Ok(demand)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_bound_during_an_outage_is_seen_before_allocate_gives_up() {
        assert!(retry::WATCH_RETRY_MAX < POD_WAIT);
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    const KEY: &str = "kubesched.ai/devices";

    fn annotated(node: &str, phase: &str, annotation: Option<&str>) -> Pod {
        let mut annotations = serde_json::Map::new();
        if let Some(a) = annotation {
            annotations.insert(KEY.into(), a.into());
        }
        pod(serde_json::json!({
            "metadata": {"name": "trainer", "namespace": "ml", "uid": "u-1", "annotations": annotations},
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "4"}}},
                    {"name": "b", "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}
                ]
            },
            "status": {"phase": phase}
        }))
    }

    const GOOD: &str = r#"{"version":1,"node":"node-1","resource":"nvidia.com/gpu","devices":[{"gpuUuid":"GPU-0","gpuIndex":0},{"gpuUuid":"GPU-3","gpuIndex":3},{"gpuUuid":"GPU-1","gpuIndex":1}]}"#;

    #[test]
    fn reads_demand_from_limits_and_requests_and_the_core_annotation() {
        let names = ResourceNames::default();
        let view = pod_view(
            &annotated("node-1", "Pending", Some(GOOD)),
            &names,
            KEY,
            "node-1",
        )
        .unwrap();
        assert_eq!(view.key(), "ml/trainer");
        assert_eq!(view.uid, "u-1");
        assert_eq!(view.demand, GpuDemand::Whole { count: 3 });
        assert_eq!(
            view.assigned_ids("nvidia.com/gpu"),
            Some(vec!["GPU-0".into(), "GPU-3".into(), "GPU-1".into()])
        );
        let plain = pod_view(&annotated("node-1", "Running", None), &names, KEY, "node-1").unwrap();
        assert_eq!(plain.devices, PodDevices::Unassigned);
    }

    #[test]
    fn terminal_pods_are_skipped() {
        let names = ResourceNames::default();
        for phase in ["Succeeded", "Failed"] {
            assert!(
                pod_view(
                    &annotated("node-1", phase, Some(GOOD)),
                    &names,
                    KEY,
                    "node-1"
                )
                .is_none()
            );
        }
    }

    #[test]
    fn newer_malformed_and_foreign_annotations_are_unreadable_with_a_reason() {
        let names = ResourceNames::default();
        let reason = |text: &str| match pod_view(
            &annotated("node-1", "Pending", Some(text)),
            &names,
            KEY,
            "node-1",
        )
        .unwrap()
        .devices
        {
            PodDevices::Unreadable(reason) => reason,
            other => panic!("expected unreadable, got {other:?}"),
        };
        let newer = GOOD.replace("\"version\":1", "\"version\":9");
        assert!(reason(&newer).contains("newer"), "{}", reason(&newer));
        assert!(reason("{oops").starts_with(KEY));
        let foreign = GOOD.replace("node-1", "node-2");
        assert!(
            reason(&foreign).contains("names node node-2, but the pod is bound to node-1"),
            "{}",
            reason(&foreign)
        );
    }

    #[test]
    fn init_containers_count_only_when_larger_and_sidecars_add_up() {
        let names = ResourceNames::default();
        let container = |name: &str, count: &str, restart: Option<&str>| -> Container {
            serde_json::from_value(serde_json::json!({
                "name": name,
                "restartPolicy": restart,
                "resources": {"limits": {"nvidia.com/mig-1g.10gb": count}}
            }))
            .unwrap()
        };
        let app = [container("app", "1", None)];
        let demand = pod_demand(&names, &app, &[container("init", "3", None)]).unwrap();
        assert_eq!(
            demand,
            GpuDemand::Mig {
                profile: "1g.10gb".into(),
                count: 3
            }
        );
        let demand = pod_demand(
            &names,
            &app,
            &[
                container("small-init", "1", None),
                container("sidecar", "1", Some("Always")),
            ],
        )
        .unwrap();
        assert_eq!(
            demand,
            GpuDemand::Mig {
                profile: "1g.10gb".into(),
                count: 2
            }
        );
        let whole: Container = serde_json::from_value(serde_json::json!({
            "name": "w", "resources": {"limits": {"nvidia.com/gpu": "4"}}
        }))
        .unwrap();
        assert!(pod_demand(&names, &app, &[whole]).is_err(), "mixed kinds");
    }

    #[test]
    fn selector_names_the_node_and_excludes_finished_pods() {
        assert_eq!(
            field_selector("gpu-7"),
            "spec.nodeName=gpu-7,status.phase!=Succeeded,status.phase!=Failed"
        );
    }
}

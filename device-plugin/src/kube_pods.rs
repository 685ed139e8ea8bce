//! [`PodSource`] backed by the Kubernetes API: a reflector of the pods bound to this node
//! (field selector `spec.nodeName=<node>`, terminal phases excluded), so Allocate reads a local
//! cache and never waits on the API server. Each pod becomes a [`PodView`]: its GPU request
//! from container requests/limits and its devices annotation read with the core type. The
//! watch's events also record the pods' arrival order ([`crate::pod_arrival`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::quantity::{Quantity, QuantityError};
use kubesched_core::request::{GpuDemand, RequestError, ResourceNames};
use kubesched_core::retry;
use kubesched_core::signing::SigningKey;
use kubesched_core::text::quote;
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

/// How this agent reads a pod bound to its node: its GPU request, and whether its devices
/// annotation is one to follow.
#[derive(Debug, Clone)]
pub struct PodReader {
    pub names: ResourceNames,
    /// The full devices annotation key (`kubesched.ai/devices`).
    pub annotation_key: String,
    pub node: String,
    /// With a key, only annotations the extender signed for the very pod are followed.
    pub signer: Option<SigningKey>,
}

/// Pods bound to this node, from a watch-fed cache.
pub struct KubePods {
    store: Store<Pod>,
    arrivals: Arc<Mutex<ArrivalOrder>>,
    reader: PodReader,
    /// How long a call waits for the first full list before reporting the cache unavailable.
    sync_timeout: Duration,
}

impl KubePods {
    /// Starts watching the pods of `reader.node`; the watch runs until `shutdown` turns true.
    pub fn spawn(
        client: kube::Client,
        reader: PodReader,
        mut shutdown: watch::Receiver<bool>,
    ) -> Self {
        let node = reader.node.clone();
        let node = node.as_str();
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
            reader,
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
            .filter_map(|pod| self.reader.view(pod))
            .collect())
    }
}

impl PodReader {
    /// A pod as allocation sees it; `None` for a finished pod or one without identity.
    pub fn view(&self, pod: &Pod) -> Option<PodView> {
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return None;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone()?;
        let uid = pod.metadata.uid.clone()?;
        let demand = pod.spec.as_ref().map_or(Ok(GpuDemand::None), |spec| {
            pod_demand(
                &self.names,
                &spec.containers,
                spec.init_containers.as_deref().unwrap_or_default(),
            )
        });
        let demand = demand.unwrap_or_else(|error| {
            tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "unusable GPU request; treated as none");
            GpuDemand::None
        });
        let devices = match pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&self.annotation_key))
        {
            None => PodDevices::Unassigned,
            Some(text) => match self.follow(text, &uid, &demand) {
                Ok(annotation) => PodDevices::Assigned(annotation),
                Err(reason) => PodDevices::Unreadable(reason),
            },
        };
        // The kubelet reports container statuses only once it has admitted the pod.
        let started = |statuses: Option<&Vec<_>>| statuses.is_some_and(|s| !s.is_empty());
        let admitted = phase == Some("Running")
            || status.is_some_and(|s| {
                started(s.container_statuses.as_ref())
                    || started(s.init_container_statuses.as_ref())
            });
        Some(PodView {
            namespace,
            name,
            uid,
            demand,
            devices,
            admitted,
        })
    }

    /// The devices annotation `text` of the pod with UID `uid` asking for `demand`, if it is
    /// one to follow: for this node, signed by the extender for this pod (with a key), naming
    /// exactly as many distinct devices of the resource the pod asks for. Otherwise why not.
    fn follow(
        &self,
        text: &str,
        uid: &str,
        demand: &GpuDemand,
    ) -> Result<DevicesAnnotation, String> {
        let key = &self.annotation_key;
        let annotation = DevicesAnnotation::from_json(text).map_err(|e| format!("{key}: {e}"))?;
        if annotation.node != self.node {
            return Err(format!(
                "{key} names node {}, but the pod is bound to {}",
                quote(&annotation.node),
                self.node
            ));
        }
        if let Some(signer) = &self.signer {
            signer
                .verify(&annotation, uid)
                .map_err(|e| format!("{key}: {e}"))?;
        }
        let named = quote(&annotation.resource);
        match self.names.for_demand(demand) {
            None => {
                return Err(format!(
                    "{key} names devices of {named}, but the pod asks for no GPU"
                ));
            }
            Some(asked) if asked != annotation.resource => {
                return Err(format!(
                    "{key} names devices of {named}, but the pod asks for {asked}"
                ));
            }
            Some(_) => {}
        }
        if annotation.devices.len() != demand.count() as usize {
            return Err(format!(
                "{key} names {} device(s), but the pod asks for {}",
                annotation.devices.len(),
                demand.count()
            ));
        }
        let mut ids = HashSet::new();
        for device in &annotation.devices {
            let id = device.device_id();
            if !ids.insert(id.clone()) {
                return Err(format!("{key} names device {} twice", quote(&id)));
            }
        }
        Ok(annotation)
    }
}

/// Why a pod's GPU request is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodDemandError {
    #[error("container {container}: resource {resource}: {source}")]
    Quantity {
        container: String,
        resource: String,
        source: QuantityError,
    },
    /// A GPU count with a fractional part (`500m`): refused, as the extender refuses it.
    #[error("container {container}: resource {resource} must be a whole number, got {value:?}")]
    NotWhole {
        container: String,
        resource: String,
        value: String,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// The whole-number resources of one container: requests, with limits standing in for names
/// it does not request (Kubernetes defaults an extended resource's request to its limit).
/// Quantities are read with the extender's parser; a GPU resource's quantity that is not a
/// quantity or not a whole number is an error (the extender refuses the pod for it), while
/// another resource's fractional value (`cpu: 500m`) is no count and is left out.
fn container_resources(
    names: &ResourceNames,
    container: &Container,
) -> Result<BTreeMap<String, u64>, PodDemandError> {
    let mut counts = BTreeMap::new();
    let Some(resources) = &container.resources else {
        return Ok(counts);
    };
    for source in [&resources.limits, &resources.requests]
        .into_iter()
        .flatten()
    {
        for (name, quantity) in source {
            let gpu = names.classify(name)?.is_some();
            match Quantity::parse(&quantity.0).map(Quantity::whole) {
                Ok(Some(count)) => {
                    counts.insert(name.clone(), count);
                }
                Ok(None) if gpu => {
                    return Err(PodDemandError::NotWhole {
                        container: container.name.clone(),
                        resource: name.clone(),
                        value: quantity.0.clone(),
                    });
                }
                Err(source) if gpu => {
                    return Err(PodDemandError::Quantity {
                        container: container.name.clone(),
                        resource: name.clone(),
                        source,
                    });
                }
                Ok(None) | Err(_) => {}
            }
        }
    }
    Ok(counts)
}

/// The pod's effective GPU demand: app containers (and restartable init containers, which
/// run alongside them) add up; an ordinary init container runs alone, so only a larger one
/// raises the demand.
pub fn pod_demand(
    names: &ResourceNames,
    containers: &[Container],
    init_containers: &[Container],
) -> Result<GpuDemand, PodDemandError> {
    let sidecar = |c: &&Container| c.restart_policy.as_deref() == Some("Always");
    let running: Vec<BTreeMap<String, u64>> = containers
        .iter()
        .chain(init_containers.iter().filter(sidecar))
        .map(|c| container_resources(names, c))
        .collect::<Result<_, _>>()?;
    let mut demand = names.demand(
        running
            .iter()
            .flat_map(|m| m.iter().map(|(n, c)| (n.as_str(), *c))),
    )?;
    for init in init_containers.iter().filter(|c| !sidecar(c)) {
        let resources = container_resources(names, init)?;
        let alone = names.demand(resources.iter().map(|(n, c)| (n.as_str(), *c)))?;
        if alone.count() > demand.count() {
            if !demand.is_none() && names.for_demand(&alone) != names.for_demand(&demand) {
                return Err(RequestError::MixedGpuResources(
                    names.for_demand(&demand).unwrap_or_default(),
                    names.for_demand(&alone).unwrap_or_default(),
                )
                .into());
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

    fn reader() -> PodReader {
        PodReader {
            names: ResourceNames::default(),
            annotation_key: KEY.into(),
            node: "node-1".into(),
            signer: None,
        }
    }

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
        let view = reader()
            .view(&annotated("node-1", "Pending", Some(GOOD)))
            .unwrap();
        assert_eq!(view.key(), "ml/trainer");
        assert_eq!(view.uid, "u-1");
        assert_eq!(view.demand, GpuDemand::Whole { count: 3 });
        assert_eq!(
            view.assigned_ids("nvidia.com/gpu"),
            Some(vec!["GPU-0".into(), "GPU-3".into(), "GPU-1".into()])
        );
        let plain = reader()
            .view(&annotated("node-1", "Running", None))
            .unwrap();
        assert_eq!(plain.devices, PodDevices::Unassigned);
    }

    #[test]
    fn terminal_pods_are_skipped() {
        for phase in ["Succeeded", "Failed"] {
            assert!(
                reader()
                    .view(&annotated("node-1", phase, Some(GOOD)))
                    .is_none()
            );
        }
    }

    #[test]
    fn newer_malformed_and_foreign_annotations_are_unreadable_with_a_reason() {
        let reason = |text: &str| match reader()
            .view(&annotated("node-1", "Pending", Some(text)))
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
            reason(&foreign).contains("names node \"node-2\", but the pod is bound to node-1"),
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

    /// GPU counts as both binaries read them: `Some(n)` a demand of `n` GPUs, `None` refused.
    /// The same table is in the extender's `scheduler/tests/gpu_count_rule.rs`.
    const GPU_COUNTS: &[(&str, Option<u32>)] = &[
        ("1", Some(1)),
        ("1e0", Some(1)),
        ("1E0", Some(1)),
        ("+2", Some(2)),
        ("2000m", Some(2)),
        ("0.3e1", Some(3)),
        ("4.", Some(4)),
        ("1k", Some(1000)),
        ("0", Some(0)),
        ("-0", Some(0)),
        ("500m", None),
        ("1.5", None),
        ("1e-3", None),
        ("1n", None),
        (" 1", None),
        ("1 ", None),
        ("", None),
        (".", None),
        ("1Gb", None),
        ("-1", None),
        ("0x1", None),
    ];

    #[test]
    fn gpu_counts_follow_the_extenders_whole_number_rule() {
        let names = ResourceNames::default();
        for &(text, expected) in GPU_COUNTS {
            let container: Container = serde_json::from_value(serde_json::json!({
                "name": "c", "resources": {"limits": {"nvidia.com/gpu": text}}
            }))
            .unwrap();
            let got = pod_demand(&names, &[container], &[]);
            match expected {
                Some(0) => assert_eq!(got, Ok(GpuDemand::None), "{text:?}"),
                Some(count) => assert_eq!(got, Ok(GpuDemand::Whole { count }), "{text:?}"),
                None => assert!(
                    matches!(
                        got,
                        Err(PodDemandError::NotWhole { .. } | PodDemandError::Quantity { .. })
                    ),
                    "{text:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn an_unusable_gpu_count_is_reported_not_dropped_and_cpu_fractions_are_fine() {
        let names = ResourceNames::default();
        let container = |resources: serde_json::Value| -> Container {
            serde_json::from_value(serde_json::json!({"name": "c", "resources": resources}))
                .unwrap()
        };
        let half = container(serde_json::json!({"limits": {"nvidia.com/mig-1g.10gb": "500m"}}));
        assert_eq!(
            pod_demand(&names, &[], &[half]).unwrap_err().to_string(),
            "container c: resource nvidia.com/mig-1g.10gb must be a whole number, got \"500m\""
        );
        let spaced = container(serde_json::json!({"requests": {"nvidia.com/gpu": "1 "}}));
        assert_eq!(
            pod_demand(&names, &[spaced], &[]).unwrap_err().to_string(),
            "container c: resource nvidia.com/gpu: invalid quantity \"1 \""
        );
        let cpu = container(serde_json::json!({
            "requests": {"cpu": "500m", "memory": "1.5Gi", "nvidia.com/gpu": "1e0"},
            "limits": {"cpu": "lots"}
        }));
        assert_eq!(
            pod_demand(&names, &[cpu], &[]),
            Ok(GpuDemand::Whole { count: 1 })
        );
        // The reader keeps its behaviour: an unusable request is logged and taken as none.
        let mut p = annotated("node-1", "Pending", None);
        if let Some(spec) = p.spec.as_mut() {
            spec.containers = vec![container(
                serde_json::json!({"limits": {"nvidia.com/gpu": "1.5"}}),
            )];
        }
        let view = reader().view(&p).unwrap();
        assert_eq!(view.demand, GpuDemand::None);
    }

    #[test]
    fn selector_names_the_node_and_excludes_finished_pods() {
        assert_eq!(
            field_selector("gpu-7"),
            "spec.nodeName=gpu-7,status.phase!=Succeeded,status.phase!=Failed"
        );
    }
}

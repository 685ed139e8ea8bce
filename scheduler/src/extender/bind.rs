//! The `bind` verb: choose the concrete devices on the node kube-scheduler
//! picked, reserve them in memory, write the devices annotation, then
//! create the Binding. The reservation stands until the watch shows the
//! bound, annotated pod; on any failure it is released and the pod retried.
//! API access sits behind `Binder` so tests can run without a cluster.

use std::time::Instant;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::request::PodRequest;
use thiserror::Error;

use super::cluster_state::{EvalContext, NodeView};
use super::protocol::{ExtenderBindingArgs, ExtenderBindingResult};
use super::reservations::Reservation;
use super::service::{Extender, pod_seed};

/// The pod a bind is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Error)]
pub enum BindError {
    /// The object changed under us (already bound, UID mismatch).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("pod not found: {0}")]
    NotFound(String),
    #[error("API error: {0}")]
    Api(String),
}

/// The API calls bind needs.
pub trait Binder: Send + Sync {
    fn get_pod<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<Pod, BindError>>;
    /// Sets one annotation on the pod, only if its UID still matches.
    fn annotate<'a>(
        &'a self,
        pod: &'a PodRef,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), BindError>>;
    /// Creates the pods/binding subresource.
    fn bind<'a>(&'a self, pod: &'a PodRef, node: &'a str) -> BoxFuture<'a, Result<(), BindError>>;
}

/// `Binder` over the Kubernetes API.
pub struct KubeBinder {
    client: kube::Client,
}

impl KubeBinder {
    pub fn new(client: kube::Client) -> Self {
        KubeBinder { client }
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
}

fn api_error(e: kube::Error) -> BindError {
    match &e {
        kube::Error::Api(s) if s.code == 409 || s.code == 422 => BindError::Conflict(e.to_string()),
        kube::Error::Api(s) if s.code == 404 => BindError::NotFound(e.to_string()),
        _ => BindError::Api(e.to_string()),
    }
}

impl Binder for KubeBinder {
    fn get_pod<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<Pod, BindError>> {
        Box::pin(async move {
            self.pods(&pod.namespace)
                .get(&pod.name)
                .await
                .map_err(api_error)
        })
    }

    fn annotate<'a>(
        &'a self,
        pod: &'a PodRef,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), BindError>> {
        Box::pin(async move {
            // The UID in the patch makes the API server refuse it if the pod
            // was replaced by a namesake.
            let patch = serde_json::json!({
                "metadata": {"uid": pod.uid, "annotations": {key: value}}
            });
            self.pods(&pod.namespace)
                .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(api_error)
        })
    }

    fn bind<'a>(&'a self, pod: &'a PodRef, node: &'a str) -> BoxFuture<'a, Result<(), BindError>> {
        Box::pin(async move {
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(pod.name.clone()),
                    namespace: Some(pod.namespace.clone()),
                    uid: Some(pod.uid.clone()),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.to_string()),
                    ..Default::default()
                },
            };
            self.pods(&pod.namespace)
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &pod.name,
                    &PostParams::default(),
                    &binding,
                )
                .await
                .map(|_| ())
                .map_err(api_error)
        })
    }
}

/// Why a bind did not happen: the message kube-scheduler records, and the
/// metric label.
struct Refusal {
    outcome: &'static str,
    message: String,
}

impl Extender {
    pub async fn bind(&self, args: &ExtenderBindingArgs) -> ExtenderBindingResult {
        let pod = PodRef {
            namespace: args.pod_namespace.clone(),
            name: args.pod_name.clone(),
            uid: args.pod_uid.clone(),
        };
        let started = Instant::now();
        match self.try_bind(&pod, &args.node).await {
            Ok(devices) => {
                self.metrics().bind_result("bound");
                tracing::info!(pod = %pod.name, namespace = %pod.namespace, node = %args.node,
                    devices = devices.as_deref().unwrap_or("-"),
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "bound");
                ExtenderBindingResult::default()
            }
            Err(r) => {
                self.metrics().bind_result(r.outcome);
                tracing::warn!(pod = %pod.name, namespace = %pod.namespace, node = %args.node,
                    outcome = r.outcome, error = %r.message, "bind refused");
                ExtenderBindingResult { error: r.message }
            }
        }
    }

    /// Binds; returns the devices annotation written, if any.
    async fn try_bind(&self, pod: &PodRef, node: &str) -> Result<Option<String>, Refusal> {
        let req = self.bind_request(pod).await?;
        let annotation = if req.gpu.is_none() {
            None
        } else {
            Some(self.reserve(pod, node, &req)?)
        };
        let release = |outcome: &'static str, e: BindError| {
            if annotation.is_some() {
                self.state_mut().release(&pod.uid);
                self.metrics()
                    .set_reservations(self.state().reservation_count());
            }
            Refusal {
                outcome: match e {
                    BindError::Conflict(_) => "conflict",
                    _ => outcome,
                },
                message: e.to_string(),
            }
        };
        if let Some(json) = &annotation {
            self.binder()
                .annotate(pod, self.devices_key(), json)
                .await
                .map_err(|e| release("api_error", e))?;
        }
        self.binder()
            .bind(pod, node)
            .await
            .map_err(|e| release("api_error", e))?;
        Ok(annotation)
    }

    /// The pod's request: from the watch cache, else from the API.
    async fn bind_request(&self, pod: &PodRef) -> Result<PodRequest, Refusal> {
        let cached = self.state().pod(&pod.uid).map(|p| {
            (
                p.node.clone(),
                p.request.clone(),
                p.namespace == pod.namespace && p.name == pod.name,
            )
        });
        match cached {
            Some((Some(bound), _, _)) => Err(Refusal {
                outcome: "conflict",
                message: format!("pod {} is already bound to {bound}", pod.name),
            }),
            Some((None, req, true)) => Ok(req),
            _ => {
                let obj = self.binder().get_pod(pod).await.map_err(|e| Refusal {
                    outcome: "unknown_pod",
                    message: e.to_string(),
                })?;
                if obj.metadata.uid.as_deref() != Some(pod.uid.as_str()) {
                    return Err(Refusal {
                        outcome: "conflict",
                        message: format!("pod {} was replaced (UID differs)", pod.name),
                    });
                }
                self.pod_request(&obj).map_err(|e| Refusal {
                    outcome: "unknown_pod",
                    message: e.to_string(),
                })
            }
        }
    }

    /// Chooses the devices and records the reservation, atomically under
    /// the state's write lock; returns the annotation to write.
    fn reserve(&self, pod: &PodRef, node: &str, req: &PodRequest) -> Result<String, Refusal> {
        let (workload, workload_gen) = self.workload().current();
        let ctx = EvalContext {
            policy: self.policy(),
            workload: &workload,
            workload_gen,
            request: req,
            seed: pod_seed(&pod.uid),
        };
        let no_fit = |message: String| Refusal {
            outcome: "no_fit",
            message,
        };
        let mut state = self.state_mut();
        let choice = state.evaluate(node, &ctx, |view| match view {
            NodeView::Evaluated(Ok(c)) => Ok(c.clone()),
            NodeView::Evaluated(Err(u)) => Err(format!("node {node} no longer fits: {u}")),
            NodeView::Unknown => Err(format!("node {node}: {}", super::filter::NO_INVENTORY)),
            NodeView::Invalid(e) => Err(format!("node {node}: inventory unusable: {e}")),
        });
        let choice = choice.map_err(no_fit)?;
        let resource = self.reader().names.for_demand(&req.gpu).unwrap_or_default();
        let node_state = state
            .node_state(node)
            .ok_or_else(|| no_fit(format!("node {node} vanished")))?;
        let ann = DevicesAnnotation::from_candidate(node_state, &resource, &choice.candidate)
            .map_err(|e| no_fit(e.to_string()))?;
        state
            .reserve(
                &pod.uid,
                Reservation {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    node: node.to_string(),
                    request: req.clone(),
                    candidate: choice.candidate,
                    created: Instant::now(),
                },
            )
            .map_err(|e| no_fit(format!("node {node}: {e}")))?;
        self.metrics().set_reservations(state.reservation_count());
        Ok(ann.to_json())
    }
}

//! The `bind` verb: choose the concrete devices on the node kube-scheduler
//! picked, reserve them in memory, then create the Binding carrying the
//! (signed) devices annotation: one API write sets both, so no pod is ever
//! bound without its devices, and a failed bind leaves no annotation. The
//! reservation stands until the watch shows the bound, annotated pod; on any
//! failure it is released and the pod retried. API access goes through
//! `api_client::Binder`.
//!
//! Binding is idempotent: one bind of a pod at a time (a second one while a
//! reservation stands is a conflict); an annotation this extender already
//! signed for the same node (an earlier version wrote it before binding) is
//! kept, never replaced by a new choice; and of two extenders binding one pod,
//! the API server accepts only the first Binding.

use std::time::Instant;

use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::request::PodRequest;
use kubesched_core::text::quote;

use super::api_client::{BindError, PodRef};
use super::cluster_state::NodeView;
use super::filter::{AGENT_DRAINING, NO_INVENTORY};
use super::outcome::BindOutcome;
use super::protocol::{ExtenderBindingArgs, ExtenderBindingResult};
use super::reservations::Reservation;
use super::service::Extender;

/// Why a bind did not happen: the message kube-scheduler records, and the
/// metric label.
struct Refusal {
    outcome: BindOutcome,
    message: String,
}

impl Extender {
    /// The `bind` verb: kube-scheduler's answer is an empty error on success.
    pub async fn bind(&self, args: &ExtenderBindingArgs) -> ExtenderBindingResult {
        let pod = PodRef {
            namespace: args.pod_namespace.clone(),
            name: args.pod_name.clone(),
            uid: args.pod_uid.clone(),
        };
        let started = Instant::now();
        match self.try_bind(&pod, &args.node).await {
            Ok(devices) => {
                self.metrics().bind_result(BindOutcome::Bound);
                tracing::info!(pod = %pod.name, namespace = %pod.namespace, node = %args.node,
                    devices = devices.as_deref().unwrap_or("-"),
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "bound");
                ExtenderBindingResult::default()
            }
            Err(r) => {
                self.metrics().bind_result(r.outcome);
                tracing::warn!(pod = %pod.name, namespace = %pod.namespace, node = %args.node,
                    outcome = r.outcome.label(), error = %r.message, "bind refused");
                ExtenderBindingResult { error: r.message }
            }
        }
    }

    /// Binds; returns the devices annotation written or kept, if any.
    async fn try_bind(&self, pod: &PodRef, node: &str) -> Result<Option<String>, Refusal> {
        let seen = self.bind_target(pod).await?;
        if seen.request.gpu.is_none() {
            // The Binding API accepts any node name; a pod must not be sent nowhere.
            if !self.state().has_node(node) {
                return Err(Refusal {
                    outcome: BindOutcome::NoFit,
                    message: format!("node {} does not exist", quote(node)),
                });
            }
            self.binder()
                .bind(pod, node, &[])
                .await
                .map_err(api_refusal)?;
            return Ok(None);
        }
        let (annotation, write) = self.reserve(pod, node, &seen)?;
        let written = [(self.devices_key(), annotation.as_str())];
        let annotations: &[(&str, &str)] = if write { &written } else { &[] };
        if let Err(e) = self.binder().bind(pod, node, annotations).await {
            self.state_mut().release(&pod.uid);
            self.metrics()
                .set_reservations(self.state().reservation_count());
            return Err(api_refusal(e));
        }
        Ok(Some(annotation))
    }

    /// The pod as bind needs it: from the watch cache, else from the API.
    async fn bind_target(&self, pod: &PodRef) -> Result<BindTarget, Refusal> {
        let cached = self.state().pod(&pod.uid).map(|p| {
            let same = p.namespace == pod.namespace && p.name == pod.name;
            (
                p.node.clone(),
                same,
                BindTarget {
                    request: p.request.clone(),
                    devices: p.devices.clone(),
                },
            )
        });
        match cached {
            Some((Some(bound), _, _)) => Err(Refusal {
                outcome: BindOutcome::Conflict,
                message: format!("pod {} is already bound to {bound}", pod.name),
            }),
            Some((None, true, target)) => Ok(target),
            _ => {
                let obj = self.binder().get_pod(pod).await.map_err(|e| Refusal {
                    outcome: BindOutcome::UnknownPod,
                    message: e.to_string(),
                })?;
                if obj.metadata.uid.as_deref() != Some(pod.uid.as_str()) {
                    return Err(Refusal {
                        outcome: BindOutcome::Conflict,
                        message: format!("pod {} was replaced (UID differs)", pod.name),
                    });
                }
                if let Some(bound) = obj.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                    return Err(Refusal {
                        outcome: BindOutcome::Conflict,
                        message: format!("pod {} is already bound to {bound}", pod.name),
                    });
                }
                let request = self.pod_request(&obj).map_err(|e| Refusal {
                    outcome: BindOutcome::UnknownPod,
                    message: e.to_string(),
                })?;
                let devices = obj
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(self.devices_key()))
                    .map(|text| self.read_devices(text, &pod.uid));
                Ok(BindTarget { request, devices })
            }
        }
    }

    /// Chooses the devices (or keeps those this extender already chose for the pod on this
    /// node) and records the reservation, atomically under the state's write lock. Returns
    /// the annotation and whether it still has to be written.
    fn reserve(
        &self,
        pod: &PodRef,
        node: &str,
        seen: &BindTarget,
    ) -> Result<(String, bool), Refusal> {
        let req = &seen.request;
        let ctx = self.eval_context(req, &pod.uid);
        let no_fit = |message: String| Refusal {
            outcome: BindOutcome::NoFit,
            message,
        };
        let mut state = self.state_mut();
        if state.reservation(&pod.uid).is_some() {
            return Err(Refusal {
                outcome: BindOutcome::Conflict,
                message: format!("a bind of pod {} is already in progress", pod.name),
            });
        }
        let node_state = state
            .node_state(node)
            .ok_or_else(|| no_fit(format!("node {node}: {}", NO_INVENTORY)))?;
        // Ours already, for this node: bind again on exactly those devices.
        let kept = match &seen.devices {
            Some(Ok(ann)) if ann.node == node => Some(
                ann.to_candidate(node_state, &req.gpu)
                    .map(|candidate| (ann.to_json(), candidate))
                    .map_err(|e| no_fit(format!("the pod's devices annotation: {e}")))?,
            ),
            _ => None,
        };
        let (json, candidate, write) = match kept {
            Some((json, candidate)) => (json, candidate, false),
            None => {
                let choice = state.evaluate(node, &ctx, |view| match view {
                    NodeView::Evaluated(Ok(c)) => Ok(c.clone()),
                    NodeView::Evaluated(Err(u)) => Err(format!("node {node} no longer fits: {u}")),
                    NodeView::Unknown => Err(format!("node {node}: {}", NO_INVENTORY)),
                    NodeView::Invalid(e) => Err(format!("node {node}: inventory unusable: {e}")),
                    NodeView::Draining => Err(format!("node {node}: {AGENT_DRAINING}")),
                });
                let choice = choice.map_err(no_fit)?;
                let resource = self.reader().names.for_demand(&req.gpu).unwrap_or_default();
                let node_state = state
                    .node_state(node)
                    .ok_or_else(|| no_fit(format!("node {node} vanished")))?;
                let mut ann =
                    DevicesAnnotation::from_candidate(node_state, &resource, &choice.candidate)
                        .map_err(|e| no_fit(e.to_string()))?;
                if let Some(key) = self.signer() {
                    key.sign(&mut ann, &pod.uid);
                }
                (ann.to_json(), choice.candidate, true)
            }
        };
        state
            .reserve(
                &pod.uid,
                Reservation {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    node: node.to_string(),
                    request: req.clone(),
                    candidate,
                    created: Instant::now(),
                },
            )
            .map_err(|e| no_fit(format!("node {node}: {e}")))?;
        self.metrics().set_reservations(state.reservation_count());
        Ok((json, write))
    }
}

/// What bind knows of the pod before it chooses.
struct BindTarget {
    request: PodRequest,
    /// Its devices annotation, read as the state reads one (signature checked).
    devices: Option<Result<DevicesAnnotation, String>>,
}

/// The refusal for a failed API call: a conflict (already bound) is named as such.
fn api_refusal(e: BindError) -> Refusal {
    Refusal {
        outcome: if e.is_conflict() {
            BindOutcome::Conflict
        } else {
            BindOutcome::ApiError
        },
        message: e.to_string(),
    }
}

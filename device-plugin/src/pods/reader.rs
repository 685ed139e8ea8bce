//! How the agent reads a pod bound to its node: its GPU request (by the one rule both binaries
//! share, `kubesched_k8s::PodRequestReader`), whether the kubelet has admitted it, and whether
//! its devices annotation is one to follow: for this node, signed by the extender for this very
//! pod (with a key), naming exactly as many distinct devices of the resource the pod asks for.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;
use kubesched_core::annotation::{self, DEVICES_ANNOTATION, DevicesAnnotation};
use kubesched_core::request::{GpuDemand, ResourceNames};
use kubesched_core::signing::{SigningKey, read_trusted};
use kubesched_core::text::quote;
use kubesched_k8s::{PodRef, PodRequestReader, is_terminal};

use super::{PodDevices, PodView};

/// How this agent reads a pod bound to its node.
#[derive(Debug, Clone)]
pub struct PodReader {
    requests: PodRequestReader,
    /// The full devices annotation key (`kubesched.ai/devices`).
    annotation_key: String,
    node: String,
    /// With a key, only annotations the extender signed for the very pod are followed.
    signer: Option<SigningKey>,
}

impl PodReader {
    /// A reader for the pods of `node`, with the resource names of `names`, the annotations
    /// under `annotation_prefix`, and, with a key, only annotations signed with it followed.
    pub fn new(
        names: ResourceNames,
        annotation_prefix: &str,
        node: impl Into<String>,
        signer: Option<SigningKey>,
    ) -> Self {
        PodReader {
            requests: PodRequestReader::new(names, annotation_prefix),
            annotation_key: annotation::key(annotation_prefix, DEVICES_ANNOTATION),
            node: node.into(),
            signer,
        }
    }

    /// The node whose pods this reader reads.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A pod as allocation sees it; `None` for a finished pod or one without identity.
    pub fn view(&self, pod: &Pod) -> Option<PodView> {
        if is_terminal(pod) {
            return None;
        }
        let id = PodRef::of(pod)?;
        let demand = self.requests.read(pod).map(|r| r.gpu);
        // The extender refuses such a pod, so it never carries our annotation.
        let demand = demand.unwrap_or_else(|error| {
            tracing::warn!(pod = %id, %error, "unusable GPU request; treated as none");
            GpuDemand::None
        });
        let devices = match pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&self.annotation_key))
        {
            None => PodDevices::Unassigned,
            Some(text) => match self.follow(text, &id.uid, &demand) {
                Ok(annotation) => PodDevices::Assigned(annotation),
                Err(reason) => PodDevices::Unreadable(reason),
            },
        };
        // The kubelet reports container statuses only once it has admitted the pod.
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        let started = |statuses: Option<&Vec<_>>| statuses.is_some_and(|s| !s.is_empty());
        let admitted = phase == Some("Running")
            || status.is_some_and(|s| {
                started(s.container_statuses.as_ref())
                    || started(s.init_container_statuses.as_ref())
            });
        Some(PodView {
            id,
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
        let annotation =
            read_trusted(text, uid, self.signer.as_ref()).map_err(|e| format!("{key}: {e}"))?;
        if annotation.node != self.node {
            return Err(format!(
                "{key} names node {}, but the pod is bound to {}",
                quote(&annotation.node),
                self.node
            ));
        }
        let named = quote(&annotation.resource);
        match self.requests.names.for_demand(demand) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    const KEY: &str = "kubesched.ai/devices";

    fn reader() -> PodReader {
        PodReader::new(ResourceNames::default(), "kubesched.ai", "node-1", None)
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
        assert_eq!(view.id.to_string(), "ml/trainer");
        assert_eq!(view.id.uid, "u-1");
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
    fn an_unusable_gpu_count_is_taken_as_no_request() {
        let mut p = annotated("node-1", "Pending", None);
        let half: k8s_openapi::api::core::v1::Container = serde_json::from_value(
            serde_json::json!({"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1.5"}}}),
        )
        .unwrap();
        if let Some(spec) = p.spec.as_mut() {
            spec.containers = vec![half];
        }
        let view = reader().view(&p).unwrap();
        assert_eq!(view.demand, GpuDemand::None);
    }
}

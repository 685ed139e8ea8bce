//! The API calls the extender makes, behind [`Binder`] so tests and the offline what-if run
//! without a cluster: read a pod, create its Binding with its devices annotation (one write).
//! [`KubeBinder`] makes them against the API server.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
pub use kubesched_k8s::PodRef;
use thiserror::Error;

/// Why an API call for a bind failed.
#[derive(Debug, Error)]
pub enum BindError {
    /// The object changed under us (already bound, UID mismatch), as found without the API.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No such pod, as found without the API.
    #[error("pod not found: {0}")]
    NotFound(String),
    /// The API server refused the call or could not be reached.
    #[error("API error: {0}")]
    Api(#[source] kube::Error),
}

impl BindError {
    /// Whether the object changed under us: a conflict found here, or the API server's 409
    /// (resourceVersion or UID precondition failed) or 422 (already bound).
    pub fn is_conflict(&self) -> bool {
        match self {
            BindError::Conflict(_) => true,
            BindError::Api(kube::Error::Api(status)) => status.code == 409 || status.code == 422,
            BindError::NotFound(_) | BindError::Api(_) => false,
        }
    }

    /// Whether the pod does not exist: found so here, or the API server's 404.
    pub fn is_not_found(&self) -> bool {
        match self {
            BindError::NotFound(_) => true,
            BindError::Api(kube::Error::Api(status)) => status.code == 404,
            BindError::Conflict(_) | BindError::Api(_) => false,
        }
    }
}

/// The API calls bind needs.
pub trait Binder: Send + Sync {
    /// Reads the pod.
    fn get_pod<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<Pod, BindError>>;
    /// Creates the pods/binding subresource, carrying `annotations` for the pod: the API
    /// server sets the node and the annotations in one write, so the pod is never seen bound
    /// without them, nor annotated and left unbound.
    fn bind<'a>(
        &'a self,
        pod: &'a PodRef,
        node: &'a str,
        annotations: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(), BindError>>;
}

/// `Binder` over the Kubernetes API.
pub struct KubeBinder {
    client: kube::Client,
}

impl KubeBinder {
    /// Calls through `client`.
    pub fn new(client: kube::Client) -> Self {
        KubeBinder { client }
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
}

impl Binder for KubeBinder {
    fn get_pod<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<Pod, BindError>> {
        Box::pin(async move {
            self.pods(&pod.namespace)
                .get(&pod.name)
                .await
                .map_err(BindError::Api)
        })
    }

    fn bind<'a>(
        &'a self,
        pod: &'a PodRef,
        node: &'a str,
        annotations: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(), BindError>> {
        Box::pin(async move {
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(pod.name.clone()),
                    namespace: Some(pod.namespace.clone()),
                    uid: Some(pod.uid.clone()),
                    annotations: (!annotations.is_empty()).then(|| {
                        annotations
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect()
                    }),
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
                .map_err(BindError::Api)
        })
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16) -> BindError {
        BindError::Api(kube::Error::Api(
            Status::failure("x", "y").with_code(code).boxed(),
        ))
    }

    #[test]
    fn conflicts_are_told_apart_and_api_errors_keep_their_cause() {
        assert!(api(409).is_conflict());
        assert!(api(422).is_conflict());
        assert!(!api(500).is_conflict());
        assert!(!api(404).is_conflict());
        assert!(api(404).is_not_found() && !api(500).is_not_found() && !api(409).is_not_found());
        assert!(BindError::NotFound("gone".into()).is_not_found());
        assert!(BindError::Conflict("changed".into()).is_conflict());
        let error = api(500);
        assert!(std::error::Error::source(&error).is_some(), "{error}");
    }
}

//! Publishes the node inventory document to the Node annotation: only when it changed since
//! the last successful patch, retrying with exponential back-off while the API server is
//! unreachable. Only the newest document matters, so retries always send the latest one:
//! nothing is lost, and no stale document is written after a newer one.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use super::Documents;

/// Why the inventory could not be written to the Node.
#[derive(Debug, thiserror::Error)]
#[error("cannot annotate node {node}: {source}")]
pub struct PublishError {
    /// The node.
    pub node: String,
    /// The API server's (or the network's) error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Writes one annotation on this node.
#[tonic::async_trait]
pub trait NodeAnnotator: Send + Sync {
    /// Sets annotation `key` to `value` on this node. Err when the API server refuses the patch
    /// or cannot be reached.
    async fn annotate(&self, key: &str, value: &str) -> Result<(), PublishError>;
}

/// The Kubernetes API implementation: a JSON merge patch of `metadata.annotations`.
pub struct KubeNodeAnnotator {
    api: Api<Node>,
    node: String,
}

impl KubeNodeAnnotator {
    /// An annotator of the Node named `node`, through `client`.
    pub fn new(client: kube::Client, node: impl Into<String>) -> Self {
        KubeNodeAnnotator {
            api: Api::all(client),
            node: node.into(),
        }
    }
}

#[tonic::async_trait]
impl NodeAnnotator for KubeNodeAnnotator {
    async fn annotate(&self, key: &str, value: &str) -> Result<(), PublishError> {
        let patch = annotation_patch(key, value);
        self.api
            .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| PublishError {
                node: self.node.clone(),
                source: e.into(),
            })
    }
}

/// `{"metadata": {"annotations": {key: value}}}`: sets one annotation, leaves the others.
fn annotation_patch(key: &str, value: &str) -> serde_json::Value {
    serde_json::json!({ "metadata": { "annotations": { key: value } } })
}

/// Exponential back-off bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after a first failure; the delay returns to it after each success.
    pub initial: Duration,
    /// The longest wait between retries; the delay doubles up to it.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

/// Publishes every new document from `documents` under `key` until `shutdown`.
pub async fn run_publisher(
    annotator: Arc<dyn NodeAnnotator>,
    key: String,
    mut documents: Documents,
    backoff: Backoff,
    shutdown: CancellationToken,
) {
    let mut published: Option<String> = None;
    let mut delay = backoff.initial;
    loop {
        let latest = documents.borrow_and_update().clone();
        if let Some(latest) = latest
            && published.as_deref() != Some(latest.json())
        {
            match annotator.annotate(&key, latest.json()).await {
                Ok(()) => {
                    tracing::info!(key = %key, bytes = latest.json().len(), "inventory published");
                    published = Some(latest.json().to_string());
                    delay = backoff.initial;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "inventory publish failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return,
                    }
                    delay = (delay * 2).min(backoff.max);
                    continue;
                }
            }
        }
        tokio::select! {
            changed = documents.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_patch_sets_one_annotation() {
        assert_eq!(
            super::annotation_patch("kubesched.ai/inventory", "{}"),
            serde_json::json!({"metadata": {"annotations": {"kubesched.ai/inventory": "{}"}}})
        );
    }

    use std::sync::Mutex;
    use std::time::Instant;

    use kubesched_core::inventory::{INVENTORY_VERSION, NodeInventory};
    use tokio::sync::watch;

    use super::*;
    use crate::publish::InventoryDocument;

    /// A document told apart by its agent version.
    fn doc(version: &str) -> Option<Arc<InventoryDocument>> {
        Some(Arc::new(InventoryDocument::new(NodeInventory {
            version: INVENTORY_VERSION,
            node: "n".into(),
            agent_version: version.into(),
            topology_policy: Default::default(),
            numa_nodes: vec![],
            gpus: vec![],
            draining: false,
        })))
    }

    fn json(version: &str) -> String {
        doc(version)
            .map(|d| d.json().to_string())
            .unwrap_or_default()
    }

    /// Fails the first `failures` calls, then records what it is sent.
    struct Flaky {
        failures: Mutex<u32>,
        attempts: Mutex<Vec<Instant>>,
        written: Mutex<Vec<String>>,
    }

    #[tonic::async_trait]
    impl NodeAnnotator for Flaky {
        async fn annotate(&self, key: &str, value: &str) -> Result<(), PublishError> {
            assert_eq!(key, "kubesched.ai/inventory");
            self.attempts.lock().unwrap().push(Instant::now());
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(PublishError {
                    node: "n".into(),
                    source: "connection refused".into(),
                });
            }
            self.written.lock().unwrap().push(value.to_string());
            Ok(())
        }
    }

    async fn until(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !what() {
            assert!(Instant::now() < deadline, "condition not reached in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn backs_off_while_down_then_publishes_the_latest_only_on_change() {
        let flaky = Arc::new(Flaky {
            failures: Mutex::new(3),
            attempts: Mutex::new(vec![]),
            written: Mutex::new(vec![]),
        });
        let (docs, rx) = watch::channel(doc("v1"));
        let stop = CancellationToken::new();
        let backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(50),
        };
        let task = tokio::spawn(run_publisher(
            flaky.clone(),
            "kubesched.ai/inventory".into(),
            rx,
            backoff,
            stop.clone(),
        ));

        // While the API server is down a newer document arrives: that one is published.
        until(|| flaky.attempts.lock().unwrap().len() >= 2).await;
        docs.send(doc("v2")).unwrap();
        until(|| !flaky.written.lock().unwrap().is_empty()).await;
        assert_eq!(*flaky.written.lock().unwrap(), [json("v2")]);
        let attempts = flaky.attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), 4);
        let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps[0] >= Duration::from_millis(20) && gaps[1] >= Duration::from_millis(40),
            "{gaps:?}"
        );
        assert!(
            gaps[2] >= Duration::from_millis(50),
            "capped at max: {gaps:?}"
        );

        // The same document again is no patch; a new one is.
        docs.send(doc("v2")).unwrap();
        docs.send(doc("v3")).unwrap();
        until(|| flaky.written.lock().unwrap().len() == 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*flaky.written.lock().unwrap(), [json("v2"), json("v3")]);
        stop.cancel();
        task.await.unwrap();
    }
}

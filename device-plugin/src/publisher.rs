//! Publishes the node inventory document to the Node annotation: only when it changed since
//! the last successful patch, retrying with exponential back-off while the API server is
//! unreachable. Only the newest document matters, so retries always send the latest one:
//! nothing is lost, and no stale document is written after a newer one.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use crate::agent::stop_requested;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot annotate node {node}: {message}")]
pub struct PublishError {
    pub node: String,
    pub message: String,
}

/// Writes one annotation on this node.
#[tonic::async_trait]
pub trait NodeAnnotator: Send + Sync {
    async fn annotate(&self, key: &str, value: &str) -> Result<(), PublishError>;
}

/// The Kubernetes API implementation: a JSON merge patch of `metadata.annotations`.
pub struct KubeNodeAnnotator {
    api: Api<Node>,
    node: String,
}

impl KubeNodeAnnotator {
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
        let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
        self.api
            .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| PublishError {
                node: self.node.clone(),
                message: e.to_string(),
            })
    }
}

/// Exponential back-off bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
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
    mut documents: watch::Receiver<String>,
    backoff: Backoff,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut published: Option<String> = None;
    let mut delay = backoff.initial;
    loop {
        let latest = documents.borrow_and_update().clone();
        if published.as_deref() != Some(latest.as_str()) {
            match annotator.annotate(&key, &latest).await {
                Ok(()) => {
                    tracing::info!(key = %key, bytes = latest.len(), "inventory published");
                    published = Some(latest);
                    delay = backoff.initial;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "inventory publish failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop_requested(&mut shutdown) => return,
                    }
                    delay = (delay * 2).min(backoff.max);
                    continue;
                }
            }
        }
        tokio::select! {
            changed = documents.changed() => if changed.is_err() { return },
            () = stop_requested(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;

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
                    message: "connection refused".into(),
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
        let (docs, rx) = watch::channel("v1".to_string());
        let (stop, stopped) = watch::channel(false);
        let backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(50),
        };
        let task = tokio::spawn(run_publisher(
            flaky.clone(),
            "kubesched.ai/inventory".into(),
            rx,
            backoff,
            stopped,
        ));

        // While the API server is down a newer document arrives: that one is published.
        until(|| flaky.attempts.lock().unwrap().len() >= 2).await;
        docs.send("v2".to_string()).unwrap();
        until(|| !flaky.written.lock().unwrap().is_empty()).await;
        assert_eq!(*flaky.written.lock().unwrap(), ["v2"]);
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
        docs.send("v2".to_string()).unwrap();
        docs.send("v3".to_string()).unwrap();
        until(|| flaky.written.lock().unwrap().len() == 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*flaky.written.lock().unwrap(), ["v2", "v3"]);
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

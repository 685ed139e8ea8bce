//! [`PodSource`] backed by the Kubernetes API: a reflector of the pods bound to this node
//! (field selector `spec.nodeName=<node>`, terminal phases excluded), so Allocate reads a local
//! cache and never waits on the API server. Each pod becomes a [`PodView`] through the
//! [`PodReader`]. The watch's events also record the pods' arrival order ([`super::arrival`])
//! and wake whoever waits for the pods to change.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kubesched_k8s::{NOT_TERMINAL_SELECTOR, retry};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::{ArrivalOrder, PodReader, PodSource, PodSourceError, PodView, sort_by_arrival};

/// The pods this agent cares about: bound here and not finished. The API server also sends a
/// deletion when a pod leaves the selection (it finished), which drops it from the cache.
pub fn field_selector(node: &str) -> String {
    format!("spec.nodeName={node},{NOT_TERMINAL_SELECTOR}")
}

/// Pods bound to this node, from a watch-fed cache.
pub struct KubePods {
    store: Store<Pod>,
    arrivals: Arc<Mutex<ArrivalOrder>>,
    changes: watch::Receiver<()>,
    reader: PodReader,
    /// How long a call waits for the first full list before reporting the cache unavailable.
    sync_timeout: Duration,
}

impl KubePods {
    /// Starts watching the pods of the reader's node; the watch runs until `shutdown`.
    pub fn spawn(client: kube::Client, reader: PodReader, shutdown: CancellationToken) -> Self {
        let node = reader.node().to_string();
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&field_selector(&node));
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, config))
            .backoff(watcher::ExponentialBackoff::from(retry::watch_backoff()));
        let arrivals = Arc::new(Mutex::new(ArrivalOrder::default()));
        let record = Arc::clone(&arrivals);
        let (changed, changes) = watch::channel(());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    item = stream.next() => match item {
                        Some(Ok(event)) => {
                            record
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .observe(&event);
                            // The reflector updated the store before it passed the event on.
                            changed.send_replace(());
                        }
                        // The watcher recovers by itself (with back-off); the cache keeps its
                        // last state meanwhile.
                        Some(Err(error)) => tracing::warn!(%node, %error, "pod watch failed; retrying"),
                        None => return,
                    },
                    () = shutdown.cancelled() => return,
                }
            }
        });
        KubePods {
            store,
            arrivals,
            changes,
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
            Ok(Err(source)) => return Err(PodSourceError::WatchStopped(source)),
            Err(_) => return Err(PodSourceError::NotListed(self.sync_timeout)),
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

    fn changes(&self) -> watch::Receiver<()> {
        self.changes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_bound_during_an_outage_is_seen_before_allocate_gives_up() {
        assert!(retry::WATCH_RETRY_MAX < POD_WAIT);
    }

    #[test]
    fn selector_names_the_node_and_excludes_finished_pods() {
        assert_eq!(
            field_selector("gpu-7"),
            "spec.nodeName=gpu-7,status.phase!=Succeeded,status.phase!=Failed"
        );
    }
}

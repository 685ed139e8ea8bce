//! Running without an API server: a `Binder` over an in-memory copy of a
//! snapshot's pods, and the loop that feeds each pod it changes back into
//! the extender's state, as the Pod watch would. Used by the report and by
//! the extender's `--snapshot` mode (demos, the GPU map page's tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::extender::Extender;
use crate::extender::api_client::{BindError, Binder, PodRef};
use crate::extender::reflectors::pod_record;
use crate::snapshot::Snapshot;

/// In-memory stand-in for the API server: binds and annotations change a copy of the
/// snapshot's pods and send each changed pod to the update stream.
pub struct OfflineBinder {
    pods: Mutex<HashMap<(String, String), Pod>>,
    updates: UnboundedSender<Pod>,
}

impl OfflineBinder {
    /// The binder, and the stream of pods it changes (for `apply_updates`).
    pub fn new(snapshot: &Snapshot) -> (Arc<Self>, UnboundedReceiver<Pod>) {
        let pods = snapshot
            .pods
            .iter()
            .filter_map(|p| {
                Some((
                    (
                        p.metadata.namespace.clone().unwrap_or_default(),
                        p.metadata.name.clone()?,
                    ),
                    p.clone(),
                ))
            })
            .collect();
        let (updates, rx) = unbounded_channel();
        (
            Arc::new(OfflineBinder {
                pods: Mutex::new(pods),
                updates,
            }),
            rx,
        )
    }

    fn pods(&self) -> MutexGuard<'_, HashMap<(String, String), Pod>> {
        // A panic elsewhere cannot leave the map half-written: every change is one insert.
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to the pod if its UID still matches, then publishes it.
    fn change(&self, pod: &PodRef, change: impl FnOnce(&mut Pod)) -> Result<(), BindError> {
        let mut pods = self.pods();
        let key = (pod.namespace.clone(), pod.name.clone());
        let stored = pods
            .get_mut(&key)
            .ok_or_else(|| BindError::NotFound(pod.to_string()))?;
        if stored.metadata.uid.as_deref() != Some(pod.uid.as_str()) {
            return Err(BindError::Conflict(format!(
                "pod {}/{} has another UID",
                pod.namespace, pod.name
            )));
        }
        change(stored);
        // The receiver only goes away when the extender shuts down.
        let _ = self.updates.send(stored.clone());
        Ok(())
    }
}

impl Binder for OfflineBinder {
    fn get_pod<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<Pod, BindError>> {
        let found = self
            .pods()
            .get(&(pod.namespace.clone(), pod.name.clone()))
            .cloned()
            .ok_or_else(|| BindError::NotFound(pod.to_string()));
        Box::pin(async move { found })
    }

    fn bind<'a>(
        &'a self,
        pod: &'a PodRef,
        node: &'a str,
        annotations: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(), BindError>> {
        let mut already: Option<String> = None;
        let result = self.change(pod, |p| {
            let spec = p.spec.get_or_insert_with(Default::default);
            match &spec.node_name {
                Some(n) => already = Some(n.clone()),
                None => {
                    spec.node_name = Some(node.to_string());
                    // As the API server does with a Binding's annotations.
                    let mine = p.metadata.annotations.get_or_insert_with(Default::default);
                    for (k, v) in annotations {
                        mine.insert(k.to_string(), v.to_string());
                    }
                }
            }
        });
        let result = match (result, already) {
            (Ok(()), Some(n)) => Err(BindError::Conflict(format!(
                "pod {}/{} is already bound to {n}",
                pod.namespace, pod.name
            ))),
            (r, _) => r,
        };
        Box::pin(async move { result })
    }
}

/// Feeds changed pods into the extender's state until the binder is dropped.
pub async fn apply_updates(ext: Arc<Extender>, mut rx: UnboundedReceiver<Pod>) {
    while let Some(pod) = rx.recv().await {
        if let Some((uid, record)) = pod_record(&ext, &pod) {
            ext.state_mut().upsert_pod(&uid, record);
        }
    }
}

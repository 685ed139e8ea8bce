//! Keeps the cluster state in step with the API: watches Nodes (inventory
//! annotation, allocatable CPU and memory) and Pods (bound node, requests,
//! devices annotation). Each (re)list replaces the state wholesale, so a
//! restarted extender rebuilds everything from the API. Readiness is set
//! once both first lists are in. A broken watch is retried within seconds
//! ([`kubesched_core::retry`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::inventory::NodeInventory;
use kubesched_core::node::NodeState;
use kubesched_core::retry;

use super::cluster_state::{NodeBase, PodRecord};
use super::quantity::Quantity;
use super::service::Extender;

/// The node's empty state from its inventory annotation; `None` when it
/// publishes none (not a GPU node of ours).
pub fn node_base(node: &Node, inventory_key: &str) -> Option<(String, Result<NodeBase, String>)> {
    let name = node.metadata.name.clone()?;
    let text = node.metadata.annotations.as_ref()?.get(inventory_key)?;
    Some((name.clone(), node_state(node, &name, text)))
}

fn node_state(node: &Node, name: &str, inventory: &str) -> Result<NodeBase, String> {
    let inv = NodeInventory::from_json(inventory).map_err(|e| e.to_string())?;
    if inv.node != name {
        return Err(format!("inventory describes node {:?}", inv.node));
    }
    let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| {
        alloc
            .and_then(|a| a.get(k))
            .map(|q| Quantity::parse(&q.0).map_err(|e| format!("allocatable {k}: {e}")))
            .transpose()
    };
    let cpu = get("cpu")?.map_or(0, Quantity::milli_ceil);
    let mem = get("memory")?.map_or(0, Quantity::mebi_ceil);
    let state = NodeState::from_inventory(&inv, cpu, mem).map_err(|e| e.to_string())?;
    Ok(NodeBase {
        state,
        live_numa_cpus: !inv.numa_nodes.is_empty()
            && inv.numa_nodes.iter().all(|n| n.free_cpus.is_some()),
    })
}

/// What the state keeps of a pod; `None` for terminal pods (they hold nothing).
pub fn pod_record(ext: &Extender, pod: &Pod) -> Option<(String, PodRecord)> {
    let uid = pod.metadata.uid.clone()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let request = match ext.reader().read(pod) {
        Ok(r) => r,
        Err(error) => {
            // Counted as empty: kube-scheduler would not have placed it anyway.
            tracing::warn!(pod = ?pod.metadata.name, %error, "unreadable pod requests");
            kubesched_core::request::PodRequest::cpu_only(0, 0)
        }
    };
    let devices = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ext.devices_key()))
        .map(|t| DevicesAnnotation::from_json(t).map_err(|e| e.to_string()));
    Some((
        uid,
        PodRecord {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            request,
            devices,
        },
    ))
}

/// Watches Nodes and Pods until the streams end (never, normally), and
/// expires unconfirmed reservations on a timer.
pub async fn run(ext: Arc<Extender>, client: kube::Client) {
    let nodes_synced = Arc::new(tokio::sync::Notify::new());
    let pods_synced = Arc::new(tokio::sync::Notify::new());
    let ready = {
        let ext = ext.clone();
        let (n, p) = (nodes_synced.clone(), pods_synced.clone());
        async move {
            n.notified().await;
            p.notified().await;
            ext.set_ready(true);
            tracing::info!(nodes = ext.state().node_count(), "caches synced; ready");
        }
    };
    tokio::join!(
        mirror(
            ext.clone(),
            Nodes {
                ext: ext.clone(),
                inventory_key: ext.inventory_key().to_string(),
            },
            Api::all(client.clone()),
            nodes_synced,
        ),
        mirror(
            ext.clone(),
            Pods { ext: ext.clone() },
            Api::all(client),
            pods_synced
        ),
        expire_reservations(ext.clone()),
        ready,
    );
}

/// How one watched kind of object lands in the cluster state.
trait Mirror {
    type Object: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static;
    type Record;
    /// `nodes` or `pods`: names the logs and the metrics.
    const KIND: &'static str;
    /// The object's key and what the state keeps of it; `None` when it keeps nothing.
    fn record(&self, object: &Self::Object) -> Option<(String, Self::Record)>;
    /// The key an object is kept under.
    fn key(object: &Self::Object) -> Option<String>;
    /// Replaces everything of this kind with a full list.
    fn load(&self, all: Vec<(String, Self::Record)>);
    fn upsert(&self, key: &str, record: Self::Record);
    fn remove(&self, key: &str);
}

/// GPU nodes by name, from their inventory annotation.
struct Nodes {
    ext: Arc<Extender>,
    inventory_key: String,
}

impl Mirror for Nodes {
    type Object = Node;
    type Record = Result<NodeBase, String>;
    const KIND: &'static str = "nodes";

    fn record(&self, node: &Node) -> Option<(String, Self::Record)> {
        node_base(node, &self.inventory_key)
    }

    fn key(node: &Node) -> Option<String> {
        node.metadata.name.clone()
    }

    fn load(&self, all: Vec<(String, Self::Record)>) {
        self.ext.state_mut().reset_nodes(all);
    }

    fn upsert(&self, name: &str, base: Self::Record) {
        self.ext.state_mut().upsert_node(name, base);
    }

    fn remove(&self, name: &str) {
        self.ext.state_mut().remove_node(name);
    }
}

/// Pods by uid; each change also refreshes the reservations gauge, since a pod seen bound
/// confirms its reservation.
struct Pods {
    ext: Arc<Extender>,
}

impl Pods {
    fn count_reservations(&self) {
        self.ext
            .metrics()
            .set_reservations(self.ext.state().reservation_count());
    }
}

impl Mirror for Pods {
    type Object = Pod;
    type Record = PodRecord;
    const KIND: &'static str = "pods";

    fn record(&self, pod: &Pod) -> Option<(String, PodRecord)> {
        pod_record(&self.ext, pod)
    }

    fn key(pod: &Pod) -> Option<String> {
        pod.metadata.uid.clone()
    }

    fn load(&self, all: Vec<(String, PodRecord)>) {
        self.ext.load_pods(all);
        self.count_reservations();
    }

    fn upsert(&self, uid: &str, record: PodRecord) {
        if self.ext.state_mut().upsert_pod(uid, record) {
            tracing::debug!(pod_uid = %uid, "reservation confirmed by the watch");
        }
        self.count_reservations();
    }

    fn remove(&self, uid: &str) {
        self.ext.state_mut().remove_pod(uid);
        self.count_reservations();
    }
}

/// Mirrors one kind of object into the state until the stream ends (never, normally): a full
/// list replaces everything of that kind, then each change applies on its own.
async fn mirror<M: Mirror>(
    ext: Arc<Extender>,
    mirror: M,
    api: Api<M::Object>,
    synced: Arc<tokio::sync::Notify>,
) {
    let mut buffer = Vec::new();
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .backoff(watcher::ExponentialBackoff::from(retry::watch_backoff()))
        .boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Init)) => buffer.clear(),
            Ok(Some(Event::InitApply(object))) => buffer.extend(mirror.record(&object)),
            Ok(Some(Event::InitDone)) => {
                let count = buffer.len();
                mirror.load(std::mem::take(&mut buffer));
                tracing::info!(kind = M::KIND, count, "list loaded");
                ext.metrics().watch_listed(M::KIND);
                synced.notify_one();
            }
            Ok(Some(Event::Apply(object))) => match mirror.record(&object) {
                Some((key, record)) => mirror.upsert(&key, record),
                // No longer kept (a node lost its inventory, a pod finished).
                None => {
                    if let Some(key) = M::key(&object) {
                        mirror.remove(&key);
                    }
                }
            },
            Ok(Some(Event::Delete(object))) => {
                if let Some(key) = M::key(&object) {
                    mirror.remove(&key);
                }
            }
            Ok(None) => return,
            // The backoff wrapper retries; note it and go on.
            Err(error) => tracing::warn!(kind = M::KIND, %error, "watch error"),
        }
    }
}

async fn expire_reservations(ext: Arc<Extender>) {
    let ttl = Duration::from_secs(ext.config().reservation_ttl_seconds);
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        let gone = ext.state_mut().expire_reservations(Instant::now(), ttl);
        if gone > 0 {
            ext.metrics()
                .set_reservations(ext.state().reservation_count());
        }
    }
}

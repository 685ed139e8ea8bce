//! Keeps the cluster state in step with the API: watches Nodes (inventory
//! annotation, allocatable CPU and memory) and Pods (bound node, requests,
//! devices annotation). Each (re)list replaces the state wholesale, so a
//! restarted extender rebuilds everything from the API. A broken watch is
//! retried within seconds ([`kubesched_k8s::retry`]).
//!
//! Each watch and the reservation checks run as supervised tasks: one that
//! ends or panics is started again (and relists), and the extender is ready
//! only while both watches run and have listed, so it never answers from a
//! view that has silently stopped changing. An object whose record panics is
//! taken as unusable (a node with the reason, a pod skipped) rather than
//! taking its watch down with it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kubesched_core::inventory::NodeInventory;
use kubesched_core::node::NodeState;
use kubesched_k8s::quantity::Quantity;
use kubesched_k8s::{is_terminal, retry};

use super::cluster_state::{NodeBase, PodRecord};
use super::reservation_check;
use super::service::Extender;

/// The node's empty state from its inventory annotation; `None` when it
/// publishes none (not a GPU node of ours).
pub fn node_base(node: &Node, inventory_key: &str) -> Option<(String, Result<NodeBase, String>)> {
    let name = node.metadata.name.clone()?;
    let text = node.metadata.annotations.as_ref()?.get(inventory_key)?;
    Some((name.clone(), node_state(node, &name, text, inventory_key)))
}

fn node_state(
    node: &Node,
    name: &str,
    inventory: &str,
    inventory_key: &str,
) -> Result<NodeBase, String> {
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
        pool: node_pool(node, inventory_key, &state),
        draining: inv.draining,
        state,
        live_numa_cpus: !inv.numa_nodes.is_empty()
            && inv.numa_nodes.iter().all(|n| n.free_cpus.is_some()),
    })
}

/// Node labels that name a node's pool, after our own `<prefix>/pool`: GKE, EKS, AKS and
/// Karpenter node pools.
const POOL_LABELS: [&str; 4] = [
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "kubernetes.azure.com/agentpool",
    "karpenter.sh/nodepool",
];

/// The node's pool: the label `<prefix>/pool` (the prefix of `inventory_key`), else a cloud
/// provider's node-pool label, else its GPU model.
pub fn node_pool(node: &Node, inventory_key: &str, state: &NodeState) -> String {
    let prefix = inventory_key.rsplit_once('/').map_or("", |(p, _)| p);
    let ours = format!("{prefix}/pool");
    let labels = node.metadata.labels.as_ref();
    std::iter::once(ours.as_str())
        .chain(POOL_LABELS)
        .find_map(|key| labels.and_then(|l| l.get(key)).filter(|v| !v.is_empty()))
        .cloned()
        .or_else(|| state.gpus.first().map(|g| g.model.to_string()))
        .unwrap_or_else(|| "(no GPU)".into())
}

/// What the state keeps of a pod; `None` for terminal pods (they hold nothing).
pub fn pod_record(ext: &Extender, pod: &Pod) -> Option<(String, PodRecord)> {
    let uid = pod.metadata.uid.clone()?;
    if is_terminal(pod) {
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
        .map(|text| ext.read_devices(text, &uid));
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

/// How long a task that ended waits before it starts again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Which watches are running and have loaded a full list: one flag per watched kind, ready
/// when all are set.
struct Listed {
    flags: [(&'static str, AtomicBool); 2],
}

impl Default for Listed {
    fn default() -> Self {
        Listed {
            flags: [Nodes::KIND, Pods::KIND].map(|kind| (kind, AtomicBool::new(false))),
        }
    }
}

impl Listed {
    fn set(&self, ext: &Extender, kind: &'static str, listed: bool) {
        for (watched, flag) in &self.flags {
            if *watched == kind {
                flag.store(listed, Ordering::Release);
            }
        }
        let ready = self
            .flags
            .iter()
            .all(|(_, flag)| flag.load(Ordering::Acquire));
        if ready != ext.is_ready() {
            ext.set_ready(ready);
            tracing::info!(ready, nodes = ext.state().node_count(), "readiness changed");
        }
    }
}

/// Watches Nodes and Pods and checks unconfirmed reservations, each task restarted
/// whenever it ends; never returns.
pub async fn run(ext: Arc<Extender>, client: kube::Client) {
    let listed = Arc::new(Listed::default());
    let nodes = {
        let (ext, client, listed) = (ext.clone(), client.clone(), listed.clone());
        move || {
            let nodes = Nodes {
                ext: ext.clone(),
                inventory_key: ext.inventory_key().to_string(),
            };
            mirror(ext.clone(), nodes, Api::all(client.clone()), listed.clone())
        }
    };
    let pods = {
        let (ext, listed) = (ext.clone(), listed.clone());
        move || {
            let pods = Pods { ext: ext.clone() };
            mirror(ext.clone(), pods, Api::all(client.clone()), listed.clone())
        }
    };
    let upkeep = {
        let ext = ext.clone();
        move || reservation_check::run(ext.clone())
    };
    tokio::join!(
        supervise(&ext, Nodes::KIND, Some(&listed), nodes),
        supervise(&ext, Pods::KIND, Some(&listed), pods),
        supervise(&ext, "reservations", None, upkeep),
    );
}

/// Runs `start()` as a task, again and again: whatever ends it (a panic included) is logged
/// and counted, and a watch's kind is not ready until it has listed anew.
async fn supervise<F, Fut>(ext: &Extender, kind: &'static str, listed: Option<&Listed>, start: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let ended = tokio::spawn(start()).await;
        if let Some(listed) = listed {
            listed.set(ext, kind, false);
        }
        match ended {
            Err(error) if error.is_panic() => {
                tracing::error!(task = kind, %error, "task panicked; restarting it");
            }
            _ => tracing::warn!(task = kind, "task ended; restarting it"),
        }
        ext.metrics().task_restarted(kind);
        tokio::time::sleep(RESTART_DELAY).await;
    }
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
    /// What to keep of an object whose record could not be made (it panicked).
    fn unusable(&self, reason: String) -> Option<Self::Record>;
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
    /// `None` for a node without an inventory: kept by name only.
    type Record = Option<Result<NodeBase, String>>;
    const KIND: &'static str = "nodes";

    fn record(&self, node: &Node) -> Option<(String, Self::Record)> {
        let name = node.metadata.name.clone()?;
        Some((
            name,
            node_base(node, &self.inventory_key).map(|(_, base)| base),
        ))
    }

    fn key(node: &Node) -> Option<String> {
        node.metadata.name.clone()
    }

    fn unusable(&self, reason: String) -> Option<Self::Record> {
        Some(Some(Err(reason)))
    }

    fn load(&self, all: Vec<(String, Self::Record)>) {
        let (gpu, other): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, r)| r.is_some());
        let mut state = self.ext.state_mut();
        state.reset_nodes(
            gpu.into_iter()
                .filter_map(|(name, base)| Some((name, base?)))
                .collect(),
        );
        for (name, _) in other {
            state.upsert_other_node(&name);
        }
    }

    fn upsert(&self, name: &str, base: Self::Record) {
        match base {
            Some(base) => self.ext.state_mut().upsert_node(name, base),
            None => self.ext.state_mut().upsert_other_node(name),
        }
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

    fn unusable(&self, _reason: String) -> Option<PodRecord> {
        None
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
    listed: Arc<Listed>,
) {
    let mut buffer = Vec::new();
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .backoff(watcher::ExponentialBackoff::from(retry::watch_backoff()))
        .boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Init)) => buffer.clear(),
            Ok(Some(Event::InitApply(object))) => buffer.extend(guarded_record(&mirror, &object)),
            Ok(Some(Event::InitDone)) => {
                let count = buffer.len();
                mirror.load(std::mem::take(&mut buffer));
                tracing::info!(kind = M::KIND, count, "list loaded");
                ext.metrics().watch_listed(M::KIND);
                listed.set(&ext, M::KIND, true);
            }
            Ok(Some(Event::Apply(object))) => match guarded_record(&mirror, &object) {
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

/// The object's record; a panic while making it (a bug meeting input nobody foresaw) leaves
/// the object unusable with the reason instead of ending the watch.
fn guarded_record<M: Mirror>(mirror: &M, object: &M::Object) -> Option<(String, M::Record)> {
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mirror.record(object)));
    made.unwrap_or_else(|_| {
        let key = M::key(object)?;
        tracing::error!(kind = M::KIND, object = %key, "reading the object panicked; treating it as unusable");
        Some((key, mirror.unusable("internal error while reading this object".into())?))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::future::BoxFuture;

    use super::*;
    use crate::extender::api_client::{BindError, Binder, PodRef};
    use crate::extender::config::Config;

    struct NoApi;

    impl Binder for NoApi {
        fn get_pod<'a>(&'a self, _: &'a PodRef) -> BoxFuture<'a, Result<Pod, BindError>> {
            Box::pin(async { Err(BindError::NotFound("no API in this test".into())) })
        }
        fn bind<'a>(
            &'a self,
            _: &'a PodRef,
            _: &'a str,
            _: &'a [(&'a str, &'a str)],
        ) -> BoxFuture<'a, Result<(), BindError>> {
            Box::pin(async { Err(BindError::NotFound("no API in this test".into())) })
        }
    }

    fn extender() -> Arc<Extender> {
        Arc::new(Extender::new(Config::default(), Arc::new(NoApi)).expect("default config"))
    }

    /// Reproductions 1 and 2 ended the watch task for good while `/readyz` said 200.
    #[tokio::test]
    async fn a_panicked_watch_restarts_and_is_not_ready_until_it_lists_again() {
        let ext = extender();
        let listed = Arc::new(Listed::default());
        listed.set(&ext, Pods::KIND, true);
        let runs = Arc::new(AtomicUsize::new(0));
        let ready_at_restart = Arc::new(AtomicBool::new(true));
        let start = {
            let (ext, listed, runs) = (ext.clone(), listed.clone(), runs.clone());
            let ready_at_restart = ready_at_restart.clone();
            move || {
                let (ext, listed, runs) = (ext.clone(), listed.clone(), runs.clone());
                let ready_at_restart = ready_at_restart.clone();
                async move {
                    if runs.fetch_add(1, Ordering::SeqCst) > 0 {
                        ready_at_restart.store(ext.is_ready(), Ordering::SeqCst);
                    }
                    listed.set(&ext, Nodes::KIND, true);
                    if runs.load(Ordering::SeqCst) == 1 {
                        panic!("a crafted annotation");
                    }
                    std::future::pending::<()>().await
                }
            }
        };
        let supervised = supervise(&ext, Nodes::KIND, Some(&listed), start);
        assert!(
            tokio::time::timeout(Duration::from_secs(3), supervised)
                .await
                .is_err()
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once");
        assert!(
            !ready_at_restart.load(Ordering::SeqCst),
            "not ready between the panic and the new list"
        );
        assert!(ext.is_ready(), "ready again once relisted");
        let metrics = ext.metrics().encode().expect("encodes");
        assert!(
            metrics.contains(r#"kubesched_extender_task_restarts_total{resource="nodes"} 1"#),
            "{metrics}"
        );
    }

    struct Boom;

    impl Mirror for Boom {
        type Object = Node;
        type Record = Result<(), String>;
        const KIND: &'static str = "nodes";
        fn record(&self, _: &Node) -> Option<(String, Self::Record)> {
            panic!("a bug meeting input nobody foresaw")
        }
        fn key(node: &Node) -> Option<String> {
            node.metadata.name.clone()
        }
        fn unusable(&self, reason: String) -> Option<Self::Record> {
            Some(Err(reason))
        }
        fn load(&self, _: Vec<(String, Self::Record)>) {}
        fn upsert(&self, _: &str, _: Self::Record) {}
        fn remove(&self, _: &str) {}
    }

    #[test]
    fn an_object_whose_record_panics_is_kept_as_unusable() {
        let mut node = Node::default();
        node.metadata.name = Some("gpu-7".into());
        let (key, record) = guarded_record(&Boom, &node).expect("kept");
        assert_eq!(key, "gpu-7");
        assert!(record.expect_err("unusable").contains("internal error"));
    }

    #[test]
    fn a_crafted_inventory_excludes_its_node_with_the_reason() {
        let inventory = r#"{"version":1,"node":"gpu-7","agentVersion":"x","gpus":[{"index":0,"uuid":"G0","model":"H100-80GB","pciBusId":"x","memoryMib":1,"healthy":true,"mig":{"mode":"dynamic","geometry":{"positions":8,"compute_slices":7,"profiles":[{"name":"1g.10gb","compute_slices":1,"width":10,"starts":[250],"max_count":7}]}}}]}"#;
        let mut node = Node::default();
        node.metadata.name = Some("gpu-7".into());
        node.metadata.annotations =
            Some([("kubesched.ai/inventory".to_string(), inventory.to_string())].into());
        let (name, base) = node_base(&node, "kubesched.ai/inventory").expect("has inventory");
        assert_eq!(name, "gpu-7");
        let reason = base.expect_err("excluded");
        assert!(reason.contains("1g.10gb"), "{reason}");
    }
}

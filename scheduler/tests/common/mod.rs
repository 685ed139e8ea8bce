//! Shared test fixtures: GPU nodes as the API would show them, an extender
//! over an in-memory cluster, a fake binder, and a minimal HTTP/1.1 client.

// Each test binary (and the bench) compiles this module and uses a subset.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kubesched_core::signing::SigningKey;
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::api_client::{BindError, Binder, PodRef};
use kubesched_scheduler::extender::config::Config;
use kubesched_scheduler::extender::protocol::ExtenderBindingArgs;
use kubesched_scheduler::extender::reflectors;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A k8s Node JSON with our inventory annotation: `gpus` are
/// (model, mig mode or None, numa) triples; `mig_static` lists pre-created
/// instances (profile, start) for static GPUs.
pub fn node(
    name: &str,
    gpus: &[(&str, Option<&str>, u32)],
    static_instances: &[(&str, u8)],
) -> Node {
    let gpus: Vec<serde_json::Value> = gpus
        .iter()
        .enumerate()
        .map(|(i, (model, mig, numa))| {
            let mut g = serde_json::json!({
                "index": i, "uuid": format!("GPU-{name}-{i}"), "model": model,
                "pciBusId": format!("0000:{:02x}:00.0", i + 1), "numaNode": numa,
                "memoryMib": 81920, "healthy": true
            });
            if let Some(mode) = mig {
                let instances: Vec<serde_json::Value> = if *mode == "static" {
                    static_instances
                        .iter()
                        .map(|(p, s)| serde_json::json!({"profile": p, "start": s, "uuid": format!("MIG-{name}-{i}-{s}")}))
                        .collect()
                } else {
                    Vec::new()
                };
                g["mig"] = serde_json::json!({"mode": mode, "instances": instances});
            }
            g
        })
        .collect();
    let inventory = serde_json::json!({
        "version": 1, "node": name, "agentVersion": "test",
        "topologyPolicy": "single-numa-node",
        "numaNodes": [
            {"id": 0, "cpus": (0..32).collect::<Vec<u32>>(), "memoryMib": 262144},
            {"id": 1, "cpus": (32..64).collect::<Vec<u32>>(), "memoryMib": 262144}
        ],
        "gpus": gpus
    });
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": {"kubesched.ai/inventory": inventory.to_string()}},
        "status": {"allocatable": {"cpu": "64", "memory": "512Gi"}}
    }))
    .expect("fixture node")
}

/// A node without inventory (a CPU node).
pub fn plain_node(name: &str) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "32", "memory": "128Gi"}}
    }))
    .expect("fixture node")
}

/// A pending pod asking for `resources` (name -> quantity) in one container.
pub fn pod(name: &str, uid: &str, resources: &[(&str, &str)]) -> Pod {
    let requests: serde_json::Map<String, serde_json::Value> = resources
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "serving", "uid": uid},
        "spec": {"schedulerName": "kubesched", "containers": [
            {"name": "main", "image": "busybox", "resources": {"requests": requests, "limits": requests}}
        ]},
        "status": {"phase": "Pending"}
    }))
    .expect("fixture pod")
}

/// Records what bind would have written; can be told to fail.
#[derive(Default)]
pub struct FakeBinder {
    pub pods: Mutex<HashMap<String, Pod>>,
    pub annotations: Mutex<HashMap<String, (String, String)>>,
    pub bindings: Mutex<HashMap<String, String>>,
    /// Pod names whose Binding fails with an API error.
    pub fail_bind: Mutex<Vec<String>>,
    /// Pod names whose Binding fails as already bound elsewhere (409).
    pub conflict_bind: Mutex<Vec<String>>,
    /// Every Binding created, by pod uid, with how many annotations it carried.
    pub binding_calls: Mutex<Vec<(String, usize)>>,
}

impl FakeBinder {
    pub fn annotation_of(&self, uid: &str) -> Option<String> {
        self.annotations
            .lock()
            .unwrap()
            .get(uid)
            .map(|(_, v)| v.clone())
    }
}

impl Binder for FakeBinder {
    fn get_pod<'a>(&'a self, pod: &'a PodRef) -> BoxFuture<'a, Result<Pod, BindError>> {
        Box::pin(async move {
            self.pods
                .lock()
                .unwrap()
                .get(&pod.name)
                .cloned()
                .ok_or_else(|| BindError::NotFound(pod.name.clone()))
        })
    }

    fn bind<'a>(
        &'a self,
        pod: &'a PodRef,
        node: &'a str,
        annotations: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(), BindError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.binding_calls
                .lock()
                .unwrap()
                .push((pod.uid.clone(), annotations.len()));
            if self.fail_bind.lock().unwrap().contains(&pod.name) {
                return Err(BindError::Api(kube::Error::Api(
                    kube::core::Status::failure(
                        "the server is currently unable to handle the request",
                        "ServiceUnavailable",
                    )
                    .with_code(503)
                    .boxed(),
                )));
            }
            if self.conflict_bind.lock().unwrap().contains(&pod.name) {
                return Err(BindError::Api(kube::Error::Api(
                    kube::core::Status::failure(
                        &format!("pod {} is already assigned to node \"elsewhere\"", pod.name),
                        "Conflict",
                    )
                    .with_code(409)
                    .boxed(),
                )));
            }
            // The API server sets the node and the Binding's annotations in one write.
            for (k, v) in annotations {
                self.annotations
                    .lock()
                    .unwrap()
                    .insert(pod.uid.clone(), (k.to_string(), v.to_string()));
            }
            self.bindings
                .lock()
                .unwrap()
                .insert(pod.uid.clone(), node.to_string());
            Ok(())
        })
    }
}

/// An extender over `nodes`, caches marked synced.
pub fn extender(config: Config, nodes: &[Node]) -> (Arc<Extender>, Arc<FakeBinder>) {
    signed_extender(config, nodes, None)
}

/// An extender over `nodes` that signs its annotations with `key`, caches marked synced.
pub fn signed_extender(
    config: Config,
    nodes: &[Node],
    key: Option<SigningKey>,
) -> (Arc<Extender>, Arc<FakeBinder>) {
    let binder = Arc::new(FakeBinder::default());
    let mut ext = Extender::new(config, binder.clone()).expect("config");
    if let Some(key) = key {
        ext = ext.with_signing_key(key);
    }
    let ext = Arc::new(ext);
    {
        let key = ext.inventory_key().to_string();
        let mut st = ext.state_mut();
        st.reset_nodes(
            nodes
                .iter()
                .filter_map(|n| reflectors::node_base(n, &key))
                .collect(),
        );
        for n in nodes {
            if let Some(name) = &n.metadata.name
                && reflectors::node_base(n, &key).is_none()
            {
                st.upsert_other_node(name);
            }
        }
    }
    ext.set_ready(true);
    (ext, binder)
}

/// An extender over one H100 in dynamic MIG mode: a 7g pod takes all of it, so "free" is
/// easy to tell.
pub fn one_h100() -> (Arc<Extender>, Arc<FakeBinder>) {
    extender(
        Config::default(),
        &[node("gpu-0", &[("H100-80GB", Some("dynamic"), 0)], &[])],
    )
}

/// A pod asking for a whole H100 as one 7g.80gb instance, UID `uid-NAME`.
pub fn seven_g(name: &str) -> Pod {
    pod(
        name,
        &format!("uid-{name}"),
        &[("nvidia.com/mig-7g.80gb", "1")],
    )
}

/// Feeds a pod to the state as the watch would.
pub fn observe(ext: &Extender, pod: &Pod) {
    if let Some((uid, rec)) = reflectors::pod_record(ext, pod) {
        ext.state_mut().upsert_pod(&uid, rec);
    }
}

/// kube-scheduler's bind call for pod `p` on `node`.
pub fn binding(p: &Pod, node: &str) -> ExtenderBindingArgs {
    ExtenderBindingArgs {
        pod_name: p.metadata.name.clone().unwrap(),
        pod_namespace: p.metadata.namespace.clone().unwrap(),
        pod_uid: p.metadata.uid.clone().unwrap(),
        node: node.into(),
    }
}

/// The pod as the watch shows it once bound with its annotation.
pub fn bound(p: &Pod, node: &str, annotation: &str) -> Pod {
    let mut p = p.clone();
    p.metadata.annotations =
        Some([("kubesched.ai/devices".to_string(), annotation.to_string())].into());
    if let Some(spec) = p.spec.as_mut() {
        spec.node_name = Some(node.into());
    }
    p
}

/// Runs the `kubesched` binary of this build with `args`.
pub fn kubesched(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubesched"))
        .args(args)
        .output()
        .expect("kubesched runs")
}

/// A fresh folder `<suite>/<name>` under cargo's target tmp dir.
pub fn scratch(suite: &str, name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(suite)
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// A keep-alive HTTP/1.1 connection, enough for tests and benches.
pub struct Http {
    stream: BufReader<TcpStream>,
}

impl Http {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        // As Go's client does: without it, Nagle and delayed ACKs add ~40 ms.
        stream.set_nodelay(true).expect("nodelay");
        Http {
            stream: BufReader::new(stream),
        }
    }

    /// Sends one request and returns (status, body).
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut message = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        message.extend_from_slice(body);
        self.stream
            .get_mut()
            .write_all(&message)
            .await
            .expect("write");
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).await.expect("read");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.expect("read");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().expect("length");
            }
        }
        let mut buf = vec![0; len];
        self.stream.read_exact(&mut buf).await.expect("body");
        (status, String::from_utf8_lossy(&buf).into_owned())
    }
}

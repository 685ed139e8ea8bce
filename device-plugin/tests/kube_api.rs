//! The Kubernetes-backed pieces against an in-process mock API server (a tower service behind
//! a real `kube::Client`): the Node annotation patch and the pod reflector feeding allocation.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::client::Body;
use kubesched_core::request::{GpuDemand, ResourceNames};
use kubesched_device_plugin::pods::{KubePods, PodReader};
use kubesched_device_plugin::pods::{PodDevices, PodSource};
use kubesched_device_plugin::publish::{KubeNodeAnnotator, NodeAnnotator};

/// One request as the mock API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    content_type: String,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A client whose requests go to `answer` (which returns `None` to leave a request hanging,
/// as an idle watch does).
fn mock_client(
    log: Log,
    answer: impl Fn(&Seen) -> Option<(u16, String)> + Send + Sync + Clone + 'static,
) -> kube::Client {
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let seen = Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            };
            log.lock().unwrap().push(seen.clone());
            let Some((status, text)) = answer(&seen) else {
                return std::future::pending().await;
            };
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(text.into_bytes()))
                    .unwrap(),
            )
        }
    });
    kube::Client::new(service, "default")
}

#[tokio::test]
async fn inventory_is_a_merge_patch_of_the_node_annotations() {
    let log: Log = Arc::default();
    let client = mock_client(log.clone(), |seen| {
        Some(if seen.uri.starts_with("/api/v1/nodes/gpu-7") {
            (
                200,
                r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"gpu-7"}}"#.into(),
            )
        } else {
            (404, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}"#.into())
        })
    });
    let annotator = KubeNodeAnnotator::new(client.clone(), "gpu-7");
    let document = r#"{"version":1,"node":"gpu-7"}"#;
    annotator
        .annotate("example.org/inventory", document)
        .await
        .unwrap();
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.method, "PATCH");
    assert!(seen.uri.starts_with("/api/v1/nodes/gpu-7?"), "{}", seen.uri);
    assert_eq!(seen.content_type, "application/merge-patch+json");
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"metadata": {"annotations": {"example.org/inventory": document}}}),
        "only the one annotation is written; the rest of the Node is left alone"
    );

    let missing = KubeNodeAnnotator::new(client, "gpu-9")
        .annotate("example.org/inventory", document)
        .await
        .unwrap_err();
    assert_eq!(missing.node, "gpu-9");
    assert!(missing.to_string().contains("not found"), "{missing}");
    assert!(
        std::error::Error::source(&missing).is_some(),
        "the API error is kept"
    );
}

fn pod_json(name: &str, rv: &str, phase: &str, gpus: u32, annotation: Option<&str>) -> String {
    let mut annotations = serde_json::Map::new();
    if let Some(a) = annotation {
        annotations.insert("kubesched.ai/devices".into(), a.into());
    }
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "ml", "uid": format!("uid-{name}"), "resourceVersion": rv,
            "creationTimestamp": format!("2026-01-01T00:00:0{rv}Z"),
            "annotations": annotations
        },
        "spec": {"nodeName": "gpu-7", "containers": [
            {"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}
        ]},
        "status": {"phase": phase}
    })
    .to_string()
}

#[tokio::test]
async fn pods_of_the_node_come_from_a_watched_cache() {
    let log: Log = Arc::default();
    let annotation = r#"{"version":1,"node":"gpu-7","resource":"nvidia.com/gpu","devices":[{"gpuUuid":"GPU-1","gpuIndex":1}]}"#;
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"PodList","metadata":{{"resourceVersion":"5"}},"items":[{},{}]}}"#,
        pod_json("trainer", "3", "Running", 1, Some(annotation)),
        pod_json("plain", "2", "Pending", 2, None),
    );
    // Bound after the list was taken, though created before both listed pods, in one second,
    // the later name first: arrival, not creation time or name, orders them.
    let added: String = ["zeta", "alpha"]
        .iter()
        .map(|name| {
            let pod = pod_json(name, "6", "Pending", 1, None).replace("00:00:06Z", "00:00:01Z");
            format!("{{\"type\":\"ADDED\",\"object\":{pod}}}\n")
        })
        .collect();
    let watches = Arc::new(Mutex::new(0));
    let client = mock_client(log.clone(), move |seen| {
        if !seen.uri.contains("watch=true") {
            return Some((200, list.clone()));
        }
        let mut n = watches.lock().unwrap();
        *n += 1;
        // The first watch delivers one event; later ones stay open and quiet.
        (*n == 1).then(|| (200, added.clone()))
    });
    let stopped = tokio_util::sync::CancellationToken::new();
    let reader = PodReader::new(ResourceNames::default(), "kubesched.ai", "gpu-7", None);
    let pods = KubePods::spawn(client, reader, stopped);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let views = loop {
        let views = pods.pods_on_node().await.unwrap();
        if views.len() == 4 || tokio::time::Instant::now() > deadline {
            break views;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let names: Vec<&str> = views.iter().map(|p| p.id.name.as_str()).collect();
    assert_eq!(
        names,
        ["plain", "trainer", "zeta", "alpha"],
        "listed pods by creation, then later arrivals in the order they came"
    );
    assert_eq!(views[0].demand, GpuDemand::Whole { count: 2 });
    assert_eq!(views[0].devices, PodDevices::Unassigned);
    assert_eq!(
        views[1].assigned_ids("nvidia.com/gpu"),
        Some(vec!["GPU-1".to_string()])
    );

    let first = log.lock().unwrap()[0].clone();
    assert_eq!(first.method, "GET");
    assert!(first.uri.starts_with("/api/v1/pods?"), "{}", first.uri);
    let selector = first
        .uri
        .split('&')
        .find_map(|kv| kv.split_once("fieldSelector=").map(|(_, v)| v.to_string()))
        .unwrap_or_default();
    assert_eq!(
        selector,
        "spec.nodeName%3Dgpu-7%2Cstatus.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed"
    );
}

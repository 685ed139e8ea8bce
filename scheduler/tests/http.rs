//! The server over real HTTP on loopback: a body that is not the verb's JSON is a 400 with a
//! message, a pod we cannot serve a 200 naming why; the server keeps serving; health,
//! readiness and metrics.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{Http, extender, node};
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::config::Config;
use kubesched_scheduler::extender::server;

const GOOD: &str = r#"{"Pod":{"metadata":{"name":"p","namespace":"ns","uid":"u1"},"spec":{"containers":[{"name":"c","resources":{"limits":{"nvidia.com/mig-3g.40gb":"1"}}}]}},"Nodes":null,"NodeNames":["gpu-1"]}"#;

async fn start(config: Config) -> (Arc<Extender>, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (ext, _) = extender(
        config,
        &[node("gpu-1", &[("H100-80GB", Some("dynamic"), 0)], &[])],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = ext.clone();
    tokio::spawn(async move {
        server::serve(served, listener, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (ext, addr, tx)
}

fn prefixed() -> Config {
    Config {
        url_prefix: "/kubesched/".into(),
        max_body_bytes: 64 * 1024,
        ..Config::default()
    }
}

#[tokio::test]
async fn bad_requests_get_400_with_a_message_and_the_server_keeps_serving() {
    let (_ext, addr, _stop) = start(prefixed()).await;
    let mut c = Http::connect(addr).await;
    let huge = format!(
        r#"{{"Pod":{{}},"NodeNames":[{}]}}"#,
        vec![r#""node-xxxxxxxxxxxxxxxx""#; 5000].join(",")
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("/kubesched/filter", "{not json".into(), "malformed request"),
        (
            "/kubesched/filter",
            r#"{"NodeNames":["a"]}"#.into(),
            "missing field `Pod`",
        ),
        (
            "/kubesched/prioritize",
            r#"{"Pod":{"spec":{"containers":7}},"NodeNames":[]}"#.into(),
            "malformed request",
        ),
        ("/kubesched/filter", huge, "limit 65536 bytes"),
        (
            "/kubesched/preempt",
            r#"{"Pod":{},"NodeNameToMetaVictims":{"n":{"Pods":[{"UID":7}]}}}"#.into(),
            "malformed request",
        ),
        (
            "/kubesched/bind",
            r#"{"PodName":"p"}"#.into(),
            "missing field `PodNamespace`",
        ),
    ];
    for (path, body, needle) in cases {
        let (status, text) = c.request("POST", path, body.as_bytes()).await;
        assert_eq!(status, 400, "{path} {body:.80}: {text}");
        assert!(text.contains(needle), "{path}: {text:?} lacks {needle:?}");
    }
    // A pod kube-scheduler sent but we cannot serve is a 200 whose reason reaches the pod's
    // events (kube-scheduler drops the body of any other status): every node unresolvable,
    // so nothing is preempted for it. A configuration error goes in `Error`.
    let refused: Vec<(&str, String, &str)> = vec![
        (
            "/kubesched/filter",
            GOOD.replace("mig-3g.40gb", "mig-9g.99gb"),
            "offers MIG profile 9g.99gb",
        ),
        (
            "/kubesched/filter",
            GOOD.replace("mig-3g.40gb", "mig-huge"),
            "malformed MIG profile",
        ),
        (
            "/kubesched/filter",
            GOOD.replace(r#""1"}"#, r#""500m"}"#),
            "whole number",
        ),
    ];
    for (path, body, needle) in refused {
        let (status, text) = c.request("POST", path, body.as_bytes()).await;
        assert_eq!(status, 200, "{path} {body:.80}: {text}");
        let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["NodeNames"], serde_json::json!([]), "{text}");
        let reason = reply["FailedAndUnresolvableNodes"]["gpu-1"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.contains(needle), "{path}: {text:?} lacks {needle:?}");
        assert!(reason.starts_with("kubesched: "), "{reason}");
    }
    let (status, text) = c
        .request("POST", "/kubesched/filter", br#"{"Pod":{},"Nodes":null}"#)
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("nodeCacheCapable"), "{text}");
    let (status, text) = c
        .request(
            "POST",
            "/kubesched/prioritize",
            GOOD.replace(r#""1"}"#, r#""lots"}"#).as_bytes(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(text, r#"[{"Host":"gpu-1","Score":0}]"#);
    let (status, text) = c
        .request("POST", "/kubesched/filter", GOOD.as_bytes())
        .await;
    assert_eq!(status, 200);
    assert!(text.contains(r#""NodeNames":["gpu-1"]"#), "{text}");
}

/// One request on its own connection (error answers may close it).
async fn one(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    Http::connect(addr).await.request(method, path, body).await
}

#[tokio::test]
async fn health_readiness_metrics_and_routing() {
    let (ext, addr, stop) = start(Config::default()).await;
    assert_eq!(one(addr, "GET", "/healthz", b"").await.0, 200);
    assert_eq!(one(addr, "GET", "/readyz", b"").await.0, 200);
    ext.set_ready(false);
    assert_eq!(
        one(addr, "GET", "/readyz", b"").await,
        (503, "caches not synced".into())
    );
    assert_eq!(one(addr, "POST", "/filter", GOOD.as_bytes()).await.0, 200);
    assert_eq!(one(addr, "GET", "/filter", b"").await.0, 405);
    assert_eq!(one(addr, "POST", "/nope", b"{}").await.0, 404);
    let (status, text) = one(addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"kubesched_extender_requests_total{verb="filter",code="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"kubesched_extender_filter_nodes_total{outcome="fits"} 1"#));
    assert!(text.contains(r#"kubesched_extender_gpu_free_mig_positions{node="gpu-1",gpu="0"} 8"#));
    assert!(text.contains("kubesched_extender_cluster_fragmentation_ratio"));
    // One GPU node, so one distinct state.
    assert!(
        text.contains("kubesched_extender_node_states 1\n"),
        "{text}"
    );
    // Graceful shutdown: the listener closes once asked to stop.
    stop.send(()).unwrap();
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(closed, "server still accepting after shutdown");
}

/// Reproduction 8 of the hostile-input report: a stalled body stayed open 70 s and more.
/// Now a body that stops arriving gets a 400 within the request timeout, headers that stop
/// arriving get the connection closed, and the server goes on serving.
#[tokio::test]
async fn stalled_requests_are_cut_off_at_the_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_ext, addr, _stop) = start(Config {
        request_timeout_seconds: 1,
        ..Config::default()
    })
    .await;
    let started = std::time::Instant::now();
    let mut body = tokio::net::TcpStream::connect(addr).await.unwrap();
    body.write_all(
        b"POST /filter HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"Pod\":",
    )
    .await
    .unwrap();
    let mut headers = tokio::net::TcpStream::connect(addr).await.unwrap();
    headers
        .write_all(b"POST /filter HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        body.read_to_end(&mut reply),
    )
    .await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(read.is_ok(), "body stall not cut off");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("not received within"), "{reply}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        headers.read_to_end(&mut rest),
    )
    .await;
    assert!(closed.is_ok(), "header stall not cut off");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    let mut c = Http::connect(addr).await;
    assert_eq!(c.request("GET", "/healthz", b"").await.0, 200);
}

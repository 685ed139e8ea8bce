//! HTTP: the verbs under the configured prefix, `/metrics`, `/healthz`,
//! `/readyz` and the GPU map page (`/ui`, see `crate::ui`). Bodies are size-limited and parsed by hand so that every bad
//! input (oversized, malformed, missing fields, unknown profiles) is a 400
//! with a message, logged, and never a panic.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kubesched_core::planning::cost::cost_report;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use super::cluster_state::CostedNode;
use super::protocol::{ExtenderArgs, ExtenderBindingArgs, ExtenderPreemptionArgs};
use super::service::Extender;

type Shared = Arc<Extender>;

/// All of the extender's routes on one listener.
pub fn router(ext: Shared) -> Router {
    verbs_router(ext.clone()).merge(observability_router(ext))
}

/// The scheduler verbs: only kube-scheduler, in the same pod, calls them.
pub fn verbs_router(ext: Shared) -> Router {
    let prefix = ext.config().url_prefix.trim_end_matches('/').to_string();
    Router::new()
        .route(&format!("{prefix}/filter"), post(filter))
        .route(&format!("{prefix}/prioritize"), post(prioritize))
        .route(&format!("{prefix}/preempt"), post(preempt))
        .route(&format!("{prefix}/bind"), post(bind))
        .with_state(ext)
}

/// Metrics, probes and the GPU map: what Prometheus, the kubelet and people read.
pub fn observability_router(ext: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/ui", get(crate::ui::page))
        .route("/ui/data", get(crate::ui::data))
        .with_state(ext)
}

/// Serves every route over plain HTTP until `shutdown` completes, then drains in-flight
/// requests.
pub async fn serve(
    ext: Shared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = ext.config().request_timeout();
    serve_app(router(ext), listener, None, timeout, shutdown).await
}

/// Serves `app` (over TLS with `tls`) until `shutdown` completes; `timeout` bounds a TLS
/// handshake and each request's headers.
pub async fn serve_app(
    app: Router,
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    super::connections::serve(app, listener, acceptor, timeout, shutdown).await
}

/// A whole request body must arrive within the configured request timeout: a stalled sender
/// does not keep a connection and a buffer forever.
async fn read_json<T: DeserializeOwned>(ext: &Extender, body: Body) -> Result<T, String> {
    let limit = ext.config().max_body_bytes;
    let timeout = ext.config().request_timeout();
    let bytes = tokio::time::timeout(timeout, to_bytes(body, limit))
        .await
        .map_err(|_| format!("request body not received within {timeout:?}"))?
        .map_err(|e| format!("reading body (limit {limit} bytes): {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("malformed request: {e}"))
}

fn bad_request(verb: &'static str, message: String) -> Response {
    tracing::warn!(verb, error = %message, "rejected extender request");
    (StatusCode::BAD_REQUEST, message).into_response()
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn finish(ext: &Extender, verb: &'static str, started: Instant, resp: Response) -> Response {
    ext.metrics().observe_request(
        verb,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

async fn filter(State(ext): State<Shared>, body: Body) -> Response {
    let started = Instant::now();
    let resp = match read_json::<ExtenderArgs>(&ext, body).await {
        Err(e) => bad_request("filter", e),
        Ok(args) => json(&ext.filter(&args)),
    };
    finish(&ext, "filter", started, resp)
}

async fn preempt(State(ext): State<Shared>, body: Body) -> Response {
    let started = Instant::now();
    let resp = match read_json::<ExtenderPreemptionArgs>(&ext, body).await {
        Err(e) => bad_request("preempt", e),
        Ok(args) => json(&ext.preempt(&args)),
    };
    finish(&ext, "preempt", started, resp)
}

async fn prioritize(State(ext): State<Shared>, body: Body) -> Response {
    let started = Instant::now();
    let resp = match read_json::<ExtenderArgs>(&ext, body).await {
        Err(e) => bad_request("prioritize", e),
        Ok(args) => match ext.prioritize(&args) {
            Ok(r) => json(&r),
            Err(e) => bad_request("prioritize", e.to_string()),
        },
    };
    finish(&ext, "prioritize", started, resp)
}

async fn bind(State(ext): State<Shared>, body: Body) -> Response {
    let started = Instant::now();
    let resp = match read_json::<ExtenderBindingArgs>(&ext, body).await {
        Err(e) => bad_request("bind", e),
        Ok(args) => json(&ext.bind(&args).await),
    };
    finish(&ext, "bind", started, resp)
}

async fn readyz(State(ext): State<Shared>) -> Response {
    if ext.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
    }
}

async fn metrics(State(ext): State<Shared>) -> Response {
    // Copy the nodes out (with their pools and holders, for the cost series) so the
    // fragmentation aggregates run without the lock.
    let (costed, distinct) = {
        let state = ext.state();
        (state.cost_view(), state.distinct_states())
    };
    ext.metrics().set_node_states(distinct);
    let (workload, _) = ext.workload().current();
    let per_gpu = ext.config().per_gpu_metrics;
    let worker = ext.clone();
    let refreshed = tokio::task::spawn_blocking(move || {
        let nodes: Vec<_> = costed.iter().map(|c| &c.state).collect();
        worker.metrics().refresh_state(&nodes, &workload, per_gpu);
        let prices = worker.config().pricing.prices();
        let report = cost_report(costed.iter().map(CostedNode::as_cost), &workload, &prices);
        worker.metrics().cost().refresh(&report, Instant::now());
    })
    .await;
    if let Err(e) = refreshed {
        tracing::warn!(error = %e, "metrics refresh failed");
    }
    match ext.metrics().encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

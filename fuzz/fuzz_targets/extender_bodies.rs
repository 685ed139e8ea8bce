//! The extender's four request bodies, as kube-scheduler (or anything that reaches the verbs
//! port) may send them, through the real HTTP router: the first byte picks filter, prioritize,
//! bind or preempt, the rest is the body. The server never panics or answers 5xx, and binding never
//! leaves a GPU position held twice.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::config::{Config, Overrides};
use kubesched_scheduler::extender::server::verbs_router;
use kubesched_scheduler::offline::OfflineBinder;
use kubesched_scheduler::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

const SNAPSHOT: &str = include_str!("../../scheduler/tests/fixtures/snapshot.json");

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

/// A fresh extender over the fixture cluster for every input, so runs are reproducible.
fn extender() -> Arc<Extender> {
    let snapshot = Snapshot::from_json(SNAPSHOT).unwrap_or_else(|e| panic!("fixture: {e}"));
    let (binder, _updates) = OfflineBinder::new(&snapshot);
    let config = Config::load(None, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
    let ext = Extender::new(config, binder).unwrap_or_else(|e| panic!("{e}"));
    snapshot.load_into(&ext);
    ext.set_ready(true);
    Arc::new(ext)
}

fuzz_target!(|data: &[u8]| {
    let Some((&verb, body)) = data.split_first() else {
        return;
    };
    let path = match verb % 4 {
        0 => "/filter",
        1 => "/prioritize",
        2 => "/bind",
        _ => "/preempt",
    };
    let ext = extender();
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap_or_else(|e| panic!("{e}"));
    let status = runtime()
        .block_on(verbs_router(ext.clone()).oneshot(request))
        .map(|r| r.status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!status.is_server_error(), "{path}: {status}");
    // Every reservation and pod still fits its node: nothing was placed twice.
    let state = ext.state();
    for node in state.node_states() {
        for gpu in &node.gpus {
            assert!(gpu.free_milli() <= 1000, "{}: {gpu:?}", node.name);
        }
    }
});

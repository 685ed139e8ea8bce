//! The agent's own HTTP endpoint: `/metrics` (Prometheus text, rendered at
//! scrape time from the latest inventory document the agent built),
//! `/healthz` and `/readyz` (ready once a first inventory exists). Blocked
//! GPUs (processes outside our control, a pending MIG mode change) show up
//! here with their reason.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kubesched_core::inventory::NodeInventory;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Documents;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    gpu: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlockedLabels {
    gpu: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    gpu: String,
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NumaLabels {
    numa: String,
}

/// The Prometheus text for one inventory document.
pub fn render_metrics(inv: &NodeInventory) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("kubesched_agent");
    let healthy = Family::<GpuLabels, Gauge>::default();
    let blocked = Family::<BlockedLabels, Gauge>::default();
    let instances = Family::<InstanceLabels, Gauge>::default();
    let free_cpus = Family::<NumaLabels, Gauge>::default();
    for g in &inv.gpus {
        let gpu = g.uuid.clone();
        healthy
            .get_or_create(&GpuLabels {
                gpu: gpu.clone(),
                model: g.model.clone(),
            })
            .set(i64::from(g.healthy));
        if let Some(mig) = &g.mig {
            if let Some(reason) = &mig.blocked {
                blocked
                    .get_or_create(&BlockedLabels {
                        gpu: gpu.clone(),
                        reason: reason.clone(),
                    })
                    .set(1);
            }
            for i in &mig.instances {
                instances
                    .get_or_create(&InstanceLabels {
                        gpu: gpu.clone(),
                        profile: i.profile.clone(),
                    })
                    .inc();
            }
        }
    }
    for n in &inv.numa_nodes {
        if let Some(cpus) = &n.free_cpus {
            free_cpus
                .get_or_create(&NumaLabels {
                    numa: n.id.to_string(),
                })
                .set(cpus.len() as i64);
        }
    }
    let gpus = Gauge::<i64>::default();
    gpus.set(inv.gpus.len() as i64);
    registry.register("gpus", "GPUs this agent found", gpus);
    registry.register("gpu_healthy", "1 when the GPU is healthy", healthy);
    registry.register(
        "gpu_blocked",
        "GPUs the agent leaves alone, with the reason",
        blocked,
    );
    registry.register(
        "mig_instances",
        "Live MIG instances per GPU and profile",
        instances,
    );
    registry.register(
        "numa_free_cpus",
        "CPUs no container has pinned, per NUMA node",
        free_cpus,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// `/metrics`, `/healthz` and `/readyz` over the agent's document stream.
pub fn metrics_router(documents: Documents) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(documents)
}

async fn metrics(State(documents): State<Documents>) -> impl IntoResponse {
    // Rendered from the parsed document the agent built: no JSON on the scrape path.
    let latest = documents.borrow().clone();
    let Some(document) = latest else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no inventory yet\n".to_string(),
        )
            .into_response();
    };
    match render_metrics(document.inventory()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {error}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(documents): State<Documents>) -> impl IntoResponse {
    if documents.borrow().is_some() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no inventory yet")
    }
}

/// Serves until `shutdown` completes.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    documents: Documents,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_router(documents))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::InventoryDocument;
    use kubesched_core::inventory::{GpuInfo, MigInfo, MigInstanceInfo, MigMode, NumaNodeInfo};
    use kubesched_core::numa::TopologyPolicy;

    fn inventory() -> NodeInventory {
        NodeInventory {
            version: 1,
            node: "n".into(),
            agent_version: "t".into(),
            topology_policy: TopologyPolicy::None,
            numa_nodes: vec![NumaNodeInfo {
                id: 0,
                cpus: vec![0, 1, 2],
                memory_mib: 1,
                free_cpus: Some(vec![1, 2]),
                free_memory_mib: None,
            }],
            gpus: vec![GpuInfo {
                index: 0,
                uuid: "GPU-a".into(),
                model: "H100-80GB".into(),
                pci_bus_id: "0000:01:00.0".into(),
                numa_node: Some(0),
                memory_mib: 1,
                healthy: true,
                mig: Some(MigInfo {
                    mode: MigMode::Dynamic,
                    instances: vec![
                        MigInstanceInfo {
                            profile: "1g.10gb".into(),
                            start: 0,
                            uuid: "MIG-1".into(),
                            healthy: true,
                        },
                        MigInstanceInfo {
                            profile: "1g.10gb".into(),
                            start: 1,
                            uuid: "MIG-2".into(),
                            healthy: true,
                        },
                    ],
                    geometry: None,
                    blocked: Some("pending MIG mode change".into()),
                }),
            }],
            draining: false,
        }
    }

    #[test]
    fn renders_health_blocked_gpus_instances_and_free_cpus() {
        let text = render_metrics(&inventory()).unwrap();
        for line in [
            "kubesched_agent_gpus 1",
            "kubesched_agent_gpu_healthy{gpu=\"GPU-a\",model=\"H100-80GB\"} 1",
            "kubesched_agent_gpu_blocked{gpu=\"GPU-a\",reason=\"pending MIG mode change\"} 1",
            "kubesched_agent_mig_instances{gpu=\"GPU-a\",profile=\"1g.10gb\"} 2",
            "kubesched_agent_numa_free_cpus{numa=\"0\"} 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn ready_once_an_inventory_exists() {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics(listener, rx, async move {
            let _ = stop_rx.await;
        }));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        assert!(get("/metrics").await.starts_with("HTTP/1.1 503"));
        tx.send_replace(Some(std::sync::Arc::new(InventoryDocument::new(
            inventory(),
        ))));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(
            get("/metrics")
                .await
                .contains("kubesched_agent_gpu_blocked")
        );
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    }
}

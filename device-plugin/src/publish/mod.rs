//! What the agent tells the rest of the cluster: the node inventory document on the Node
//! annotation (`inventory`), and Prometheus metrics with health probes on its own HTTP
//! endpoint (`metrics`).

mod document;
mod inventory;
mod metrics;

pub use document::{Documents, InventoryDocument};
pub use inventory::{Backoff, KubeNodeAnnotator, NodeAnnotator, PublishError, run_publisher};
pub use metrics::{metrics_router, render_metrics, serve_metrics};

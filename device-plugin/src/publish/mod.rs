//! What the agent tells the rest of the cluster: the node inventory document on the Node
//! annotation (`inventory`), GPU health as a Node condition and optional taint
//! (`node_health`), and Prometheus metrics with health probes on its own HTTP endpoint
//! (`metrics`).

mod document;
mod inventory;
mod metrics;
mod node_health;

pub use document::{Documents, InventoryDocument};
pub use inventory::{Backoff, KubeNodeAnnotator, NodeAnnotator, PublishError, run_publisher};
pub use metrics::{metrics_router, render_metrics, serve_metrics};
pub use node_health::{
    GPU_HEALTHY_CONDITION, GPU_UNHEALTHY_TAINT, GpuHealthCondition, KubeNodeHealthWriter,
    NodeHealthError, NodeHealthOptions, NodeHealthWriter, REASON_ALL_HEALTHY, REASON_FAULTS,
    REASON_NO_GPUS, REASON_NO_HEALTHY_GPU, TAINT_EFFECT, gpu_unhealthy_taint_key, node_condition,
    run_node_health, summarize_gpu_health, toggle_taint,
};

//! The GPU map page (`/ui`): every GPU of the cluster drawn as its memory
//! positions, coloured by MIG profile and free/used/unhealthy, grouped by
//! node and NUMA node, with the cluster totals and stranded capacity by
//! cause. One self-contained HTML file (no assets from the internet) that
//! polls `/ui/data`, the report JSON of the extender's live state.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Html;

use crate::extender::Extender;
use crate::report::{self, Report};

const PAGE: &str = include_str!("gpu_map.html");

/// Serves the GPU map page (`/ui`), a single self-contained HTML file.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// Serves `/ui/data`: the report JSON built from the extender's live cluster state and
/// current target workload.
pub async fn data(State(ext): State<Arc<Extender>>) -> Json<Report> {
    Json(report::build_live(&ext))
}

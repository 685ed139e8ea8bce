//! kubesched-scheduler: everything on the scheduler side that touches the
//! outside world: the scheduler extender (HTTP, Kubernetes API) and the
//! capacity planner's tools (trace replay, reports, fleet sizing).

pub mod extender;
pub mod offline;
pub mod plan;
pub mod report;
pub mod simulate;
pub mod snapshot;
pub mod ui;

//! kubesched-scheduler: everything on the scheduler side that touches the
//! outside world: the scheduler extender (HTTP, Kubernetes API) and the
//! capacity planner's tools (trace replay, reports).

pub mod simulate;

//! The capacity planner's report: per node and GPU, the MIG occupancy map,
//! free positions, the largest placeable profile, how many more of each
//! profile and of whole GPUs fit, NUMA alignment problems, and the cluster's
//! stranded capacity by cause; from an extender's state also each node's pool and the
//! cost of allocated, idle and stranded GPUs per pool and namespace. Built from core node
//! states, rendered as a table or JSON (the web page reads the same JSON).

mod live;
mod model;
mod table;

pub use live::build_live;
pub use model::{ClusterTotals, GpuReport, NodeReport, Position, Report, build};
pub use table::render;

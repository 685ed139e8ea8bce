//! The pods bound to this node, as allocation needs them: each one's GPU request and the
//! devices the scheduler's annotation names (followed only when it is this pod's own, signed
//! annotation), in the order they arrived. On a cluster they come from a watch of the API
//! server; tests and standalone runs use an in-memory list.

mod arrival;
mod node_watch;
mod reader;
mod source;

pub use arrival::{ArrivalOrder, sort_by_arrival};
pub use node_watch::{KubePods, POD_WAIT, field_selector};
pub use reader::PodReader;
pub use source::{InMemoryPods, PodDevices, PodSource, PodSourceError, PodView};

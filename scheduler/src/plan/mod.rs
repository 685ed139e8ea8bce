//! The capacity planner's answers (`kubesched plan`): the cheapest fleet of given node
//! types that meets a wait target (`fleet`, with its node-type file in `node_types`).

pub mod fleet;
pub mod node_types;

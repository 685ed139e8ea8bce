//! The capacity planner's answers (`kubesched plan`): the cheapest fleet of given node
//! types that meets a wait target (`fleet`, with its node-type file in `node_types`), and
//! the MIG layouts of a static pool for a demand mix (`mig`).

pub mod fleet;
pub mod mig;
pub mod node_types;

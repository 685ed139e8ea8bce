//! Capacity planning on top of the timed replay: the cheapest fleet that meets a target
//! (`fleet_search`), MIG layouts for a demand mix (`mig_layouts`), and what idle and
//! stranded capacity costs (`cost`).

pub mod cost;
mod fleet_search;
pub mod mig_layouts;

pub use fleet_search::{Point, PricedType, Search, Verdict, cheapest, cost, exhaustive};

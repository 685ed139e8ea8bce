//! The report of an extender's state (live, or loaded from a snapshot): every node with its
//! pool, and the cost figures at the configured prices.

use std::collections::HashMap;

use kubesched_core::planning::cost::cost_report;

use super::model::{Report, build};
use crate::extender::Extender;
use crate::extender::cluster_state::CostedNode;

/// The report of `ext`'s cluster state against its current target workload.
pub fn build_live(ext: &Extender) -> Report {
    let (workload, _) = ext.workload().current();
    let view = ext.state().cost_view();
    let mut report = build(view.iter().map(|n| &n.state), &workload);
    let pools: HashMap<&str, &str> = view
        .iter()
        .map(|n| (n.state.name.as_str(), n.pool.as_str()))
        .collect();
    for n in &mut report.nodes {
        if let Some(pool) = pools.get(n.name.as_str()) {
            n.pool = (*pool).to_string();
        }
    }
    let prices = ext.config().pricing.prices();
    report.cost = Some(cost_report(
        view.iter().map(CostedNode::as_cost),
        &workload,
        &prices,
    ));
    report
}

//! The `filter` verb: which of the sent nodes can host the pod's GPU
//! request, and why the others cannot. Pure in-memory, no API calls.

use std::collections::BTreeMap;

use kubesched_core::placement::Unfit;

use super::cluster_state::NodeView;
use super::outcome::FilterOutcome;
use super::protocol::{ExtenderArgs, ExtenderFilterResult};
use super::service::{Extender, VerbError};

/// Reason given for nodes without an inventory annotation.
pub const NO_INVENTORY: &str = "node publishes no GPU inventory";

impl Extender {
    /// The `filter` verb: the nodes that fit, and a reason for each that does not.
    pub fn filter(&self, args: &ExtenderArgs) -> Result<ExtenderFilterResult, VerbError> {
        let names = args
            .node_names
            .as_ref()
            .ok_or(VerbError::MissingNodeNames)?;
        let req = self.pod_request(&args.pod)?;
        let mut out = ExtenderFilterResult::default();
        if req.gpu.is_none() {
            // Not ours to judge: every node passes untouched.
            out.node_names = names.clone();
            self.metrics()
                .filter_outcome(FilterOutcome::NoGpuRequest, names.len() as u64);
            return Ok(out);
        }
        let uid = args.pod.metadata.uid.as_deref().unwrap_or("");
        self.workload().observe(uid, &req);
        let ctx = self.eval_context(&req, uid);
        let mut counts: BTreeMap<FilterOutcome, u64> = BTreeMap::new();
        {
            let state = self.state();
            for name in names {
                let (outcome, verdict) = state.evaluate(name, &ctx, |view| match view {
                    NodeView::Unknown => (
                        FilterOutcome::NoInventory,
                        Verdict::Unresolvable(NO_INVENTORY.to_string()),
                    ),
                    NodeView::Invalid(e) => (
                        FilterOutcome::InvalidInventory,
                        Verdict::Unresolvable(format!("node GPU inventory unusable: {e}")),
                    ),
                    NodeView::Evaluated(Ok(_)) => (FilterOutcome::Fits, Verdict::Fits),
                    NodeView::Evaluated(Err(unfit)) => (
                        FilterOutcome::Unfit(unfit.cause()),
                        if unresolvable(unfit) {
                            Verdict::Unresolvable(unfit.to_string())
                        } else {
                            Verdict::Failed(unfit.to_string())
                        },
                    ),
                });
                *counts.entry(outcome).or_default() += 1;
                match verdict {
                    Verdict::Fits => out.node_names.push(name.clone()),
                    Verdict::Failed(reason) => {
                        out.failed_nodes.insert(name.clone(), reason);
                    }
                    Verdict::Unresolvable(reason) => {
                        out.failed_and_unresolvable_nodes
                            .insert(name.clone(), reason);
                    }
                }
            }
        }
        for (outcome, n) in counts {
            self.metrics().filter_outcome(outcome, n);
        }
        Ok(out)
    }
}

/// Where a node goes in the answer.
enum Verdict {
    Fits,
    Failed(String),
    Unresolvable(String),
}

/// Failures that evicting pods cannot cure, so preemption skips the node.
fn unresolvable(u: &Unfit) -> bool {
    matches!(
        u,
        Unfit::ModelMismatch { .. } | Unfit::UnknownProfile { .. }
    )
}

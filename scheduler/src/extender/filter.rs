//! The `filter` verb: which of the sent nodes can host the pod's GPU
//! request, and why the others cannot. Pure in-memory, no API calls.
//!
//! Every answer kube-scheduler can act on is a 200: its reasons reach the pod's events, where
//! a non-200 body is thrown away. A node goes to `FailedAndUnresolvableNodes` when evicting
//! pods cannot help (the pod does not fit the node even empty), so preemption skips it. It
//! goes to `FailedNodes` too, with the same reason: kube-scheduler 1.20 reads only
//! that map (a node in neither shows no reason), and later ones let the unresolvable map win
//! for a node in both.

use std::collections::BTreeMap;

use super::cluster_state::NodeView;
use super::outcome::FilterOutcome;
use super::parallel;
use super::protocol::{ExtenderArgs, ExtenderFilterResult};
use super::service::{Extender, VerbError};

/// Reason given for nodes without an inventory annotation.
pub const NO_INVENTORY: &str = "node publishes no GPU inventory";

/// Why a node whose agent is draining gets no pod (until its agent serves the kubelet again).
pub const AGENT_DRAINING: &str =
    "the node's GPU agent is draining (restarting or upgrading): retried once it serves again";

impl Extender {
    /// The `filter` verb: the nodes that fit, and a reason for each that does not.
    pub fn filter(&self, args: &ExtenderArgs) -> ExtenderFilterResult {
        let mut out = ExtenderFilterResult::default();
        let Some(names) = args.node_names.as_ref() else {
            // A configuration error, not the pod's: `Error` shows it in the pod's events.
            out.error = VerbError::MissingNodeNames.to_string();
            tracing::warn!(error = %out.error, "filter without NodeNames");
            return out;
        };
        let req = match self.pod_request(&args.pod) {
            Ok(req) => req,
            Err(error) => {
                // No node can serve a pod we cannot read: every node is unresolvable, with
                // the reason, so the pod's event says why and nothing is preempted for it.
                let reason = format!("kubesched: {error}");
                tracing::info!(%error, "pod refused on every node");
                for name in names {
                    out.unresolvable(name, &reason);
                }
                self.metrics()
                    .filter_outcome(FilterOutcome::Unservable, names.len() as u64);
                return out;
            }
        };
        if req.gpu.is_none() {
            // Not ours to judge: every node passes untouched.
            out.node_names = names.clone();
            self.metrics()
                .filter_outcome(FilterOutcome::NoGpuRequest, names.len() as u64);
            return out;
        }
        let uid = args.pod.metadata.uid.as_deref().unwrap_or("");
        self.workload().observe(uid, &req);
        let ctx = self.eval_context(&req, uid);
        let verdicts = {
            let state = self.state();
            parallel::map(names, |name| {
                let (outcome, verdict) = state.evaluate(name, &ctx, |view| match view {
                    NodeView::Unknown => (
                        FilterOutcome::NoInventory,
                        Verdict::Unresolvable(NO_INVENTORY.to_string()),
                    ),
                    NodeView::Invalid(e) => (
                        FilterOutcome::InvalidInventory,
                        Verdict::Unresolvable(format!("node GPU inventory unusable: {e}")),
                    ),
                    NodeView::Draining => (
                        FilterOutcome::AgentDraining,
                        Verdict::Unresolvable(AGENT_DRAINING.to_string()),
                    ),
                    NodeView::Evaluated(Ok(_)) => (FilterOutcome::Fits, Verdict::Fits),
                    NodeView::Evaluated(Err(unfit)) => (
                        FilterOutcome::Unfit(unfit.cause()),
                        Verdict::Failed(unfit.to_string()),
                    ),
                });
                // Outside `evaluate`, which holds the node's memo lock.
                let verdict = match verdict {
                    Verdict::Failed(reason) if state.never_fits(name, &ctx) => {
                        Verdict::Unresolvable(reason)
                    }
                    other => other,
                };
                (outcome, verdict)
            })
        };
        let mut counts: BTreeMap<FilterOutcome, u64> = BTreeMap::new();
        for (name, (outcome, verdict)) in names.iter().zip(verdicts) {
            *counts.entry(outcome).or_default() += 1;
            match verdict {
                Verdict::Fits => out.node_names.push(name.clone()),
                Verdict::Failed(reason) => {
                    out.failed_nodes.insert(name.clone(), reason);
                }
                Verdict::Unresolvable(reason) => out.unresolvable(name, &reason),
            }
        }
        for (outcome, n) in counts {
            self.metrics().filter_outcome(outcome, n);
        }
        out
    }
}

impl ExtenderFilterResult {
    /// Records a node no eviction can make fit, in both failure maps (see the module header).
    fn unresolvable(&mut self, node: &str, reason: &str) {
        self.failed_nodes
            .insert(node.to_string(), reason.to_string());
        self.failed_and_unresolvable_nodes
            .insert(node.to_string(), reason.to_string());
    }
}

/// Where a node goes in the answer.
enum Verdict {
    Fits,
    Failed(String),
    Unresolvable(String),
}

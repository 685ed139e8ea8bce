//! The `filter` verb: which of the sent nodes can host the pod's GPU
//! request, and why the others cannot. Pure in-memory, no API calls.

use kubesched_core::placement::{Cause, Unfit};

use super::cluster_state::{EvalContext, NodeView};
use super::protocol::{ExtenderArgs, ExtenderFilterResult};
use super::service::{Extender, VerbError, pod_seed};

/// Reason given for nodes without an inventory annotation.
pub const NO_INVENTORY: &str = "node publishes no GPU inventory";

impl Extender {
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
                .filter_outcome("no_gpu_request", names.len() as u64);
            return Ok(out);
        }
        let uid = args.pod.metadata.uid.as_deref().unwrap_or("");
        self.workload().observe(uid, &req);
        let (workload, workload_gen) = self.workload().current();
        let ctx = EvalContext {
            policy: self.policy(),
            workload: &workload,
            workload_gen,
            request: &req,
            seed: pod_seed(uid),
        };
        let mut counts = [0u64; 8];
        {
            let state = self.state();
            for name in names {
                let verdict = state.evaluate(name, &ctx, |view| match view {
                    NodeView::Unknown => Verdict::Unresolvable(NO_INVENTORY.to_string(), 0),
                    NodeView::Invalid(e) => {
                        Verdict::Unresolvable(format!("node GPU inventory unusable: {e}"), 1)
                    }
                    NodeView::Evaluated(Ok(_)) => Verdict::Fits,
                    NodeView::Evaluated(Err(unfit)) => {
                        let slot = 2 + cause_slot(unfit.cause());
                        if unresolvable(unfit) {
                            Verdict::Unresolvable(unfit.to_string(), slot)
                        } else {
                            Verdict::Failed(unfit.to_string(), slot)
                        }
                    }
                });
                match verdict {
                    Verdict::Fits => {
                        counts[7] += 1;
                        out.node_names.push(name.clone());
                    }
                    Verdict::Failed(reason, slot) => {
                        counts[slot] += 1;
                        out.failed_nodes.insert(name.clone(), reason);
                    }
                    Verdict::Unresolvable(reason, slot) => {
                        counts[slot] += 1;
                        out.failed_and_unresolvable_nodes
                            .insert(name.clone(), reason);
                    }
                }
            }
        }
        for (slot, n) in counts.iter().enumerate() {
            if *n > 0 {
                self.metrics().filter_outcome(OUTCOMES[slot], *n);
            }
        }
        Ok(out)
    }
}

enum Verdict {
    Fits,
    Failed(String, usize),
    Unresolvable(String, usize),
}

const OUTCOMES: [&str; 8] = [
    "no_inventory",
    "invalid_inventory",
    "no_gpu",
    "no_cpu",
    "model_mismatch",
    "mig_geometry",
    "numa",
    "fits",
];

fn cause_slot(c: Cause) -> usize {
    match c {
        Cause::NoGpu => 0,
        Cause::NoCpu => 1,
        Cause::ModelMismatch => 2,
        Cause::MigGeometry => 3,
        Cause::Numa => 4,
    }
}

/// Failures that evicting pods cannot cure, so preemption skips the node.
fn unresolvable(u: &Unfit) -> bool {
    matches!(
        u,
        Unfit::ModelMismatch { .. } | Unfit::UnknownProfile { .. }
    )
}

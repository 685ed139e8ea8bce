//! The `prioritize` verb: the policy's score of its best placement on each
//! node, rescaled to kube-scheduler's 0..10 extender range. Pure in-memory.

use kubesched_core::request::PodRequest;
use kubesched_core::scoring::Choice;

use super::cluster_state::NodeView;
use super::protocol::{ExtenderArgs, HostPriority, MAX_EXTENDER_PRIORITY, MIN_EXTENDER_PRIORITY};
use super::service::{Extender, VerbError};

/// Given to every node for pods that ask for no GPU: adds nothing, so the
/// in-tree plugins alone decide.
pub const NEUTRAL_SCORE: i64 = MIN_EXTENDER_PRIORITY;

impl Extender {
    /// The `prioritize` verb: a 0..10 score for every sent node.
    pub fn prioritize(&self, args: &ExtenderArgs) -> Result<Vec<HostPriority>, VerbError> {
        let names = args
            .node_names
            .as_ref()
            .ok_or(VerbError::MissingNodeNames)?;
        // A pod we cannot read was refused on every node by filter; a score adds nothing.
        let req = match self.pod_request(&args.pod) {
            Ok(req) => req,
            Err(error) => {
                tracing::info!(%error, "prioritize of a pod that cannot be served: all zero");
                PodRequest::cpu_only(0, 0)
            }
        };
        if req.gpu.is_none() {
            return Ok(names
                .iter()
                .map(|n| HostPriority {
                    host: n.clone(),
                    score: NEUTRAL_SCORE,
                })
                .collect());
        }
        let uid = args.pod.metadata.uid.as_deref().unwrap_or("");
        let ctx = self.eval_context(&req, uid);
        let raw: Vec<Option<f64>> = {
            let state = self.state();
            names
                .iter()
                .map(|name| {
                    state.evaluate(name, &ctx, |view| match view {
                        NodeView::Evaluated(Ok(Choice { score, .. })) => Some(*score),
                        _ => None,
                    })
                })
                .collect()
        };
        let scores = self.rescale(&raw);
        Ok(names
            .iter()
            .zip(scores)
            .map(|(n, score)| HostPriority {
                host: n.clone(),
                score,
            })
            .collect())
    }

    /// The policy's own normalisation, then min-max onto 0..10 across the
    /// nodes that fit; nodes that do not fit get 0.
    fn rescale(&self, raw: &[Option<f64>]) -> Vec<i64> {
        let mut fitting: Vec<f64> = raw.iter().flatten().copied().collect();
        self.policy().normalize(&mut fitting);
        let (lo, hi) = fitting
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(*s), hi.max(*s))
            });
        let mut it = fitting.into_iter();
        raw.iter()
            .map(|r| {
                if r.is_none() {
                    return MIN_EXTENDER_PRIORITY;
                }
                let s = it.next().unwrap_or(lo);
                if hi > lo {
                    ((s - lo) / (hi - lo) * MAX_EXTENDER_PRIORITY as f64).round() as i64
                } else {
                    MAX_EXTENDER_PRIORITY
                }
            })
            .collect()
    }
}

//! The `prioritize` verb: the policy's score of its best placement on each
//! node, rescaled to kube-scheduler's 0..10 extender range, ties ordered as the policy
//! breaks them. Pure in-memory.

use kubesched_core::request::PodRequest;
use kubesched_core::scoring::{Choice, TieBreak};

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
            // Sequential: filter, just before, evaluated these nodes for this pod (on all
            // cores if there were many new ones), so these are memo hits, cheaper than
            // starting threads.
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
        let scores = self.rescale(names, &raw);
        Ok(names
            .iter()
            .zip(scores)
            .map(|(n, score)| HostPriority {
                host: n.clone(),
                score,
            })
            .collect())
    }

    /// The policy's own normalisation, its tie rule, then min-max onto 0..10 across the nodes
    /// that fit; nodes that do not fit get 0.
    fn rescale(&self, names: &[String], raw: &[Option<f64>]) -> Vec<i64> {
        let mut fitting: Vec<f64> = raw.iter().flatten().copied().collect();
        self.policy().normalize(&mut fitting);
        if self.policy().tie_break() == TieBreak::First {
            let fitting_names: Vec<&str> = names
                .iter()
                .zip(raw)
                .filter(|(_, r)| r.is_some())
                .map(|(n, _)| n.as_str())
                .collect();
            order_ties(&mut fitting, &fitting_names);
        }
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

/// A policy that takes the first of equally scored nodes (its simulated and measured
/// behaviour: a fixed node order packs by itself) needs that order here too, or
/// kube-scheduler picks among the ties at random and spreads. The order is the node names':
/// the same in every call. Each score moves down by less than half the smallest gap between
/// distinct scores, so equal scores come apart by name and no other order changes.
fn order_ties(scores: &mut [f64], names: &[&str]) {
    let n = scores.len().min(names.len());
    // One sort, best first; names are compared only between equal scores.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then_with(|| names[a].cmp(names[b]))
    });
    let gap = order
        .windows(2)
        .map(|w| scores[w[0]] - scores[w[1]])
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min);
    let gap = if gap.is_finite() { gap } else { 1.0 };
    let mut start = 0;
    while start < n {
        let value = scores[order[start]];
        let end = order[start..]
            .iter()
            .position(|&i| scores[i] != value)
            .map_or(n, |p| start + p);
        let size = (end - start) as f64;
        for (rank, &i) in order[start..end].iter().enumerate() {
            scores[i] -= gap * 0.5 * rank as f64 / size;
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::order_ties;

    #[test]
    fn ties_come_apart_by_name_and_distinct_scores_keep_their_order() {
        let mut scores = [3.0, 3.0, 5.0, 3.0];
        order_ties(&mut scores, &["n-c", "n-a", "n-d", "n-b"]);
        // n-a > n-b > n-c among the 3s; n-d stays above them all.
        assert!(scores[1] > scores[3] && scores[3] > scores[0], "{scores:?}");
        assert!(scores[2] > scores[1], "{scores:?}");
        let mut all_equal = [0.0, 0.0];
        order_ties(&mut all_equal, &["b", "a"]);
        assert!(all_equal[1] > all_equal[0], "{all_equal:?}");
    }
}

//! The `preempt` verb: of the victim sets kube-scheduler chose by resource counts, keeps only
//! those whose eviction frees a legal placement for the pod (a GPU, a MIG position, NUMA
//! alignment), and spares the victims such a placement does not need. Counting free
//! `nvidia.com/mig-*` resources cannot see which MIG positions or NUMA nodes the evictions
//! free, so it can evict pods for nothing. Pure in-memory, no API calls.

use std::collections::{BTreeMap, HashSet};

use super::cluster_state::ClusterState;
use super::protocol::{
    ExtenderPreemptionArgs, ExtenderPreemptionResult, MetaPod, MetaVictims, Victims,
};
use super::service::Extender;
use kubesched_core::request::PodRequest;

impl Extender {
    /// The `preempt` verb: the candidate nodes where evicting (a subset of) their victims
    /// lets the pod in, with that subset.
    pub fn preempt(&self, args: &ExtenderPreemptionArgs) -> ExtenderPreemptionResult {
        let candidates = candidates(args);
        let req = match self.pod_request(&args.pod) {
            Ok(req) => req,
            Err(error) => {
                // Filter refused it everywhere as unresolvable; nothing is worth evicting.
                tracing::info!(%error, "preempt for a pod that cannot be served: no node");
                self.metrics()
                    .preemption_nodes("dropped", candidates.len() as u64);
                return ExtenderPreemptionResult::default();
            }
        };
        if req.gpu.is_none() {
            // Not ours to judge: kube-scheduler's choice stands.
            return ExtenderPreemptionResult {
                node_name_to_meta_victims: candidates,
            };
        }
        let state = self.state();
        let mut out = BTreeMap::new();
        let (mut dropped, mut spared, mut evicted) = (0u64, 0u64, 0u64);
        for (node, victims) in candidates {
            match needed_victims(&state, &node, &victims, &req) {
                Some(kept) => {
                    spared += (victims.pods.len() - kept.pods.len()) as u64;
                    evicted += kept.pods.len() as u64;
                    out.insert(node, kept);
                }
                None => {
                    tracing::debug!(node = %node, victims = victims.pods.len(),
                        "evicting these victims frees no legal placement; node dropped");
                    dropped += 1;
                }
            }
        }
        let metrics = self.metrics();
        metrics.preemption_nodes("kept", out.len() as u64);
        metrics.preemption_nodes("dropped", dropped);
        metrics.preemption_victims("evicted", evicted);
        metrics.preemption_victims("spared", spared);
        tracing::info!(kept = out.len(), dropped, spared, "preempt");
        ExtenderPreemptionResult {
            node_name_to_meta_victims: out,
        }
    }
}

/// The victims per node by UID, from whichever form kube-scheduler sent.
fn candidates(args: &ExtenderPreemptionArgs) -> BTreeMap<String, MetaVictims> {
    match (&args.node_name_to_meta_victims, &args.node_name_to_victims) {
        (Some(meta), _) => meta.clone(),
        (None, Some(full)) => full.iter().map(|(n, v)| (n.clone(), by_uid(v))).collect(),
        (None, None) => BTreeMap::new(),
    }
}

fn by_uid(victims: &Victims) -> MetaVictims {
    MetaVictims {
        pods: victims
            .pods
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .map(|uid| MetaPod { uid })
            .collect(),
        num_pdb_violations: victims.num_pdb_violations,
    }
}

/// The victims on `node` whose eviction the pod needs, or `None` when evicting them all
/// still leaves no legal placement. Victims come most important first; each is spared when
/// the pod fits without evicting it. Victims the state has no record of are always kept:
/// what they hold cannot be judged here.
fn needed_victims(
    state: &ClusterState,
    node: &str,
    victims: &MetaVictims,
    req: &PodRequest,
) -> Option<MetaVictims> {
    let fits =
        |evicted: &HashSet<&str>| matches!(state.fits_without(node, evicted, req), Some(Ok(())));
    let mut evicted: HashSet<&str> = victims.pods.iter().map(|p| p.uid.as_str()).collect();
    if !fits(&evicted) {
        return None;
    }
    for victim in &victims.pods {
        let uid = victim.uid.as_str();
        if state.pod(uid).is_none() {
            continue;
        }
        evicted.remove(uid);
        if !fits(&evicted) {
            evicted.insert(uid);
        }
    }
    Some(MetaVictims {
        pods: victims
            .pods
            .iter()
            .filter(|p| evicted.contains(p.uid.as_str()))
            .cloned()
            .collect(),
        num_pdb_violations: victims.num_pdb_violations,
    })
}

//! Scoring policies behind one trait, so the extender and the simulator run
//! the same code. A policy picks the best placement on one node and scores
//! it (higher is better), with a reason a human can read; each policy lives
//! in its own file.

mod best_fit;
mod dot_product;
mod dra;
mod fgd;
mod first_fit;
mod gpu_clustering;
mod gpu_packing;
mod hami;
mod hami_legacy;
mod mig_best_fit;
mod mig_layout;
mod production;
mod random;

pub use best_fit::BestFit;
pub use dot_product::DotProduct;
pub use dra::NvidiaDra;
pub use fgd::Fgd;
pub use first_fit::FirstFit;
pub use gpu_clustering::GpuClustering;
pub use gpu_packing::GpuPacking;
pub use hami::Hami;
pub use hami_legacy::HamiLegacy;
pub use mig_best_fit::MigBestFit;
pub use production::{Production, ProductionWeights};
pub use random::Random;

use crate::fragmentation::{NodeFrag, Workload};
use crate::node::NodeState;
use crate::placement::{self, Candidate, DeviceChoice, Unfit};
use crate::request::PodRequest;

/// What a policy may consult besides the node and the pod.
#[derive(Clone, Copy)]
pub struct ScoreContext<'a> {
    /// The target workload M that fragmentation is measured against.
    pub workload: &'a Workload,
    /// Per-pod seed for policies that draw at random.
    pub seed: u64,
    /// `NodeFrag::new(node, workload)`, when the caller caches it.
    pub frag: Option<&'a NodeFrag>,
}

/// The placement a policy picked on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The placement chosen on the node: devices and NUMA node.
    pub candidate: Candidate,
    /// Higher is better; comparable across nodes for one pod and policy.
    pub score: f64,
    /// Why, for logs, events and the report.
    pub reason: String,
}

/// A placement policy: scores a pod's candidate placements on one node so the caller can
/// pick the node and devices.
pub trait Policy: Send + Sync {
    /// The policy's name as configured and reported (`kubesched`, `fgd`, `best-fit`, ...).
    fn name(&self) -> &'static str;

    /// Scores one feasible candidate on `node`.
    fn score(
        &self,
        node: &NodeState,
        req: &PodRequest,
        cand: &Candidate,
        ctx: &ScoreContext,
    ) -> (f64, String);

    /// The best candidate on `node`, or why none fits.
    fn choose(
        &self,
        node: &NodeState,
        req: &PodRequest,
        ctx: &ScoreContext,
    ) -> Result<Choice, Unfit> {
        default_choose(self, node, req, ctx)
    }

    /// Rescales one pod's scores across nodes, as a kube-scheduler score
    /// plugin's NormalizeScore would. Identity unless a policy needs it.
    fn normalize(&self, _scores: &mut [f64]) {}

    /// How the caller breaks ties between equally scored nodes.
    fn tie_break(&self) -> TieBreak {
        TieBreak::Random
    }

    /// Whether a choice depends on which node it is (its name or device UUIDs), not only on
    /// its state: callers then may not reuse one node's outcome for another in the same state.
    fn uses_node_identity(&self) -> bool {
        false
    }
}

/// The candidate with the best score on `node` (the first of equals), or why none fits: what
/// `Policy::choose` does unless a policy ranks candidates otherwise.
pub(crate) fn default_choose<P: Policy + ?Sized>(
    policy: &P,
    node: &NodeState,
    req: &PodRequest,
    ctx: &ScoreContext,
) -> Result<Choice, Unfit> {
    let mut best: Option<Choice> = None;
    for candidate in placement::candidates(node, req)? {
        let (score, reason) = policy.score(node, req, &candidate, ctx);
        if best.as_ref().is_none_or(|b| score > b.score) {
            best = Some(Choice {
                candidate,
                score,
                reason,
            });
        }
    }
    best.ok_or_else(no_candidate)
}

/// `placement::candidates` never returns an empty list without an error; this keeps the
/// policies total anyway.
pub(crate) fn no_candidate() -> Unfit {
    Unfit::NoGpu {
        need: 1,
        free: 0,
        what: "placement".into(),
    }
}

/// Tie-breaking between nodes with equal scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TieBreak {
    /// Uniformly at random, as kube-scheduler does.
    Random,
    /// The first node in the caller's order (first-fit rules).
    First,
}

/// A policy's constructor.
type MakePolicy = fn() -> Box<dyn Policy>;

/// Every policy, by its name: the one list `by_name`, [`policy_names`], the configuration's
/// errors and the property tests read, so a policy cannot be accepted and left untested.
const POLICIES: &[(&str, MakePolicy)] = &[
    ("kubesched", || Box::new(Production::default())),
    ("fgd", || Box::new(Fgd)),
    ("best-fit", || Box::new(BestFit)),
    ("gpu-packing", || Box::new(GpuPacking)),
    ("gpu-clustering", || Box::new(GpuClustering)),
    ("dot-product", || Box::new(DotProduct)),
    ("random", || Box::new(Random)),
    ("first-fit", || Box::new(FirstFit)),
    ("hami-legacy", || Box::new(HamiLegacy)),
    ("hami", || Box::new(Hami)),
    ("nvidia-dra", || Box::new(NvidiaDra)),
    ("mig-best-fit", || Box::new(MigBestFit)),
];

/// Older spellings `by_name` still accepts, with the name they stand for.
const ALIASES: &[(&str, &str)] = &[
    ("production", "kubesched"),
    ("bestfit", "best-fit"),
    ("highest-start", "hami-legacy"),
];

/// Policies by name (or alias), for configuration and the simulator's `--policies`.
pub fn by_name(name: &str) -> Option<Box<dyn Policy>> {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, canonical)| canonical);
    POLICIES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, make)| make())
}

/// The names `by_name` accepts (aliases aside), in a stable order.
pub fn policy_names() -> impl Iterator<Item = &'static str> {
    POLICIES.iter().map(|(name, _)| *name)
}

/// A policy name nobody knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {name:?}; known: {}", policy_names().collect::<Vec<_>>().join(", "))]
pub struct UnknownPolicy {
    /// The name asked for.
    pub name: String,
}

/// `by_name`, with an error that lists the known names.
pub fn lookup(name: &str) -> Result<Box<dyn Policy>, UnknownPolicy> {
    by_name(name).ok_or_else(|| UnknownPolicy {
        name: name.to_string(),
    })
}

/// F_n(M) before and after `cand`, using the cached summary when given.
pub(crate) fn frag_before_after(
    node: &NodeState,
    req: &PodRequest,
    cand: &Candidate,
    ctx: &ScoreContext,
) -> (f64, f64) {
    let owned;
    let frag = match ctx.frag {
        Some(f) => f,
        None => {
            owned = NodeFrag::new(node, ctx.workload);
            &owned
        }
    };
    let before = frag.value(node.cpu_free_milli, node.memory_free_mib, ctx.workload);
    // A candidate from `placement::candidates` always applies; if it somehow
    // did not, score it as the worst case (everything stranded).
    let after = frag
        .value_after(node, ctx.workload, req, cand)
        .unwrap_or(node.free_milli() as f64);
    (before, after)
}

/// The ATC '23 artifact's node-size normalisation (milli-CPU, milli-GPU),
/// shared by its best-fit and dot-product scores.
pub(crate) const MAX_SPEC_CPU: f64 = 128_000.0;
pub(crate) const MAX_SPEC_GPU: f64 = 8_000.0;

/// A bonus below one score step for the tightest GPU that fits a share, so
/// a policy's GPU choice inside a node is best fit (the artifact's default).
pub(crate) fn tightness(node: &NodeState, cand: &Candidate) -> f64 {
    match cand.choice {
        DeviceChoice::Share { gpu, .. } => node
            .gpus
            .get(gpu)
            .map_or(0.0, |g| (1.0 - f64::from(g.free_milli()) / 1000.0) * 1e-3),
        _ => 0.0,
    }
}

/// (GPU position, start) of a candidate's first MIG slice, or its first GPU (start 0): the
/// device the in-order rules (`first-fit`, `hami-legacy`, `nvidia-dra`) rank a candidate by.
pub(crate) fn first_slot(cand: &Candidate) -> (usize, u8) {
    match &cand.choice {
        DeviceChoice::Mig(p) => p.first().map_or((0, 0), |p| (p.gpu, p.start)),
        DeviceChoice::Share { gpu, .. } => (*gpu, 0),
        DeviceChoice::Gpus(g) => (g.first().copied().unwrap_or(0), 0),
        DeviceChoice::None => (0, 0),
    }
}

/// The in-order rules' score of a slot: the lowest GPU position first, then on it the lowest
/// start (`from_top`: the highest). A start is below 8, so the GPU position decides.
pub(crate) fn in_order_score(gpu: usize, start: u8, from_top: bool) -> f64 {
    let within = if from_top {
        f64::from(start)
    } else {
        -f64::from(start)
    };
    -(gpu as f64) * 16.0 + within
}

/// Drops the within-node bonus: nodes compare on integer scores, as
/// kube-scheduler score plugins return them, and ties are broken at random.
pub(crate) fn truncate(scores: &mut [f64]) {
    for s in scores {
        *s = s.trunc();
    }
}

/// A small, fast, seedable hash for deterministic "random" choices.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Small H100 MIG nodes and requests the MIG baselines' tests share.
#[cfg(test)]
pub(crate) mod mig_test {
    use super::{Choice, Policy, ScoreContext};
    use crate::catalogue::mig_geometry;
    use crate::fragmentation::Workload;
    use crate::node::{GpuState, NodeState};
    use crate::placement::{self, Candidate, DeviceChoice, MigPick};
    use crate::request::{GpuDemand, PodRequest};

    /// `count` slices of `profile`, with 1 CPU and 1 GiB.
    pub(crate) fn slice(profile: &str, count: u32) -> PodRequest {
        PodRequest::cpu_only(1000, 1024).with_gpu(GpuDemand::Mig {
            profile: profile.into(),
            count,
        })
    }

    /// A node with 32 CPUs, 64 GiB and `gpus` empty dynamic-MIG H100-80GB, all on NUMA node 0.
    pub(crate) fn h100_node(name: &str, gpus: u32) -> NodeState {
        let mut node = NodeState::new(name, 32_000, 65_536);
        for i in 0..gpus {
            node.gpus.push(GpuState::dynamic_mig(
                i,
                &format!("M{i}"),
                "H100-80GB",
                Some(0),
                mig_geometry("H100-80GB").unwrap(),
            ));
        }
        node
    }

    /// Places one `profile` slice at `start` on GPU position `gpu`, as a pod would hold it.
    pub(crate) fn put(node: &mut NodeState, gpu: usize, profile: &str, start: u8) {
        let profile_idx = placement::profile_on(&node.gpus[gpu], profile).unwrap();
        let cand = Candidate {
            choice: DeviceChoice::Mig(vec![MigPick {
                gpu,
                profile: profile_idx,
                start,
            }]),
            numa: None,
        };
        placement::apply(node, &slice(profile, 1), &cand).unwrap();
    }

    /// What `policy` chooses for `req` on `node`.
    pub(crate) fn pick(policy: &dyn Policy, node: &NodeState, req: &PodRequest) -> Choice {
        let workload = Workload::from_counts(vec![(req.clone(), 1)]);
        let ctx = ScoreContext {
            workload: &workload,
            seed: 0,
            frag: None,
        };
        policy.choose(node, req, &ctx).unwrap()
    }

    /// (GPU position, start) of each slice of a MIG choice.
    pub(crate) fn slots(choice: &Choice) -> Vec<(usize, u8)> {
        match &choice.candidate.choice {
            DeviceChoice::Mig(p) => p.iter().map(|p| (p.gpu, p.start)).collect(),
            other => panic!("not a MIG choice: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_policy_is_built_under_its_own_name_and_aliases_resolve() {
        let names: Vec<&str> = policy_names().collect();
        assert_eq!(names.len(), POLICIES.len());
        for name in &names {
            let policy = by_name(name).unwrap();
            assert_eq!(policy.name(), *name);
        }
        for (alias, canonical) in ALIASES {
            assert!(!names.contains(alias), "{alias} is an alias, not a name");
            assert_eq!(by_name(alias).unwrap().name(), *canonical);
        }
        assert!(by_name("no-such-policy").is_none());
        let error = lookup("no-such-policy").err().unwrap();
        assert!(error.to_string().contains("mig-best-fit"), "{error}");
    }
}

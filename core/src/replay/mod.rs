//! Trace replay: online placement of a stream of pods on a simulated cluster
//! with one policy, as the FGD artifact replays the Alibaba trace (arrivals
//! only, failed pods dropped, workload topped up to a multiple of GPU
//! capacity, pod and node order shuffled per seed, ties broken at random).
//!
//! Pure: the caller loads nodes and pods and reports progress.

mod curve;

pub use curve::{Bucket, Curve};

use crate::fragmentation::{NodeFrag, Workload};
use crate::node::NodeState;
use crate::placement::{self, Candidate};
use crate::request::PodRequest;
use crate::rng::SplitMix64;
use crate::scoring::{Choice, Policy, ScoreContext, TieBreak};

/// Settings of one replay run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayConfig {
    /// Seed of every random choice: the pod and node shuffles, the top-up sampling and tie breaks.
    pub seed: u64,
    /// Top the workload up (or trim it) to this multiple of GPU capacity.
    pub tune_ratio: f64,
    /// Whether the pod stream is shuffled before it is topped up (the artifact does).
    pub shuffle_pods: bool,
    /// Whether the node order is shuffled before the replay starts.
    pub shuffle_nodes: bool,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            seed: 42,
            tune_ratio: 1.3,
            shuffle_pods: true,
            shuffle_nodes: true,
        }
    }
}

/// The arrival stream as the artifact builds it: the trace shuffled, then
/// topped up to `tune_ratio` × capacity with pods resampled from the trace
/// and appended (or, above the target, trimmed at random).
pub fn tune_and_shuffle(
    pods: &[PodRequest],
    capacity_milli: u64,
    cfg: &ReplayConfig,
) -> Vec<PodRequest> {
    let mut rng = SplitMix64::new(cfg.seed);
    let target = (cfg.tune_ratio * capacity_milli as f64) as u64;
    let mut out: Vec<PodRequest> = pods.to_vec();
    if cfg.shuffle_pods {
        rng.shuffle(&mut out);
    }
    let mut total: u64 = out.iter().map(|p| p.gpu.milli()).sum();
    if pods.iter().any(|p| p.gpu.milli() > 0) {
        if total < target {
            loop {
                let p = &pods[rng.below(pods.len())];
                let d = p.gpu.milli();
                if total + d > target {
                    break;
                }
                total += d;
                out.push(p.clone());
            }
        } else {
            while total > target && !out.is_empty() {
                let p = out.remove(rng.below(out.len()));
                total -= p.gpu.milli();
            }
        }
    }
    out
}

/// Outcome of one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// On `nodes()[node]`, with the policy's reason.
    Placed {
        /// Position of the chosen node in `Replay::nodes`.
        node: usize,
        /// The devices and NUMA node the pod got there.
        candidate: Candidate,
        /// The policy's explanation of its choice.
        reason: String,
    },
    /// No node could take the pod; it is dropped, not retried.
    Failed,
}

/// A cluster being filled by one policy.
pub struct Replay<'a> {
    nodes: Vec<NodeState>,
    frag: Vec<NodeFrag>,
    frag_value: Vec<f64>,
    workload: &'a Workload,
    policy: &'a dyn Policy,
    rng: SplitMix64,
    capacity_milli: u64,
    used_milli: u64,
    arrived_milli: u64,
    pod_seq: u64,
}

impl<'a> Replay<'a> {
    /// Starts a replay of `policy` on `nodes` (shuffled if `cfg` asks), measuring fragmentation
    /// against `workload`.
    pub fn new(
        mut nodes: Vec<NodeState>,
        policy: &'a dyn Policy,
        workload: &'a Workload,
        cfg: &ReplayConfig,
    ) -> Self {
        let rng = node_order(&mut nodes, cfg.seed, cfg.shuffle_nodes);
        let frag: Vec<NodeFrag> = nodes.iter().map(|n| NodeFrag::new(n, workload)).collect();
        let frag_value = nodes
            .iter()
            .zip(&frag)
            .map(|(n, f)| f.value(n.cpu_free_milli, n.memory_free_mib, workload))
            .collect();
        let capacity_milli = nodes.iter().map(NodeState::capacity_milli).sum();
        let used_milli = capacity_milli - nodes.iter().map(NodeState::free_milli).sum::<u64>();
        Replay {
            nodes,
            frag,
            frag_value,
            workload,
            policy,
            rng,
            capacity_milli,
            used_milli,
            arrived_milli: 0,
            pod_seq: 0,
        }
    }

    /// The nodes in replay order (after any shuffle), with their current occupancy.
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    /// Total GPU capacity of the cluster, in milli-GPU.
    pub fn capacity_milli(&self) -> u64 {
        self.capacity_milli
    }

    /// GPU share allocated so far, including what was in use at the start, in milli-GPU.
    pub fn used_milli(&self) -> u64 {
        self.used_milli
    }

    /// GPU demand of every pod stepped so far, placed or not, in milli-GPU.
    pub fn arrived_milli(&self) -> u64 {
        self.arrived_milli
    }

    /// Σ_n F_n(M), maintained incrementally.
    pub fn fragment_milli(&self) -> f64 {
        self.frag_value.iter().sum()
    }

    /// Schedules one pod: every node scored, the best taken (ties at random).
    pub fn step(&mut self, req: &PodRequest) -> Outcome {
        self.arrived_milli += req.gpu.milli();
        self.pod_seq += 1;
        let seed = self.rng.next_u64();
        let mut feasible: Vec<(usize, Choice)> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let ctx = ScoreContext {
                workload: self.workload,
                seed,
                frag: Some(&self.frag[i]),
            };
            if let Ok(choice) = self.policy.choose(node, req, &ctx) {
                feasible.push((i, choice));
            }
        }
        let Some((node, choice)) = pick(self.policy, &mut self.rng, feasible) else {
            return Outcome::Failed;
        };
        self.commit(node, req, &choice.candidate);
        Outcome::Placed {
            node,
            candidate: choice.candidate,
            reason: choice.reason,
        }
    }

    fn commit(&mut self, i: usize, req: &PodRequest, cand: &Candidate) {
        let node = &mut self.nodes[i];
        let before = node.free_milli();
        // The candidate came from `placement::candidates` on this very state.
        if placement::apply(node, req, cand).is_err() {
            return;
        }
        self.used_milli += before - node.free_milli();
        self.frag[i] = NodeFrag::new(node, self.workload);
        self.frag_value[i] =
            self.frag[i].value(node.cpu_free_milli, node.memory_free_mib, self.workload);
    }
}

/// Puts `nodes` in the replay's order for `seed` (shuffled if asked: first-fit rules and
/// fixed tie-breaks follow it) and returns the generator the replay's random choices use.
pub(crate) fn node_order(nodes: &mut [NodeState], seed: u64, shuffle: bool) -> SplitMix64 {
    let mut rng = SplitMix64::new(seed ^ 0x6e6f_6465);
    if shuffle {
        rng.shuffle(nodes);
    }
    rng
}

/// The node a policy takes among the feasible ones (in node order, with the policy's
/// choice on each): scores normalised as the policy asks, the best taken, ties broken by
/// the policy's rule (uniformly at random with `rng`, as kube-scheduler does, or the first).
pub(crate) fn pick(
    policy: &dyn Policy,
    rng: &mut SplitMix64,
    mut feasible: Vec<(usize, Choice)>,
) -> Option<(usize, Choice)> {
    if feasible.is_empty() {
        return None;
    }
    let mut scores: Vec<f64> = feasible.iter().map(|(_, c)| c.score).collect();
    policy.normalize(&mut scores);
    let best = match policy.tie_break() {
        TieBreak::Random => {
            let mut best = 0;
            let mut ties = 0;
            for (i, &s) in scores.iter().enumerate() {
                if s > scores[best] {
                    best = i;
                    ties = 1;
                } else if s == scores[best] {
                    ties += 1;
                    if rng.below(ties) == 0 {
                        best = i;
                    }
                }
            }
            best
        }
        // First maximal score: `max_by` keeps the last of equals, so reverse.
        TieBreak::First => scores
            .iter()
            .enumerate()
            .rev()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i),
    };
    Some(feasible.swap_remove(best))
}

/// Replays `pods` in order and returns the curve of the run.
pub fn run(replay: &mut Replay, pods: &[PodRequest], mut progress: impl FnMut(usize)) -> Curve {
    let mut curve = Curve::new(replay.capacity_milli());
    for (k, pod) in pods.iter().enumerate() {
        let outcome = replay.step(pod);
        curve.record(replay, pod, &outcome);
        progress(k + 1);
    }
    curve
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::GpuState;
    use crate::request::GpuDemand;
    use crate::scoring::{BestFit, Fgd};

    fn cluster(n: usize, gpus: u32) -> Vec<NodeState> {
        (0..n)
            .map(|i| {
                let mut node = NodeState::new(format!("n{i}"), 64_000, 1 << 20);
                for g in 0..gpus {
                    node.gpus
                        .push(GpuState::plain(g, &format!("n{i}g{g}"), "T4", None));
                }
                node
            })
            .collect()
    }

    fn share(m: u32) -> PodRequest {
        PodRequest::cpu_only(4000, 0).with_gpu(GpuDemand::Share { milli: m })
    }

    #[test]
    fn tuning_tops_up_to_the_target_and_keeps_the_mix() {
        let pods = vec![
            share(500),
            PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Whole { count: 1 }),
        ];
        let cfg = ReplayConfig {
            seed: 7,
            ..Default::default()
        };
        let out = tune_and_shuffle(&pods, 100_000, &cfg);
        let total: u64 = out.iter().map(|p| p.gpu.milli()).sum();
        assert!(total <= 130_000 && total > 128_000, "{total}");
        assert_eq!(
            out,
            tune_and_shuffle(&pods, 100_000, &cfg),
            "deterministic per seed"
        );
    }

    #[test]
    fn fgd_keeps_whole_gpus_free_where_random_order_would_not() {
        // Two 2-GPU nodes; half-GPU pods then whole-GPU pods: FGD pairs the
        // halves on one GPU so all three whole-GPU pods fit.
        let nodes = cluster(2, 2);
        let pods = vec![
            share(500),
            share(500),
            PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Whole { count: 1 }),
        ];
        let workload = Workload::from_requests(&pods, 1.0);
        let cfg = ReplayConfig {
            shuffle_nodes: false,
            ..Default::default()
        };
        let stream = [share(500), share(500)]
            .into_iter()
            .chain(std::iter::repeat_n(
                PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Whole { count: 1 }),
                3,
            ))
            .collect::<Vec<_>>();
        let mut replay = Replay::new(nodes, &Fgd, &workload, &cfg);
        let curve = run(&mut replay, &stream, |_| {});
        assert_eq!(curve.failed_pods(), 0);
        assert_eq!(replay.used_milli(), 4000);
        assert!(replay.fragment_milli().abs() < 1e-9);
    }

    #[test]
    fn the_stream_is_the_shuffled_trace_then_the_resampled_tail() {
        let pods: Vec<PodRequest> = (1..=20).map(|m| share(m * 10)).collect();
        let cfg = ReplayConfig {
            seed: 3,
            ..Default::default()
        };
        let out = tune_and_shuffle(&pods, 10_000, &cfg);
        let mut head: Vec<u64> = out[..20].iter().map(|p| p.gpu.milli()).collect();
        head.sort_unstable();
        assert_eq!(
            head,
            (1..=20).map(|m| m * 10).collect::<Vec<u64>>(),
            "every original pod first"
        );
        assert_ne!(out[..20], pods[..], "shuffled");
        assert!(out.len() > 20);
    }

    #[test]
    fn first_fit_rules_take_the_first_node_in_order() {
        let nodes = cluster(4, 2);
        let whole = PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Whole { count: 1 });
        let workload = Workload::from_requests([&whole], 1.0);
        let cfg = ReplayConfig {
            shuffle_nodes: false,
            ..Default::default()
        };
        let mut replay = Replay::new(nodes, &crate::scoring::FirstFit, &workload, &cfg);
        for expected in [0, 0, 1, 1, 2] {
            match replay.step(&whole) {
                Outcome::Placed { node, .. } => assert_eq!(node, expected),
                Outcome::Failed => panic!("room left"),
            }
        }
    }

    #[test]
    fn failed_pods_are_dropped_and_counted() {
        let nodes = cluster(1, 1);
        let whole = PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Whole { count: 1 });
        let workload = Workload::from_requests([&whole], 1.0);
        let mut replay = Replay::new(nodes, &BestFit, &workload, &ReplayConfig::default());
        let curve = run(&mut replay, &[whole.clone(), whole.clone(), whole], |_| {});
        assert_eq!(curve.failed_pods(), 2);
        assert_eq!(replay.used_milli(), 1000);
        assert_eq!(replay.arrived_milli(), 3000);
    }
}

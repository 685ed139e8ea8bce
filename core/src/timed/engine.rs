//! The timed replay's event loop: jobs arrive at their time and are placed at
//! once or wait; a placed job holds its devices, CPU and memory until it ends
//! (and, on a dynamic-MIG GPU, until its instance is destroyed); after every
//! departure the waiting jobs are retried in arrival order, and one that does
//! not fit does not hold up those behind it (kube-scheduler's queue behaves so).
//!
//! Retries stay cheap under saturation: a job shape that fit nowhere stays
//! unplaceable until a node frees something, so only nodes freed since it last
//! failed are looked at again, and one failure per shape and round settles all
//! jobs of that shape.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::job::Job;
use super::metrics::{Recorder, TimedMetrics, Window};
use super::occupancy::{Meter, Occupancy};
use super::totals::FreeTotals;
use crate::fragmentation::{NodeFrag, Workload};
use crate::inventory::MigMode;
use crate::node::{GpuSlots, NodeState};
use crate::placement::{self, Candidate, DeviceChoice};
use crate::replay::{node_order, pick};
use crate::request::PodRequest;
use crate::rng::SplitMix64;
use crate::scoring::{Choice, Policy, ScoreContext};

/// Settings of one timed replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedConfig {
    /// Seed of the node shuffle and the policies' random choices.
    pub seed: u64,
    /// Shuffle the node order per seed (first-fit rules and fixed tie-breaks follow it).
    pub shuffle_nodes: bool,
    /// Creating a dynamic MIG instance: its positions are held this long before the pod runs.
    pub create_delay_ms: u64,
    /// Destroying a dynamic MIG instance: its positions stay held this long after the pod ends.
    pub destroy_delay_ms: u64,
    /// Share of the arrivals (0 to 1) before the measured window opens.
    pub warmup: f64,
    /// Points of the over-time series.
    pub samples: usize,
}

impl Default for TimedConfig {
    fn default() -> Self {
        TimedConfig {
            seed: 42,
            shuffle_nodes: true,
            create_delay_ms: 0,
            destroy_delay_ms: 0,
            warmup: 0.1,
            samples: 100,
        }
    }
}

/// What became of one job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobRecord {
    /// When it was placed.
    pub placed_ms: Option<u64>,
    /// When it finished running (placement, instance creation and run time).
    pub end_ms: Option<u64>,
    /// When its devices were given back (its end, plus instance destruction).
    pub released_ms: Option<u64>,
    /// Position of its node in `TimedReplay::nodes`.
    pub node: Option<usize>,
    /// It waited at some point although the cluster's free capacity in total would have held it.
    pub request_fragmented: bool,
}

/// One job's devices while it holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    /// Index of the job in the replay's job list.
    pub job: usize,
    /// Position of the node in `TimedReplay::nodes`.
    pub node: usize,
    /// What it holds there.
    pub candidate: Candidate,
}

/// The cluster, the clock and the queue of one timed replay with one policy.
pub struct TimedReplay<'a> {
    jobs: &'a [Job],
    order: Vec<usize>,
    next_arrival: usize,
    nodes: Vec<NodeState>,
    frag: Vec<NodeFrag>,
    workload: &'a Workload,
    policy: &'a dyn Policy,
    rng: SplitMix64,
    cfg: TimedConfig,
    now: u64,
    releases: BinaryHeap<Reverse<(u64, usize)>>,
    holdings: HashMap<usize, Holding>,
    pending: Vec<usize>,
    records: Vec<JobRecord>,
    shape: Vec<usize>,
    requests: Vec<PodRequest>,
    failed_at: Vec<Option<usize>>,
    placeable: Vec<bool>,
    freed: Vec<usize>,
    meter: Meter,
    node_occupancy: Vec<Occupancy>,
    node_free: Vec<FreeTotals>,
    free: FreeTotals,
    recorder: Recorder,
}

impl<'a> TimedReplay<'a> {
    /// A replay of `jobs` (any order: they are taken by arrival time) on `nodes` under
    /// `policy`, measuring fragmentation against `workload`.
    pub fn new(
        mut nodes: Vec<NodeState>,
        jobs: &'a [Job],
        policy: &'a dyn Policy,
        workload: &'a Workload,
        cfg: &TimedConfig,
    ) -> Self {
        let rng = node_order(&mut nodes, cfg.seed, cfg.shuffle_nodes);
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by_key(|&j| jobs[j].arrival_ms);
        let mut requests: Vec<PodRequest> = Vec::new();
        let mut index: HashMap<&PodRequest, usize> = HashMap::new();
        let shape = jobs
            .iter()
            .map(|j| {
                *index.entry(&j.request).or_insert_with(|| {
                    requests.push(j.request.clone());
                    requests.len() - 1
                })
            })
            .collect();
        // A shape no node can take as the replay starts would wait forever: it is left out
        // on arrival.
        let placeable = requests
            .iter()
            .map(|r| nodes.iter().any(|n| placement::candidates(n, r).is_ok()))
            .collect();
        let mut meter = Meter::default();
        let node_occupancy: Vec<Occupancy> = nodes.iter().map(|n| meter.node(n)).collect();
        let node_free: Vec<FreeTotals> = nodes.iter().map(FreeTotals::of).collect();
        let mut occupancy = Occupancy::default();
        node_occupancy.iter().for_each(|o| occupancy.add(o, 1.0));
        let mut free = FreeTotals::default();
        node_free.iter().for_each(|f| free.add(f, 1));
        let first_arrival = order.first().map_or(0, |&j| jobs[j].arrival_ms);
        let last_arrival = order.last().map_or(0, |&j| jobs[j].arrival_ms);
        let window = Window::new(first_arrival, last_arrival, cfg.warmup);
        let recorder = Recorder::new(window, occupancy, last_arrival, cfg.samples);
        TimedReplay {
            jobs,
            next_arrival: 0,
            frag: nodes.iter().map(|n| NodeFrag::new(n, workload)).collect(),
            nodes,
            workload,
            policy,
            rng,
            cfg: *cfg,
            now: 0,
            releases: BinaryHeap::new(),
            holdings: HashMap::new(),
            pending: Vec::new(),
            records: vec![JobRecord::default(); jobs.len()],
            failed_at: vec![None; requests.len()],
            placeable,
            shape,
            requests,
            order,
            freed: Vec::new(),
            meter,
            node_occupancy,
            node_free,
            free,
            recorder,
        }
    }

    /// The nodes in replay order, as they are now.
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    /// The virtual time of the last event processed, in milliseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Jobs waiting, in arrival order.
    pub fn pending(&self) -> &[usize] {
        &self.pending
    }

    /// What every running (or not yet released) job holds.
    pub fn holdings(&self) -> impl Iterator<Item = &Holding> {
        self.holdings.values()
    }

    /// Jobs that have arrived so far.
    pub fn arrived(&self) -> usize {
        self.next_arrival
    }

    /// Processes every event of the next instant: releases first, then arrivals,
    /// then one retry of the waiting jobs if anything was freed. False when no event is left.
    pub fn step(&mut self) -> bool {
        let next_release = self.releases.peek().map(|Reverse((t, _))| *t);
        let next_arrival = self
            .order
            .get(self.next_arrival)
            .map(|&j| self.jobs[j].arrival_ms);
        let Some(t) = [next_release, next_arrival].into_iter().flatten().min() else {
            return false;
        };
        self.recorder.advance(t, self.pending.len());
        self.now = t;
        let mut freed_any = false;
        while let Some(Reverse((at, job))) = self.releases.peek().copied()
            && at == t
        {
            self.releases.pop();
            self.release(job);
            freed_any = true;
        }
        if freed_any {
            self.retry();
        }
        while let Some(&job) = self.order.get(self.next_arrival)
            && self.jobs[job].arrival_ms == t
        {
            self.next_arrival += 1;
            if !self.placeable[self.shape[job]] {
                continue;
            }
            if !self.try_place(job) {
                self.pending.push(job);
            }
        }
        true
    }

    /// Runs to the end and returns the per-job records and the window's metrics.
    pub fn finish(mut self, mut progress: impl FnMut(usize, usize)) -> TimedRun {
        let total = self.jobs.len();
        let mut last = 0;
        while self.step() {
            if self.next_arrival != last {
                last = self.next_arrival;
                progress(last, total);
            }
        }
        progress(self.next_arrival, total);
        self.recorder.advance(self.now, self.pending.len());
        let metrics = self.recorder.metrics(self.jobs, &self.records, self.now);
        TimedRun {
            metrics,
            series: self.recorder.series().to_vec(),
            records: self.records,
        }
    }

    fn retry(&mut self) {
        let waiting = std::mem::take(&mut self.pending);
        for job in waiting {
            if !self.try_place(job) {
                self.pending.push(job);
            }
        }
    }

    /// Places `job` where the policy likes best, or notes why it waits.
    fn try_place(&mut self, job: usize) -> bool {
        let shape = self.shape[job];
        let epoch = self.freed.len();
        let feasible = match self.failed_at[shape] {
            // Nothing freed since this shape last fit nowhere.
            Some(at) if at == epoch => Vec::new(),
            since => self.feasible(shape, since),
        };
        let Some((node, choice)) = pick(self.policy, &mut self.rng, feasible) else {
            self.failed_at[shape] = Some(epoch);
            if !self.records[job].request_fragmented
                && self.free.would_hold(&self.jobs[job].request)
            {
                self.records[job].request_fragmented = true;
            }
            return false;
        };
        self.commit(job, node, choice.candidate);
        true
    }

    /// Every node that can take `shape`, with the policy's choice there: all nodes, or
    /// only those freed since the shape last fit nowhere.
    fn feasible(&mut self, shape: usize, since: Option<usize>) -> Vec<(usize, Choice)> {
        let look: Vec<usize> = match since {
            Some(at) if self.freed.len() - at < self.nodes.len() => {
                let mut v = self.freed[at..].to_vec();
                v.sort_unstable();
                v.dedup();
                v
            }
            _ => (0..self.nodes.len()).collect(),
        };
        let req = &self.requests[shape];
        let seed = self.rng.next_u64();
        look.into_iter()
            .filter_map(|i| {
                let ctx = ScoreContext {
                    workload: self.workload,
                    seed,
                    frag: Some(&self.frag[i]),
                };
                self.policy
                    .choose(&self.nodes[i], req, &ctx)
                    .ok()
                    .map(|c| (i, c))
            })
            .collect()
    }

    fn commit(&mut self, job: usize, node: usize, candidate: Candidate) {
        let req = &self.jobs[job].request;
        let runtime = self.jobs[job].runtime_ms(&self.nodes[node], &candidate);
        // The candidate came from `placement::candidates` on this very state.
        if placement::apply(&mut self.nodes[node], req, &candidate).is_err() {
            return;
        }
        let dynamic = holds_dynamic_mig(&self.nodes[node], &candidate.choice);
        let (create, destroy) = if dynamic {
            (self.cfg.create_delay_ms, self.cfg.destroy_delay_ms)
        } else {
            (0, 0)
        };
        // Lengths come from job files: a huge one saturates at the end of time.
        let end = self.now.saturating_add(create).saturating_add(runtime);
        let released = end.saturating_add(destroy);
        let record = &mut self.records[job];
        record.placed_ms = Some(self.now);
        record.end_ms = Some(end);
        record.released_ms = Some(released);
        record.node = Some(node);
        self.releases.push(Reverse((released, job)));
        self.holdings.insert(
            job,
            Holding {
                job,
                node,
                candidate,
            },
        );
        self.node_changed(node);
    }

    fn release(&mut self, job: usize) {
        let Some(holding) = self.holdings.remove(&job) else {
            return;
        };
        let node = holding.node;
        if placement::release(
            &mut self.nodes[node],
            &self.jobs[job].request,
            &holding.candidate,
        )
        .is_err()
        {
            return;
        }
        self.freed.push(node);
        self.node_changed(node);
    }

    fn node_changed(&mut self, i: usize) {
        let node = &self.nodes[i];
        self.frag[i] = NodeFrag::new(node, self.workload);
        let occupancy = self.meter.node(node);
        self.recorder.replace(&self.node_occupancy[i], &occupancy);
        self.node_occupancy[i] = occupancy;
        let free = FreeTotals::of(node);
        self.free.add(&self.node_free[i], -1);
        self.free.add(&free, 1);
        self.node_free[i] = free;
    }
}

/// Whether the choice holds an instance on a dynamic-MIG GPU (created for the pod).
fn holds_dynamic_mig(node: &NodeState, choice: &DeviceChoice) -> bool {
    let DeviceChoice::Mig(picks) = choice else {
        return false;
    };
    picks.iter().any(|p| {
        node.gpus
            .get(p.gpu)
            .is_some_and(|g| matches!(&g.slots, GpuSlots::Mig(m) if m.mode == MigMode::Dynamic))
    })
}

/// The outcome of one timed replay.
#[derive(Debug, Clone)]
pub struct TimedRun {
    /// Per job, in the order given.
    pub records: Vec<JobRecord>,
    /// The measured window's figures.
    pub metrics: TimedMetrics,
    /// Cluster figures over time.
    pub series: Vec<super::metrics::SeriesPoint>,
}

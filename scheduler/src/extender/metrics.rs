//! Prometheus metrics (OpenMetrics text via prometheus-client): per-verb
//! request counts and latency, filter outcomes by reason, binds and
//! conflicts, full lists loaded by the watches, and capacity-planning gauges (per GPU and cluster-wide)
//! refreshed from a snapshot of the cluster state at scrape time; the cost series are in
//! [`super::cost_metrics`].

use std::sync::atomic::AtomicU64;

use kubesched_core::fragmentation::{self, Workload};
use kubesched_core::node::NodeState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::cost_metrics::CostMetrics;
use super::outcome::{BindOutcome, FilterOutcome};

type FGauge = Gauge<f64, AtomicU64>;

/// Labels of the request latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// Extender verb served (`filter`, `prioritize`, `bind`).
    pub verb: &'static str,
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Extender verb served (`filter`, `prioritize`, `bind`).
    pub verb: &'static str,
    /// HTTP status code of the response.
    pub code: u16,
}

/// Labels of the filter-node and bind counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Filter outcome (`fits`, or why not) or bind result (`bound`, `conflict`, ...).
    pub outcome: &'static str,
}

/// Labels of the watch-list and task-restart counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// Watched resource or background task (`nodes`, `pods`, `reservations`).
    pub resource: &'static str,
}

/// Labels of a per-GPU capacity gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    /// Name of the node the GPU is on.
    pub node: String,
    /// The GPU's index on its node.
    pub gpu: String,
}

/// Labels of a per-GPU, per-MIG-profile capacity gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuProfileLabels {
    /// Name of the node the GPU is on.
    pub node: String,
    /// The GPU's index on its node.
    pub gpu: String,
    /// MIG profile name, e.g. `1g.10gb`.
    pub profile: String,
}

/// Labels of the stranded GPU share gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StrandedLabels {
    /// Readable name of the target workload's task type (`mig 3g.40gb`, `2 gpu`, ...).
    pub task: String,
    /// Why the idle GPU share is unusable for it (`too_small`, `mig_geometry`, ...).
    pub cause: String,
}

/// The extender's Prometheus registry and every metric it exports
/// (prefixed `kubesched_extender_`).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<VerbLabels, Histogram, fn() -> Histogram>,
    filter_nodes: Family<OutcomeLabels, Counter>,
    binds: Family<OutcomeLabels, Counter>,
    preemption_nodes: Family<OutcomeLabels, Counter>,
    preemption_victims: Family<OutcomeLabels, Counter>,
    reservations: Gauge,
    reservation_checks: Family<OutcomeLabels, Counter>,
    node_states: Gauge,
    watch_lists: Family<ResourceLabels, Counter>,
    task_restarts: Family<ResourceLabels, Counter>,
    gpu_free_positions: Family<GpuLabels, Gauge>,
    gpu_largest_profile: Family<GpuProfileLabels, Gauge>,
    gpu_profile_fits: Family<GpuProfileLabels, Gauge>,
    unallocated_ratio: FGauge,
    fragment_milli: FGauge,
    fragment_amount_ratio: FGauge,
    fragment_ratio: FGauge,
    stranded_milli: Family<StrandedLabels, FGauge>,
    cost: CostMetrics,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~3.3 s: filter answers in about a millisecond, binds in tens.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric, all at zero, in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubesched_extender");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Extender calls by verb and HTTP status",
            requests.clone(),
        );
        let latency = Family::<VerbLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Extender call latency by verb, body parsing included",
            latency.clone(),
        );
        let filter_nodes = Family::<OutcomeLabels, Counter>::default();
        let preemption_nodes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "preemption_nodes",
            "Candidate nodes of preempt calls: kept (evicting frees a legal placement) or dropped",
            preemption_nodes.clone(),
        );
        let preemption_victims = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "preemption_victims",
            "Victims kube-scheduler proposed on kept nodes: evicted, or spared as not needed",
            preemption_victims.clone(),
        );
        registry.register(
            "filter_nodes",
            "Nodes judged by filter, by outcome (fits, or why not)",
            filter_nodes.clone(),
        );
        let binds = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "binds",
            "Bind calls by result (bound, conflict, no_fit, api_error, unknown_pod)",
            binds.clone(),
        );
        let reservations = Gauge::default();
        registry.register(
            "reservations",
            "Device reservations held until the watch shows the bound pod",
            reservations.clone(),
        );
        let reservation_checks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reservation_checks",
            "Reservations the watch left unconfirmed, checked against the API server, by what \
             was done (released, recorded, kept, stale, api_error)",
            reservation_checks.clone(),
        );
        let node_states = Gauge::default();
        registry.register(
            "node_states",
            "Distinct GPU node states: nodes in one state share their evaluations, so the first \
             pod of a new request shape costs one evaluation per state",
            node_states.clone(),
        );
        let watch_lists = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "watch_lists",
            "Full lists loaded by the Node and Pod watches: the first, then one after each break",
            watch_lists.clone(),
        );
        let task_restarts = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "task_restarts",
            "Background tasks (the nodes and pods watches, reservation expiry and checks) restarted after they ended or panicked",
            task_restarts.clone(),
        );
        let gpu_free_positions = Family::<GpuLabels, Gauge>::default();
        registry.register(
            "gpu_free_mig_positions",
            "Free MIG memory positions per GPU",
            gpu_free_positions.clone(),
        );
        let gpu_largest_profile = Family::<GpuProfileLabels, Gauge>::default();
        registry.register(
            "gpu_largest_placeable_profile",
            "1 for the largest MIG profile each GPU can still host",
            gpu_largest_profile.clone(),
        );
        let gpu_profile_fits = Family::<GpuProfileLabels, Gauge>::default();
        registry.register(
            "gpu_profile_fits",
            "How many more instances of each MIG profile fit on each GPU",
            gpu_profile_fits.clone(),
        );
        let unallocated_ratio = FGauge::default();
        registry.register(
            "cluster_gpu_unallocated_ratio",
            "Unallocated GPU share over GPU capacity",
            unallocated_ratio.clone(),
        );
        let fragment_milli = FGauge::default();
        registry.register(
            "cluster_fragmentation_milli_gpu",
            "Expected fragmentation (FGD) summed over nodes, in thousandths of a GPU",
            fragment_milli.clone(),
        );
        let fragment_amount_ratio = FGauge::default();
        registry.register(
            "cluster_fragmentation_amount_ratio",
            "Fragmentation over GPU capacity",
            fragment_amount_ratio.clone(),
        );
        let fragment_ratio = FGauge::default();
        registry.register(
            "cluster_fragmentation_ratio",
            "Fragmentation over unallocated GPU share",
            fragment_ratio.clone(),
        );
        let stranded_milli = Family::<StrandedLabels, FGauge>::default();
        registry.register(
            "cluster_stranded_milli_gpu",
            "Unallocated GPU share a task type of the target workload cannot use, by cause",
            stranded_milli.clone(),
        );
        let cost = CostMetrics::register(&mut registry);
        Metrics {
            cost,
            registry,
            requests,
            latency,
            filter_nodes,
            binds,
            preemption_nodes,
            preemption_victims,
            reservations,
            reservation_checks,
            node_states,
            watch_lists,
            task_restarts,
            gpu_free_positions,
            gpu_largest_profile,
            gpu_profile_fits,
            unallocated_ratio,
            fragment_milli,
            fragment_amount_ratio,
            fragment_ratio,
            stranded_milli,
        }
    }

    /// Counts one extender call by verb and HTTP status and records its latency in seconds.
    pub fn observe_request(&self, verb: &'static str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { verb, code })
            .inc();
        self.latency
            .get_or_create(&VerbLabels { verb })
            .observe(seconds);
    }

    /// Counts `nodes` nodes that filter judged with this outcome.
    pub fn filter_outcome(&self, outcome: FilterOutcome, nodes: u64) {
        self.filter_nodes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc_by(nodes);
    }

    /// Counts `nodes` candidate nodes of a preempt call as `kept` or `dropped`.
    pub fn preemption_nodes(&self, outcome: &'static str, nodes: u64) {
        self.preemption_nodes
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(nodes);
    }

    /// Counts `victims` proposed victims on kept nodes as `evicted` or `spared`.
    pub fn preemption_victims(&self, outcome: &'static str, victims: u64) {
        self.preemption_victims
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(victims);
    }

    /// Counts one bind call by how it ended.
    pub fn bind_result(&self, outcome: BindOutcome) {
        self.binds
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Sets the gauge of reservations held until the watch shows the bound pod.
    pub fn set_reservations(&self, n: usize) {
        self.reservations.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts one check of an unconfirmed reservation by what it did.
    pub fn reservation_checked(&self, outcome: &'static str) {
        self.reservation_checks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Sets the gauge of distinct GPU node states.
    pub fn set_node_states(&self, n: usize) {
        self.node_states.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A watch of `resource` (`nodes`, `pods`) loaded a full list.
    pub fn watch_listed(&self, resource: &'static str) {
        self.watch_lists
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    /// The background task `resource` (`nodes`, `pods`, `reservations`) ended and restarts.
    pub fn task_restarted(&self, resource: &'static str) {
        self.task_restarts
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    /// Recomputes the state gauges from node snapshots (called off the
    /// request path, on a copy, so scrapes never hold the state lock long).
    pub fn refresh_state(&self, nodes: &[&NodeState], workload: &Workload, per_gpu: bool) {
        self.gpu_free_positions.clear();
        self.gpu_largest_profile.clear();
        self.gpu_profile_fits.clear();
        if per_gpu {
            for n in nodes {
                for g in &n.gpus {
                    let Some(cap) = fragmentation::mig_capacity(g) else {
                        continue;
                    };
                    let gpu = g.index.to_string();
                    let labels = GpuLabels {
                        node: n.name.clone(),
                        gpu: gpu.clone(),
                    };
                    self.gpu_free_positions
                        .get_or_create(&labels)
                        .set(i64::from(cap.free_positions));
                    if let Some(p) = cap.largest_placeable {
                        self.gpu_largest_profile
                            .get_or_create(&GpuProfileLabels {
                                node: n.name.clone(),
                                gpu: gpu.clone(),
                                profile: p,
                            })
                            .set(1);
                    }
                    for (profile, count) in cap.fits {
                        self.gpu_profile_fits
                            .get_or_create(&GpuProfileLabels {
                                node: n.name.clone(),
                                gpu: gpu.clone(),
                                profile,
                            })
                            .set(i64::from(count));
                    }
                }
            }
        }
        let c = fragmentation::cluster_fragmentation(nodes.iter().copied(), workload);
        self.unallocated_ratio.set(c.unallocated_pct() / 100.0);
        self.fragment_milli.set(c.fragment_milli);
        self.fragment_amount_ratio.set(c.amount_pct() / 100.0);
        self.fragment_ratio.set(c.ratio_pct() / 100.0);
        self.stranded_milli.clear();
        for t in &c.per_task {
            for (cause, milli) in &t.by_cause {
                self.stranded_milli
                    .get_or_create(&StrandedLabels {
                        task: t.task.clone(),
                        cause: cause.as_str().to_string(),
                    })
                    .set(*milli as f64);
            }
        }
    }

    /// The cost series ([`CostMetrics`]).
    pub fn cost(&self) -> &CostMetrics {
        &self.cost
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesched_core::catalogue::mig_geometry;
    use kubesched_core::node::GpuState;
    use kubesched_core::placement::Cause;
    use kubesched_core::request::{GpuDemand, PodRequest};

    #[test]
    fn exposes_verb_and_capacity_series() {
        let m = Metrics::new();
        m.observe_request("filter", 200, 0.0007);
        m.filter_outcome(FilterOutcome::Unfit(Cause::MigGeometry), 3);
        m.bind_result(BindOutcome::Conflict);
        m.watch_listed("pods");
        m.watch_listed("pods");
        let mut node = NodeState::new("gpu-1", 8000, 8192);
        node.gpus.push(GpuState::dynamic_mig(
            0,
            "G0",
            "H100-80GB",
            Some(0),
            mig_geometry("H100-80GB").unwrap(),
        ));
        let w = Workload::from_counts([(
            PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Mig {
                profile: "7g.80gb".into(),
                count: 1,
            }),
            1,
        )]);
        m.refresh_state(&[&node], &w, true);
        let text = m.encode().unwrap();
        for line in [
            "kubesched_extender_requests_total{verb=\"filter\",code=\"200\"} 1",
            "kubesched_extender_filter_nodes_total{outcome=\"mig_geometry\"} 3",
            "kubesched_extender_binds_total{outcome=\"conflict\"} 1",
            "kubesched_extender_watch_lists_total{resource=\"pods\"} 2",
            "kubesched_extender_gpu_free_mig_positions{node=\"gpu-1\",gpu=\"0\"} 8",
            "kubesched_extender_gpu_largest_placeable_profile{node=\"gpu-1\",gpu=\"0\",profile=\"7g.80gb\"} 1",
            "kubesched_extender_gpu_profile_fits{node=\"gpu-1\",gpu=\"0\",profile=\"1g.10gb\"} 7",
            "kubesched_extender_cluster_gpu_unallocated_ratio 1.0",
            "kubesched_extender_cluster_fragmentation_ratio 0.0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("kubesched_extender_request_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
    }
}

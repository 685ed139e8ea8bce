//! The cost metrics: GPUs and their cost per hour by state (allocated, idle, stranded), per
//! pool and per namespace, refreshed at each scrape from the cluster state and the
//! configured prices; and per pool, GPU-hours and cost added up over time (counters), so a
//! dashboard reads the cost of any range with `increase()`.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use kubesched_core::planning::cost::{CostLine, CostReport};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

type FGauge = Gauge<f64, AtomicU64>;
type FCounter = Counter<f64, AtomicU64>;

/// A gap between scrapes longer than this (the extender was not scraped, or just started)
/// is not added to the counters: the state in between is unknown.
const MAX_GAP_HOURS: f64 = 0.25;

/// Labels of the per-pool cost series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// The node pool.
    pub pool: String,
    /// `allocated`, `idle` or `stranded`.
    pub state: &'static str,
}

/// Labels of the per-namespace cost series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// The namespace (or `(no GPU pod)` for stranded capacity no GPU pod left).
    pub namespace: String,
    /// `allocated` or `stranded`.
    pub state: &'static str,
}

/// The cost series.
pub struct CostMetrics {
    pool_gpus: Family<PoolLabels, FGauge>,
    pool_cost: Family<PoolLabels, FGauge>,
    namespace_gpus: Family<NamespaceLabels, FGauge>,
    namespace_cost: Family<NamespaceLabels, FGauge>,
    pool_gpu_hours: Family<PoolLabels, FCounter>,
    pool_cost_total: Family<PoolLabels, FCounter>,
    last: Mutex<Option<Instant>>,
}

fn states(line: &CostLine) -> [(&'static str, f64, f64); 3] {
    [
        ("allocated", line.allocated_gpus, line.allocated_per_hour),
        ("idle", line.idle_gpus, line.idle_per_hour),
        ("stranded", line.stranded_gpus, line.stranded_per_hour),
    ]
}

/// A new metric, registered under `name`.
fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl CostMetrics {
    /// Registers the series in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        CostMetrics {
            pool_gpus: registered(
                registry,
                "pool_gpus",
                "GPUs per pool by state: allocated, idle (free and usable by the target workload), stranded (free and not)",
            ),
            pool_cost: registered(
                registry,
                "pool_cost_per_hour",
                "Cost per hour of each pool's GPUs by state, from pricing.gpuHourly",
            ),
            namespace_gpus: registered(
                registry,
                "namespace_gpus",
                "GPUs per namespace: allocated (held by its pods) and stranded (charged by its share of each node it holds GPUs on)",
            ),
            namespace_cost: registered(
                registry,
                "namespace_cost_per_hour",
                "Cost per hour per namespace, allocated and stranded",
            ),
            pool_gpu_hours: registered(
                registry,
                "pool_gpu_hours",
                "GPU-hours per pool by state, added up between scrapes",
            ),
            pool_cost_total: registered(
                registry,
                "pool_cost",
                "Cost per pool by state, added up between scrapes",
            ),
            last: Mutex::new(None),
        }
    }

    /// Sets the gauges from `report`, and adds the time since the last refresh at these
    /// rates to the counters.
    pub fn refresh(&self, report: &CostReport, now: Instant) {
        let hours = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let hours = last.map_or(0.0, |t| {
                now.saturating_duration_since(t).as_secs_f64() / 3600.0
            });
            *last = Some(now);
            if hours > MAX_GAP_HOURS { 0.0 } else { hours }
        };
        self.pool_gpus.clear();
        self.pool_cost.clear();
        for (pool, line) in &report.pools {
            for (state, gpus, cost) in states(line) {
                let labels = PoolLabels {
                    pool: pool.clone(),
                    state,
                };
                self.pool_gpus.get_or_create(&labels).set(gpus);
                self.pool_cost.get_or_create(&labels).set(cost);
                if hours > 0.0 {
                    self.pool_gpu_hours
                        .get_or_create(&labels)
                        .inc_by(gpus * hours);
                    self.pool_cost_total
                        .get_or_create(&labels)
                        .inc_by(cost * hours);
                }
            }
        }
        self.namespace_gpus.clear();
        self.namespace_cost.clear();
        for (namespace, line) in &report.namespaces {
            for (state, gpus, cost) in states(line).into_iter().filter(|(s, _, _)| *s != "idle") {
                let labels = NamespaceLabels {
                    namespace: namespace.clone(),
                    state,
                };
                self.namespace_gpus.get_or_create(&labels).set(gpus);
                self.namespace_cost.get_or_create(&labels).set(cost);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(idle_per_hour: f64) -> CostReport {
        let line = CostLine {
            gpus: 8.0,
            idle_gpus: 2.0,
            idle_per_hour,
            ..CostLine::default()
        };
        CostReport {
            pools: [("h100".to_string(), line)].into(),
            ..CostReport::default()
        }
    }

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counters_add_the_rate_over_the_time_between_scrapes() {
        let mut registry = Registry::default();
        let m = CostMetrics::register(&mut registry);
        let t0 = Instant::now();
        m.refresh(&report(10.0), t0);
        // Half an hour later is a gap too long to vouch for: nothing added.
        m.refresh(&report(10.0), t0 + Duration::from_secs(1800));
        // Then six minutes at 10 per hour: 1.
        m.refresh(&report(10.0), t0 + Duration::from_secs(1800 + 360));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        let cost = sample(&text, "pool_cost_total{pool=\"h100\",state=\"idle\"}");
        assert!(cost.is_some_and(|c| (c - 1.0).abs() < 1e-9), "{text}");
        let hours = sample(&text, "pool_gpu_hours_total{pool=\"h100\",state=\"idle\"}");
        assert!(hours.is_some_and(|h| (h - 0.2).abs() < 1e-9), "{text}");
        assert_eq!(
            sample(&text, "pool_cost_per_hour{pool=\"h100\",state=\"idle\"}"),
            Some(10.0)
        );
    }
}

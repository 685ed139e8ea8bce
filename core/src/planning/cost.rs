//! What GPU capacity costs, split into what pods hold (allocated), what no pod of the target
//! workload could use (stranded, FGD's fragment) and the rest of the free capacity (idle),
//! per pool and per namespace, from a price per GPU-hour of each model.
//!
//! Amounts are GPUs, which is GPU-hours per hour: a rate the metrics integrate over time.
//! A namespace is charged for what its pods hold, and for the stranded capacity of each
//! node in proportion to what it holds there: the pods that cut a node up own what they left
//! unusable. Idle capacity belongs to the pool only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalogue;
use crate::fragmentation::{Workload, node_fragmentation};
use crate::node::{GPU_MILLI, GpuSlots, NodeState};
use crate::request::GpuDemand;

/// Namespace label of stranded capacity on a node no pod holds any GPU of (CPU or memory
/// taken by CPU-only pods, say).
pub const UNATTRIBUTED: &str = "(no GPU pod)";

/// Price of one GPU-hour per model, looked up by catalogue name or alias.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    by_model: BTreeMap<String, f64>,
}

impl Prices {
    /// Prices from (model, price per GPU-hour) pairs; a model the catalogue knows is keyed
    /// by its canonical name, so an alias finds it too.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, f64)>) -> Self {
        Prices {
            by_model: pairs.into_iter().map(|(m, p)| (canonical(m), p)).collect(),
        }
    }

    /// Whether no price is set.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// The price of one GPU-hour of `model`, if set.
    pub fn of(&self, model: &str) -> Option<f64> {
        self.by_model.get(&canonical(model)).copied()
    }
}

fn canonical(model: &str) -> String {
    catalogue::model(model).map_or_else(|_| model.to_string(), |m| m.name.to_string())
}

/// Milli-GPU a pod asking for `demand` holds on `node`, measured as the node's capacity is:
/// a MIG instance by the memory positions it covers.
pub fn held_milli(node: &NodeState, demand: &GpuDemand) -> u64 {
    match demand {
        GpuDemand::None => 0,
        GpuDemand::Share { milli } => u64::from(*milli),
        GpuDemand::Whole { count } => u64::from(*count) * u64::from(GPU_MILLI),
        GpuDemand::Mig { profile, count } => node
            .gpus
            .iter()
            .find_map(|g| match &g.slots {
                GpuSlots::Mig(m) => {
                    let geometry = m.gpu.geometry();
                    let (_, p) = geometry.profile(profile).ok()?;
                    Some(u64::from(p.width) * u64::from(geometry.milli_per_position()))
                }
                GpuSlots::Plain { .. } => None,
            })
            .map_or(0, |each| each * u64::from(*count)),
    }
}

/// GPUs and their cost per hour, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CostLine {
    /// GPUs there (capacity).
    pub gpus: f64,
    /// GPUs held by pods.
    pub allocated_gpus: f64,
    /// Free GPUs the target workload could use.
    pub idle_gpus: f64,
    /// Free GPUs the target workload could not use.
    pub stranded_gpus: f64,
    /// Cost per hour of the held GPUs.
    pub allocated_per_hour: f64,
    /// Cost per hour of the idle GPUs.
    pub idle_per_hour: f64,
    /// Cost per hour of the stranded GPUs.
    pub stranded_per_hour: f64,
    /// GPUs of models without a price (counted in the GPUs, not in the costs).
    pub unpriced_gpus: f64,
}

impl CostLine {
    fn add(&mut self, o: &CostLine) {
        self.gpus += o.gpus;
        self.allocated_gpus += o.allocated_gpus;
        self.idle_gpus += o.idle_gpus;
        self.stranded_gpus += o.stranded_gpus;
        self.allocated_per_hour += o.allocated_per_hour;
        self.idle_per_hour += o.idle_per_hour;
        self.stranded_per_hour += o.stranded_per_hour;
        self.unpriced_gpus += o.unpriced_gpus;
    }

    /// Cost per hour of the free capacity, idle and stranded.
    pub fn unused_per_hour(&self) -> f64 {
        self.idle_per_hour + self.stranded_per_hour
    }
}

/// One node as the cost model needs it.
pub struct NodeCost<'a> {
    /// The node's occupancy.
    pub node: &'a NodeState,
    /// Its pool.
    pub pool: &'a str,
    /// Milli-GPU held on it, per namespace.
    pub held: &'a [(String, u64)],
}

/// The cluster's cost per pool, per namespace and in total.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostReport {
    /// Per pool.
    pub pools: BTreeMap<String, CostLine>,
    /// Per namespace: what its pods hold and the stranded capacity charged to it.
    pub namespaces: BTreeMap<String, CostLine>,
    /// The whole cluster.
    pub total: CostLine,
}

/// The cost of `nodes` at `prices`, stranded capacity measured against `workload`.
pub fn cost_report<'a>(
    nodes: impl IntoIterator<Item = NodeCost<'a>>,
    workload: &Workload,
    prices: &Prices,
) -> CostReport {
    let mut out = CostReport::default();
    for n in nodes {
        let capacity = n.node.capacity_milli() as f64 / f64::from(GPU_MILLI);
        if capacity <= 0.0 {
            continue;
        }
        let priced: Vec<Option<f64>> = n.node.gpus.iter().map(|g| prices.of(&g.model)).collect();
        let unpriced = priced.iter().filter(|p| p.is_none()).count() as f64;
        // The node's average price per GPU-hour over its priced GPUs.
        let priced_count = priced.iter().flatten().count();
        let price = if priced_count == 0 {
            0.0
        } else {
            priced.iter().flatten().sum::<f64>() / priced_count as f64
        };
        let priced_share = (capacity - unpriced).max(0.0) / capacity;
        let free = n.node.free_milli() as f64 / f64::from(GPU_MILLI);
        let stranded =
            (node_fragmentation(n.node, workload) / f64::from(GPU_MILLI)).clamp(0.0, free);
        let allocated = (capacity - free).max(0.0);
        let idle = free - stranded;
        let cost = |gpus: f64| gpus * priced_share * price;
        let line = CostLine {
            gpus: capacity,
            allocated_gpus: allocated,
            idle_gpus: idle,
            stranded_gpus: stranded,
            allocated_per_hour: cost(allocated),
            idle_per_hour: cost(idle),
            stranded_per_hour: cost(stranded),
            unpriced_gpus: unpriced,
        };
        out.pools.entry(n.pool.to_string()).or_default().add(&line);
        out.total.add(&line);
        let held_total: u64 = n.held.iter().map(|(_, m)| m).sum();
        if held_total == 0 {
            if stranded > 0.0 {
                out.namespaces
                    .entry(UNATTRIBUTED.into())
                    .or_default()
                    .add(&CostLine {
                        stranded_gpus: stranded,
                        stranded_per_hour: cost(stranded),
                        ..CostLine::default()
                    });
            }
            continue;
        }
        for (ns, milli) in n.held {
            let share = *milli as f64 / held_total as f64;
            let gpus = *milli as f64 / f64::from(GPU_MILLI);
            out.namespaces
                .entry(ns.clone())
                .or_default()
                .add(&CostLine {
                    allocated_gpus: gpus,
                    allocated_per_hour: cost(gpus),
                    stranded_gpus: stranded * share,
                    stranded_per_hour: cost(stranded * share),
                    ..CostLine::default()
                });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::mig_geometry;
    use crate::node::GpuState;
    use crate::placement;
    use crate::request::{GpuDemand, PodRequest};

    fn node(name: &str, gpus: u32, mig: bool) -> NodeState {
        let mut n = NodeState::new(name, 64_000, 512 << 10);
        for i in 0..gpus {
            let uuid = format!("GPU-{name}-{i}");
            n.gpus.push(if mig {
                GpuState::dynamic_mig(
                    i,
                    &uuid,
                    "H100-80GB",
                    None,
                    mig_geometry("H100-80GB").expect("h100"),
                )
            } else {
                GpuState::plain(i, &uuid, "L40S", None)
            });
        }
        n
    }

    fn place(n: &mut NodeState, gpu: GpuDemand) {
        let req = PodRequest::cpu_only(1000, 1024).with_gpu(gpu);
        let cand = placement::candidates(n, &req).expect("fits").remove(0);
        placement::apply(n, &req, &cand).expect("applies");
    }

    #[test]
    fn held_stranded_and_idle_add_up_and_are_charged() {
        // A 3g on one H100 of two (4 of its 8 memory positions: half the GPU): a 4g no longer
        // fits on that GPU.
        let mut a = node("a", 2, true);
        place(
            &mut a,
            GpuDemand::Mig {
                profile: "3g.40gb".into(),
                count: 1,
            },
        );
        // An L40S node with one of two GPUs held.
        let mut b = node("b", 2, false);
        place(&mut b, GpuDemand::Whole { count: 1 });
        let workload = Workload::from_counts([
            (
                PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Mig {
                    profile: "4g.40gb".into(),
                    count: 1,
                }),
                1,
            ),
            (
                PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Whole { count: 1 }),
                1,
            ),
        ]);
        let prices = Prices::new([("H100-80GB", 4.0), ("NVIDIA L40S", 1.0)]);
        let held_a = [("serving".to_string(), 500)];
        let held_b = [("training".to_string(), 1000)];
        let r = cost_report(
            [
                NodeCost {
                    node: &a,
                    pool: "h100",
                    held: &held_a,
                },
                NodeCost {
                    node: &b,
                    pool: "l40s",
                    held: &held_b,
                },
            ],
            &workload,
            &prices,
        );
        for line in r.pools.values().chain([&r.total]) {
            let sum = line.allocated_gpus + line.idle_gpus + line.stranded_gpus;
            assert!((sum - line.gpus).abs() < 1e-9, "{line:?}");
        }
        let h = r.pools["h100"];
        assert!(h.stranded_gpus > 0.0, "{h:?}");
        assert!((h.allocated_per_hour - 0.5 * 4.0).abs() < 1e-9, "{h:?}");
        assert!((h.stranded_per_hour - h.stranded_gpus * 4.0).abs() < 1e-9);
        assert_eq!(r.pools["l40s"].allocated_per_hour, 1.0);
        // The stranded H100 share is charged to the namespace on that node.
        assert!((r.namespaces["serving"].stranded_gpus - h.stranded_gpus).abs() < 1e-9);
        assert_eq!(r.namespaces["training"].allocated_gpus, 1.0);
        let total = r.total.allocated_per_hour + r.total.unused_per_hour();
        assert!((total - (2.0 * 4.0 + 2.0 * 1.0)).abs() < 1e-9, "{total}");
    }

    #[test]
    fn what_a_pod_holds_is_measured_as_capacity_is() {
        let h = node("h", 1, true);
        let mig = |p: &str, count| GpuDemand::Mig {
            profile: p.into(),
            count,
        };
        assert_eq!(held_milli(&h, &mig("3g.40gb", 1)), 500);
        assert_eq!(held_milli(&h, &mig("1g.10gb", 2)), 250);
        assert_eq!(held_milli(&h, &GpuDemand::Whole { count: 2 }), 2000);
        assert_eq!(held_milli(&node("l", 1, false), &mig("1g.10gb", 1)), 0);
    }

    #[test]
    fn gpus_without_a_price_are_counted_not_charged() {
        let n = node("c", 2, false);
        let r = cost_report(
            [NodeCost {
                node: &n,
                pool: "p",
                held: &[],
            }],
            &Workload::default(),
            &Prices::new([("H100-80GB", 4.0)]),
        );
        assert_eq!(r.total.unpriced_gpus, 2.0);
        assert_eq!(r.total.idle_per_hour + r.total.stranded_per_hour, 0.0);
    }
}

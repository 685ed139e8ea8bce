//! The fleet search through the real timed replay, checked against evaluating every fleet
//! on a case small enough to: two node types, up to four nodes each, a generated workload.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubesched_core::inventory::MigMode;
use kubesched_core::scoring;
use kubesched_core::timed::{Arrivals, Generator, TimedConfig};
use kubesched_scheduler::plan::fleet::{self, FleetQuestion, Method, Target};
use kubesched_scheduler::plan::node_types;
use kubesched_scheduler::simulate::{builtin, timed};

fn question(types: &[node_types::NodeType], target: Target) -> FleetQuestion<'_> {
    // The built-in mix at a load four 8-GPU nodes can carry, on a 4-node reference.
    let reference: Vec<_> = (0..4)
        .map(|i| {
            builtin::node(
                format!("ref-{i}"),
                "H100-80GB",
                8,
                kubesched_core::numa::TopologyPolicy::SingleNumaNode,
                Some(MigMode::Dynamic),
            )
        })
        .collect();
    let generator = Generator {
        arrivals: Arrivals::Poisson,
        jobs: 400,
        load: 0.7,
        mean_runtime_ms: 600_000.0,
        capacity_gpus: 32.0,
        mix: timed::mix_on(&builtin::mix(), &reference),
        seed: 7,
    };
    FleetQuestion {
        types,
        jobs: vec![(7, generator.generate())],
        coverage: 0.95,
        target,
        cfg: TimedConfig {
            warmup: 0.25,
            ..TimedConfig::default()
        },
    }
}

fn types() -> Vec<node_types::NodeType> {
    node_types::parse(
        "nodeTypes:\n\
         - {name: h100, model: H100-80GB, gpus: 8, mig: dynamic, pricePerHour: 98, maxNodes: 5}\n\
         - {name: l40s, model: L40S, gpus: 8, pricePerHour: 30, maxNodes: 5}\n",
    )
    .unwrap()
}

#[test]
fn the_search_chooses_what_trying_every_fleet_chooses() {
    let types = types();
    for target in [
        Target::WaitP95 { max_s: 60.0 },
        Target::WaitP95 { max_s: 600.0 },
        Target::Queued { max_pct: 20.0 },
    ] {
        let q = question(&types, target);
        let policy = scoring::lookup("kubesched").unwrap();
        let found = fleet::answer(&q, policy.as_ref(), Method::Staircase, |_, _| {});
        let every = fleet::answer(&q, policy.as_ref(), Method::Exhaustive, |_, _| {});
        assert_eq!(every.search.evaluated.len(), 36);
        let best = |a: &fleet::FleetAnswer| a.search.best.as_ref().map(|p| p.counts.clone());
        assert!(best(&every).is_some(), "{target:?}: no fleet meets it");
        assert_eq!(best(&found), best(&every), "{target:?}");
        assert!(
            found.search.evaluated.len() < every.search.evaluated.len(),
            "{target:?}: {} evaluations",
            found.search.evaluated.len()
        );
        // The chosen fleet's figures are the replay's, and meet the target.
        let m = found.best_metrics().unwrap();
        assert_eq!(m.never_placed, 0);
        assert!(
            target.metric(m)
                <= match target {
                    Target::WaitP95 { max_s } => max_s,
                    Target::Queued { max_pct } => max_pct,
                }
        );
    }
}

#[test]
fn a_fleet_that_cannot_run_a_job_never_meets_the_target() {
    // Whole-GPU nodes only: the mix's MIG jobs fit nowhere.
    let types = node_types::parse(
        "nodeTypes:\n- {name: l40s, model: L40S, gpus: 8, pricePerHour: 30, maxNodes: 6}\n",
    )
    .unwrap();
    let q = question(&types, Target::WaitP95 { max_s: 1e9 });
    let policy = scoring::lookup("first-fit").unwrap();
    let a = fleet::answer(&q, policy.as_ref(), Method::Staircase, |_, _| {});
    assert!(a.search.best.is_none());
    assert!(a.search.evaluated.iter().all(|p| !p.verdict.meets));
    assert!(fleet::table(&q, &a).contains("chosen: none"));
}

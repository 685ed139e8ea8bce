//! The Grafana dashboard in deploy/ must only query metrics the extender
//! exports: every `kubesched_extender_*` name in its expressions is checked
//! against the `# TYPE` lines of a real `/metrics` encoding.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubesched_core::catalogue::mig_geometry;
use kubesched_core::fragmentation::Workload;
use kubesched_core::node::{GpuState, NodeState};
use kubesched_core::placement::Cause;
use kubesched_core::planning::cost::{NodeCost, Prices, cost_report};
use kubesched_core::request::{GpuDemand, PodRequest};
use kubesched_scheduler::extender::metrics::Metrics;
use kubesched_scheduler::extender::outcome::{BindOutcome, FilterOutcome};

#[test]
fn dashboard_queries_only_exported_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/kubesched-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("dashboard file");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    // Label families appear only once they hold a value: feed every kind.
    let metrics = Metrics::new();
    let mut node = NodeState::new("gpu-1", 8000, 8192);
    node.gpus.push(GpuState::dynamic_mig(
        0,
        "G0",
        "H100-80GB",
        Some(0),
        mig_geometry("H100-80GB").expect("model"),
    ));
    let workload = Workload::from_counts([(
        PodRequest::cpu_only(1000, 0).with_gpu(GpuDemand::Mig {
            profile: "7g.80gb".into(),
            count: 2,
        }),
        1,
    )]);
    metrics.refresh_state(&[&node], &workload, true);
    // The cost series, twice a minute apart so the counters have added something.
    let held = [("serving".to_string(), 0u64)];
    let cost = cost_report(
        [NodeCost {
            node: &node,
            pool: "h100",
            held: &held,
        }],
        &workload,
        &Prices::new([("H100-80GB", 4.0)]),
    );
    let start = std::time::Instant::now();
    metrics.cost().refresh(&cost, start);
    metrics
        .cost()
        .refresh(&cost, start + std::time::Duration::from_secs(60));
    metrics.observe_request("filter", 200, 0.001);
    metrics.filter_outcome(FilterOutcome::Unfit(Cause::MigGeometry), 1);
    metrics.bind_result(BindOutcome::Bound);
    metrics.set_reservations(1);
    let exported = metrics.encode().expect("encode");
    let types: Vec<(&str, &str)> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut checked = 0;
    for panel in panels {
        // A row groups panels and queries nothing.
        if panel["type"] == "row" {
            continue;
        }
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("kubesched_extender_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // Counters and histograms are queried by their sample names.
                let base = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    types.iter().any(|(n, _)| *n == base || *n == name),
                    "panel {:?} queries {name}, which is not exported",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 22, "only {checked} metric references found");
}

//! The reproduction gate: on the Alibaba trace (default pod list), our FGD
//! and best-fit must land within 0.3 points of the published unallocated
//! GPU % at 100% arrived load (FGD 4.77, BestFit 7.14; USENIX ATC '23); and
//! the pod list read with its own clock for the timed replay.
//! The trace is research data that is never shipped, so the gate is ignored by
//! default; asked for (`--ignored`, as `scripts/test.sh` does when the trace is on the
//! machine) without the trace, it fails.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubesched_core::replay::ReplayConfig;
use kubesched_core::scoring;
use kubesched_core::timed::Length;
use kubesched_scheduler::simulate::{self, Scenario, summary, trace};

const SEEDS: std::ops::Range<u64> = 42..45;

#[test]
#[ignore = "needs the Alibaba GPU trace (KUBESCHED_TRACE_DIR); run with --ignored"]
fn fgd_and_best_fit_reproduce_the_published_figures() {
    let Some(dir) = trace::default_dir() else {
        panic!("trace not found: set KUBESCHED_TRACE_DIR to cluster-trace-gpu-v2023/csv");
    };
    let nodes = trace::load_nodes(&dir.join("openb_node_list_gpu_node.csv")).expect("node list");
    let pods = trace::load_pods(&dir.join("openb_pod_list_default.csv")).expect("pod list");
    let scenario = Scenario::from_trace("default", nodes, pods, 0.95);
    assert_eq!(scenario.gpu_count(), 6212);
    assert_eq!(
        scenario.workload.types.len(),
        35,
        "the artifact keeps 35 typical task types"
    );
    for (name, published) in [("fgd", 4.77), ("best-fit", 7.14)] {
        let policy = scoring::by_name(name).expect("policy");
        let runs: Vec<_> = SEEDS
            .map(|seed| {
                simulate::run_one(
                    &scenario,
                    policy.as_ref(),
                    &ReplayConfig {
                        seed,
                        ..Default::default()
                    },
                    |_, _| {},
                )
            })
            .collect();
        let s = &summary::summarize(&runs)[0];
        let at_100 = s.unallocated[2].as_ref().expect("a 100% bucket").mean;
        eprintln!("{name}: {at_100:.2}% unallocated at 100% arrival (published {published})");
        assert!(
            (at_100 - published).abs() <= 0.3,
            "{name}: {at_100:.2} vs published {published}"
        );
    }
}

#[test]
#[ignore = "needs the Alibaba GPU trace (KUBESCHED_TRACE_DIR); run with --ignored"]
fn the_default_pod_list_loads_with_its_own_clock() {
    let Some(dir) = trace::default_dir() else {
        panic!("trace not found: set KUBESCHED_TRACE_DIR to cluster-trace-gpu-v2023/csv");
    };
    let path = dir.join("openb_pod_list_default.csv");
    let jobs = trace::load_timed_pods(&path).expect("timed pod list");
    let pods = trace::load_pods(&path).expect("pod list");
    assert_eq!(jobs.len(), 8152);
    assert_eq!(jobs.len(), pods.len());
    assert!(jobs.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
    assert!(jobs.iter().all(|j| matches!(
        j.length,
        Length::Duration { ms } if ms >= trace::MIN_TRACE_RUN_MS
    )));
    // The last creation is about 149 days in (12,902,960 s is the last deletion).
    let last = jobs.last().expect("jobs").arrival_ms;
    assert!(last > 100 * 86_400_000 && last < 12_902_960_000, "{last}");
}

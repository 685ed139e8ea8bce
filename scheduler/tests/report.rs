//! The capacity planner's report and what-if, against a fixture snapshot
//! (two nodes: dynamic H100 MIG with NUMA, static A100 MIG and whole L40S
//! GPUs; bound and pending pods). The table and JSON are pinned as goldens:
//! regenerate with `UPDATE_GOLDEN=1 cargo test -p kubesched-scheduler --test report`
//! after an intended change, and review the diff.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use kubesched_core::replay::{Outcome, Replay, ReplayConfig};
use kubesched_core::scoring;
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::config::Config;
use kubesched_scheduler::offline::OfflineBinder;
use kubesched_scheduler::report;
use kubesched_scheduler::snapshot::Snapshot;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn loaded() -> (Snapshot, Arc<Extender>) {
    let snapshot = Snapshot::read(&fixture("snapshot.json")).expect("fixture snapshot");
    let (binder, _updates) = OfflineBinder::new(&snapshot);
    // Prices for two of the three models: the third is counted, not charged.
    let config =
        Config::from_yaml("pricing:\n  gpuHourly:\n    H100-80GB: 4.1\n    NVIDIA L40S: 1.2\n")
            .expect("config");
    let ext = Arc::new(Extender::new(config, binder).expect("extender"));
    snapshot.load_into(&ext);
    (snapshot, ext)
}

fn golden(name: &str, actual: &str) {
    let path = fixture(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(
        actual, expected,
        "{name} changed; see the header of this file"
    );
}

#[test]
fn report_table_and_json_match_the_goldens() {
    let (_, ext) = loaded();
    let rep = report::build_live(&ext);
    golden("report.txt", &report::render(&rep));
    golden(
        "report.json",
        &(serde_json::to_string_pretty(&rep).expect("json") + "\n"),
    );
}

#[test]
fn report_sees_occupancy_numa_and_static_instances() {
    let (_, ext) = loaded();
    let state = ext.state();
    let rep = report::build(state.node_states(), &ext.workload().current().0);
    let a = rep.nodes.iter().find(|n| n.name == "gpu-a").expect("gpu-a");
    // 3g at 0 and a 1g at 5 on GPU0: only small slices left there.
    assert_eq!(a.gpus[0].largest_placeable.as_deref(), Some("1g.20gb"));
    assert_eq!(a.gpus[1].largest_placeable.as_deref(), Some("7g.80gb"));
    assert!(
        a.numa_problems.is_empty(),
        "NUMA 1 has 8 free CPUs: {:?}",
        a.numa_problems
    );
    let b = rep.nodes.iter().find(|n| n.name == "gpu-b").expect("gpu-b");
    assert_eq!(b.whole_gpus_free, 1);
    assert_eq!(b.gpus[2].mode, "static");
    assert_eq!(
        b.profile_fits.get("3g.40gb"),
        Some(&1),
        "one idle 3g instance"
    );
    assert_eq!(rep.totals.gpus, 5);
    assert!(rep.totals.fragment_milli <= rep.totals.unallocated_milli as f64);
}

#[test]
fn what_if_places_the_pending_pods_that_fit() {
    let (snapshot, ext) = loaded();
    let pending = snapshot.pending(&ext);
    assert_eq!(pending.len(), 3);
    let nodes: Vec<_> = ext.state().node_states().cloned().collect();
    let workload = ext.workload().current().0;
    let policy = scoring::by_name("kubesched").expect("policy");
    let cfg = ReplayConfig {
        shuffle_nodes: false,
        shuffle_pods: false,
        ..Default::default()
    };
    let mut replay = Replay::new(nodes, policy.as_ref(), &workload, &cfg);
    let outcomes: Vec<bool> = pending
        .iter()
        .map(|(_, r)| matches!(replay.step(r), Outcome::Placed { .. }))
        .collect();
    // The 4g takes the only empty GPU (NUMA 1, 8 CPUs free); then neither
    // a 7g nor two whole GPUs fit anywhere.
    assert_eq!(outcomes, vec![true, false, false]);
}

#[test]
fn a_snapshot_of_a_large_cluster_is_read_beyond_the_annotation_limit() {
    let (snapshot, _) = loaded();
    // Hundreds of copies of the fixture's nodes: megabytes, as a real cluster's snapshot is.
    let mut big = snapshot.clone();
    for i in 0..1000 {
        for node in &snapshot.nodes {
            let mut copy = node.clone();
            copy.metadata.name = Some(format!("copy-{i}-{}", node.metadata.name.clone().unwrap()));
            big.nodes.push(copy);
        }
    }
    let text = big.to_json();
    assert!(
        text.len() > kubesched_core::versioned::MAX_DOCUMENT_BYTES * 4,
        "{}",
        text.len()
    );
    let read = Snapshot::from_json(&text).expect("a large snapshot is read");
    assert_eq!(read.nodes.len(), snapshot.nodes.len() * 1001);
}

//! `kubesched plan` as a planner runs it: the MIG recommender's config file, its change
//! from a snapshot's layouts and its replay against the hand layouts; the fleet search's
//! answer and CSV; clear refusals of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::kubesched;

use kubesched_scheduler::snapshot::{SNAPSHOT_VERSION, Snapshot};

fn scratch(name: &str) -> PathBuf {
    common::scratch("plan_cli", name)
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The served % of the row `name` of the replay table.
fn served(stdout: &str, name: &str) -> f64 {
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{stdout}"));
    row.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_skewed_mix_gets_a_config_file_that_serves_more_than_any_hand_layout() {
    let dir = scratch("skewed");
    let file = dir.join("mig-config.yaml");
    let out = kubesched(&[
        "plan",
        "mig",
        "--demand",
        "1g.10gb=150,3g.40gb=12",
        "--nodes",
        "4",
        "--replay-jobs",
        "600",
        "--config-name",
        "pool-a",
        "--output",
        file.to_str().unwrap(),
    ]);
    let stdout = ok(&out);
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(config["version"], "v1");
    let entries = config["mig-configs"]["pool-a"].as_sequence().unwrap();
    let mut devices: Vec<u64> = entries
        .iter()
        .flat_map(|e| {
            e["devices"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
        })
        .collect();
    devices.sort_unstable();
    assert_eq!(
        devices,
        (0..8).collect::<Vec<_>>(),
        "every GPU of the node, once"
    );
    assert!(entries.iter().all(|e| e["mig-enabled"] == true));
    let proposed = served(&stdout, "proposed");
    assert_eq!(proposed, 100.0, "{stdout}");
    for hand in ["all-1g", "all-3g", "balanced"] {
        assert!(served(&stdout, hand) < proposed, "{hand}: {stdout}");
    }
    assert!(stdout.contains("the best hand layout (all-1g)"), "{stdout}");
}

#[test]
fn a_snapshot_gives_the_demand_the_pool_and_the_change() {
    let dir = scratch("snapshot");
    // Two static H100 nodes, both GPUs cut 7 × 1g, and a dynamic one (not part of the
    // static pool); ten pending 3g pods.
    let ones: Vec<(&str, u8)> = (0..7).map(|s| ("1g.10gb", s)).collect();
    let gpus = [
        ("H100-80GB", Some("static"), 0),
        ("H100-80GB", Some("static"), 1),
    ];
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        nodes: vec![
            common::node("h-0", &gpus, &ones),
            common::node("h-1", &gpus, &ones),
            common::node(
                "d-0",
                &[
                    ("H100-80GB", Some("dynamic"), 0),
                    ("H100-80GB", Some("dynamic"), 1),
                ],
                &[],
            ),
        ],
        pods: (0..10)
            .map(|i| {
                common::pod(
                    &format!("p{i}"),
                    &format!("u{i}"),
                    &[("nvidia.com/mig-3g.40gb", "1")],
                )
            })
            .collect(),
    };
    let path = dir.join("snapshot.json");
    std::fs::write(&path, snapshot.to_json()).unwrap();
    let stdout = ok(&kubesched(&[
        "plan",
        "mig",
        "--snapshot",
        path.to_str().unwrap(),
        "--gpus-per-node",
        "2",
        "--replay-jobs",
        "300",
    ]));
    assert!(
        stdout.contains("across 2 node(s) of 2xH100-80GB: 3g.40gb=10.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("h-0 GPU 0: 7×1g.10gb -> 2×3g.40gb"),
        "{stdout}"
    );
    assert!(
        stdout.contains("h-1 GPU 1: 7×1g.10gb -> 2×3g.40gb"),
        "{stdout}"
    );
    assert_eq!(served(&stdout, "today"), 0.0, "{stdout}");
    assert_eq!(
        served(&stdout, "proposed"),
        80.0,
        "8 of the 10 fit: {stdout}"
    );
}

#[test]
fn the_fleet_search_answers_and_writes_every_fleet() {
    let dir = scratch("fleet");
    let types = dir.join("types.yaml");
    std::fs::write(
        &types,
        "nodeTypes:\n\
         - {name: h100, model: H100-80GB, gpus: 8, mig: dynamic, pricePerHour: 98, maxNodes: 6}\n\
         - {name: l40s, model: L40S, gpus: 8, pricePerHour: 30, maxNodes: 6}\n",
    )
    .unwrap();
    let stdout = ok(&kubesched(&[
        "plan",
        "fleet",
        "--node-types",
        types.to_str().unwrap(),
        "--generate-jobs",
        "300",
        "--load",
        "0.1",
        "--policies",
        "kubesched",
        "--out",
        dir.to_str().unwrap(),
    ]));
    assert!(stdout.contains("policy kubesched:"), "{stdout}");
    let chosen = stdout.lines().find(|l| l.contains("chosen:")).unwrap();
    assert!(
        chosen.contains("h100") && !chosen.contains("none"),
        "{chosen}"
    );
    let csv = std::fs::read_to_string(dir.join("plan-fleets.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("policy,h100,l40s,cost_per_hour,metric,meets,chosen")
    );
    assert_eq!(
        csv.lines().filter(|l| l.contains(",true,true,")).count(),
        1,
        "{csv}"
    );
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    for (args, says) in [
        (vec!["plan", "mig", "--demand", "5g.50gb=1"], "5g.50gb"),
        (
            vec!["plan", "mig", "--model", "L40S", "--demand", "1g.10gb=1"],
            "L40S",
        ),
        (vec!["plan", "mig"], "--demand, --jobs or --snapshot"),
        (
            vec!["plan", "fleet", "--node-types", "/nonexistent/types.yaml"],
            "/nonexistent/types.yaml",
        ),
        (
            vec!["plan", "fleet", "--max-queued-pct", "120"],
            "between 0 and 100",
        ),
    ] {
        let out = kubesched(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

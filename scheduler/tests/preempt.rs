//! The `preempt` verb: victim sets chosen by counts are kept only where evicting them frees a
//! legal MIG position for the pod, and victims the placement does not need are spared; the
//! filter marks nodes that cannot host the pod even empty as unresolvable, the others as
//! candidates for preemption.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{extender, node, observe, pod};
use k8s_openapi::api::core::v1::Pod;
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::config::Config;
use kubesched_scheduler::extender::protocol::{
    ExtenderArgs, ExtenderPreemptionArgs, ExtenderPreemptionResult, MetaPod, MetaVictims, Victims,
};

/// A pod bound to `node` holding one `profile` instance at `start` of its GPU 0.
fn mig_pod(node: &str, uid: &str, profile: &str, start: u8) -> Pod {
    let resource = format!("nvidia.com/mig-{profile}");
    let mut p = pod(uid, uid, &[(resource.as_str(), "1")]);
    let ann = format!(
        r#"{{"version":1,"node":"{node}","resource":"{resource}","devices":[{{"gpuUuid":"GPU-{node}-0","gpuIndex":0,"mig":{{"profile":"{profile}","start":{start}}}}}]}}"#
    );
    p.metadata.annotations = Some([("kubesched.ai/devices".to_string(), ann)].into());
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p.status.as_mut().unwrap().phase = Some("Running".into());
    p
}

fn meta(uids: &[&str]) -> MetaVictims {
    MetaVictims {
        pods: uids
            .iter()
            .map(|u| MetaPod { uid: u.to_string() })
            .collect(),
        num_pdb_violations: 0,
    }
}

/// Three nodes, each one dynamic-MIG H100 with a 1g.10gb at position 0 (pod `<node>-a`) and
/// one at position 4 (`<node>-b`), plus a 1g.10gb at 6 on node `c` (`c-c`): no 3g.40gb
/// position (0 or 4) is free anywhere.
fn cluster() -> std::sync::Arc<Extender> {
    let nodes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| node(n, &[("H100-80GB", Some("dynamic"), 0)], &[]))
        .collect();
    let (ext, _) = extender(Config::default(), &nodes);
    for n in ["a", "b", "c"] {
        observe(&ext, &mig_pod(n, &format!("{n}-a"), "1g.10gb", 0));
        observe(&ext, &mig_pod(n, &format!("{n}-b"), "1g.10gb", 4));
    }
    observe(&ext, &mig_pod("c", "c-c", "1g.10gb", 6));
    ext
}

fn preemptor() -> Pod {
    pod("big", "big", &[("nvidia.com/mig-3g.40gb", "1")])
}

#[test]
fn only_victim_sets_that_free_a_legal_position_are_kept_and_unneeded_victims_are_spared() {
    let ext = cluster();
    // Filter first: the nodes are full but could host the pod empty, so preemption may help.
    let filtered = ext.filter(&ExtenderArgs {
        pod: preemptor(),
        nodes: None,
        node_names: Some(vec!["a".into(), "b".into(), "c".into()]),
    });
    assert!(filtered.node_names.is_empty(), "{filtered:?}");
    assert_eq!(filtered.failed_nodes.len(), 3, "{filtered:?}");
    assert!(filtered.failed_and_unresolvable_nodes.is_empty());

    let args = ExtenderPreemptionArgs {
        pod: preemptor(),
        node_name_to_victims: None,
        node_name_to_meta_victims: Some(BTreeMap::from([
            // Evicting `a-a` frees positions 0-3: a 3g.40gb fits at 0.
            ("a".to_string(), meta(&["a-a"])),
            // Both were proposed; evicting `b-b` alone frees 4-7, so `b-a` (first, the more
            // important) is spared.
            ("b".to_string(), meta(&["b-a", "b-b"])),
            // A count-based choice: one 1g.10gb freed at 6 opens no 3g.40gb position.
            ("c".to_string(), meta(&["c-c"])),
        ])),
    };
    let got = ext.preempt(&args);
    assert_eq!(
        got,
        ExtenderPreemptionResult {
            node_name_to_meta_victims: BTreeMap::from([
                ("a".to_string(), meta(&["a-a"])),
                ("b".to_string(), meta(&["b-b"])),
            ]),
        }
    );
    let metrics = ext.metrics().encode().unwrap();
    assert!(
        metrics.contains(r#"kubesched_extender_preemption_nodes_total{outcome="dropped"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"kubesched_extender_preemption_victims_total{outcome="spared"} 1"#));
}

#[test]
fn full_pod_victims_unknown_victims_and_pods_that_are_not_ours() {
    let ext = cluster();
    // Without nodeCacheCapable, victims come as full pods.
    let full = ExtenderPreemptionArgs {
        pod: preemptor(),
        node_name_to_victims: Some(BTreeMap::from([(
            "a".to_string(),
            Victims {
                pods: vec![mig_pod("a", "a-a", "1g.10gb", 0)],
                num_pdb_violations: 1,
            },
        )])),
        node_name_to_meta_victims: None,
    };
    let got = ext.preempt(&full).node_name_to_meta_victims;
    assert_eq!(got["a"].pods, meta(&["a-a"]).pods);
    assert_eq!(got["a"].num_pdb_violations, 1);

    // A victim the extender has no record of is never spared (what it holds is unknown).
    let unknown = ExtenderPreemptionArgs {
        pod: preemptor(),
        node_name_to_victims: None,
        node_name_to_meta_victims: Some(BTreeMap::from([(
            "a".to_string(),
            meta(&["ghost", "a-a"]),
        )])),
    };
    assert_eq!(
        ext.preempt(&unknown).node_name_to_meta_victims["a"],
        meta(&["ghost", "a-a"])
    );

    // A pod asking no GPU: kube-scheduler's choice stands untouched.
    let cpu = ExtenderPreemptionArgs {
        pod: pod("cpu", "cpu", &[("cpu", "1")]),
        node_name_to_victims: None,
        node_name_to_meta_victims: Some(BTreeMap::from([("c".to_string(), meta(&["c-c"]))])),
    };
    assert_eq!(
        ext.preempt(&cpu).node_name_to_meta_victims["c"],
        meta(&["c-c"])
    );

    // A pod we cannot serve: nothing is worth evicting.
    let unknown_profile = ExtenderPreemptionArgs {
        pod: pod("odd", "odd", &[("nvidia.com/mig-9g.99gb", "1")]),
        node_name_to_victims: None,
        node_name_to_meta_victims: Some(BTreeMap::from([("a".to_string(), meta(&["a-a"]))])),
    };
    assert!(
        ext.preempt(&unknown_profile)
            .node_name_to_meta_victims
            .is_empty()
    );
}

#[test]
fn a_node_too_small_even_empty_is_unresolvable() {
    // One GPU: a pod asking two can never fit, whatever is evicted.
    let (ext, _) = extender(
        Config::default(),
        &[
            node("one", &[("L4", None, 0)], &[]),
            node("two", &[("L4", None, 0), ("L4", None, 0)], &[]),
        ],
    );
    let mut busy = pod("busy", "busy", &[("nvidia.com/gpu", "1")]);
    let ann = r#"{"version":1,"node":"two","resource":"nvidia.com/gpu","devices":[{"gpuUuid":"GPU-two-0","gpuIndex":0}]}"#;
    busy.metadata.annotations =
        Some([("kubesched.ai/devices".to_string(), ann.to_string())].into());
    busy.spec.as_mut().unwrap().node_name = Some("two".into());
    observe(&ext, &busy);
    let r = ext.filter(&ExtenderArgs {
        pod: pod("pair", "pair", &[("nvidia.com/gpu", "2")]),
        nodes: None,
        node_names: Some(vec!["one".into(), "two".into()]),
    });
    assert!(
        r.failed_and_unresolvable_nodes["one"].contains("needs 2"),
        "{r:?}"
    );
    assert!(r.failed_nodes["two"].contains("needs 2"), "{r:?}");
    // Also in FailedNodes, the only map kube-scheduler 1.20 reads; later ones let the
    // unresolvable map win.
    assert_eq!(
        r.failed_nodes["one"],
        r.failed_and_unresolvable_nodes["one"]
    );
    assert!(
        !r.failed_and_unresolvable_nodes.contains_key("two"),
        "{r:?}"
    );
}

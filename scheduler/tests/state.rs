//! The cluster state as the watches feed it: occupancy rebuilt from pod
//! annotations after a (re)list, unusable inventories, NUMA rejections, and
//! reservations that the watch never confirms.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{extender, node, observe, pod};
use kubesched_core::fragmentation::mig_capacity;
use kubesched_scheduler::extender::config::Config;
use kubesched_scheduler::extender::protocol::{ExtenderArgs, ExtenderBindingArgs};
use kubesched_scheduler::extender::reflectors;

fn args(p: &k8s_openapi::api::core::v1::Pod, nodes: &[&str]) -> ExtenderArgs {
    ExtenderArgs {
        pod: p.clone(),
        nodes: None,
        node_names: Some(nodes.iter().map(|s| s.to_string()).collect()),
    }
}

fn on_node(
    mut p: k8s_openapi::api::core::v1::Pod,
    node: &str,
    devices: Option<&str>,
    phase: &str,
) -> k8s_openapi::api::core::v1::Pod {
    if let Some(d) = devices {
        p.metadata.annotations = Some([("kubesched.ai/devices".to_string(), d.to_string())].into());
    }
    if let Some(spec) = p.spec.as_mut() {
        spec.node_name = Some(node.into());
    }
    if let Some(st) = p.status.as_mut() {
        st.phase = Some(phase.into());
    }
    p
}

#[test]
fn a_relist_rebuilds_occupancy_from_annotations() {
    let (ext, _) = extender(
        Config::default(),
        &[node(
            "n",
            &[("H100-80GB", Some("dynamic"), 0), ("L4", None, 0)],
            &[],
        )],
    );
    let ann = r#"{"version":1,"node":"n","resource":"nvidia.com/mig-3g.40gb","devices":[{"gpuUuid":"GPU-n-0","gpuIndex":0,"mig":{"profile":"3g.40gb","start":4}}]}"#;
    let pods = [
        on_node(
            pod("a", "ua", &[("cpu", "2"), ("nvidia.com/mig-3g.40gb", "1")]),
            "n",
            Some(ann),
            "Running",
        ),
        // Bound by someone else without our annotation: a placement is assumed.
        on_node(
            pod("b", "ub", &[("nvidia.com/gpu", "1")]),
            "n",
            None,
            "Running",
        ),
        // Finished pods hold nothing.
        on_node(
            pod("c", "uc", &[("nvidia.com/mig-3g.40gb", "1")]),
            "n",
            None,
            "Succeeded",
        ),
    ];
    let records = pods
        .iter()
        .filter_map(|p| reflectors::pod_record(&ext, p))
        .collect();
    ext.state_mut().reset_pods(records);
    let st = ext.state();
    let n = st.node_state("n").unwrap();
    assert_eq!(n.cpu_free_milli, 62_000);
    let cap = mig_capacity(&n.gpus[0]).unwrap();
    assert_eq!(cap.free_positions, 4);
    assert_eq!(cap.largest_placeable.as_deref(), Some("4g.40gb"));
    assert_eq!(
        n.gpus[1].free_milli(),
        0,
        "the L4 is taken by the unannotated pod"
    );
    drop(st);
    // The 3g pod ends: its positions come back.
    observe(
        &ext,
        &on_node(
            pod("a", "ua", &[("cpu", "2"), ("nvidia.com/mig-3g.40gb", "1")]),
            "n",
            Some(ann),
            "Succeeded",
        ),
    );
    ext.state_mut().remove_pod("ua");
    assert_eq!(
        mig_capacity(&ext.state().node_state("n").unwrap().gpus[0])
            .unwrap()
            .free_positions,
        8
    );
}

#[test]
fn unusable_inventory_and_numa_rejections_are_explained() {
    let mut broken = node("bad", &[("H100-80GB", Some("dynamic"), 0)], &[]);
    broken.metadata.annotations = Some(
        [(
            "kubesched.ai/inventory".to_string(),
            r#"{"version":9}"#.to_string(),
        )]
        .into(),
    );
    // Two L4s on different NUMA nodes under single-numa-node.
    let split = node("split", &[("L4", None, 0), ("L4", None, 1)], &[]);
    let (ext, _) = extender(Config::default(), &[broken, split]);
    let p = pod("two", "u2", &[("nvidia.com/gpu", "2")]);
    let r = ext.filter(&args(&p, &["bad", "split"]));
    assert!(r.node_names.is_empty());
    let bad = &r.failed_and_unresolvable_nodes["bad"];
    assert!(
        bad.starts_with("node GPU inventory unusable") && bad.contains("newer"),
        "{bad}"
    );
    // No eviction can put two GPUs of different NUMA nodes on one: unresolvable.
    let split = &r.failed_and_unresolvable_nodes["split"];
    assert!(
        split.starts_with("topology manager would reject"),
        "{split}"
    );
    let one = pod("one", "u1", &[("nvidia.com/gpu", "1")]);
    assert_eq!(
        ext.filter(&args(&one, &["split"])).node_names,
        vec!["split"]
    );
}

#[test]
fn model_restrictions_are_unresolvable_and_a_changed_inventory_applies() {
    let (ext, _) = extender(Config::default(), &[node("n", &[("L4", None, 0)], &[])]);
    let mut p = pod("m", "um", &[("nvidia.com/gpu", "1")]);
    p.metadata.annotations = Some(
        [(
            "kubesched.ai/gpu-models".to_string(),
            "H100-80GB".to_string(),
        )]
        .into(),
    );
    let r = ext.filter(&args(&p, &["n"]));
    assert!(
        r.failed_and_unresolvable_nodes["n"].contains("not in requested"),
        "{r:?}"
    );
    let key = ext.inventory_key().to_string();
    let (name, base) =
        reflectors::node_base(&node("n", &[("H100-80GB", None, 0)], &[]), &key).unwrap();
    ext.state_mut().upsert_node(&name, base);
    assert_eq!(ext.filter(&args(&p, &["n"])).node_names, vec!["n"]);
}

/// A node whose agent says `draining` (shutting down for an upgrade, or not yet registered
/// with the kubelet, which would then refuse the devices) gets no new pod, from filter or from
/// a bind already on its way, until the agent serves again.
#[tokio::test]
async fn a_draining_agent_gets_no_new_pods_until_it_serves_again() {
    let with_draining = |draining: bool| {
        let mut n = node("n", &[("L4", None, 0)], &[]);
        let annotations = n.metadata.annotations.as_mut().unwrap();
        let text = &annotations["kubesched.ai/inventory"];
        let mut inventory: serde_json::Value = serde_json::from_str(text).unwrap();
        inventory["draining"] = serde_json::json!(draining);
        annotations.insert("kubesched.ai/inventory".into(), inventory.to_string());
        n
    };
    let (ext, binder) = extender(Config::default(), &[with_draining(true)]);
    let p = pod("p", "up", &[("nvidia.com/gpu", "1")]);
    let r = ext.filter(&args(&p, &["n"]));
    assert!(r.node_names.is_empty(), "{r:?}");
    assert!(
        r.failed_and_unresolvable_nodes["n"].contains("draining"),
        "{r:?}"
    );
    binder.pods.lock().unwrap().insert("p".into(), p.clone());
    let bind = common::binding(&p, "n");
    let refused = ext.bind(&bind).await.error;
    assert!(refused.contains("draining"), "{refused}");

    let key = ext.inventory_key().to_string();
    let (name, base) = reflectors::node_base(&with_draining(false), &key).unwrap();
    ext.state_mut().upsert_node(&name, base);
    assert_eq!(ext.filter(&args(&p, &["n"])).node_names, vec!["n"]);
    assert_eq!(ext.bind(&bind).await.error, "");
}

#[tokio::test]
async fn unconfirmed_reservations_expire() {
    let (ext, binder) = extender(Config::default(), &[node("n", &[("L4", None, 0)], &[])]);
    let p = pod("p", "up", &[("nvidia.com/gpu", "1")]);
    binder.pods.lock().unwrap().insert("p".into(), p.clone());
    let bind = ExtenderBindingArgs {
        pod_name: "p".into(),
        pod_namespace: "serving".into(),
        pod_uid: "up".into(),
        node: "n".into(),
    };
    assert_eq!(ext.bind(&bind).await.error, "");
    let other = pod("q", "uq", &[("nvidia.com/gpu", "1")]);
    assert!(
        ext.filter(&args(&other, &["n"])).node_names.is_empty(),
        "reserved"
    );
    let later = Instant::now() + Duration::from_secs(601);
    assert_eq!(
        ext.state_mut()
            .expire_reservations(later, Duration::from_secs(600)),
        1
    );
    assert_eq!(ext.filter(&args(&other, &["n"])).node_names, vec!["n"]);
}

#[test]
fn pinned_cpus_are_not_counted_twice_when_the_agent_reports_them() {
    let exclusive = |name: &str, uid: &str| {
        let ann = r#"{"version":1,"node":"n","resource":"nvidia.com/gpu","devices":[{"gpuUuid":"GPU-n-0","gpuIndex":0}],"numaNode":0}"#;
        on_node(
            pod(
                name,
                uid,
                &[("cpu", "8"), ("memory", "8Gi"), ("nvidia.com/gpu", "1")],
            ),
            "n",
            Some(ann),
            "Running",
        )
    };
    for (live, expected) in [(false, 24), (true, 32)] {
        let mut n = node("n", &[("L4", None, 0)], &[]);
        if live {
            // The agent's view: CPUs the kubelet has not pinned (all 32 here,
            // as if the kubelet had not started the pod yet).
            let annotations = n.metadata.annotations.as_mut().unwrap();
            let text = annotations.get_mut("kubesched.ai/inventory").unwrap();
            let mut inv: serde_json::Value = serde_json::from_str(text).unwrap();
            for numa in inv["numaNodes"].as_array_mut().unwrap() {
                numa["freeCpus"] = numa["cpus"].clone();
            }
            *text = inv.to_string();
        }
        let (ext, _) = extender(Config::default(), &[n]);
        observe(&ext, &exclusive("e", "ue"));
        let st = ext.state();
        let numa0 = &st.node_state("n").unwrap().numa[0];
        assert_eq!(numa0.cpus_free, expected, "live report: {live}");
    }
}

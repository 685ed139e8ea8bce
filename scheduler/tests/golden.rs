//! Golden tests: request bodies exactly as kube-scheduler (v1.20+, with
//! `nodeCacheCapable: true`) sends them, and the exact bytes we answer.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{extender, node, observe, plain_node};
use kubesched_scheduler::extender::config::Config;
use kubesched_scheduler::extender::protocol::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderFilterResult, ExtenderPreemptionArgs,
};

const FILTER_BODY: &str = r#"{"Pod":{"metadata":{"name":"llm-infer-7c9f","namespace":"serving","uid":"5b1e0c2a-0000-4000-8000-000000000001","annotations":{"example.com/numa-policy":"single"}},"spec":{"schedulerName":"kubesched","containers":[{"name":"server","image":"llm:1","resources":{"requests":{"cpu":"8","nvidia.com/mig-1g.10gb":"1"},"limits":{"nvidia.com/mig-1g.10gb":"1"}}}]},"status":{"phase":"Pending"}},"Nodes":null,"NodeNames":["gpu-a-001","gpu-a-002","gpu-b-017","cpu-1"]}"#;

fn cluster() -> (
    std::sync::Arc<kubesched_scheduler::extender::Extender>,
    std::sync::Arc<common::FakeBinder>,
) {
    let nodes = [
        node("gpu-a-001", &[("H100-80GB", Some("dynamic"), 0)], &[]),
        node(
            "gpu-a-002",
            &[
                ("H100-80GB", Some("dynamic"), 0),
                ("H100-80GB", Some("dynamic"), 1),
            ],
            &[],
        ),
        node(
            "gpu-b-017",
            &[
                ("A100-80GB", Some("dynamic"), 0),
                ("A100-80GB", Some("dynamic"), 1),
            ],
            &[],
        ),
        plain_node("cpu-1"),
    ];
    // Fragmentation is measured against 1g slices and whole-GPU 7g slices.
    let config = Config::from_yaml(
        "workload:\n  fixed:\n    - {request: {cpu_milli: 1000, memory_mib: 0, gpu: {kind: mig, profile: 1g.10gb, count: 1}}, popularity: 1}\n    - {request: {cpu_milli: 1000, memory_mib: 0, gpu: {kind: mig, profile: 7g.80gb, count: 1}}, popularity: 1}\n",
    )
    .unwrap();
    let (ext, binder) = extender(config, &nodes);
    // gpu-a-001's only GPU is full: a 4g at 0-3 and a 3g at 4-7; gpu-b-017
    // has a 1g slice running on its first GPU.
    for (i, (node, profile, start)) in [
        ("gpu-a-001", "4g.40gb", 0),
        ("gpu-a-001", "3g.40gb", 4),
        ("gpu-b-017", "1g.10gb", 0),
    ]
    .iter()
    .enumerate()
    {
        let ann = format!(
            r#"{{"version":1,"node":"{node}","resource":"nvidia.com/mig-{profile}","devices":[{{"gpuUuid":"GPU-{node}-0","gpuIndex":0,"mig":{{"profile":"{profile}","start":{start}}}}}],"numaNode":0}}"#
        );
        let mut p = common::pod(
            &format!("running-{i}"),
            &format!("run-{i}"),
            &[("cpu", "1"), (&format!("nvidia.com/mig-{profile}"), "1")],
        );
        p.metadata.annotations = Some([("kubesched.ai/devices".to_string(), ann)].into());
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        observe(&ext, &p);
    }
    (ext, binder)
}

#[test]
fn filter_answers_with_exact_shape_and_reasons() {
    let (ext, _) = cluster();
    let args: ExtenderArgs = serde_json::from_str(FILTER_BODY).unwrap();
    let got = serde_json::to_string(&ext.filter(&args)).unwrap();
    let want = r#"{"Nodes":null,"NodeNames":["gpu-a-002","gpu-b-017"],"FailedNodes":{"cpu-1":"node publishes no GPU inventory","gpu-a-001":"no 1g.10gb placement left: GPU0 positions used: 0-3 (4g.40gb), 4-7 (3g.40gb)"},"FailedAndUnresolvableNodes":{"cpu-1":"node publishes no GPU inventory"},"Error":""}"#;
    assert_eq!(got, want);
}

#[test]
fn prioritize_is_a_bare_array_of_host_and_score() {
    let (ext, _) = cluster();
    let mut args: ExtenderArgs = serde_json::from_str(FILTER_BODY).unwrap();
    args.node_names = Some(vec!["gpu-a-002".into(), "gpu-b-017".into()]);
    let got = serde_json::to_string(&ext.prioritize(&args).unwrap()).unwrap();
    // gpu-b-017's first GPU already cannot host a 7g: a 1g there costs no
    // fragmentation, while on gpu-a-002 it strands a whole GPU's 7g.
    assert_eq!(
        got,
        r#"[{"Host":"gpu-a-002","Score":0},{"Host":"gpu-b-017","Score":10}]"#
    );
}

#[test]
fn bind_writes_the_devices_annotation_then_the_binding() {
    let (ext, binder) = cluster();
    let args: ExtenderArgs = serde_json::from_str(FILTER_BODY).unwrap();
    ext.filter(&args);
    binder
        .pods
        .lock()
        .unwrap()
        .insert("llm-infer-7c9f".into(), args.pod.clone());
    let bind: ExtenderBindingArgs = serde_json::from_str(
        r#"{"PodName":"llm-infer-7c9f","PodNamespace":"serving","PodUID":"5b1e0c2a-0000-4000-8000-000000000001","Node":"gpu-a-002"}"#,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let result = rt.block_on(ext.bind(&bind));
    assert_eq!(serde_json::to_string(&result).unwrap(), r#"{"Error":""}"#);
    // The slot is the production policy's choice on an empty GPU: at an edge (start 0),
    // where it costs the GPU's free run one position; at 6 it would cost two.
    assert_eq!(
        binder
            .annotation_of("5b1e0c2a-0000-4000-8000-000000000001")
            .as_deref(),
        Some(
            r#"{"version":1,"node":"gpu-a-002","resource":"nvidia.com/mig-1g.10gb","devices":[{"gpuUuid":"GPU-gpu-a-002-0","gpuIndex":0,"mig":{"profile":"1g.10gb","start":0}}],"numaNode":0}"#
        )
    );
    assert_eq!(
        binder
            .bindings
            .lock()
            .unwrap()
            .get("5b1e0c2a-0000-4000-8000-000000000001")
            .map(String::as_str),
        Some("gpu-a-002")
    );
}

#[test]
fn lower_case_keys_are_accepted_like_the_go_decoder() {
    let (ext, _) = cluster();
    let lower = FILTER_BODY
        .replace("\"Pod\":", "\"pod\":")
        .replace("\"NodeNames\":", "\"nodenames\":")
        .replace("\"Nodes\":", "\"nodes\":");
    let args: ExtenderArgs = serde_json::from_str(&lower).unwrap();
    assert_eq!(ext.filter(&args).node_names, vec!["gpu-a-002", "gpu-b-017"]);
    let bind: ExtenderBindingArgs =
        serde_json::from_str(r#"{"podName":"a","podNamespace":"b","podUID":"c","node":"d"}"#)
            .unwrap();
    assert_eq!(bind.pod_uid, "c");
    // Our replies decode back through the same aliases.
    let reply: ExtenderFilterResult =
        serde_json::from_str(r#"{"nodenames":["x"],"failednodes":{"y":"why"},"error":""}"#)
            .unwrap();
    assert_eq!(reply.failed_nodes.get("y").map(String::as_str), Some("why"));
}

#[test]
fn pods_without_gpu_pass_untouched_with_a_neutral_score() {
    let (ext, _) = cluster();
    let body = r#"{"Pod":{"metadata":{"name":"web","namespace":"default","uid":"u-web"},"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"100m"}}}]}},"Nodes":null,"NodeNames":["cpu-1","gpu-a-001","not-a-node"]}"#;
    let args: ExtenderArgs = serde_json::from_str(body).unwrap();
    assert_eq!(
        serde_json::to_string(&ext.filter(&args)).unwrap(),
        r#"{"Nodes":null,"NodeNames":["cpu-1","gpu-a-001","not-a-node"],"FailedNodes":{},"FailedAndUnresolvableNodes":{},"Error":""}"#
    );
    assert_eq!(
        serde_json::to_string(&ext.prioritize(&args).unwrap()).unwrap(),
        r#"[{"Host":"cpu-1","Score":0},{"Host":"gpu-a-001","Score":0},{"Host":"not-a-node","Score":0}]"#
    );
}

#[test]
fn no_fitting_node_still_sends_an_empty_list_and_never_a_foreign_name() {
    let (ext, _) = cluster();
    let body = FILTER_BODY.replace(
        r#""NodeNames":["gpu-a-001","gpu-a-002","gpu-b-017","cpu-1"]"#,
        r#""NodeNames":["gpu-a-001","ghost"]"#,
    );
    let args: ExtenderArgs = serde_json::from_str(&body).unwrap();
    let got = serde_json::to_string(&ext.filter(&args)).unwrap();
    assert!(got.starts_with(r#"{"Nodes":null,"NodeNames":[],"#), "{got}");
    assert!(got.contains(r#""ghost":"node publishes no GPU inventory""#));
    let empty = FILTER_BODY.replace(r#"["gpu-a-001","gpu-a-002","gpu-b-017","cpu-1"]"#, "[]");
    let args: ExtenderArgs = serde_json::from_str(&empty).unwrap();
    assert!(ext.filter(&args).node_names.is_empty());
    assert_eq!(
        serde_json::to_string(&ext.prioritize(&args).unwrap()).unwrap(),
        "[]"
    );
}

/// kube-scheduler's preempt call as it marshals it with `nodeCacheCapable: true` (Go field
/// names, no JSON tags, victims by UID), and our exact reply: gpu-a-001's proposed victim
/// (the 3g at 4-7) frees a 1g position, and so does the running 1g on gpu-b-017, but
/// gpu-a-001's 4g is spared: evicting the 3g alone is enough.
#[test]
fn preempt_answers_with_exact_shape() {
    let (ext, _) = cluster();
    let pod = FILTER_BODY
        .split_once(r#","Nodes":null"#)
        .map(|(head, _)| head.trim_start_matches(r#"{"Pod":"#))
        .unwrap();
    let body = format!(
        r#"{{"Pod":{pod},"NodeNameToVictims":null,"NodeNameToMetaVictims":{{"gpu-a-001":{{"Pods":[{{"UID":"run-0"}},{{"UID":"run-1"}}],"NumPDBViolations":1}},"gpu-b-017":{{"Pods":[{{"UID":"run-2"}}],"NumPDBViolations":0}}}}}}"#
    );
    let args: ExtenderPreemptionArgs = serde_json::from_str(&body).unwrap();
    let got = serde_json::to_string(&ext.preempt(&args)).unwrap();
    let want = r#"{"NodeNameToMetaVictims":{"gpu-a-001":{"Pods":[{"UID":"run-1"}],"NumPDBViolations":1},"gpu-b-017":{"Pods":[],"NumPDBViolations":0}}}"#;
    assert_eq!(got, want);
}

/// The production policy takes the first of equally scored nodes (a fixed order packs); the
/// extender keeps that order for kube-scheduler, which would otherwise pick among ties at
/// random and spread. Two identical empty nodes, sent in either order: the first by name
/// scores 10, the other 0.
#[test]
fn prioritize_orders_ties_by_node_name() {
    let nodes = [
        node("gpu-b", &[("H100-80GB", Some("dynamic"), 0)], &[]),
        node("gpu-a", &[("H100-80GB", Some("dynamic"), 0)], &[]),
    ];
    let (ext, _) = extender(Config::default(), &nodes);
    let mut args: ExtenderArgs = serde_json::from_str(FILTER_BODY).unwrap();
    for order in [["gpu-b", "gpu-a"], ["gpu-a", "gpu-b"]] {
        args.node_names = Some(order.iter().map(|s| s.to_string()).collect());
        let got = ext.prioritize(&args).unwrap();
        let score = |n: &str| got.iter().find(|h| h.host == n).unwrap().score;
        assert_eq!((score("gpu-a"), score("gpu-b")), (10, 0), "{got:?}");
    }
}

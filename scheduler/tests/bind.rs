//! Bind through the real code path with a fake API: hundreds of concurrent
//! binds never hand one MIG position or GPU to two pods, and a failed API
//! call releases the reservation.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{
    FakeBinder, binding, bound, extender, node, observe, one_h100, pod, seven_g, signed_extender,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::catalogue::mig_geometry;
use kubesched_core::signing::SigningKey;
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::config::Config;

const STATIC_1G: &[(&str, u8)] = &[
    ("1g.10gb", 0),
    ("1g.10gb", 1),
    ("1g.10gb", 2),
    ("1g.10gb", 3),
    ("1g.10gb", 4),
    ("1g.10gb", 5),
    ("1g.10gb", 6),
];

fn gpu_node(name: &str) -> Node {
    node(
        name,
        &[
            ("H100-80GB", Some("dynamic"), 0),
            ("H100-80GB", Some("dynamic"), 0),
            ("H100-80GB", Some("dynamic"), 1),
            ("H100-80GB", Some("dynamic"), 1),
            ("A100-80GB", Some("static"), 0),
            ("A100-80GB", Some("static"), 1),
            ("L4", None, 0),
            ("L4", None, 1),
        ],
        STATIC_1G,
    )
}

/// Asserts that no two annotations share a GPU position or a whole GPU.
fn assert_disjoint(binder: &FakeBinder) -> usize {
    let bindings = binder.bindings.lock().unwrap().clone();
    // (node, gpu uuid) -> (used position mask, taken whole)
    let mut used: HashMap<(String, String), (u8, bool)> = HashMap::new();
    for (uid, node) in &bindings {
        let text = binder
            .annotation_of(uid)
            .expect("bound GPU pods are annotated");
        let ann = DevicesAnnotation::from_json(&text).unwrap();
        assert_eq!(&ann.node, node, "annotation names the bound node");
        for d in &ann.devices {
            let slot = used.entry((node.clone(), d.gpu_uuid.clone())).or_default();
            assert!(!slot.1, "{uid}: GPU {} already taken whole", d.gpu_uuid);
            match &d.mig {
                None => {
                    assert_eq!(
                        slot.0, 0,
                        "{uid}: whole GPU {} has MIG slices in use",
                        d.gpu_uuid
                    );
                    slot.1 = true;
                }
                Some(m) => {
                    let model = if d.gpu_uuid.ends_with("-4") || d.gpu_uuid.ends_with("-5") {
                        "A100-80GB"
                    } else {
                        "H100-80GB"
                    };
                    let geo = mig_geometry(model).unwrap();
                    let (_, p) = geo.profile(&m.profile).unwrap();
                    let mask = p.mask_at(m.start);
                    assert_eq!(
                        slot.0 & mask,
                        0,
                        "{uid}: {} at {} on {} overlaps positions {:08b}",
                        m.profile,
                        m.start,
                        d.gpu_uuid,
                        slot.0
                    );
                    slot.0 |= mask;
                }
            }
        }
    }
    bindings.len()
}

#[test]
fn hundreds_of_concurrent_binds_never_share_a_slot() {
    let nodes: Vec<Node> = (0..3).map(|i| gpu_node(&format!("gpu-{i}"))).collect();
    let (ext, binder) = extender(Config::default(), &nodes);
    let kinds = [
        "nvidia.com/mig-1g.10gb",
        "nvidia.com/mig-2g.20gb",
        "nvidia.com/mig-3g.40gb",
        "nvidia.com/gpu",
    ];
    let pods: Vec<Pod> = (0..400)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &format!("uid-{i}"),
                &[("cpu", "100m"), (kinds[i % kinds.len()], "1")],
            )
        })
        .collect();
    for (i, p) in pods.iter().enumerate() {
        binder
            .pods
            .lock()
            .unwrap()
            .insert(p.metadata.name.clone().unwrap(), p.clone());
        // Half are already known from the watch, half are fetched at bind.
        if i % 2 == 0 {
            observe(&ext, p);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let results: Vec<(usize, String)> = rt.block_on(async {
        let tasks: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (ext, binder, p) = (ext.clone(), binder.clone(), p.clone());
                tokio::spawn(async move {
                    let node = format!("gpu-{}", i % 3);
                    let r = ext.bind(&binding(&p, &node)).await;
                    // A third of the successes are confirmed by the watch right away.
                    if r.error.is_empty() && i % 3 == 0 {
                        let ann = binder
                            .annotation_of(p.metadata.uid.as_deref().unwrap())
                            .unwrap();
                        observe(&ext, &bound(&p, &node, &ann));
                    }
                    (i, r.error)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let ok = results.iter().filter(|(_, e)| e.is_empty()).count();
    let refused: Vec<&String> = results
        .iter()
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(assert_disjoint(&binder), ok);
    // Each node offers about 30 placements for this mix (32 H100 positions,
    // 14 static 1g instances, 2 whole L4s).
    assert!(ok > 60, "only {ok} binds succeeded");
    assert!(!refused.is_empty(), "the nodes were meant to run out");
    assert!(
        refused.iter().all(|e| e.contains("no longer fits")),
        "{refused:?}"
    );
    // Unconfirmed successes still hold reservations; failures hold none.
    let confirmed = results
        .iter()
        .filter(|(i, e)| e.is_empty() && i % 3 == 0)
        .count();
    assert_eq!(ext.state().reservation_count(), ok - confirmed);
    // Once the watch shows every bound pod, the reservations are gone and
    // the occupancy is unchanged.
    let before: Vec<_> = (0..3)
        .map(|i| ext.state().node_state(&format!("gpu-{i}")).cloned())
        .collect();
    for (i, e) in &results {
        if e.is_empty() && i % 3 != 0 {
            let p = &pods[*i];
            let ann = binder
                .annotation_of(p.metadata.uid.as_deref().unwrap())
                .unwrap();
            observe(&ext, &bound(p, &format!("gpu-{}", i % 3), &ann));
        }
    }
    assert_eq!(ext.state().reservation_count(), 0);
    let after: Vec<_> = (0..3)
        .map(|i| ext.state().node_state(&format!("gpu-{i}")).cloned())
        .collect();
    assert_eq!(before, after);
}

#[tokio::test]
async fn binder_errors_release_the_reservation() {
    let (ext, binder) = one_h100();
    let empty = ext.state().node_state("gpu-0").cloned();
    for name in ["x", "y", "z"] {
        let p = seven_g(name);
        observe(&ext, &p);
    }
    binder.fail_bind.lock().unwrap().push("x".into());
    binder.conflict_bind.lock().unwrap().push("y".into());

    let r = ext.bind(&binding(&seven_g("x"), "gpu-0")).await;
    assert!(r.error.contains("unable to handle"), "{}", r.error);
    assert_eq!(ext.state().reservation_count(), 0);
    assert_eq!(ext.state().node_state("gpu-0").cloned(), empty);
    // The annotation travels with the Binding: a failed bind wrote none.
    assert_eq!(binder.annotation_of("uid-x"), None);

    // Another scheduler bound it first: the API server's 409, counted as a conflict.
    let r = ext.bind(&binding(&seven_g("y"), "gpu-0")).await;
    assert!(r.error.contains("already assigned"), "{}", r.error);
    assert_eq!(ext.state().reservation_count(), 0);
    assert_eq!(ext.state().node_state("gpu-0").cloned(), empty);

    // The slot the failed binds held is free for the next pod.
    let r = ext.bind(&binding(&seven_g("z"), "gpu-0")).await;
    assert_eq!(r.error, "");
    assert_eq!(ext.state().reservation_count(), 1);
    assert!(
        binder
            .annotation_of("uid-z")
            .unwrap()
            .contains(r#""profile":"7g.80gb","start":0"#)
    );
    let text = ext.metrics().encode().unwrap();
    assert!(
        text.contains(r#"kubesched_extender_binds_total{outcome="api_error"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"kubesched_extender_binds_total{outcome="conflict"} 1"#));
    assert!(text.contains(r#"kubesched_extender_binds_total{outcome="bound"} 1"#));

    // Deleting the pod before the watch confirms it frees the slot too.
    ext.state_mut().remove_pod("uid-z");
    assert_eq!(ext.state().reservation_count(), 0);
    assert_eq!(ext.state().node_state("gpu-0").cloned(), empty);
}

#[tokio::test]
async fn already_bound_unknown_and_cpu_only_pods() {
    let (ext, binder) = one_h100();
    let p = seven_g("a");
    observe(&ext, &bound(&p, "gpu-0", "{}"));
    let r = ext.bind(&binding(&p, "gpu-0")).await;
    assert!(r.error.contains("already bound"), "{}", r.error);

    let ghost = seven_g("ghost");
    let r = ext.bind(&binding(&ghost, "gpu-0")).await;
    assert!(r.error.contains("not found"), "{}", r.error);

    // A pod asking for no GPU is bound without an annotation or reservation.
    let web = pod("web", "uid-web", &[("cpu", "1")]);
    binder
        .pods
        .lock()
        .unwrap()
        .insert("web".into(), web.clone());
    // Reproduction: the API server takes a Binding to any name; a pod was sent to a node
    // that does not exist.
    let r = ext.bind(&binding(&web, "no-such-node")).await;
    assert!(r.error.contains("does not exist"), "{}", r.error);
    assert!(binder.bindings.lock().unwrap().is_empty());
    ext.state_mut().upsert_other_node("cpu-node");
    let r = ext.bind(&binding(&web, "cpu-node")).await;
    assert_eq!(r.error, "");
    assert_eq!(binder.annotation_of("uid-web"), None);
    assert_eq!(
        binder
            .bindings
            .lock()
            .unwrap()
            .get("uid-web")
            .map(String::as_str),
        Some("cpu-node")
    );
    assert_eq!(ext.state().reservation_count(), 0);
}

/// One H100 node with two dynamic-MIG GPUs, the pods' resourceVersion known to the fake API.
fn two_gpus(key: Option<SigningKey>) -> (Arc<Extender>, Arc<FakeBinder>) {
    signed_extender(
        Config::default(),
        &[node(
            "gpu-0",
            &[
                ("H100-80GB", Some("dynamic"), 0),
                ("H100-80GB", Some("dynamic"), 0),
            ],
            &[],
        )],
        key,
    )
}

fn stored(binder: &FakeBinder, mut p: Pod, version: &str) -> Pod {
    p.metadata.resource_version = Some(version.into());
    let name = p.metadata.name.clone().unwrap();
    binder.pods.lock().unwrap().insert(name, p.clone());
    p
}

fn test_key() -> SigningKey {
    SigningKey::from_bytes(b"a test key of thirty-two bytes!!").unwrap()
}

/// Reproduction 5 of the hostile-input report: two binds of one pod at once. Before, the
/// second replaced the first's reservation and overwrote the annotation with other devices.
#[tokio::test]
async fn concurrent_binds_of_one_pod_write_one_annotation() {
    let (ext, binder) = two_gpus(None);
    let p = stored(&binder, seven_g("twice"), "7");
    let args = binding(&p, "gpu-0");
    let (a, b) = tokio::join!(ext.bind(&args), ext.bind(&args));
    let errors: Vec<&str> = [&a.error, &b.error]
        .into_iter()
        .map(String::as_str)
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(errors.len(), 1, "exactly one bind wins: {a:?} {b:?}");
    assert!(errors[0].contains("already in progress"), "{}", errors[0]);
    assert_eq!(binder.binding_calls.lock().unwrap().len(), 1);
    assert_eq!(ext.state().reservation_count(), 1);
    let text = binder.annotation_of("uid-twice").unwrap();
    let ann = DevicesAnnotation::from_json(&text).unwrap();
    let reserved = ext
        .state()
        .reservation("uid-twice")
        .unwrap()
        .candidate
        .clone();
    let node = ext.state().node_state("gpu-0").cloned().unwrap();
    let req = ext
        .state()
        .reservation("uid-twice")
        .unwrap()
        .request
        .clone();
    assert_eq!(ann.to_candidate(&node, &req.gpu).unwrap(), reserved);
}

/// One write per bind: the Binding carries the signed devices annotation, and nothing else
/// touches the pod.
#[tokio::test]
async fn the_binding_carries_the_signed_annotation_in_one_call() {
    let (ext, binder) = two_gpus(Some(test_key()));
    let p = stored(&binder, seven_g("p"), "5");
    assert_eq!(ext.bind(&binding(&p, "gpu-0")).await.error, "");
    assert_eq!(
        *binder.binding_calls.lock().unwrap(),
        vec![("uid-p".to_string(), 1)]
    );
    let written = binder.annotation_of("uid-p").unwrap();
    let ann = DevicesAnnotation::from_json(&written).unwrap();
    assert_eq!(test_key().verify(&ann, "uid-p"), Ok(()));
    assert_eq!(binder.bindings.lock().unwrap()["uid-p"], "gpu-0");
}

/// A pod that already carries this extender's signed annotation for the node (an earlier
/// version wrote it before a Binding that failed) is bound on exactly those devices, without a
/// new choice or a new annotation; an annotation the extender did not sign is replaced, never
/// followed.
#[tokio::test]
async fn a_rebind_keeps_our_annotation_and_replaces_a_forged_one() {
    // The annotation a first extender signed for the pod, on gpu-0.
    let (first_ext, first_binder) = two_gpus(Some(test_key()));
    let p = stored(&first_binder, seven_g("again"), "1");
    assert_eq!(first_ext.bind(&binding(&p, "gpu-0")).await.error, "");
    let first = first_binder.annotation_of("uid-again").unwrap();
    let ann = DevicesAnnotation::from_json(&first).unwrap();
    assert_eq!(test_key().verify(&ann, "uid-again"), Ok(()));

    // The pod carries it, unbound; kube-scheduler asks this extender to bind it there.
    let (ext, binder) = two_gpus(Some(test_key()));
    let mut annotated = p.clone();
    annotated.metadata.annotations =
        Some([("kubesched.ai/devices".to_string(), first.clone())].into());
    stored(&binder, annotated, "2");
    assert_eq!(ext.bind(&binding(&p, "gpu-0")).await.error, "");
    assert_eq!(binder.annotation_of("uid-again"), None, "nothing rewritten");
    assert_eq!(
        *binder.binding_calls.lock().unwrap(),
        vec![("uid-again".to_string(), 0)],
        "a Binding without annotations"
    );
    let node = ext.state().node_state("gpu-0").cloned().unwrap();
    let kept = ann.to_candidate(&node, &req_of(&ext, "uid-again")).unwrap();
    assert_eq!(
        ext.state().reservation("uid-again").unwrap().candidate,
        kept
    );

    // A forged (unsigned) annotation on a fresh pod is not followed: bind writes its own.
    let mut forged = seven_g("forged");
    let mut fake = ann.clone();
    fake.signature = None;
    forged.metadata.annotations =
        Some([("kubesched.ai/devices".to_string(), fake.to_json())].into());
    let forged = stored(&binder, forged, "3");
    assert_eq!(ext.bind(&binding(&forged, "gpu-0")).await.error, "");
    let written = binder.annotation_of("uid-forged").unwrap();
    let written = DevicesAnnotation::from_json(&written).unwrap();
    assert_eq!(test_key().verify(&written, "uid-forged"), Ok(()));
}

fn req_of(ext: &Extender, uid: &str) -> kubesched_core::request::GpuDemand {
    ext.state().reservation(uid).unwrap().request.gpu.clone()
}

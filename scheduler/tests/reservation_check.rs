//! Reservations the pod watch never confirms are settled by asking the API server: the
//! sequence that held a device for the whole TTL after an API server restart (the watch
//! fell behind, the pod was bound and deleted, the next list did not have it), and the
//! other answers the API server can give.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{FakeBinder, binding, bound, observe, one_h100, pod, seven_g};
use k8s_openapi::api::core::v1::Pod;
use kubesched_scheduler::extender::Extender;
use kubesched_scheduler::extender::cluster_state::Settled;
use kubesched_scheduler::extender::reservation_check::{
    CHECK_AFTER, MAX_CHECKS_PER_ROUND, check_unconfirmed,
};

/// Binds `p` (kept by the fake API server as created) and returns its annotation.
async fn bind(ext: &Extender, binder: &FakeBinder, p: &Pod) -> String {
    binder
        .pods
        .lock()
        .unwrap()
        .insert(p.metadata.name.clone().unwrap(), p.clone());
    observe(ext, p);
    let r = ext.bind(&binding(p, "gpu-0")).await;
    assert_eq!(r.error, "");
    binder
        .annotation_of(p.metadata.uid.as_deref().unwrap())
        .unwrap()
}

/// When the check runs long after the binds.
fn later() -> Instant {
    Instant::now() + CHECK_AFTER + Duration::from_secs(1)
}

#[tokio::test]
async fn a_pod_bound_and_deleted_while_the_watch_relisted_frees_its_devices() {
    let (ext, binder) = one_h100();
    let empty = ext.state().node_state("gpu-0").cloned();
    let p = seven_g("short-lived");
    bind(&ext, &binder, &p).await;
    assert_eq!(ext.state().reservation_count(), 1);

    // The pod is deleted; the watch, behind after a 410, lists again without it. The
    // reservation is a second old, so the list cannot tell it from one whose pod is newer
    // than the list, and keeps it.
    binder.pods.lock().unwrap().clear();
    ext.load_pods(Vec::new());
    assert_eq!(ext.state().reservation_count(), 1);

    // A check right away leaves it (the watch may yet confirm it) and asks nothing.
    assert!(check_unconfirmed(&ext, Instant::now()).await.is_empty());
    assert_eq!(ext.state().reservation_count(), 1);

    let done = check_unconfirmed(&ext, later()).await;
    assert_eq!(
        done,
        vec![("uid-short-lived".to_string(), Settled::Released)]
    );
    assert_eq!(ext.state().reservation_count(), 0);
    assert_eq!(ext.state().node_state("gpu-0").cloned(), empty);
    let text = ext.metrics().encode().unwrap();
    assert!(
        text.contains(r#"kubesched_extender_reservation_checks_total{outcome="released"} 1"#),
        "{text}"
    );
    // The GPU is free for the next pod.
    bind(&ext, &binder, &seven_g("next")).await;
}

#[tokio::test]
async fn a_bound_pod_the_watch_missed_is_recorded_and_keeps_its_devices() {
    let (ext, binder) = one_h100();
    let p = seven_g("missed");
    let annotation = bind(&ext, &binder, &p).await;
    // The API server has it bound with its annotation; the watch never said so.
    binder
        .pods
        .lock()
        .unwrap()
        .insert("missed".into(), bound(&p, "gpu-0", &annotation));

    let done = check_unconfirmed(&ext, later()).await;
    assert_eq!(done, vec![("uid-missed".to_string(), Settled::Recorded)]);
    assert_eq!(ext.state().reservation_count(), 0);
    let record = ext.state().pod("uid-missed").cloned().unwrap();
    assert_eq!(record.node.as_deref(), Some("gpu-0"));
    // Its devices stay taken: a second 7g pod does not fit.
    let other = seven_g("other");
    observe(&ext, &other);
    let r = ext.bind(&binding(&other, "gpu-0")).await;
    assert!(r.error.contains("no longer fits"), "{}", r.error);
}

#[tokio::test]
async fn an_unbound_pod_keeps_its_reservation_a_namesake_does_not() {
    let (ext, binder) = one_h100();
    let p = seven_g("slow");
    bind(&ext, &binder, &p).await;

    // As the API server still shows it before the Binding lands: kept.
    let done = check_unconfirmed(&ext, later()).await;
    assert_eq!(done, vec![("uid-slow".to_string(), Settled::Kept)]);
    assert_eq!(ext.state().reservation_count(), 1);

    // Deleted and created again under the same name: ours is gone.
    let namesake = pod("slow", "uid-another", &[("nvidia.com/mig-7g.80gb", "1")]);
    binder.pods.lock().unwrap().insert("slow".into(), namesake);
    let done = check_unconfirmed(&ext, later()).await;
    assert_eq!(done, vec![("uid-slow".to_string(), Settled::Released)]);
    assert_eq!(ext.state().reservation_count(), 0);
}

#[tokio::test]
async fn an_answer_older_than_a_list_or_a_delete_changes_nothing() {
    let (ext, binder) = one_h100();
    let p = seven_g("raced");
    let annotation = bind(&ext, &binder, &p).await;
    let made = ext.state().reservation("uid-raced").unwrap().created;

    // Read before a full list was loaded: the list knows better.
    let generation = ext.state().pod_list_generation();
    ext.load_pods(Vec::new());
    let found = kubesched_scheduler::extender::reflectors::pod_record(
        &ext,
        &bound(&p, "gpu-0", &annotation),
    )
    .map(|(_, record)| record);
    assert!(found.is_some());
    let settled = ext
        .state_mut()
        .settle_reservation("uid-raced", made, generation, found.clone());
    assert_eq!(settled, Settled::Stale);
    assert_eq!(ext.state().reservation_count(), 1);
    assert!(ext.state().pod("uid-raced").is_none());

    // A delete event came between the read and the settling: nothing comes back.
    let generation = ext.state().pod_list_generation();
    ext.state_mut().remove_pod("uid-raced");
    let settled = ext
        .state_mut()
        .settle_reservation("uid-raced", made, generation, found);
    assert_eq!(settled, Settled::Stale);
    assert!(ext.state().pod("uid-raced").is_none());
    assert_eq!(ext.state().reservation_count(), 0);
}

#[tokio::test]
async fn a_round_asks_about_the_oldest_few_only() {
    // A 7g pod per GPU: 100 one-GPU nodes, a bind on each that the watch never confirms.
    let nodes: Vec<_> = (0..100)
        .map(|i| {
            common::node(
                &format!("gpu-{i}"),
                &[("H100-80GB", Some("dynamic"), 0)],
                &[],
            )
        })
        .collect();
    let (ext, binder) = common::extender(Default::default(), &nodes);
    for i in 0..100 {
        let p = seven_g(&format!("p{i}"));
        binder
            .pods
            .lock()
            .unwrap()
            .insert(format!("p{i}"), p.clone());
        observe(&ext, &p);
        let r = ext.bind(&binding(&p, &format!("gpu-{i}"))).await;
        assert_eq!(r.error, "");
    }
    binder.pods.lock().unwrap().clear();
    let done = check_unconfirmed(&ext, later()).await;
    assert_eq!(done.len(), MAX_CHECKS_PER_ROUND);
    // The first binds are the oldest: they went first.
    assert!(done.iter().any(|(uid, _)| uid == "uid-p0"));
    assert!(!done.iter().any(|(uid, _)| uid == "uid-p99"));
    assert_eq!(ext.state().reservation_count(), 100 - MAX_CHECKS_PER_ROUND);
    check_unconfirmed(&ext, later()).await;
    assert_eq!(ext.state().reservation_count(), 0);
}

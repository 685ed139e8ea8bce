//! The device plugin over real gRPC on real Unix sockets, against an in-test fake kubelet.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, pod};
use kubesched_proto::deviceplugin::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    ListAndWatchResponse, PreferredAllocationRequest,
};
use tonic::Code;

const GPU: &str = "nvidia.com/gpu";
const MIG_1G: &str = "nvidia.com/mig-1g.10gb";
const MIG_3G: &str = "nvidia.com/mig-3g.40gb";

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn allocate_request(ids: &[&str]) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: strings(ids),
        }],
    }
}

fn preferred_request(available: &[&str], must: &[&str], size: i32) -> PreferredAllocationRequest {
    PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: strings(available),
            must_include_device_i_ds: strings(must),
            allocation_size: size,
        }],
    }
}

/// (id, health, NUMA nodes) of each device in a ListAndWatch message.
fn summary(response: &ListAndWatchResponse) -> Vec<(String, String, Vec<i64>)> {
    response
        .devices
        .iter()
        .map(|d| {
            (
                d.id.clone(),
                d.health.clone(),
                d.topology
                    .iter()
                    .flat_map(|t| t.nodes.iter().map(|n| n.id))
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn registers_every_resource_with_its_own_socket() {
    let mut h = Harness::start().await;
    let regs = h.expect_registrations(3, Duration::from_secs(5)).await;
    let got: Vec<(&str, &str, &str)> = regs
        .iter()
        .map(|r| {
            (
                r.resource_name.as_str(),
                r.endpoint.as_str(),
                r.version.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (GPU, "kubesched-gpu.sock", "v1beta1"),
            (MIG_1G, "kubesched-mig-1g.10gb.sock", "v1beta1"),
            (MIG_3G, "kubesched-mig-3g.40gb.sock", "v1beta1"),
        ]
    );
    for r in &regs {
        let options = r.options.expect("options sent");
        assert!(options.get_preferred_allocation_available && !options.pre_start_required);
        assert!(
            h.dir.0.join(&r.endpoint).exists(),
            "socket {} exists",
            r.endpoint
        );
    }
    let options = h
        .client(GPU)
        .await
        .get_device_plugin_options(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(options.get_preferred_allocation_available);
    let dir = h.dir.0.clone();
    h.shutdown().await;
    for name in [
        "kubesched-gpu.sock",
        "kubesched-mig-1g.10gb.sock",
        "kubesched-mig-3g.40gb.sock",
    ] {
        assert!(!dir.join(name).exists(), "{name} removed on shutdown");
    }
}

#[tokio::test]
async fn list_and_watch_streams_health_and_numa_and_updates() {
    let mut h = Harness::start().await;
    h.expect_registrations(3, Duration::from_secs(5)).await;

    let mut gpus = h
        .client(GPU)
        .await
        .list_and_watch(Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = gpus.message().await.unwrap().unwrap();
    assert_eq!(
        summary(&first),
        [
            ("GPU-0".to_string(), "Healthy".to_string(), vec![0]),
            ("GPU-1".to_string(), "Healthy".to_string(), vec![1]),
            ("GPU-3".to_string(), "Healthy".to_string(), vec![1]),
        ]
    );

    let mut slices = h
        .client(MIG_1G)
        .await
        .list_and_watch(Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = slices.message().await.unwrap().unwrap();
    assert_eq!(
        summary(&first),
        [
            ("MIG-1a".to_string(), "Healthy".to_string(), vec![1]),
            ("MIG-1b".to_string(), "Healthy".to_string(), vec![1])
        ],
        "MIG slices inherit their parent GPU's NUMA node (1)"
    );

    // A fault on one slice streams an update for that resource only, and recovery streams again.
    h.manager.set_fault(&["MIG-1b".to_string()], Some("XID 94"));
    let update = tokio::time::timeout(Duration::from_secs(2), slices.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        summary(&update)[1],
        ("MIG-1b".to_string(), "Unhealthy".to_string(), vec![1])
    );
    assert_eq!(
        summary(&update)[0].1,
        "Healthy",
        "the sibling slice stays healthy"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), gpus.message())
            .await
            .is_err(),
        "whole GPUs saw no update"
    );
    h.manager.set_fault(&["MIG-1b".to_string()], None);
    let recovered = tokio::time::timeout(Duration::from_secs(2), slices.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summary(&recovered)[1].1, "Healthy");
    h.shutdown().await;
}

#[tokio::test]
async fn preferred_allocation_and_allocate_follow_the_pod_annotation() {
    let mut h = Harness::start().await;
    h.expect_registrations(3, Duration::from_secs(5)).await;
    h.pods.set(vec![
        pod("trainer", GPU, 2, Some(&["GPU-0", "GPU-3"])),
        pod("notebook", MIG_1G, 1, Some(&["MIG-1b"])),
    ]);

    let mut client = h.client(GPU).await;
    let preferred = client
        .get_preferred_allocation(preferred_request(&["GPU-0", "GPU-1", "GPU-3"], &[], 2))
        .await
        .unwrap();
    assert_eq!(
        preferred.into_inner().container_responses[0].device_i_ds,
        strings(&["GPU-0", "GPU-3"])
    );

    let response = client
        .allocate(allocate_request(&["GPU-0", "GPU-3"]))
        .await
        .unwrap()
        .into_inner();
    let container = &response.container_responses[0];
    assert_eq!(
        container
            .envs
            .get("NVIDIA_VISIBLE_DEVICES")
            .map(String::as_str),
        Some("GPU-0,GPU-3")
    );
    assert_eq!(
        container
            .annotations
            .get("kubesched.ai/pod")
            .map(String::as_str),
        Some("default/trainer")
    );
    assert_eq!(h.allocator.handed_out()["uid-trainer"].len(), 2);

    let mut mig = h.client(MIG_1G).await;
    let preferred = mig
        .get_preferred_allocation(preferred_request(&["MIG-1a", "MIG-1b"], &[], 1))
        .await
        .unwrap();
    assert_eq!(
        preferred.into_inner().container_responses[0].device_i_ds,
        strings(&["MIG-1b"])
    );
    // The kubelet ignored the hint: refuse rather than hand over a slice the scheduler did not pick.
    let refused = mig
        .allocate(allocate_request(&["MIG-1a"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("default/notebook") && refused.message().contains("MIG-1b"),
        "{}",
        refused.message()
    );
    let ok = mig
        .allocate(allocate_request(&["MIG-1b"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ok.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"],
        "MIG-1b"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn preferred_allocation_refuses_when_the_annotated_devices_are_not_offered() {
    let mut h = Harness::start().await;
    h.expect_registrations(3, Duration::from_secs(5)).await;
    h.pods.set(vec![pod("trainer", GPU, 1, Some(&["GPU-1"]))]);
    let err = h
        .client(GPU)
        .await
        .get_preferred_allocation(preferred_request(&["GPU-0", "GPU-3"], &[], 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("GPU-1"), "{}", err.message());
    h.shutdown().await;
}

#[tokio::test]
async fn pods_without_annotation_get_numa_aligned_devices_from_the_policy() {
    let mut h = Harness::start().await;
    h.expect_registrations(3, Duration::from_secs(5)).await;
    h.pods.set(vec![pod("default-scheduled", GPU, 2, None)]);
    let mut client = h.client(GPU).await;
    let preferred = client
        .get_preferred_allocation(preferred_request(&["GPU-0", "GPU-1", "GPU-3"], &[], 2))
        .await
        .unwrap();
    let mut chosen = preferred.into_inner().container_responses[0]
        .device_i_ds
        .clone();
    chosen.sort();
    assert_eq!(chosen, strings(&["GPU-1", "GPU-3"]), "both on NUMA node 1");
    // must-include is honoured.
    let preferred = client
        .get_preferred_allocation(preferred_request(
            &["GPU-0", "GPU-1", "GPU-3"],
            &["GPU-0"],
            2,
        ))
        .await
        .unwrap();
    let chosen = preferred.into_inner().container_responses[0]
        .device_i_ds
        .clone();
    assert_eq!(chosen.len(), 2);
    assert_eq!(chosen[0], "GPU-0");
    // Allocate takes the kubelet's ids for an unannotated pod.
    let ok = client
        .allocate(allocate_request(&["GPU-1", "GPU-3"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ok.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"],
        "GPU-1,GPU-3"
    );
    assert!(ok.container_responses[0].annotations.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_duplicate_and_unhealthy_ids_are_refused() {
    let mut h = Harness::start().await;
    h.expect_registrations(3, Duration::from_secs(5)).await;
    let mut client = h.client(GPU).await;

    let err = client
        .allocate(allocate_request(&["GPU-9"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("unknown device id \"GPU-9\""),
        "{}",
        err.message()
    );

    // A slice is not a whole GPU: the id exists, but not for this resource.
    let err = client
        .allocate(allocate_request(&["MIG-1a"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = client
        .allocate(allocate_request(&["GPU-0", "GPU-0"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("twice"));

    let err = client.allocate(allocate_request(&[])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    h.manager
        .set_fault(&["GPU-1".to_string()], Some("XID 79 (fell off the bus)"));
    let err = client
        .allocate(allocate_request(&["GPU-1"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("unhealthy") && err.message().contains("XID 79"),
        "{}",
        err.message()
    );

    let err = client
        .get_preferred_allocation(preferred_request(&["GPU-0"], &[], 2))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "size larger than what is available"
    );
    let err = client
        .get_preferred_allocation(preferred_request(&["bogus"], &[], 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    h.shutdown().await;
}

#[tokio::test]
async fn kubelet_restart_triggers_reregistration_within_a_second() {
    let mut h = Harness::start().await;
    h.expect_registrations(3, Duration::from_secs(5)).await;
    let dir = h.dir.0.clone();

    h.kubelet.stop_and_wipe(&dir).await;
    assert!(
        !dir.join("kubesched-gpu.sock").exists(),
        "the kubelet wiped our sockets"
    );
    let restarted = std::time::Instant::now();
    h.kubelet = common::FakeKubelet::start(&dir, h.registration_tx.clone());
    let regs = h.expect_registrations(3, Duration::from_secs(1)).await;
    assert!(restarted.elapsed() < Duration::from_secs(1));
    assert_eq!(
        regs.iter()
            .map(|r| r.resource_name.as_str())
            .collect::<Vec<_>>(),
        [GPU, MIG_1G, MIG_3G]
    );
    // The servers are back on fresh sockets and answer.
    let mut stream = h
        .client(MIG_3G)
        .await
        .list_and_watch(Empty {})
        .await
        .unwrap()
        .into_inner();
    let devices = stream.message().await.unwrap().unwrap();
    assert_eq!(devices.devices[0].id, "MIG-3g");
    h.shutdown().await;
}

#[tokio::test]
async fn registration_is_retried_until_the_kubelet_appears() {
    let dir = common::TempDir::new();
    let pods = std::sync::Arc::new(kubesched_device_plugin::pods::InMemoryPods::default());
    let (manager, allocator) = common::build_from_fixture(pods);
    let paths = kubesched_device_plugin::kubelet::KubeletPaths {
        plugin_dir: dir.0.clone(),
        kubelet_socket: dir.0.join("kubelet.sock"),
        poll_interval: Duration::from_millis(50),
        retry_interval: Duration::from_secs(30),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let (registered_tx, mut registered) = tokio::sync::watch::channel(true);
    let host = tokio::spawn(kubesched_device_plugin::kubelet::run_plugins(
        paths,
        manager,
        allocator,
        stopped,
        registered_tx,
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No kubelet: the host says it is not registered (the agent then publishes `draining`).
    assert!(!*registered.borrow_and_update());
    // The kubelet comes up after the agent: its socket appearing triggers registration at once
    // (well before the 30 s retry).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _kubelet = common::FakeKubelet::start(&dir.0, tx);
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
    // Every resource registered: the signal turns true.
    tokio::time::timeout(Duration::from_secs(1), registered.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    stop.cancel();
    host.await.unwrap().unwrap();
    assert!(!*registered.borrow(), "not registered once stopped");
}

#[tokio::test]
async fn an_unreadable_annotation_is_refused_with_its_reason() {
    let mut h = Harness::start().await;
    h.expect_registrations(3, Duration::from_secs(5)).await;
    let mut newer = pod("future", MIG_3G, 1, None);
    newer.devices = kubesched_device_plugin::pods::PodDevices::Unreadable(
        "kubesched.ai/devices: devices document version 2 is newer than this build supports".into(),
    );
    h.pods.set(vec![newer]);
    let mut client = h.client(MIG_3G).await;
    for err in [
        client
            .get_preferred_allocation(preferred_request(&["MIG-3g"], &[], 1))
            .await
            .unwrap_err(),
        client
            .allocate(allocate_request(&["MIG-3g"]))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().contains("default/future") && err.message().contains("version 2"),
            "{}",
            err.message()
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn pods_already_served_do_not_end_the_wait_for_a_new_one() {
    let pods = std::sync::Arc::new(kubesched_device_plugin::pods::InMemoryPods::default());
    let (_manager, allocator) = common::build_from_fixture(pods.clone());
    let allocator = std::sync::Arc::into_inner(allocator)
        .unwrap()
        .with_pod_wait(Duration::from_secs(2));
    // An earlier pod got its GPU; the cache then lags behind the next pod (as after an
    // API server restart): the kubelet's offer must wait for it, not follow the policy.
    pods.set(vec![pod("old", GPU, 1, Some(&["GPU-0"]))]);
    allocator.allocate(GPU, &strings(&["GPU-0"])).await.unwrap();
    let late = {
        let pods = pods.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            pods.set(vec![
                pod("old", GPU, 1, Some(&["GPU-0"])),
                pod("new", GPU, 1, Some(&["GPU-3"])),
            ]);
        })
    };
    let request = ContainerPreferredAllocationRequest {
        available_device_i_ds: strings(&["GPU-1", "GPU-3"]),
        must_include_device_i_ds: Vec::new(),
        allocation_size: 1,
    };
    let preferred = allocator.preferred(GPU, &request).await.unwrap();
    assert_eq!(
        preferred.device_i_ds,
        strings(&["GPU-3"]),
        "the new pod's annotated GPU, once it is seen"
    );
    late.await.unwrap();
}

#[tokio::test]
async fn allocate_waits_for_a_pod_the_cache_has_not_seen_yet() {
    let pods = std::sync::Arc::new(kubesched_device_plugin::pods::InMemoryPods::default());
    let (_manager, allocator) = common::build_from_fixture(pods.clone());
    let allocator = std::sync::Arc::into_inner(allocator)
        .unwrap()
        .with_pod_wait(Duration::from_secs(2))
        .with_annotation_prefix("example.org");
    let late = {
        let pods = pods.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            pods.set(vec![pod("late", GPU, 1, Some(&["GPU-1"]))]);
        })
    };
    // The kubelet offers GPU-0 before the pod (annotated GPU-1) reached the cache: once it
    // arrives the mismatch is refused instead of silently handing over GPU-0.
    let err = allocator
        .allocate(GPU, &strings(&["GPU-0"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("default/late"), "{err}");
    late.await.unwrap();
    let ok = allocator.allocate(GPU, &strings(&["GPU-1"])).await.unwrap();
    assert_eq!(
        ok.annotations.get("example.org/pod").map(String::as_str),
        Some("default/late")
    );
}

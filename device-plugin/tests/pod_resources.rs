//! The kubelet PodResources client over a real Unix socket, against an in-test fake
//! PodResourcesLister: usage reading, per-NUMA free CPUs and memory, hand-out reconciliation,
//! a kubelet that only offers `List`, and a missing socket handled without failing.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TempDir, pod};
use kubesched_core::inventory::NumaNodeInfo;
use kubesched_device_plugin::kubelet::{PodResourcesError, UsageReader, read_usage};
use kubesched_device_plugin::pods::InMemoryPods;
use kubesched_proto::podresources::v1::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use kubesched_proto::podresources::v1::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices, ContainerMemory,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, NumaNode, PodResources, TopologyInfo,
};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

const MIB: u64 = 1024 * 1024;

fn numa(ids: &[i64]) -> Option<TopologyInfo> {
    Some(TopologyInfo {
        nodes: ids.iter().map(|&id| NumaNode { id }).collect(),
    })
}

fn memory(numa_ids: &[i64], mib: u64) -> ContainerMemory {
    ContainerMemory {
        memory_type: "memory".into(),
        size: mib * MIB,
        topology: numa(numa_ids),
    }
}

/// A kubelet whose node has CPUs 1-7 allocatable (0 reserved), 4 GiB per NUMA node under the
/// Memory Manager, and two pods: `trainer` holding GPU-0 and GPU-3 with CPUs 1 and 5, and
/// `notebook` holding slice MIG-1a (its annotation named MIG-1b) with CPU 6. `refuse` makes
/// `GetAllocatableResources` fail with that status.
struct FakeLister {
    refuse: Option<fn() -> Status>,
}

#[tonic::async_trait]
impl PodResourcesLister for FakeLister {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        Ok(Response::new(ListPodResourcesResponse {
            pod_resources: vec![
                PodResources {
                    name: "trainer".into(),
                    namespace: "default".into(),
                    containers: vec![ContainerResources {
                        name: "main".into(),
                        devices: vec![ContainerDevices {
                            resource_name: "nvidia.com/gpu".into(),
                            device_ids: vec!["GPU-0".into(), "GPU-3".into()],
                            topology: numa(&[0]),
                        }],
                        cpu_ids: vec![1, 5],
                        memory: vec![
                            memory(&[0, 1], 1024),
                            ContainerMemory {
                                memory_type: "hugepages-2Mi".into(),
                                size: 512 * MIB,
                                topology: numa(&[0]),
                            },
                        ],
                        dynamic_resources: vec![],
                    }],
                },
                PodResources {
                    name: "notebook".into(),
                    namespace: "default".into(),
                    containers: vec![ContainerResources {
                        name: "lab".into(),
                        devices: vec![ContainerDevices {
                            resource_name: "nvidia.com/mig-1g.10gb".into(),
                            device_ids: vec!["MIG-1a".into()],
                            topology: numa(&[1]),
                        }],
                        cpu_ids: vec![6],
                        memory: vec![memory(&[1], 512)],
                        dynamic_resources: vec![],
                    }],
                },
            ],
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        if let Some(refusal) = self.refuse {
            return Err(refusal());
        }
        Ok(Response::new(AllocatableResourcesResponse {
            devices: vec![],
            cpu_ids: (1..8).collect(),
            memory: vec![memory(&[0], 4096), memory(&[1], 4096)],
        }))
    }

    async fn get(
        &self,
        _: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        Err(Status::unimplemented("not used by the agent"))
    }
}

fn serve(dir: &TempDir) -> (std::path::PathBuf, tokio::sync::oneshot::Sender<()>) {
    serve_lister(dir, FakeLister { refuse: None })
}

fn serve_lister(
    dir: &TempDir,
    lister: FakeLister,
) -> (std::path::PathBuf, tokio::sync::oneshot::Sender<()>) {
    let socket = dir.0.join("pod-resources.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PodResourcesListerServer::new(lister))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    (socket, stop)
}

fn fixture_numa() -> Vec<NumaNodeInfo> {
    (0..2)
        .map(|id| NumaNodeInfo {
            id,
            cpus: (id * 4..id * 4 + 4).collect(),
            memory_mib: 65536,
            free_cpus: None,
            free_memory_mib: None,
        })
        .collect()
}

#[tokio::test]
async fn reads_holdings_and_publishes_free_cpus_and_memory_per_numa_node() {
    let dir = TempDir::new();
    let (socket, _stop) = serve(&dir);
    let usage = read_usage(&socket, Duration::from_secs(5)).await.unwrap();

    assert_eq!(usage.allocatable_cpus, (1..8).collect::<BTreeSet<u32>>());
    let trainer = &usage.containers[0];
    assert_eq!(
        (
            trainer.namespace.as_str(),
            trainer.pod.as_str(),
            trainer.container.as_str()
        ),
        ("default", "trainer", "main")
    );
    assert_eq!(
        trainer.devices,
        [
            ("nvidia.com/gpu".to_string(), "GPU-0".to_string()),
            ("nvidia.com/gpu".to_string(), "GPU-3".to_string())
        ]
    );
    assert_eq!(trainer.cpus, [1, 5]);
    assert_eq!(trainer.memory.len(), 1, "hugepages are not ordinary memory");

    let mut nodes = fixture_numa();
    usage.apply_free(&mut nodes);
    assert_eq!(nodes[0].free_cpus, Some(vec![2, 3]), "0 reserved, 1 pinned");
    assert_eq!(nodes[1].free_cpus, Some(vec![4, 7]), "5 and 6 pinned");
    assert_eq!(nodes[0].free_memory_mib, Some(4096 - 512));
    assert_eq!(nodes[1].free_memory_mib, Some(4096 - 512 - 512));

    let held = usage.devices_by_pod();
    assert_eq!(
        held["default/trainer"],
        BTreeSet::from(["GPU-0".to_string(), "GPU-3".to_string()])
    );
    assert_eq!(
        held["default/notebook"],
        BTreeSet::from(["MIG-1a".to_string()])
    );
}

#[tokio::test]
async fn reconciliation_restores_hand_outs_and_reports_pods_holding_other_devices() {
    let dir = TempDir::new();
    let (socket, _stop) = serve(&dir);
    let pods = std::sync::Arc::new(InMemoryPods::default());
    let (_manager, allocator) = common::build_from_fixture(pods);
    let views = vec![
        pod("trainer", "nvidia.com/gpu", 2, Some(&["GPU-0", "GPU-3"])),
        pod("notebook", "nvidia.com/mig-1g.10gb", 1, Some(&["MIG-1b"])),
        pod("gone", "nvidia.com/gpu", 1, Some(&["GPU-1"])),
    ];
    let usage = read_usage(&socket, Duration::from_secs(5)).await.unwrap();
    let mismatched = allocator.record_holdings(&views, &usage.devices_by_pod());
    assert_eq!(mismatched, ["default/notebook"]);
    let handed = allocator.handed_out();
    assert_eq!(
        handed["uid-trainer"],
        BTreeSet::from(["GPU-0".to_string(), "GPU-3".to_string()]),
        "after an agent restart the trainer's devices count as handed out"
    );
    assert!(
        !handed.contains_key("uid-notebook"),
        "MIG-1a was not its slice"
    );
    assert!(!handed.contains_key("uid-gone"), "holds nothing yet");
}

#[tokio::test]
async fn a_kubelet_without_get_allocatable_still_gives_holdings_but_no_free_figures() {
    // Before 1.21 the method is unknown; 1.21-1.22 refuse it unless its feature gate is on.
    let old_kubelets: [fn() -> Status; 2] = [
        || {
            Status::unimplemented(
                "unknown method GetAllocatableResources for service v1.PodResourcesLister",
            )
        },
        || Status::unknown("Pod Resources API GetAllocatableResources disabled"),
    ];
    for refuse in old_kubelets {
        let dir = TempDir::new();
        let (socket, _stop) = serve_lister(
            &dir,
            FakeLister {
                refuse: Some(refuse),
            },
        );
        let usage = read_usage(&socket, Duration::from_secs(5)).await.unwrap();
        assert!(!usage.allocatable_reported);
        assert_eq!(
            usage.devices_by_pod()["default/trainer"],
            BTreeSet::from(["GPU-0".to_string(), "GPU-3".to_string()])
        );
        let mut numa = fixture_numa();
        usage.apply_free(&mut numa);
        assert!(
            numa.iter()
                .all(|n| n.free_cpus.is_none() && n.free_memory_mib.is_none()),
            "no figures rather than wrong ones: {numa:?}"
        );
    }

    // Any other failure is an error, not a reading without figures.
    let dir = TempDir::new();
    let (socket, _stop) = serve_lister(
        &dir,
        FakeLister {
            refuse: Some(|| Status::unavailable("kubelet shutting down")),
        },
    );
    let err = read_usage(&socket, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PodResourcesError::Call {
                call: "GetAllocatableResources",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_socket_is_reported_once_and_never_fails_the_agent() {
    let dir = TempDir::new();
    let missing = dir.0.join("no-kubelet.sock");
    let err = read_usage(&missing, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, PodResourcesError::Missing(_)), "{err}");

    let mut reader = UsageReader::new(&missing, Duration::from_secs(1));
    assert_eq!(reader.read().await, None);
    assert!(reader.is_down());
    assert_eq!(reader.read().await, None);

    // The kubelet comes up on that path: figures come back.
    let (socket, _stop) = serve(&dir);
    std::fs::rename(&socket, &missing).unwrap();
    let usage = reader.read().await.expect("kubelet answers");
    assert!(!reader.is_down());
    assert_eq!(usage.containers.len(), 2);
}

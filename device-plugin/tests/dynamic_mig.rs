//! Dynamic MIG against the fake backend, through the agent's own code paths: a seeded churn
//! of create/destroy cycles, an agent restart with orphans and running pods, and the whole
//! node agent over real gRPC (Allocate creating the instance, ListAndWatch following it, a
//! taken placement refused).
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FakeKubelet, TempDir};
use kubesched_core::annotation::{
    AssignedDevice, AssignedMig, DEVICES_VERSION, DevicesAnnotation, dynamic_slot_id,
};
use kubesched_core::catalogue;
use kubesched_core::inventory::{GpuInfo, MigInfo, MigMode};
use kubesched_core::request::{GpuDemand, ResourceNames};
use kubesched_core::rng::SplitMix64;
use kubesched_device_plugin::devices::socket_name;
use kubesched_device_plugin::discovery::FakeInventory;
use kubesched_device_plugin::kubelet;
use kubesched_device_plugin::mig::FakeMigBackend;
use kubesched_device_plugin::mig::{DynamicMig, DynamicMigError, DynamicSelection};
use kubesched_device_plugin::mig::{GpuCondition, GpuProcess, MigBackend, MigBackendError};
use kubesched_device_plugin::pods::{InMemoryPods, PodDevices, PodView};
use kubesched_k8s::PodRef;
use kubesched_proto::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use kubesched_proto::deviceplugin::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, Empty, ListAndWatchResponse,
};
use tonic::Code;

const MODEL: &str = "H100-80GB";

fn mig_gpu(index: u32) -> GpuInfo {
    GpuInfo {
        index,
        uuid: format!("GPU-{index}"),
        model: MODEL.into(),
        pci_bus_id: format!("0000:{:02x}:00.0", index + 1),
        numa_node: Some(index % 2),
        memory_mib: 81559,
        healthy: true,
        mig: Some(MigInfo {
            mode: MigMode::Static,
            instances: vec![],
            geometry: None,
            blocked: None,
        }),
    }
}

/// A pod the extender placed on `gpu` at `profile@start` (a dynamic slot: no UUID yet).
fn dynamic_pod(name: &str, gpu: &str, profile: &str, start: u8) -> PodView {
    PodView {
        id: PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        demand: GpuDemand::Mig {
            profile: profile.into(),
            count: 1,
        },
        devices: PodDevices::Assigned(DevicesAnnotation {
            version: DEVICES_VERSION,
            node: "test-node".into(),
            resource: ResourceNames::default().mig(profile),
            devices: vec![AssignedDevice {
                gpu_uuid: gpu.into(),
                gpu_index: gpu.trim_start_matches("GPU-").parse().unwrap_or(0),
                mig: Some(AssignedMig {
                    profile: profile.into(),
                    start,
                    uuid: None,
                }),
            }],
            numa_node: None,
            signature: None,
        }),
        admitted: false,
    }
}

fn pod_ref(pod: &PodView) -> PodRef {
    pod.id.clone()
}

/// The single placement a dynamic pod was given.
fn placement(pod: &PodView) -> (String, String, u8) {
    match &pod.devices {
        PodDevices::Assigned(a) => {
            let d = &a.devices[0];
            let m = d.mig.as_ref().unwrap();
            (d.gpu_uuid.clone(), m.profile.clone(), m.start)
        }
        other => panic!("not a dynamic pod: {other:?}"),
    }
}

/// What the kubelet's PodResources would say: each pod holds its slot id.
fn held(pods: &[PodView]) -> BTreeMap<String, BTreeSet<String>> {
    pods.iter()
        .map(|p| {
            let (gpu, profile, start) = placement(p);
            (
                p.id.to_string(),
                BTreeSet::from([dynamic_slot_id(&gpu, &profile, start)]),
            )
        })
        .collect()
}

/// Thousands of seeded create/destroy cycles with random profiles and placements (free ones
/// mostly, taken ones on purpose too): after every step the fake's occupancy of each GPU is
/// exactly the union of the live pods' placements, no two live pods overlap, and every taken
/// placement is refused with "insufficient resources".
#[test]
fn churn_keeps_occupancy_equal_to_the_live_pods() {
    const CYCLES: usize = 20_000;
    const GPUS: u32 = 4;
    let started = Instant::now();
    let geometry = catalogue::mig_geometry(MODEL).unwrap();
    let backend = Arc::new(FakeMigBackend::default());
    let gpus: Vec<GpuInfo> = (0..GPUS).map(mig_gpu).collect();
    for gpu in &gpus {
        backend.add_gpu(&gpu.uuid, geometry.clone());
    }
    let dynamic = DynamicMig::new(
        backend.clone(),
        DynamicSelection::All,
        Duration::from_secs(60),
    );
    dynamic.track(&gpus);

    let mut rng = SplitMix64::new(0x5eed_2024);
    let mut live: Vec<PodView> = Vec::new();
    let (mut created, mut refused, mut destroyed) = (0u32, 0u32, 0u32);
    let now = Instant::now();
    for cycle in 0..CYCLES {
        let create = live.is_empty() || rng.below(100) < 55;
        if create {
            let gpu = &gpus[rng.below(gpus.len())].uuid;
            let profile = &geometry.profiles[rng.below(geometry.profiles.len())];
            let start = profile.starts[rng.below(profile.starts.len())];
            let pod = dynamic_pod(&format!("p{cycle}"), gpu, &profile.name, start);
            let mask = profile.mask_at(start);
            let used = backend.used_mask(gpu).unwrap();
            match dynamic.ensure(gpu, &profile.name, start, Some(&pod_ref(&pod))) {
                Ok(uuid) => {
                    assert_eq!(
                        used & mask,
                        0,
                        "cycle {cycle}: created over taken positions"
                    );
                    assert!(uuid.starts_with("MIG-"));
                    // Idempotent: the same pod asking again gets the same instance.
                    assert_eq!(
                        dynamic.ensure(gpu, &profile.name, start, Some(&pod_ref(&pod))),
                        Ok(uuid)
                    );
                    live.push(pod);
                    created += 1;
                }
                // The same placement held by another pod, or positions in the way.
                Err(
                    DynamicMigError::Taken { .. }
                    | DynamicMigError::Backend(MigBackendError::InsufficientResources { .. }),
                ) => {
                    assert_eq!(
                        backend.used_mask(gpu),
                        Some(used),
                        "cycle {cycle}: a refusal changed nothing"
                    );
                    refused += 1;
                }
                Err(other) => panic!("cycle {cycle}: unexpected {other}"),
            }
        } else {
            let gone = live.swap_remove(rng.below(live.len()));
            let report = dynamic.clean_up(&live, Some(&held(&live)), now);
            assert_eq!(report.destroyed.len(), 1, "cycle {cycle}: {report:?}");
            assert!(report.failed.is_empty(), "cycle {cycle}: {report:?}");
            let (gpu, _, start) = placement(&gone);
            assert_eq!(report.destroyed[0], format!("{gpu}@{start}"));
            destroyed += 1;
        }
        // Occupancy equals the live pods' placements, which never overlap.
        let mut expected: BTreeMap<String, u8> = BTreeMap::new();
        for pod in &live {
            let (gpu, profile, start) = placement(pod);
            let mask = geometry.profile(&profile).unwrap().1.mask_at(start);
            let used = expected.entry(gpu).or_default();
            assert_eq!(*used & mask, 0, "cycle {cycle}: two live instances overlap");
            *used |= mask;
        }
        for gpu in &gpus {
            assert_eq!(
                backend.used_mask(&gpu.uuid),
                Some(expected.get(&gpu.uuid).copied().unwrap_or(0)),
                "cycle {cycle}: {} occupancy",
                gpu.uuid
            );
            let instances = backend.instances(&gpu.uuid).unwrap().len();
            let pods = live.iter().filter(|p| placement(p).0 == gpu.uuid).count();
            assert_eq!(instances, pods, "cycle {cycle}");
        }
    }
    assert!(
        created > 5000 && refused > 2000 && destroyed > 5000,
        "{created} {refused} {destroyed}"
    );
    println!(
        "churn: {CYCLES} cycles on {GPUS} GPUs: {created} created, {refused} refused (taken), {destroyed} destroyed in {:?}",
        started.elapsed()
    );
}

/// A restarted agent knows no owners: instances that running pods hold (per PodResources, or
/// per their annotation before admission) are kept, orphans are destroyed only after the
/// grace period, and an orphan with a process in it blocks its GPU and survives.
#[test]
fn restart_keeps_running_pods_instances_and_destroys_orphans_after_grace() {
    let geometry = catalogue::mig_geometry(MODEL).unwrap();
    let backend = Arc::new(FakeMigBackend::default());
    let gpus: Vec<GpuInfo> = (0..2).map(mig_gpu).collect();
    for gpu in &gpus {
        backend.add_gpu(&gpu.uuid, geometry.clone());
    }
    // What the previous agent left: three pods' instances and one orphan on GPU-0.
    let running = dynamic_pod("running", "GPU-0", "3g.40gb", 4);
    let admitted_unannotated = "default/legacy";
    let pending = dynamic_pod("pending", "GPU-0", "1g.10gb", 0);
    for (profile, start) in [
        ("3g.40gb", 4),
        ("1g.10gb", 0),
        ("1g.10gb", 1),
        ("2g.20gb", 2),
    ] {
        backend.create("GPU-0", profile, start).unwrap();
    }
    let legacy_slot = dynamic_slot_id("GPU-0", "1g.10gb", 1);
    // GPU-1: an orphan in which some process runs.
    backend.create("GPU-1", "7g.80gb", 0).unwrap();
    backend
        .set_condition(
            "GPU-1",
            GpuCondition {
                pending_mode_change: false,
                processes: vec![GpuProcess {
                    pid: 4242,
                    start: Some(0),
                }],
            },
        )
        .unwrap();

    let grace = Duration::from_secs(60);
    let restarted = DynamicMig::new(backend.clone(), DynamicSelection::All, grace);
    restarted.track(&gpus);
    let pods = vec![running.clone(), pending.clone()];
    let mut kubelet = held(std::slice::from_ref(&running));
    kubelet.insert(admitted_unannotated.into(), BTreeSet::from([legacy_slot]));

    let t0 = Instant::now();
    for at in [t0, t0 + Duration::from_secs(59)] {
        let report = restarted.clean_up(&pods, Some(&kubelet), at);
        assert!(report.destroyed.is_empty(), "{report:?}");
        assert_eq!(backend.instances("GPU-0").unwrap().len(), 4);
    }
    let report = restarted.clean_up(&pods, Some(&kubelet), t0 + Duration::from_secs(61));
    assert_eq!(report.destroyed, ["GPU-0@2"], "only the orphan 2g goes");
    let starts: Vec<u8> = backend
        .instances("GPU-0")
        .unwrap()
        .iter()
        .map(|i| i.start)
        .collect();
    assert_eq!(starts, [0, 1, 4]);
    assert_eq!(
        backend.instances("GPU-1").unwrap().len(),
        1,
        "busy GPU untouched"
    );
    let status = restarted.status();
    let gpu1 = status.iter().find(|s| s.gpu == "GPU-1").unwrap();
    assert!(
        gpu1.blocked.as_deref().unwrap_or("").contains("pid 4242"),
        "{status:?}"
    );
    // The blocked GPU is published with its reason (still healthy) and refuses new instances.
    let published = restarted.overlay(&gpus);
    let blocked_of = |g: &GpuInfo| g.mig.as_ref().and_then(|m| m.blocked.clone());
    assert!(
        blocked_of(&published[1])
            .unwrap_or_default()
            .contains("pid 4242")
    );
    assert_eq!(blocked_of(&published[0]), None);
    assert!(published[1].healthy && published[0].healthy);
    assert_eq!(published[0].mig.as_ref().unwrap().mode, MigMode::Dynamic);
    assert!(matches!(
        restarted.ensure("GPU-1", "1g.10gb", 0, None),
        Err(DynamicMigError::Blocked { .. })
    ));

    // The adopted instance belongs to its pod: another pod cannot take it over.
    let intruder = dynamic_pod("intruder", "GPU-0", "3g.40gb", 4);
    let err = restarted
        .ensure("GPU-0", "3g.40gb", 4, Some(&pod_ref(&intruder)))
        .unwrap_err();
    assert!(err.to_string().contains("default/running"), "{err}");

    // Once the running pod ends (gone from the pods and the kubelet) its instance goes at once.
    let pods = vec![pending];
    kubelet.remove("default/running");
    let report = restarted.clean_up(&pods, Some(&kubelet), t0 + Duration::from_secs(62));
    assert_eq!(report.destroyed, ["GPU-0@4"]);
}

const FIXTURE: &str = r#"{
  "driverVersion": "550.54.15",
  "topologyPolicy": "none",
  "numaNodes": [{ "id": 0, "cpus": [0, 1], "memoryMib": 4096 }, { "id": 1, "cpus": [2, 3], "memoryMib": 4096 }],
  "gpus": [
    { "index": 0, "uuid": "GPU-0", "model": "H100-80GB", "pciBusId": "0000:1b:00.0", "numaNode": 1,
      "memoryMib": 81559, "healthy": true, "mig": { "mode": "static", "instances": [] } }
  ]
}"#;

fn ids(response: &ListAndWatchResponse) -> Vec<String> {
    response.devices.iter().map(|d| d.id.clone()).collect()
}

fn slots(profile: &str, starts: &[u8]) -> Vec<String> {
    starts
        .iter()
        .map(|s| dynamic_slot_id("GPU-0", profile, *s))
        .collect()
}

async fn next(stream: &mut tonic::Streaming<ListAndWatchResponse>) -> ListAndWatchResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a ListAndWatch update in time")
        .unwrap()
        .unwrap()
}

fn allocate(id: &str) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec![id.to_string()],
        }],
    }
}

/// The whole agent with a dynamic GPU: free placements are advertised with the parent's NUMA
/// node; Allocate creates the annotated instance and hands its MIG UUID; ListAndWatch drops the
/// placements it overlaps; a pod annotated onto a taken placement is refused clearly; when the
/// pod ends the instance is destroyed and the placements come back.
#[tokio::test]
async fn agent_creates_on_allocate_and_list_and_watch_follows() {
    let dir = TempDir::new();
    let fixture = dir.0.join("node.json");
    std::fs::write(&fixture, FIXTURE).unwrap();
    let fake = FakeInventory::open(&fixture).unwrap();
    let backend = Arc::new(FakeMigBackend::from_fixture(&fake.load().unwrap()).unwrap());
    // No PodResources here: an ended pod's instance goes after the (short) grace period.
    let dynamic = Arc::new(DynamicMig::new(
        backend.clone(),
        DynamicSelection::All,
        Duration::from_millis(300),
    ));
    let (tx, mut registrations) = tokio::sync::mpsc::unbounded_channel();
    let _kubelet = FakeKubelet::start(&dir.0, tx);
    let pods = Arc::new(InMemoryPods::default());
    let mut agent = common::test_agent(&dir.0, fake, pods.clone());
    agent.dynamic_mig = Some(dynamic.clone());
    agent.mig_cleanup_every = Duration::from_millis(50);
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(agent.run(stop.clone()));
    // One resource per profile (`1g.10gb+me` as `mig-1g.10gb.me`).
    let mut names = Vec::new();
    for _ in 0..7 {
        let r = tokio::time::timeout(Duration::from_secs(5), registrations.recv())
            .await
            .unwrap()
            .unwrap();
        names.push(r.resource_name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "nvidia.com/mig-1g.10gb",
            "nvidia.com/mig-1g.10gb.me",
            "nvidia.com/mig-1g.20gb",
            "nvidia.com/mig-2g.20gb",
            "nvidia.com/mig-3g.40gb",
            "nvidia.com/mig-4g.40gb",
            "nvidia.com/mig-7g.80gb"
        ]
    );
    let client = |resource: &str| {
        let socket = dir.0.join(socket_name(resource));
        async move {
            DevicePluginClient::new(
                kubelet::connect(&socket, Duration::from_secs(5))
                    .await
                    .unwrap(),
            )
        }
    };
    let mut small = client("nvidia.com/mig-1g.10gb")
        .await
        .list_and_watch(Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut small).await;
    assert_eq!(ids(&first), slots("1g.10gb", &[0, 1, 2, 3, 4, 5, 6]));
    assert!(
        first
            .devices
            .iter()
            .all(|d| d.health == "Healthy"
                && d.topology.as_ref().is_some_and(|t| t.nodes[0].id == 1))
    );
    let mut big = client("nvidia.com/mig-3g.40gb").await;
    let mut big_watch = big.list_and_watch(Empty {}).await.unwrap().into_inner();
    assert_eq!(ids(&next(&mut big_watch).await), slots("3g.40gb", &[0, 4]));

    // The extender put `trainer` at 3g.40gb@4; the kubelet allocates that slot.
    let trainer = dynamic_pod("trainer", "GPU-0", "3g.40gb", 4);
    pods.set(vec![trainer.clone()]);
    let slot = dynamic_slot_id("GPU-0", "3g.40gb", 4);
    let response = big.allocate(allocate(&slot)).await.unwrap().into_inner();
    let visible = response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"].clone();
    let live = backend.instances("GPU-0").unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        Some(visible.clone()),
        live[0].uuid,
        "the container sees the new MIG UUID"
    );
    // Idempotent: a second Allocate for the same pod and slot hands the same instance.
    let again = big.allocate(allocate(&slot)).await.unwrap().into_inner();
    assert_eq!(
        again.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"],
        visible
    );
    assert_eq!(backend.instances("GPU-0").unwrap().len(), 1);

    // 1g placements inside positions 4-7 disappear; the 3g list keeps the live one's slot.
    let mut update = next(&mut small).await;
    while ids(&update).len() != 4 {
        update = next(&mut small).await;
    }
    assert_eq!(ids(&update), slots("1g.10gb", &[0, 1, 2, 3]));

    // A pod annotated onto a taken placement is refused, never placed elsewhere.
    let late = dynamic_pod("late", "GPU-0", "1g.10gb", 5);
    pods.set(vec![trainer.clone(), late]);
    let err = client("nvidia.com/mig-1g.10gb")
        .await
        .allocate(allocate(&dynamic_slot_id("GPU-0", "1g.10gb", 5)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("insufficient resources")
            && err.message().contains("default/late")
            && err.message().contains("refusing to place it anywhere else"),
        "{}",
        err.message()
    );
    assert_eq!(backend.instances("GPU-0").unwrap().len(), 1);

    // The trainer ends: its instance is destroyed and every placement is advertised again.
    pods.set(vec![]);
    let mut update = next(&mut small).await;
    while ids(&update).len() != 7 {
        update = next(&mut small).await;
    }
    assert!(backend.instances("GPU-0").unwrap().is_empty());
    assert_eq!(backend.used_mask("GPU-0"), Some(0));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

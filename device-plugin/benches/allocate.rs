//! Allocate latency over real gRPC on a real Unix socket: one annotated pod per call, as the
//! kubelet would issue it. Criterion reports the mean; the p99 is printed from a separate
//! timed loop because criterion 0.5 does not report percentiles.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_main!` generates an undocumented `main`.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kubesched_core::annotation::{AssignedDevice, DEVICES_VERSION, DevicesAnnotation};
use kubesched_core::inventory::{GpuInfo, INVENTORY_VERSION, NodeInventory};
use kubesched_core::request::{GpuDemand, ResourceNames};
use kubesched_device_plugin::devices::Allocator;
use kubesched_device_plugin::devices::ResourceManager;
use kubesched_device_plugin::devices::plan;
use kubesched_device_plugin::kubelet;
use kubesched_device_plugin::kubelet::PluginServer;
use kubesched_device_plugin::pods::{InMemoryPods, PodDevices, PodView};
use kubesched_k8s::PodRef;
use kubesched_proto::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use kubesched_proto::deviceplugin::v1beta1::{AllocateRequest, ContainerAllocateRequest};

const GPUS: u32 = 8;
const PODS: usize = 50;

fn setup(
    rt: &tokio::runtime::Runtime,
) -> (
    PluginServer,
    DevicePluginClient<tonic::transport::Channel>,
    PathBuf,
) {
    let gpus: Vec<GpuInfo> = (0..GPUS)
        .map(|i| GpuInfo {
            index: i,
            uuid: format!("GPU-{i}"),
            model: "H100-80GB".into(),
            pci_bus_id: format!("0000:{:02x}:00.0", i + 1),
            numa_node: Some(i / 4),
            memory_mib: 81559,
            healthy: true,
            mig: None,
        })
        .collect();
    let names = ResourceNames::default();
    let manager = Arc::new(ResourceManager::new(plan(
        &gpus,
        &names,
        &Default::default(),
    )));
    // Many bound pods, one of which names the GPU being allocated: the realistic lookup cost.
    let pods: Vec<PodView> = (0..PODS)
        .map(|p| PodView {
            id: PodRef {
                namespace: "bench".into(),
                name: format!("pod-{p}"),
                uid: format!("uid-{p}"),
            },
            demand: GpuDemand::Whole { count: 1 },
            devices: PodDevices::Assigned(DevicesAnnotation {
                version: DEVICES_VERSION,
                node: "bench".into(),
                resource: "nvidia.com/gpu".into(),
                devices: vec![AssignedDevice {
                    gpu_uuid: format!("GPU-{}", p as u32 % GPUS),
                    gpu_index: p as u32 % GPUS,
                    mig: None,
                }],
                numa_node: None,
                signature: None,
            }),
            admitted: false,
        })
        .collect();
    let inventory = NodeInventory {
        version: INVENTORY_VERSION,
        node: "bench".into(),
        agent_version: "bench".into(),
        topology_policy: Default::default(),
        numa_nodes: vec![],
        gpus,
        draining: false,
    };
    let allocator = Arc::new(Allocator::new(
        manager.clone(),
        Arc::new(InMemoryPods::new(pods)),
        names,
        inventory,
    ));
    let socket = std::env::temp_dir().join(format!("ksdp-bench-{}.sock", std::process::id()));
    rt.block_on(async {
        let server = PluginServer::start(&socket, "nvidia.com/gpu", manager, allocator)
            .expect("bench server starts");
        let channel = kubelet::connect(&socket, Duration::from_secs(5))
            .await
            .expect("bench client connects");
        (server, DevicePluginClient::new(channel), socket)
    })
}

fn request(i: u64) -> AllocateRequest {
    AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec![format!("GPU-{}", i % u64::from(GPUS))],
        }],
    }
}

fn bench_allocate(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (server, mut client, _socket) = setup(&rt);

    // p50/p99 over a fixed number of calls.
    let mut samples: Vec<Duration> = Vec::with_capacity(5000);
    rt.block_on(async {
        for i in 0..5000u64 {
            let start = Instant::now();
            client
                .allocate(request(i))
                .await
                .expect("allocate succeeds");
            samples.push(start.elapsed());
        }
    });
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "allocate over UDS: n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );

    let mut i = 0u64;
    c.bench_function("allocate_grpc_uds", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(client.allocate(request(i)))
                .expect("allocate succeeds")
        })
    });
    rt.block_on(server.stop());
}

criterion_group!(benches, bench_allocate);
criterion_main!(benches);

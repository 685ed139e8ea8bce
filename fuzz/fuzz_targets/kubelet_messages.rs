//! The kubelet-facing gRPC messages, decoded from raw protobuf bytes and handed to the
//! DevicePlugin service as tonic would: the first byte picks GetPreferredAllocation or
//! Allocate, the rest is the message. The service never panics, and what it hands out are
//! advertised devices, each at most once per answer.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kubesched_core::inventory::{INVENTORY_VERSION, NodeInventory};
use kubesched_core::request::ResourceNames;
use kubesched_device_plugin::devices::{Allocator, ResourceManager, VISIBLE_DEVICES_ENV, plan};
use kubesched_device_plugin::discovery::{FakeInventory, GpuInventory};
use kubesched_device_plugin::kubelet::DevicePluginService;
use kubesched_device_plugin::pods::InMemoryPods;
use kubesched_proto::deviceplugin::v1beta1::device_plugin_server::DevicePlugin;
use kubesched_proto::deviceplugin::v1beta1::{AllocateRequest, PreferredAllocationRequest};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../device-plugin/tests/fixtures/node.json");

struct Plugin {
    runtime: tokio::runtime::Runtime,
    manager: Arc<ResourceManager>,
    services: Vec<DevicePluginService>,
}

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let fake = FakeInventory::open(FIXTURE).unwrap_or_else(|e| panic!("{e}"));
        let found = fake.discover().unwrap_or_else(|e| panic!("{e}"));
        let fixture = fake.load().unwrap_or_else(|e| panic!("{e}"));
        let names = ResourceNames::default();
        let manager = Arc::new(ResourceManager::new(plan(
            &found.gpus,
            &names,
            &found.gpu_instance_ids,
        )));
        let inventory = NodeInventory {
            version: INVENTORY_VERSION,
            node: "test-node".into(),
            agent_version: "fuzz".into(),
            topology_policy: fixture.topology_policy,
            numa_nodes: fixture.numa_nodes,
            gpus: found.gpus,
        };
        let pods = Arc::new(InMemoryPods::default());
        let allocator = Arc::new(
            Allocator::new(manager.clone(), pods, names, inventory).with_pod_wait(Duration::ZERO),
        );
        let services = manager
            .resource_names()
            .into_iter()
            .map(|resource| {
                DevicePluginService::new(
                    resource,
                    manager.clone(),
                    allocator.clone(),
                    CancellationToken::new(),
                )
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        Plugin {
            runtime,
            manager,
            services,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let plugin = plugin();
    let Some(service) = plugin.services.get(usize::from(selector >> 1) % plugin.services.len())
    else {
        return;
    };
    let known: HashSet<String> = plugin
        .manager
        .all_devices()
        .iter()
        .map(|d| d.id.clone())
        .collect();
    if selector & 1 == 0 {
        let Ok(request) = PreferredAllocationRequest::decode(message) else {
            return;
        };
        let answer = plugin
            .runtime
            .block_on(service.get_preferred_allocation(tonic::Request::new(request.clone())));
        if let Ok(answer) = answer {
            for (container, asked) in answer.into_inner().container_responses.iter().zip(&request.container_requests) {
                let ids: HashSet<&String> = container.device_i_ds.iter().collect();
                assert_eq!(ids.len(), container.device_i_ds.len(), "a device twice");
                assert!(container.device_i_ds.iter().all(|id| asked.available_device_i_ds.contains(id)));
            }
        }
    } else {
        let Ok(request) = AllocateRequest::decode(message) else {
            return;
        };
        let answer = plugin
            .runtime
            .block_on(service.allocate(tonic::Request::new(request)));
        if let Ok(answer) = answer {
            for container in &answer.into_inner().container_responses {
                let Some(visible) = container.envs.get(VISIBLE_DEVICES_ENV) else {
                    continue;
                };
                let ids: Vec<&str> = visible.split(',').collect();
                let unique: HashSet<&&str> = ids.iter().collect();
                assert_eq!(unique.len(), ids.len(), "a device twice: {visible}");
                assert!(ids.iter().all(|id| known.contains(*id)), "unknown device in {visible}");
            }
        }
    }
});

//! The devices annotation, as a pod's creator may forge it: parsing never panics, and an
//! annotation that maps onto the node takes only free positions, never one already held.
#![no_main]

use std::sync::OnceLock;

use kubesched_core::annotation::DevicesAnnotation;
use kubesched_core::catalogue::mig_geometry;
use kubesched_core::node::{GpuState, NodeState};
use kubesched_core::placement;
use kubesched_core::request::{PodRequest, ResourceNames};
use libfuzzer_sys::fuzz_target;

/// Two plain GPUs and two dynamic-MIG H100s, one 3g slice and one GPU already taken.
fn node() -> &'static NodeState {
    static NODE: OnceLock<NodeState> = OnceLock::new();
    NODE.get_or_init(|| {
        let mut node = NodeState::new("node-1", 64_000, 512 * 1024);
        for i in 0..2u32 {
            node.gpus.push(GpuState::plain(i, &format!("GPU-{i}"), "L40S", Some(0)));
        }
        for i in 2..4u32 {
            let geometry = mig_geometry("H100-80GB").unwrap_or_else(|e| panic!("{e}"));
            node.gpus
                .push(GpuState::dynamic_mig(i, &format!("GPU-{i}"), "H100-80GB", Some(1), geometry));
        }
        let names = ResourceNames::default();
        for resource in ["nvidia.com/mig-3g.40gb", "nvidia.com/gpu"] {
            let demand = names
                .demand([(resource, 1)])
                .unwrap_or_else(|e| panic!("{e}"));
            let req = PodRequest {
                cpu_milli: 1000,
                memory_mib: 1024,
                gpu: demand,
                exclusive_cpus: false,
                gpu_models: vec![],
            };
            let first = placement::candidates(&node, &req)
                .ok()
                .and_then(|c| c.into_iter().next());
            if let Some(first) = first {
                placement::apply(&mut node, &req, &first).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        node
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(annotation) = DevicesAnnotation::from_json(text) else {
        return;
    };
    let names = ResourceNames::default();
    let count = u64::try_from(annotation.devices.len()).unwrap_or(u64::MAX);
    let Ok(demand) = names.demand([(annotation.resource.as_str(), count)]) else {
        return;
    };
    let node = node();
    let Ok(candidate) = annotation.to_candidate(node, &demand) else {
        return;
    };
    let req = PodRequest {
        cpu_milli: 0,
        memory_mib: 0,
        gpu: demand,
        exclusive_cpus: false,
        gpu_models: vec![],
    };
    let mut after = node.clone();
    if placement::apply(&mut after, &req, &candidate).is_ok() && !req.gpu.is_none() {
        // Whatever it names, it took free positions: the same devices cannot be taken again.
        let mut twice = after.clone();
        assert!(
            placement::apply(&mut twice, &req, &candidate).is_err(),
            "{candidate:?} handed out twice"
        );
        assert!(after.free_milli() < node.free_milli(), "it took something");
    }
});

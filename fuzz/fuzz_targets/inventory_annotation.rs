//! The node inventory annotation, as any node (or anyone who can edit Nodes) may write it:
//! parsing never panics; an accepted document builds a node state, survives a round trip,
//! and placing pods on that state never hands a position out twice.
#![no_main]

use kubesched_core::inventory::NodeInventory;
use kubesched_core::node::NodeState;
use kubesched_core::placement;
use kubesched_core::request::{GpuDemand, PodRequest};
use libfuzzer_sys::fuzz_target;

fn request(gpu: GpuDemand) -> PodRequest {
    PodRequest {
        cpu_milli: 1000,
        memory_mib: 1024,
        gpu,
        exclusive_cpus: false,
        gpu_models: vec![],
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(inventory) = NodeInventory::from_json(text) else {
        return;
    };
    let again = NodeInventory::from_json(&inventory.to_json());
    assert_eq!(again.as_ref().ok(), Some(&inventory), "round trip");
    let Ok(mut node) = NodeState::from_inventory(&inventory, 64_000, 512 * 1024) else {
        return;
    };
    let mut demands = vec![
        GpuDemand::Whole { count: 1 },
        GpuDemand::Whole { count: 2 },
    ];
    for gpu in &inventory.gpus {
        for instance in gpu.mig.iter().flat_map(|m| m.instances.iter()) {
            demands.push(GpuDemand::Mig {
                profile: instance.profile.clone(),
                count: 1,
            });
        }
    }
    // Fill the node; every placement must take free positions only, so placing the same
    // candidate twice is refused.
    for demand in demands.into_iter().cycle().take(64) {
        let req = request(demand);
        let Ok(candidates) = placement::candidates(&node, &req) else {
            continue;
        };
        let Some(first) = candidates.first() else {
            continue;
        };
        if placement::apply(&mut node, &req, first).is_ok() && !req.gpu.is_none() {
            let mut twice = node.clone();
            assert!(
                placement::apply(&mut twice, &req, first).is_err(),
                "{first:?} placed twice"
            );
        }
    }
});

//! Shared fixtures for the benchmarks: a realistic partly occupied GPU node.

use kubesched_core::catalogue::mig_geometry;
use kubesched_core::node::{GpuState, NodeState};
use kubesched_core::numa::{NumaState, TopologyPolicy};
use kubesched_core::placement;
use kubesched_core::request::{GpuDemand, PodRequest};

/// An 8-GPU H100 node in dynamic MIG mode, two NUMA nodes, partly filled.
pub fn busy_mig_node() -> NodeState {
    let mut n = NodeState::new("bench", 224_000, 2 << 20);
    n.policy = TopologyPolicy::SingleNumaNode;
    n.numa = (0..2)
        .map(|id| NumaState {
            id,
            cpus_free: 112,
            cpus_total: 112,
            memory_free_mib: 1 << 20,
        })
        .collect();
    let geo = mig_geometry("H100-80GB").expect("catalogue model");
    for g in 0..8u32 {
        n.gpus.push(GpuState::dynamic_mig(
            g,
            &format!("G{g}"),
            "H100-80GB",
            Some(g / 4),
            geo.clone(),
        ));
    }
    for (i, p) in [
        "1g.10gb", "3g.40gb", "2g.20gb", "1g.10gb", "4g.40gb", "1g.10gb",
    ]
    .iter()
    .enumerate()
    {
        let req = PodRequest::cpu_only(2000, 0).with_gpu(GpuDemand::Mig {
            profile: (*p).into(),
            count: 1,
        });
        let cands = placement::candidates(&n, &req).expect("fits an empty node");
        placement::apply(&mut n, &req, &cands[i % cands.len()]).expect("candidate applies");
    }
    n
}

//! Shared fixtures for the benchmarks: a realistic partly occupied GPU node.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubesched_core::inventory::MigMode;
use kubesched_core::node::NodeState;
use kubesched_core::numa::TopologyPolicy;
use kubesched_core::placement;
use kubesched_core::request::{GpuDemand, PodRequest};
use kubesched_scheduler::simulate::builtin;

/// An 8-GPU H100 node of the built-in scenario (dynamic MIG, two NUMA
/// nodes), partly filled.
pub fn busy_mig_node() -> NodeState {
    let mut n = builtin::node(
        "bench".into(),
        "H100-80GB",
        8,
        TopologyPolicy::SingleNumaNode,
        Some(MigMode::Dynamic),
    );
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

//! The benchmark's cluster and pods: fake 8-GPU nodes that mix whole GPUs and static MIG, and
//! a pod mix worth five GPUs per node that both scheduling paths can express.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubesched_core::inventory::{INVENTORY_VERSION, NodeInventory};
use kubesched_e2e::fake_node::DOMAIN;
use kubesched_e2e::pods;

/// Label value of every pod the benchmark creates (under `pods::LABEL`).
pub const SCENARIO: &str = "scheduler-perf";

/// Resources (after `<domain>/`) of eight consecutive pods: four whole GPUs, two 1g.10gb, a
/// 2g.20gb and a 3g.40gb, five GPUs' worth of compute. Every node offers four whole GPUs and
/// 16, 2 and 2 of those slices, so eight pods per node fill the whole GPUs exactly.
pub const MIX: [&str; 8] = [
    "gpu",
    "mig-1g.10gb",
    "gpu",
    "mig-2g.20gb",
    "gpu",
    "mig-1g.10gb",
    "gpu",
    "mig-3g.40gb",
];

/// A fake node's inventory: two NUMA nodes of 32 CPUs, each with two whole H100s, one H100
/// split into seven 1g.10gb and one into 3g.40gb@0, 2g.20gb@4 and 1g.10gb@6 (static MIG).
pub fn inventory(node: &str) -> anyhow::Result<NodeInventory> {
    let mig = |gpu: u32, profile: &str, start: u8| {
        serde_json::json!({"profile": profile, "start": start,
            "uuid": format!("MIG-{node}-{gpu}-{start}")})
    };
    let gpus: Vec<serde_json::Value> = (0..8u32)
        .map(|index| {
            let mut gpu = serde_json::json!({
                "index": index, "uuid": format!("GPU-{node}-{index}"), "model": "H100-80GB",
                "pciBusId": format!("00000000:{:02X}:00.0", index + 1), "numaNode": index / 4,
                "memoryMib": 81559, "healthy": true,
            });
            let instances: Vec<serde_json::Value> = match index % 4 {
                2 => (0..7).map(|s| mig(index, "1g.10gb", s)).collect(),
                3 => vec![
                    mig(index, "3g.40gb", 0),
                    mig(index, "2g.20gb", 4),
                    mig(index, "1g.10gb", 6),
                ],
                _ => Vec::new(),
            };
            if !instances.is_empty() {
                gpu["mig"] = serde_json::json!({"mode": "static", "instances": instances});
            }
            gpu
        })
        .collect();
    let doc = serde_json::json!({
        "version": INVENTORY_VERSION, "node": node, "agentVersion": "scheduler-perf",
        "topologyPolicy": "single-numa-node",
        "numaNodes": [
            {"id": 0, "cpus": (0..32).collect::<Vec<u32>>(), "memoryMib": 131072},
            {"id": 1, "cpus": (32..64).collect::<Vec<u32>>(), "memoryMib": 131072},
        ],
        "gpus": gpus,
    });
    Ok(NodeInventory::from_json(&doc.to_string())?)
}

/// A pod for the dedicated scheduler asking one `resource` (a [`MIX`] entry) with `cpu` and
/// 2 GiB as limits (Guaranteed: the extender keeps its GPU and CPUs on one NUMA node).
pub fn pod(name: &str, resource: &str, cpu: &str) -> anyhow::Result<Pod> {
    let mut pod = pods::pod(
        name,
        SCENARIO,
        &format!("{DOMAIN}/{resource}"),
        1,
        "true",
        None,
    )?;
    let limits = pods::limits_mut(&mut pod)?;
    limits.insert("cpu".into(), Quantity(cpu.into()));
    limits.insert("memory".into(), Quantity("2Gi".into()));
    Ok(pod)
}

/// The burst: `per_node` pods for each of `nodes` nodes, resources cycling through [`MIX`].
pub fn burst(nodes: usize, per_node: usize) -> anyhow::Result<Vec<Pod>> {
    (0..nodes * per_node)
        .map(|i| pod(&format!("perf-{i:06}"), MIX[i % MIX.len()], "1"))
        .collect()
}

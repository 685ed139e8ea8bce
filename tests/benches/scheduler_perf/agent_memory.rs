//! The node agent's memory on a full MIG node: eight H100s split into seven 1g.10gb each
//! (56 instances), registered with this machine's real kubelet and publishing its inventory.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use kubesched_e2e::Cluster;
use kubesched_e2e::agent::{online_cpus, start_agent, wait_allocatable};
use kubesched_e2e::fake_node::DOMAIN;

use crate::procs;

/// MIG instances on the measured node.
pub const INSTANCES: usize = 56;

fn fixture() -> anyhow::Result<serde_json::Value> {
    let gpus: Vec<serde_json::Value> = (0..8u32)
        .map(|g| {
            serde_json::json!({
                "index": g, "uuid": format!("GPU-agent-{g}"), "model": "H100-80GB",
                "pciBusId": format!("00000000:{:02X}:00.0", g + 1), "numaNode": 0,
                "memoryMib": 81559, "healthy": true,
                "mig": {"mode": "static", "instances": (0..7u8).map(|s| serde_json::json!({
                    "profile": "1g.10gb", "start": s, "uuid": format!("MIG-agent-{g}-{s}")
                })).collect::<Vec<_>>()},
            })
        })
        .collect();
    Ok(serde_json::json!({
        "driverVersion": "550.54.15",
        "topologyPolicy": "single-numa-node",
        "numaNodes": [{"id": 0, "cpus": online_cpus()?, "memoryMib": 65536}],
        "gpus": gpus,
    }))
}

/// Starts the agent on the cluster's real node, waits until the node advertises the 56
/// instances, lets it settle, and returns its (resident, peak resident) MiB.
pub async fn measure(cluster: &Cluster) -> anyhow::Result<(f64, f64)> {
    let doc = fixture()?;
    let path = cluster.path("agent-56-instances.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    let expected = BTreeMap::from([(format!("{DOMAIN}/mig-1g.10gb"), INSTANCES as i64)]);
    let agent = start_agent(cluster, &path, "agent-memory.log").await?;
    wait_allocatable(cluster, &agent, &expected, Duration::from_secs(60)).await?;
    // A few watch and health cycles after registering, as it runs from then on.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pid = agent.pid().context("the agent is not running")?;
    procs::memory_mib(pid).context("reading the agent's memory")
}

//! (c) A burst of pods of mixed profiles against fake Nodes (Node objects with capacity and
//! the inventory annotation, no kubelet): the real kube-scheduler with our extender binds every
//! pod that fits, no device is given twice, and pods that cannot fit stay Pending with our
//! reason in their events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubesched_core::inventory::{INVENTORY_VERSION, NodeInventory};
use kubesched_e2e::fake_node::{
    DOMAIN, FAKE_LABEL, capacity, check_no_device_twice, create_node_with,
};
use kubesched_e2e::{Cluster, pods, poll};

const SCENARIO: &str = "burst";
const FAKE_NODES: usize = 20;

/// A fake node's GPUs on two NUMA nodes (single-numa-node): GPU 0 (NUMA 0) and GPU 1
/// (NUMA 1) whole; GPU 2 (NUMA 0) split into seven 1g.10gb; GPU 3 (NUMA 1) into 3g.40gb@0,
/// 2g.20gb@4 and 1g.10gb@6.
fn inventory(node: &str) -> anyhow::Result<NodeInventory> {
    let gpu = |index: u32, numa: u32, instances: serde_json::Value| {
        let mut g = serde_json::json!({
            "index": index, "uuid": format!("GPU-{node}-{index}"), "model": "H100-80GB",
            "pciBusId": format!("00000000:{:02X}:00.0", index + 1), "numaNode": numa,
            "memoryMib": 81559, "healthy": true,
        });
        if !instances.is_null() {
            g["mig"] = serde_json::json!({"mode": "static", "instances": instances});
        }
        g
    };
    let mig = |profile: &str, start: u8, gpu: u32| {
        serde_json::json!({"profile": profile, "start": start,
            "uuid": format!("MIG-{node}-{gpu}-{profile}-{start}")})
    };
    let doc = serde_json::json!({
        "version": INVENTORY_VERSION, "node": node, "agentVersion": "e2e-fake",
        "topologyPolicy": "single-numa-node",
        "numaNodes": [
            {"id": 0, "cpus": (0..32).collect::<Vec<u32>>(), "memoryMib": 131072},
            {"id": 1, "cpus": (32..64).collect::<Vec<u32>>(), "memoryMib": 131072},
        ],
        "gpus": [
            gpu(0, 0, serde_json::Value::Null),
            gpu(1, 1, serde_json::Value::Null),
            gpu(2, 0, (0..7).map(|s| mig("1g.10gb", s, 2)).collect()),
            gpu(3, 1, serde_json::json!([mig("3g.40gb", 0, 3), mig("2g.20gb", 4, 3), mig("1g.10gb", 6, 3)])),
        ],
    });
    Ok(NodeInventory::from_json(&doc.to_string())?)
}

pub async fn create_fake_node(client: &kube::Client, name: &str) -> anyhow::Result<NodeInventory> {
    let inventory = inventory(name)?;
    create_node_with(client, name, &inventory, &[]).await?;
    Ok(inventory)
}

/// Pods that count-fit (kube-scheduler's own resource fit agrees) but cannot be admitted under
/// single-numa-node: two whole GPUs (one per NUMA node) with Guaranteed integer CPUs.
fn numa_impossible(name: &str) -> anyhow::Result<Pod> {
    let mut pod = pods::pod(
        name,
        SCENARIO,
        &format!("{DOMAIN}/gpu"),
        2,
        "true",
        Some((FAKE_LABEL, "true")),
    )?;
    let limits = pods::limits_mut(&mut pod)?;
    for (k, v) in [("cpu", "2"), ("memory", "1Gi")] {
        limits.insert(
            k.into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.into()),
        );
    }
    Ok(pod)
}

pub async fn burst(cluster: &Cluster) -> anyhow::Result<()> {
    let client = &cluster.client;
    let mut inventories = BTreeMap::new();
    for i in 0..FAKE_NODES {
        let name = format!("e2e-fake-{i:02}");
        inventories.insert(name.clone(), create_fake_node(client, &name).await?);
    }
    let result = burst_on(cluster, &inventories).await;
    let pods_gone = pods::delete_scenario(client, SCENARIO).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for name in inventories.keys() {
        nodes.delete(name, &DeleteParams::default()).await?;
    }
    result.and(pods_gone)
}

async fn burst_on(
    cluster: &Cluster,
    inventories: &BTreeMap<String, NodeInventory>,
) -> anyhow::Result<()> {
    let client = &cluster.client;
    let api = pods::api(client);

    // First the pods nothing can admit: they must stay Pending with our reason.
    let impossible: Vec<String> = (0..3).map(|i| format!("c-numa-{i}")).collect();
    for name in &impossible {
        api.create(&PostParams::default(), &numa_impossible(name)?)
            .await?;
    }
    for name in &impossible {
        let name_ref = name.as_str();
        let reason = poll(
            "our NUMA reason in the pod's FailedScheduling event",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async move {
                let events = pods::events(client, name_ref).await?;
                Ok(events
                    .into_iter()
                    .find(|e| e.starts_with("FailedScheduling") && e.contains("single-numa-node")))
            },
        )
        .await?;
        let pod = api.get(name).await?;
        anyhow::ensure!(pods::node_name(&pod).is_none(), "{name} was bound");
        anyhow::ensure!(!reason.contains("TopologyAffinityError"), "{reason}");
        eprintln!("[e2e] {name} Pending: {reason}");
    }

    // The burst: exactly what the fake nodes hold, so every pod fits.
    let specs = fitting_specs(inventories, SCENARIO, "c")?;
    anyhow::ensure!(specs.len() >= 200, "only {} pods in the burst", specs.len());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in specs.chunks(specs.len().div_ceil(8)) {
        let (api, chunk) = (api.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for pod in chunk {
                api.create(&PostParams::default(), &pod).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let created = start.elapsed();
    let selector = format!("{}={SCENARIO}", pods::LABEL);
    let (api_ref, selector_ref, n) = (&api, &selector, specs.len());
    let bound = poll(
        "every burst pod to be bound",
        Duration::from_secs(300),
        Duration::from_millis(200),
        || async move {
            let list = api_ref
                .list(&ListParams::default().labels(selector_ref))
                .await?;
            let bound: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| {
                    !p.metadata
                        .name
                        .as_deref()
                        .unwrap_or("")
                        .starts_with("c-numa-")
                })
                .filter(|p| pods::node_name(p).is_some())
                .collect();
            if bound.len() == n {
                Ok(Some(bound))
            } else {
                anyhow::bail!("{} of {n} bound", bound.len())
            }
        },
    )
    .await?;
    let elapsed = start.elapsed();
    eprintln!(
        "[e2e] burst: {n} pods on {} fake nodes bound in {:.1} s ({:.1} pods/s; creating them \
         took {:.1} s)",
        inventories.len(),
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        created.as_secs_f64()
    );

    let used = check_no_device_twice(&bound, inventories)?;
    for name in &impossible {
        anyhow::ensure!(
            pods::node_name(&api.get(name).await?).is_none(),
            "{name} was bound"
        );
    }
    eprintln!("[e2e] burst: {} devices handed out, none twice", used.len());
    Ok(())
}

/// One pod per device of `inventories` (exactly what they hold, so every pod fits), named
/// `<prefix>-<profile>-<n>`, pinned to the fake nodes, profiles interleaved as a real mixed
/// burst arrives.
pub fn fitting_specs(
    inventories: &BTreeMap<String, NodeInventory>,
    scenario: &str,
    prefix: &str,
) -> anyhow::Result<Vec<Pod>> {
    let mut total = BTreeMap::new();
    for inventory in inventories.values() {
        for (k, v) in capacity(inventory)? {
            *total.entry(k).or_insert(0) += v;
        }
    }
    let mut specs = Vec::new();
    for (resource, count) in &total {
        let short = resource
            .trim_start_matches(&format!("{DOMAIN}/"))
            .replace('.', "-");
        for i in 0..*count {
            specs.push(pods::pod(
                &format!("{prefix}-{short}-{i:03}"),
                scenario,
                resource,
                1,
                "true",
                Some((FAKE_LABEL, "true")),
            )?);
        }
    }
    // Interleave the profiles, as a real mixed burst arrives.
    specs.sort_by_key(|p| {
        let name = p.metadata.name.clone().unwrap_or_default();
        (name.rsplit('-').next().unwrap_or("").to_string(), name)
    });
    Ok(specs)
}

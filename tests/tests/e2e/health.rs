//! (e) GPU health on the Node, as a Node Problem Detector plugin would show it: an injected
//! critical XID on every GPU turns the agent's `GPUHealthy` condition False (naming the GPUs
//! and the XID) and adds the `NoSchedule` taint; once the GPUs answer again after the quiet
//! period, the condition is True and the taint gone.

use std::io::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kubesched_e2e::agent::xid_file;
use kubesched_e2e::{Cluster, poll};

use super::scheduling::one_numa_fixture;
use super::{ANNOTATION_PREFIX, load_fixture};

const CONDITION: &str = "GPUHealthy";

/// (status, reason, message) of the node's `GPUHealthy` condition, and whether our taint is on.
async fn health(
    api: &Api<Node>,
    node: &str,
) -> anyhow::Result<(Option<(String, String, String)>, bool)> {
    let n = api.get(node).await?;
    let condition = n
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == CONDITION)
        .map(|c| {
            (
                c.status,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default(),
            )
        });
    let key = format!("{ANNOTATION_PREFIX}/gpu-unhealthy");
    let tainted = n
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .any(|t| t.key == key && t.effect == "NoSchedule");
    Ok((condition, tainted))
}

/// Waits up to `seconds` for `GPUHealthy=True` and no taint.
async fn healthy(api: &Api<Node>, node: &str, what: &str, seconds: u64) -> anyhow::Result<()> {
    poll(
        what,
        Duration::from_secs(seconds),
        Duration::from_millis(250),
        || async move {
            Ok(match health(api, node).await? {
                (Some((status, _, _)), false) if status == "True" => Some(()),
                _ => None,
            })
        },
    )
    .await
}

pub async fn xid_condition_and_taint(cluster: &Cluster) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(cluster.client.clone());
    let node = cluster.node.as_str();
    let (api_ref, node_ref) = (&api, node);
    healthy(api_ref, node_ref, "GPUHealthy=True on the node", 60).await?;

    let fixture = load_fixture(&one_numa_fixture(cluster)?)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(xid_file(cluster))?;
    for gpu in &fixture.gpus {
        writeln!(file, "{} 79", gpu.uuid)?;
    }
    file.flush()?;
    let injected = Instant::now();
    let message = poll(
        "GPUHealthy=False (NoHealthyGPU) and the taint",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async move {
            Ok(match health(api_ref, node_ref).await? {
                (Some((status, reason, message)), true)
                    if status == "False" && reason == "NoHealthyGPU" =>
                {
                    Some(message)
                }
                _ => None,
            })
        },
    )
    .await?;
    let marked = injected.elapsed();
    anyhow::ensure!(message.contains("XID 79"), "{message}");
    for gpu in &fixture.gpus {
        anyhow::ensure!(
            message.contains(&gpu.uuid),
            "{} missing from {message}",
            gpu.uuid
        );
    }
    healthy(
        api_ref,
        node_ref,
        "GPUHealthy=True again and the taint removed",
        90,
    )
    .await?;
    eprintln!(
        "[e2e] health: XID 79 on {} GPUs -> condition False and taint in {:.1} s; cleared {:.1} s \
         after injection (quiet period 3 s); message: {message}",
        fixture.gpus.len(),
        marked.as_secs_f64(),
        injected.elapsed().as_secs_f64()
    );
    Ok(())
}

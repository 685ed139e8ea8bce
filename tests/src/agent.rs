//! Our node agent as the chart runs it: under the chart's service account, with the signing
//! key the extender shares, against this machine's kubelet, on a fake inventory; and what
//! the Node then shows of it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kubesched_core::inventory::INVENTORY_ANNOTATION;

use crate::fake_node::{ANNOTATION_PREFIX, DOMAIN};
use crate::rbac::{self, AGENT_SERVICE_ACCOUNT, NAMESPACE};
use crate::{Cluster, Proc, binary, poll};

/// The key the extender signs devices annotations with and the agent checks them with (the
/// chart's Secret), made once per cluster directory.
pub fn signing_key_file(cluster: &Cluster) -> anyhow::Result<PathBuf> {
    let path = cluster.path("signing.key");
    if !path.exists() {
        let mut key = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, hex)?;
    }
    Ok(path)
}

/// The file the agent reads injected XID events from (`<gpu-uuid> <xid>` lines).
pub fn xid_file(cluster: &Cluster) -> PathBuf {
    cluster.path("xid-events")
}

/// Starts `kubesched-agent` with `--fake-inventory fixture` under the chart's agent account.
pub async fn start_agent(cluster: &Cluster, fixture: &Path, log: &str) -> anyhow::Result<Proc> {
    let kubeconfig =
        rbac::service_account_kubeconfig(cluster, NAMESPACE, AGENT_SERVICE_ACCOUNT).await?;
    let key = signing_key_file(cluster)?;
    Proc::spawn(
        "kubesched-agent",
        &binary("kubesched-agent")?,
        [
            OsStr::new("--node-name"),
            OsStr::new(&cluster.node),
            OsStr::new("--fake-inventory"),
            fixture.as_os_str(),
            OsStr::new("--topology-policy"),
            OsStr::new("single-numa-node"),
            OsStr::new("--device-plugin-dir"),
            cluster.device_plugin_dir.as_os_str(),
            OsStr::new("--pod-resources-socket"),
            cluster.pod_resources_socket.as_os_str(),
            OsStr::new("--signing-key-file"),
            key.as_os_str(),
            // XIDs are injected through this file (NVML's events on a real node); a short
            // quiet period so recovery is seen within the test.
            OsStr::new("--fake-xid-file"),
            xid_file(cluster).as_os_str(),
            OsStr::new("--health-quiet-secs"),
            OsStr::new("3"),
            OsStr::new("--taint-when-no-healthy-gpu"),
        ],
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("RUST_LOG", OsStr::new("info")),
        ],
        &cluster.path(log),
    )
}

/// CPUs online on this machine (`/sys/devices/system/cpu/online`, e.g. `0-1,4`).
pub fn online_cpus() -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("reading the online CPUs")?;
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(lo.parse::<u32>()?..=hi.parse::<u32>()?);
    }
    Ok(cpus)
}

/// Our resources in the Node's capacity and allocatable.
pub fn node_resources(node: &Node) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let pick = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(&format!("{DOMAIN}/")))
            .map(|(k, v)| (k.clone(), v.0.parse::<i64>().unwrap_or(-1)))
            .collect::<BTreeMap<_, _>>()
    };
    let status = node.status.as_ref();
    (
        pick(status.and_then(|s| s.capacity.as_ref())),
        pick(status.and_then(|s| s.allocatable.as_ref())),
    )
}

/// Waits until the node's allocatable equals `expected`.
pub async fn wait_allocatable(
    cluster: &Cluster,
    agent: &Proc,
    expected: &BTreeMap<String, i64>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let nodes = &nodes;
    poll(
        "the node's allocatable to show the agent's devices",
        timeout,
        Duration::from_millis(100),
        || async move {
            agent.ensure_running()?;
            let (_, allocatable) = node_resources(&nodes.get(&cluster.node).await?);
            if &allocatable == expected {
                Ok(Some(()))
            } else {
                anyhow::bail!("allocatable {allocatable:?}, expected {expected:?}")
            }
        },
    )
    .await
}

/// Removes the node's inventory annotation (a reused cluster, or an earlier agent, may have
/// left one), so a scenario sees its own agent publish.
pub async fn remove_inventory_annotation(cluster: &Cluster) -> anyhow::Result<()> {
    let key = format!("{ANNOTATION_PREFIX}/{INVENTORY_ANNOTATION}");
    Api::<Node>::all(cluster.client.clone())
        .patch(
            &cluster.node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {&key: null}}})),
        )
        .await
        .context("removing an earlier inventory annotation")?;
    Ok(())
}

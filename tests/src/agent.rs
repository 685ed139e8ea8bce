//! Our node agent as the chart runs it: under the chart's service account, with the signing
//! key the extender shares, against this machine's kubelet, on a fake inventory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::rbac::{self, AGENT_SERVICE_ACCOUNT, NAMESPACE};
use crate::{Cluster, Proc, binary};

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

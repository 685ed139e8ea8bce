//! The extender and the dedicated kube-scheduler as the chart configures them: the
//! extender under the chart's service account, the scheduler with the chart's rendered
//! configuration for old clusters (or one a caller gives).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};

use crate::agent::signing_key_file;
use crate::rbac::{self, EXTENDER_SERVICE_ACCOUNT, NAMESPACE};
use crate::{Cluster, Proc, binary, cluster, http, poll};

/// The chart's scheduler configuration for old clusters, rendered.
const CHART_SCHEDULER_CONFIG: &str = "scheduler-config-v1beta1.yaml";

/// The two files of the chart's scheduler ConfigMap: (scheduler config, extender config).
pub fn chart_configs() -> anyhow::Result<(String, String)> {
    let path = rbac::manifest_path(CHART_SCHEDULER_CONFIG);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)?;
        if value["kind"].as_str() != Some("ConfigMap") {
            continue;
        }
        let data = &value["data"];
        if let (Some(scheduler), Some(extender)) = (
            data["scheduler-config.yaml"].as_str(),
            data["extender.yaml"].as_str(),
        ) {
            return Ok((scheduler.to_string(), extender.to_string()));
        }
    }
    anyhow::bail!("no scheduler ConfigMap in {}", path.display())
}

/// (Re)starts the dedicated kube-scheduler with the chart's configuration.
pub async fn start_scheduler(cluster: &Cluster) -> anyhow::Result<()> {
    let (scheduler_config, _) = chart_configs()?;
    start_scheduler_with(cluster, &scheduler_config).await
}

/// (Re)starts the dedicated kube-scheduler with `scheduler_config` (a complete
/// KubeSchedulerConfiguration; `cluster.sh` adds the admin kubeconfig when it names none).
pub async fn start_scheduler_with(cluster: &Cluster, scheduler_config: &str) -> anyhow::Result<()> {
    let parsed: serde_yaml::Value = serde_yaml::from_str(scheduler_config)?;
    // The chart's scheduler elects a leader: a lease left by a scheduler of an earlier run
    // (killed, not released) would hold this one back for its whole duration.
    let name = parsed["leaderElection"]["resourceName"].as_str();
    let namespace = parsed["leaderElection"]["resourceNamespace"].as_str();
    if let (Some(name), Some(namespace)) = (name, namespace) {
        let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), namespace);
        match leases.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error).context("deleting the scheduler's old lease"),
        }
    }
    let scheduler_file = cluster.path("scheduler-config.yaml");
    std::fs::write(&scheduler_file, scheduler_config)?;
    let file = scheduler_file.display().to_string();
    tokio::task::spawn_blocking(move || cluster::script(&["scheduler", &file])).await??;
    Ok(())
}

/// The extender under the chart's service account plus the dedicated kube-scheduler with the
/// chart's configuration; the scheduler keeps running until `cluster.sh down`.
pub struct Extender {
    /// The extender process.
    pub proc: Proc,
    /// host:port of the extender's verbs (from the chart's `urlPrefix`).
    pub addr: String,
    /// host:port of its metrics and probes (the chart's `metricsListen`, on loopback).
    pub metrics_addr: String,
    args: Vec<String>,
    kubeconfig: PathBuf,
}

impl Extender {
    /// Starts the extender, waits until it is ready, then (re)starts the dedicated scheduler
    /// with the chart's configuration.
    pub async fn start(cluster: &Cluster) -> anyhow::Result<Extender> {
        let extender = Self::start_alone(cluster).await?;
        start_scheduler(cluster).await?;
        Ok(extender)
    }

    /// Starts the extender with the chart's configuration and waits until it is ready; the
    /// dedicated scheduler is left as it is.
    pub async fn start_alone(cluster: &Cluster) -> anyhow::Result<Extender> {
        let (scheduler_config, extender_config) = chart_configs()?;
        let parsed: serde_yaml::Value = serde_yaml::from_str(&scheduler_config)?;
        let url = parsed["extenders"][0]["urlPrefix"]
            .as_str()
            .context("the chart's scheduler config has no extender urlPrefix")?;
        let addr = url
            .strip_prefix("http://")
            .context("extender urlPrefix is not http")?
            .trim_end_matches('/')
            .to_string();
        anyhow::ensure!(
            addr.starts_with("127.0.0.1:"),
            "the chart's extender is not on localhost: {url}"
        );
        let config: serde_yaml::Value = serde_yaml::from_str(&extender_config)?;
        let metrics_port = config["metricsListen"]
            .as_str()
            .and_then(|l| l.rsplit_once(':'))
            .map(|(_, port)| port.to_string())
            .context("the chart's extender config has no metricsListen")?;
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let extender_file = cluster.path("extender.yaml");
        std::fs::write(&extender_file, &extender_config)?;
        let kubeconfig =
            rbac::service_account_kubeconfig(cluster, NAMESPACE, EXTENDER_SERVICE_ACCOUNT).await?;
        let args = vec![
            "--config".to_string(),
            extender_file.display().to_string(),
            "--listen".to_string(),
            addr.clone(),
            "--signing-key-file".to_string(),
            signing_key_file(cluster)?.display().to_string(),
        ];
        let proc = Self::spawn(cluster, &args, &kubeconfig, "extender.log")?;
        let extender = Extender {
            proc,
            addr,
            metrics_addr,
            args,
            kubeconfig,
        };
        extender.wait_ready(Duration::from_secs(60)).await?;
        Ok(extender)
    }

    /// Starts the extender again, as before, after its process ended (killed); its output
    /// goes to `log`. Does not wait for it to be ready.
    pub fn respawn(&mut self, cluster: &Cluster, log: &str) -> anyhow::Result<()> {
        anyhow::ensure!(!self.proc.is_running(), "the extender is still running");
        self.proc = Self::spawn(cluster, &self.args, &self.kubeconfig, log)?;
        Ok(())
    }

    fn spawn(
        cluster: &Cluster,
        args: &[String],
        kubeconfig: &Path,
        log: &str,
    ) -> anyhow::Result<Proc> {
        Proc::spawn(
            "kubesched-extender",
            &binary("kubesched-extender")?,
            args,
            &[
                ("KUBECONFIG", kubeconfig.as_os_str()),
                ("RUST_LOG", OsStr::new("info")),
            ],
            &cluster.path(log),
        )
    }

    /// Full lists each of its watches (`nodes`, `pods`) has loaded, from its `/metrics`.
    pub async fn watch_lists(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let (status, body) = http::get(&self.metrics_addr, "/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics {status}: {body}");
        Ok(body
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("kubesched_extender_watch_lists_total{resource=\"")?;
                let (resource, value) = rest.split_once("\"} ")?;
                Some((resource.to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// Waits until the extender's `/readyz` answers 200 (both watches listed), at most
    /// `timeout`; fails with its log's tail.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let this = self;
        // On a timeout the extender's own last words say why: they go into the error, which
        // is what a CI log's tail shows.
        let ready = poll(
            "the extender's /readyz",
            timeout,
            Duration::from_millis(100),
            || async move {
                this.proc.ensure_running()?;
                let (status, body) = http::get(&this.metrics_addr, "/readyz").await?;
                if status == 200 {
                    Ok(Some(()))
                } else {
                    anyhow::bail!("/readyz {status}: {body}")
                }
            },
        )
        .await;
        ready.with_context(|| format!("extender log tail:\n{}", this.proc.log_tail(20)))
    }
}

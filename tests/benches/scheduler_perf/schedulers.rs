//! The two scheduling paths compared, as KubeSchedulerConfigurations for the same
//! kube-scheduler binary:
//! - **in-tree**: the default profile, extended resources counted by NodeResourcesFit, as a
//!   cluster with NVIDIA's device plugin and no extender runs;
//! - **extender**: the chart's configuration (our extender, every node scored);
//! - **extender, sampled**: the same with kube-scheduler's default sampling of large clusters
//!   (`scheduler.percentageOfNodesToScore` unset), which the chart trades away for placement.
//!
//! Both get the same client rate limits, raised as scheduler_perf raises them, so the in-tree
//! path is not held back by the default 50 requests/s while our extender binds on its own
//! client.

use kubesched_e2e::Cluster;
use kubesched_e2e::extender::chart_configs;
use kubesched_e2e::pods::SCHEDULER_NAME;

/// Client requests per second (and burst) of both schedulers.
const CLIENT_QPS: u32 = 5000;

/// Which scheduling path a phase measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedPath {
    /// kube-scheduler alone, counting extended resources.
    InTree,
    /// kube-scheduler with our extender and the chart's profile.
    Extender,
    /// As `Extender`, with kube-scheduler's adaptive share of nodes to score.
    ExtenderSampled,
}

impl SchedPath {
    /// Label in the table.
    pub fn label(self) -> &'static str {
        match self {
            SchedPath::InTree => "(a) in-tree",
            SchedPath::Extender => "(b) extender",
            SchedPath::ExtenderSampled => "(c) ext sampled",
        }
    }

    /// Whether this path runs our extender.
    pub fn uses_extender(self) -> bool {
        self != SchedPath::InTree
    }
}

/// The KubeSchedulerConfiguration (v1beta1, for the 1.20 test cluster) of `path`.
pub fn config(path: SchedPath, cluster: &Cluster) -> anyhow::Result<String> {
    let mut doc: serde_yaml::Value = match path {
        SchedPath::InTree => serde_yaml::to_value(serde_json::json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1beta1",
            "kind": "KubeSchedulerConfiguration",
            "leaderElection": {"leaderElect": false},
            "profiles": [{"schedulerName": SCHEDULER_NAME}],
        }))?,
        SchedPath::Extender | SchedPath::ExtenderSampled => {
            serde_yaml::from_str(&chart_configs()?.0)?
        }
    };
    if path == SchedPath::ExtenderSampled
        && let serde_yaml::Value::Mapping(map) = &mut doc
    {
        map.remove("percentageOfNodesToScore");
    }
    doc["clientConnection"] = serde_yaml::to_value(serde_json::json!({
        "kubeconfig": cluster.kubeconfig.display().to_string(),
        "qps": CLIENT_QPS,
        "burst": CLIENT_QPS,
    }))?;
    Ok(serde_yaml::to_string(&doc)?)
}

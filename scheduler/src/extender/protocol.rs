//! The kube-scheduler extender wire types (`k8s.io/kube-scheduler/extender/v1`).
//!
//! The Go structs carry no JSON tags, so keys are the Go field names
//! (PascalCase); kube-scheduler decodes replies case-insensitively, and we
//! accept lower-case and camelCase spellings on input for the same reason.
//! Embedded Pods are ordinary camelCase Kubernetes JSON.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

/// Highest score an extender may return; kube-scheduler multiplies it by
/// its weight and by 10 (MaxNodeScore / MaxExtenderPriority).
pub const MAX_EXTENDER_PRIORITY: i64 = 10;
pub const MIN_EXTENDER_PRIORITY: i64 = 0;

/// Body of `filter` and `prioritize` calls.
///
/// We run with `nodeCacheCapable: true`, so `NodeNames` is what we read;
/// `Nodes` (full objects, the slow mode) is accepted and ignored.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderArgs {
    #[serde(alias = "pod")]
    pub pod: Pod,
    #[serde(default, alias = "nodes", skip_serializing)]
    pub nodes: Option<serde::de::IgnoredAny>,
    #[serde(default, alias = "nodeNames", alias = "nodenames")]
    pub node_names: Option<Vec<String>>,
}

/// Reply to `filter`. `NodeNames` is always present: a missing list means
/// "no node fits" to kube-scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderFilterResult {
    /// Always null: only the node-cache-capable mode is served.
    #[serde(default, alias = "nodes")]
    pub nodes: Option<serde_json::Value>,
    #[serde(alias = "nodeNames", alias = "nodenames")]
    pub node_names: Vec<String>,
    #[serde(default, alias = "failedNodes", alias = "failednodes")]
    pub failed_nodes: BTreeMap<String, String>,
    /// Nodes where preemption cannot help (no inventory, wrong model, profile absent).
    #[serde(
        default,
        alias = "failedAndUnresolvableNodes",
        alias = "failedandunresolvablenodes"
    )]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    #[serde(default, alias = "error")]
    pub error: String,
}

/// One entry of the `prioritize` reply (a bare JSON array of these).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority {
    #[serde(alias = "host")]
    pub host: String,
    #[serde(alias = "score")]
    pub score: i64,
}

/// Body of `bind`: identifies the pod only, not its spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ExtenderBindingArgs {
    #[serde(rename = "PodName", alias = "podName", alias = "podname")]
    pub pod_name: String,
    #[serde(
        rename = "PodNamespace",
        alias = "podNamespace",
        alias = "podnamespace"
    )]
    pub pod_namespace: String,
    #[serde(
        rename = "PodUID",
        alias = "podUID",
        alias = "podUid",
        alias = "poduid"
    )]
    pub pod_uid: String,
    #[serde(rename = "Node", alias = "node")]
    pub node: String,
}

/// Reply to `bind`; a non-empty `Error` fails the pod's binding cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingResult {
    #[serde(default, alias = "error")]
    pub error: String,
}

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
/// Lowest score an extender may return (`MinExtenderPriority`).
pub const MIN_EXTENDER_PRIORITY: i64 = 0;

/// Body of `filter` and `prioritize` calls.
///
/// We run with `nodeCacheCapable: true`, so `NodeNames` is what we read;
/// `Nodes` (full objects, the slow mode) is accepted and ignored.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderArgs {
    /// The pod being scheduled (`Pod`), as full Kubernetes JSON.
    #[serde(alias = "pod")]
    pub pod: Pod,
    /// Full node objects (`Nodes`), sent only without `nodeCacheCapable`; skipped unread.
    #[serde(default, alias = "nodes", skip_serializing)]
    pub nodes: Option<serde::de::IgnoredAny>,
    /// Names of the candidate nodes (`NodeNames`); `None` when kube-scheduler sent full nodes.
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
    /// Nodes the pod fits on (`NodeNames`), in the order given.
    #[serde(alias = "nodeNames", alias = "nodenames")]
    pub node_names: Vec<String>,
    /// Nodes the pod does not fit, with the reason for each (`FailedNodes`);
    /// preemption may still free them.
    #[serde(default, alias = "failedNodes", alias = "failednodes")]
    pub failed_nodes: BTreeMap<String, String>,
    /// Nodes where preemption cannot help (the pod does not fit them even empty); each is in
    /// `FailedNodes` too, for kube-scheduler versions that read only that map.
    #[serde(
        default,
        alias = "failedAndUnresolvableNodes",
        alias = "failedandunresolvablenodes"
    )]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// Error that fails the whole filter call (`Error`): set only for a configuration error
    /// (no `NodeNames`); kube-scheduler shows it in the pod's events and retries with back-off.
    #[serde(default, alias = "error")]
    pub error: String,
}

/// One entry of the `prioritize` reply (a bare JSON array of these).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority {
    /// Node name the score is for (`Host`).
    #[serde(alias = "host")]
    pub host: String,
    /// Score from [`MIN_EXTENDER_PRIORITY`] to [`MAX_EXTENDER_PRIORITY`] (`Score`).
    #[serde(alias = "score")]
    pub score: i64,
}

/// Body of `bind`: identifies the pod only, not its spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ExtenderBindingArgs {
    /// Name of the pod to bind (`PodName`).
    #[serde(rename = "PodName", alias = "podName", alias = "podname")]
    pub pod_name: String,
    /// Namespace of the pod to bind (`PodNamespace`).
    #[serde(
        rename = "PodNamespace",
        alias = "podNamespace",
        alias = "podnamespace"
    )]
    pub pod_namespace: String,
    /// UID of the pod to bind (`PodUID`); reservations and records are keyed by it.
    #[serde(
        rename = "PodUID",
        alias = "podUID",
        alias = "podUid",
        alias = "poduid"
    )]
    pub pod_uid: String,
    /// Node kube-scheduler chose for the pod (`Node`).
    #[serde(rename = "Node", alias = "node")]
    pub node: String,
}

/// Reply to `bind`; a non-empty `Error` fails the pod's binding cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingResult {
    /// Why the bind failed (`Error`); empty on success.
    #[serde(default, alias = "error")]
    pub error: String,
}

/// Body of `preempt`: the pod that would preempt, and per candidate node the victims
/// kube-scheduler chose by resource counts.
///
/// With `nodeCacheCapable: true` only `NodeNameToMetaVictims` (victims by UID) is sent;
/// `NodeNameToVictims` (full pods) is read when it is all there is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionArgs {
    /// The preemptor (`Pod`).
    #[serde(alias = "pod")]
    pub pod: Pod,
    /// Victims as full pods, per node (`NodeNameToVictims`).
    #[serde(default, alias = "nodeNameToVictims", alias = "nodenametovictims")]
    pub node_name_to_victims: Option<BTreeMap<String, Victims>>,
    /// Victims by UID, per node (`NodeNameToMetaVictims`).
    #[serde(
        default,
        alias = "nodeNameToMetaVictims",
        alias = "nodenametometavictims"
    )]
    pub node_name_to_meta_victims: Option<BTreeMap<String, MetaVictims>>,
}

/// Victims on one node: kube-scheduler's `Victims` with full pods `P = Pod`, its
/// `MetaVictims` with `P = MetaPod` (the same two fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VictimsOf<P> {
    /// The pods to evict (`Pods`).
    #[serde(default = "Vec::new", alias = "pods")]
    pub pods: Vec<P>,
    /// PodDisruptionBudgets their eviction violates (`NumPDBViolations`).
    #[serde(
        default,
        rename = "NumPDBViolations",
        alias = "numPDBViolations",
        alias = "numpdbviolations"
    )]
    pub num_pdb_violations: i64,
}

/// Victims on one node, as full pods (`Victims`).
pub type Victims = VictimsOf<Pod>;

/// Victims on one node, by UID (`MetaVictims`).
pub type MetaVictims = VictimsOf<MetaPod>;

/// A victim named by its UID (`MetaPod`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct MetaPod {
    /// The pod's UID (`UID`).
    #[serde(rename = "UID", alias = "uid", alias = "Uid")]
    pub uid: String,
}

/// Reply to `preempt`: the nodes where evicting (a subset of) the victims lets the pod in.
/// A node left out is not preempted on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionResult {
    /// Victims by UID, per node (`NodeNameToMetaVictims`).
    #[serde(
        default,
        alias = "nodeNameToMetaVictims",
        alias = "nodenametometavictims"
    )]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

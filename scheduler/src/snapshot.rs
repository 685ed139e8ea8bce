//! Cluster snapshots: the Nodes and Pods of a cluster as the API serves
//! them, saved to a file so the report and the simulator can work offline.
//! Loading goes through the extender's own conversion (`node_base`,
//! `pod_record`), so a snapshot reads exactly as the live cluster would.

use std::path::Path;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kubesched_core::versioned::{self, VersionedError};
use serde::{Deserialize, Serialize};

use kubesched_k8s::pod_key;

use crate::extender::Extender;
use crate::extender::reflectors::{node_base, pod_record};

/// Newest snapshot file format this build reads and the one it writes.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Largest snapshot file read: a whole cluster's Nodes and Pods (about 10 KB a node with its
/// pods), far beyond the annotation limit, bounded so a wrong file cannot exhaust memory.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

/// A saved cluster: every Node and Pod object as the API server listed them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// File format version ([`SNAPSHOT_VERSION`] when written); newer ones are refused.
    pub version: u32,
    /// Every Node object, GPU node or not.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// Every Pod object, from all namespaces.
    #[serde(default)]
    pub pods: Vec<Pod>,
}

/// Why a snapshot could not be read or taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path of the snapshot file.
        path: String,
        /// The I/O error from reading it.
        source: std::io::Error,
    },
    /// The file is not a snapshot this build understands: too large, malformed JSON,
    /// no `version`, or a newer version.
    #[error(transparent)]
    Document(#[from] VersionedError),
    /// Listing Nodes or Pods from the API server failed.
    #[error("listing {what} from the API server: {source}")]
    Api {
        /// What was being listed: `nodes` or `pods`.
        what: &'static str,
        /// The API client's error.
        source: kube::Error,
    },
}

impl Snapshot {
    /// Parses a snapshot document; `Err` if it is malformed, too large or of a newer version.
    pub fn from_json(text: &str) -> Result<Self, SnapshotError> {
        Ok(versioned::parse_at_most(
            text,
            "snapshot",
            SNAPSHOT_VERSION,
            MAX_SNAPSHOT_BYTES,
        )?)
    }

    /// Reads and parses the snapshot file at `path`.
    pub fn read(path: &Path) -> Result<Self, SnapshotError> {
        let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The snapshot as pretty-printed JSON, the format [`Snapshot::read`] loads.
    pub fn to_json(&self) -> String {
        // Kubernetes objects serialise to JSON without failure.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Lists every Node and Pod (all namespaces) once.
    pub async fn take(client: kube::Client) -> Result<Self, SnapshotError> {
        let lp = ListParams::default();
        let nodes = Api::<Node>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|source| SnapshotError::Api {
                what: "nodes",
                source,
            })?;
        let pods =
            Api::<Pod>::all(client)
                .list(&lp)
                .await
                .map_err(|source| SnapshotError::Api {
                    what: "pods",
                    source,
                })?;
        Ok(Snapshot {
            version: SNAPSHOT_VERSION,
            nodes: nodes.items,
            pods: pods.items,
        })
    }

    /// Replaces the extender's cluster state with this snapshot's.
    pub fn load_into(&self, ext: &Extender) {
        let nodes = self
            .nodes
            .iter()
            .filter_map(|n| node_base(n, ext.inventory_key()))
            .collect();
        let pods = self
            .pods
            .iter()
            .filter_map(|p| pod_record(ext, p))
            .collect();
        ext.state_mut().reset_nodes(nodes);
        ext.load_pods(pods);
    }

    /// The snapshot's pods that are not bound to a node yet, in file order.
    pub fn pending(&self, ext: &Extender) -> Vec<(String, kubesched_core::request::PodRequest)> {
        self.pods
            .iter()
            .filter_map(|p| pod_record(ext, p))
            .filter(|(_, r)| r.node.is_none())
            .map(|(_, r)| (pod_key(&r.namespace, &r.name), r.request))
            .collect()
    }

    /// The requests of the snapshot's pods that ask for a GPU and have not finished, bound
    /// or not: the demand the cluster sees.
    pub fn gpu_demand(&self, ext: &Extender) -> Vec<kubesched_core::request::PodRequest> {
        self.pods
            .iter()
            .filter_map(|p| pod_record(ext, p))
            .filter(|(_, r)| !r.request.gpu.is_none())
            .map(|(_, r)| r.request)
            .collect()
    }
}

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

pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    #[serde(default)]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub pods: Vec<Pod>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Document(#[from] VersionedError),
    #[error("listing {what} from the API server: {source}")]
    Api {
        what: &'static str,
        source: kube::Error,
    },
}

impl Snapshot {
    pub fn from_json(text: &str) -> Result<Self, SnapshotError> {
        Ok(versioned::parse(text, "snapshot", SNAPSHOT_VERSION)?)
    }

    pub fn read(path: &Path) -> Result<Self, SnapshotError> {
        let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

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
}

//! The node inventory document: the versioned JSON the node agent publishes in
//! the Node annotation `kubesched.ai/inventory` and the extender reads.
//!
//! Readers accept unknown fields (additions within a version) but refuse a
//! newer `version` outright, so an old extender never misreads a new layout.

use serde::{Deserialize, Serialize};

use crate::catalogue::MigGeometry;
use crate::numa::TopologyPolicy;
use crate::versioned::{self, VersionedError};

/// The inventory layout this build writes and reads.
pub const INVENTORY_VERSION: u32 = 1;

/// Annotation key suffix; the prefix (`kubesched.ai`) is configurable.
pub const INVENTORY_ANNOTATION: &str = "inventory";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInventory {
    pub version: u32,
    pub node: String,
    pub agent_version: String,
    #[serde(default)]
    pub topology_policy: TopologyPolicy,
    #[serde(default)]
    pub numa_nodes: Vec<NumaNodeInfo>,
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NumaNodeInfo {
    pub id: u32,
    /// CPU ids of this NUMA node.
    pub cpus: Vec<u32>,
    pub memory_mib: u64,
    /// CPUs not pinned to any container (from the kubelet PodResources API);
    /// absent when the agent could not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_cpus: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory_mib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    /// Catalogue name or the name NVML reports (`NVIDIA H100 80GB HBM3`).
    pub model: String,
    /// Normalised `0000:3b:00.0`.
    pub pci_bus_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    pub memory_mib: u64,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<MigInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigMode {
    /// Instances are created by an administrator; we hand out free ones.
    Static,
    /// We create instances where the scheduler decides.
    Dynamic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigInfo {
    pub mode: MigMode,
    /// Existing GPU instances (all of them in static mode; ours in dynamic mode).
    #[serde(default)]
    pub instances: Vec<MigInstanceInfo>,
    /// Placements read from NVML; the catalogue's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry: Option<MigGeometry>,
    /// Why the agent leaves this GPU alone (processes outside our control,
    /// a MIG mode change pending a reset); nothing is placed on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigInstanceInfo {
    pub profile: String,
    pub start: u8,
    pub uuid: String,
    #[serde(default = "yes")]
    pub healthy: bool,
}

fn yes() -> bool {
    true
}

impl NodeInventory {
    /// Parses a document, refusing versions newer than ours with a clear error.
    pub fn from_json(text: &str) -> Result<Self, VersionedError> {
        versioned::parse(text, "inventory", INVENTORY_VERSION)
    }

    /// Serialises deterministically (field order is the struct's).
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> NodeInventory {
        NodeInventory {
            version: INVENTORY_VERSION,
            node: "gpu-node-1".into(),
            agent_version: "0.1.0".into(),
            topology_policy: TopologyPolicy::SingleNumaNode,
            numa_nodes: vec![NumaNodeInfo {
                id: 0,
                cpus: vec![0, 1, 2, 3],
                memory_mib: 65536,
                free_cpus: Some(vec![2, 3]),
                free_memory_mib: None,
            }],
            gpus: vec![
                GpuInfo {
                    index: 0,
                    uuid: "GPU-0a".into(),
                    model: "H100-80GB".into(),
                    pci_bus_id: "0000:3b:00.0".into(),
                    numa_node: Some(0),
                    memory_mib: 81559,
                    healthy: true,
                    mig: Some(MigInfo {
                        mode: MigMode::Static,
                        instances: vec![MigInstanceInfo {
                            profile: "3g.40gb".into(),
                            start: 4,
                            uuid: "MIG-1".into(),
                            healthy: true,
                        }],
                        geometry: None,
                        blocked: None,
                    }),
                },
                GpuInfo {
                    index: 1,
                    uuid: "GPU-1b".into(),
                    model: "L4".into(),
                    pci_bus_id: "0000:5e:00.0".into(),
                    numa_node: None,
                    memory_mib: 23034,
                    healthy: false,
                    mig: None,
                },
            ],
        }
    }

    /// Pins the wire format: changing it needs a new version number.
    #[test]
    fn golden_format() {
        let golden = r#"{"version":1,"node":"gpu-node-1","agentVersion":"0.1.0","topologyPolicy":"single-numa-node","numaNodes":[{"id":0,"cpus":[0,1,2,3],"memoryMib":65536,"freeCpus":[2,3]}],"gpus":[{"index":0,"uuid":"GPU-0a","model":"H100-80GB","pciBusId":"0000:3b:00.0","numaNode":0,"memoryMib":81559,"healthy":true,"mig":{"mode":"static","instances":[{"profile":"3g.40gb","start":4,"uuid":"MIG-1","healthy":true}]}},{"index":1,"uuid":"GPU-1b","model":"L4","pciBusId":"0000:5e:00.0","memoryMib":23034,"healthy":false}]}"#;
        assert_eq!(sample().to_json(), golden);
        assert_eq!(NodeInventory::from_json(golden).unwrap(), sample());
    }

    #[test]
    fn newer_versions_and_garbage_are_clear_errors() {
        let newer = sample()
            .to_json()
            .replacen("\"version\":1", "\"version\":7", 1);
        let err = NodeInventory::from_json(&newer).unwrap_err();
        assert!(matches!(
            err,
            VersionedError::UnsupportedVersion {
                found: 7,
                supported: 1,
                ..
            }
        ));
        assert!(err.to_string().contains("upgrade"));
        assert!(matches!(
            NodeInventory::from_json("{not json"),
            Err(VersionedError::Malformed { .. })
        ));
        assert!(matches!(
            NodeInventory::from_json(r#"{"node":"x"}"#),
            Err(VersionedError::MissingVersion { .. })
        ));
        let missing_field = r#"{"version":1,"node":"x"}"#;
        assert!(matches!(
            NodeInventory::from_json(missing_field),
            Err(VersionedError::Malformed { .. })
        ));
    }

    #[test]
    fn unknown_fields_of_the_same_version_are_ignored() {
        let extra = sample().to_json().replacen(
            "{\"version\":1,",
            "{\"version\":1,\"futureField\":{\"a\":1},",
            1,
        );
        assert_eq!(NodeInventory::from_json(&extra).unwrap(), sample());
    }
}

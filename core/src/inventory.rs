//! The node inventory document: the versioned JSON the node agent publishes in
//! the Node annotation `kubesched.ai/inventory` and the extender reads.
//!
//! Readers accept unknown fields (additions within a version) but refuse a
//! newer `version` outright, so an old extender never misreads a new layout.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::catalogue::{CatalogueError, MigGeometry};
use crate::numa::TopologyPolicy;
use crate::text::quote;
use crate::versioned::{self, VersionedError};

/// Limits on an inventory read from outside: far above any real node, low enough that a
/// crafted annotation cannot make a reader spend much on it.
pub const MAX_GPUS: usize = 64;
/// Most NUMA nodes an inventory may list.
pub const MAX_NUMA_NODES: usize = 64;
/// Most CPU ids one NUMA node may list (in `cpus` or `freeCpus`).
pub const MAX_CPUS_PER_NUMA_NODE: usize = 4096;
/// Longest device id, model or node name accepted.
pub const MAX_ID_LEN: usize = 256;

/// Why an inventory document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The text is not a readable inventory document (malformed, too large or too new).
    #[error(transparent)]
    Document(#[from] VersionedError),
    /// The document parses but breaks an inventory rule.
    #[error(transparent)]
    Invalid(#[from] InvalidInventory),
}

/// An inventory that parses but breaks an invariant placement relies on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInventory {
    /// A size limit, name, device id or uniqueness rule is broken; the text says which.
    #[error("invalid inventory: {0}")]
    Rule(String),
    /// A GPU's MIG geometry, as the agent read it from NVML, is inconsistent.
    #[error("invalid inventory: GPU {gpu}: {source}")]
    Geometry {
        /// Index of the GPU whose geometry is invalid.
        gpu: u32,
        /// What is wrong with the geometry.
        #[source]
        source: CatalogueError,
    },
}

/// The inventory layout this build writes and reads.
pub const INVENTORY_VERSION: u32 = 1;

/// Annotation key suffix; the prefix (`kubesched.ai`) is configurable.
pub const INVENTORY_ANNOTATION: &str = "inventory";

/// What a node agent reports about its node: GPUs, MIG state, NUMA layout and the kubelet's
/// Topology Manager policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInventory {
    /// Document version (`INVENTORY_VERSION` when written); newer versions are refused on read.
    pub version: u32,
    /// Name of the Kubernetes node the inventory describes.
    pub node: String,
    /// Version of the node agent that published the inventory.
    pub agent_version: String,
    /// The kubelet's Topology Manager policy on the node (`none` when absent).
    #[serde(default)]
    pub topology_policy: TopologyPolicy,
    /// The node's NUMA nodes; empty when the agent reports no NUMA layout.
    #[serde(default)]
    pub numa_nodes: Vec<NumaNodeInfo>,
    /// The node's GPUs, whether or not in MIG mode.
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    /// The agent is not serving the kubelet: it is shutting down (an upgrade, a drain) or its
    /// device plugins are not registered yet. The kubelet would refuse a pod's devices now, so
    /// nothing new is placed here; running pods keep theirs. Absent (false) from older agents.
    #[serde(default, skip_serializing_if = "is_false")]
    pub draining: bool,
}

/// One NUMA node of a node: its CPUs and memory, and what is still free there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NumaNodeInfo {
    /// NUMA node id as the kernel numbers it.
    pub id: u32,
    /// CPU ids of this NUMA node.
    pub cpus: Vec<u32>,
    /// Memory of this NUMA node, in MiB.
    pub memory_mib: u64,
    /// CPUs not pinned to any container (from the kubelet PodResources API);
    /// absent when the agent could not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_cpus: Option<Vec<u32>>,
    /// Memory of this NUMA node not yet allocated to containers, in MiB; absent when the
    /// agent could not read it, in which case all of it counts as free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory_mib: Option<u64>,
}

/// One GPU of a node as the agent sees it through NVML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    /// GPU index on the node, as NVML numbers it; unique within the inventory.
    pub index: u32,
    /// GPU UUID (`GPU-...`), also its device id for the kubelet; unique on the node.
    pub uuid: String,
    /// Catalogue name or the name NVML reports (`NVIDIA H100 80GB HBM3`).
    pub model: String,
    /// Normalised `0000:3b:00.0`.
    pub pci_bus_id: String,
    /// NUMA node the GPU is attached to; absent when it has no NUMA affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// Memory of the whole GPU, in MiB.
    pub memory_mib: u64,
    /// Whether NVML reports the GPU healthy; unhealthy GPUs get no new pods.
    pub healthy: bool,
    /// MIG state of the GPU; absent when MIG is not enabled on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<MigInfo>,
}

/// How MIG instances on a GPU come into being.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigMode {
    /// Instances are created by an administrator; we hand out free ones.
    Static,
    /// We create instances where the scheduler decides.
    Dynamic,
}

/// MIG state of one GPU in MIG mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigInfo {
    /// Whether instances are pre-created by an administrator or created on demand.
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

/// One existing MIG instance on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigInstanceInfo {
    /// Profile name of the instance, e.g. `3g.40gb`.
    pub profile: String,
    /// Memory position the instance starts at.
    pub start: u8,
    /// MIG device UUID (`MIG-...`), also its device id for the kubelet.
    pub uuid: String,
    /// Whether the instance is healthy; taken as healthy when absent.
    #[serde(default = "yes")]
    pub healthy: bool,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl NodeInventory {
    /// Parses a document, refusing versions newer than ours and documents that break an
    /// invariant (see [`NodeInventory::validate`]) with a clear error.
    pub fn from_json(text: &str) -> Result<Self, InventoryError> {
        let inventory: Self = versioned::parse(text, "inventory", INVENTORY_VERSION)?;
        inventory.validate()?;
        Ok(inventory)
    }

    /// Checks what placement relies on: bounded sizes, device ids that are unique on the
    /// node and safe to list in a device variable, MIG geometries inside their GPU and at
    /// most one instance per start.
    pub fn validate(&self) -> Result<(), InvalidInventory> {
        let invalid = |detail: String| Err(InvalidInventory::Rule(detail));
        check_name("node", &self.node)?;
        if self.gpus.len() > MAX_GPUS {
            return invalid(format!("{} GPUs (at most {MAX_GPUS})", self.gpus.len()));
        }
        if self.numa_nodes.len() > MAX_NUMA_NODES {
            return invalid(format!(
                "{} NUMA nodes (at most {MAX_NUMA_NODES})",
                self.numa_nodes.len()
            ));
        }
        let mut numa_ids = HashSet::new();
        for n in &self.numa_nodes {
            if !numa_ids.insert(n.id) {
                return invalid(format!("NUMA node {} is listed twice", n.id));
            }
            let free = n.free_cpus.as_ref().map_or(0, Vec::len);
            if n.cpus.len().max(free) > MAX_CPUS_PER_NUMA_NODE {
                return invalid(format!("NUMA node {}: too many CPUs", n.id));
            }
        }
        let mut ids = HashSet::new();
        let mut indices = HashSet::new();
        for g in &self.gpus {
            check_name("GPU model", &g.model)?;
            check_device_id(&g.uuid)?;
            if !ids.insert(g.uuid.as_str()) {
                return invalid(format!("device id {} is listed twice", quote(&g.uuid)));
            }
            if !indices.insert(g.index) {
                return invalid(format!("GPU index {} is listed twice", g.index));
            }
            let Some(mig) = &g.mig else { continue };
            if let Some(geometry) = &mig.geometry {
                geometry
                    .validate()
                    .map_err(|source| InvalidInventory::Geometry {
                        gpu: g.index,
                        source,
                    })?;
            }
            if mig.instances.len() > 8 {
                return invalid(format!(
                    "GPU {}: {} MIG instances",
                    g.index,
                    mig.instances.len()
                ));
            }
            let mut starts = HashSet::new();
            for inst in &mig.instances {
                check_device_id(&inst.uuid)?;
                if !ids.insert(inst.uuid.as_str()) {
                    return invalid(format!("device id {} is listed twice", quote(&inst.uuid)));
                }
                if !starts.insert(inst.start) {
                    return invalid(format!(
                        "GPU {}: two MIG instances start at {}",
                        g.index, inst.start
                    ));
                }
            }
        }
        Ok(())
    }

    /// Serialises deterministically (field order is the struct's).
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn check_name(what: &str, text: &str) -> Result<(), InvalidInventory> {
    if text.is_empty() || text.len() > MAX_ID_LEN || text.chars().any(char::is_control) {
        return Err(InvalidInventory::Rule(format!(
            "{what} {} is empty, too long or has control characters",
            quote(text)
        )));
    }
    Ok(())
}

/// Whether `id` can name a device to the kubelet and in `NVIDIA_VISIBLE_DEVICES`: printable
/// ASCII without spaces or commas (the variable's separator), and without `::`, which
/// separates a dynamic MIG slot's GPU from its profile.
pub fn check_device_id(id: &str) -> Result<(), InvalidInventory> {
    let printable = id.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if id.is_empty() || id.len() > MAX_ID_LEN || !printable || id.contains("::") {
        return Err(InvalidInventory::Rule(format!(
            "device id {} is empty, too long, or has characters other than printable ASCII \
             without commas and \"::\"",
            quote(id)
        )));
    }
    Ok(())
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
            draining: false,
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
            InventoryError::Document(VersionedError::UnsupportedVersion {
                found: 7,
                supported: 1,
                ..
            })
        ));
        assert!(err.to_string().contains("upgrade"));
        assert!(matches!(
            NodeInventory::from_json("{not json"),
            Err(InventoryError::Document(VersionedError::Malformed { .. }))
        ));
        assert!(matches!(
            NodeInventory::from_json(r#"{"node":"x"}"#),
            Err(InventoryError::Document(
                VersionedError::MissingVersion { .. }
            ))
        ));
        let missing_field = r#"{"version":1,"node":"x"}"#;
        assert!(matches!(
            NodeInventory::from_json(missing_field),
            Err(InventoryError::Document(VersionedError::Malformed { .. }))
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

    /// Reproductions from the hostile-input report: each was accepted before.
    #[test]
    fn crafted_inventories_are_refused_with_a_reason() {
        let refused = |edit: &dyn Fn(&mut NodeInventory)| {
            let mut inv = sample();
            edit(&mut inv);
            NodeInventory::from_json(&inv.to_json())
                .expect_err("must be refused")
                .to_string()
        };
        let geometry = |inv: &mut NodeInventory| {
            let mut g = crate::catalogue::mig_geometry("H100-80GB")
                .map(|g| (*g).clone())
                .expect("catalogue");
            g.profiles[0].width = 10;
            g.profiles[0].starts = vec![250];
            if let Some(m) = inv.gpus[0].mig.as_mut() {
                m.geometry = Some(g);
            }
        };
        assert!(refused(&geometry).contains("GPU 0"), "width 10 at 250");
        let dup = refused(&|inv| inv.gpus[1].uuid = "GPU-0a".into());
        assert!(dup.contains("listed twice"), "{dup}");
        let dup_mig = refused(&|inv| inv.gpus[1].uuid = "MIG-1".into());
        assert!(dup_mig.contains("listed twice"), "{dup_mig}");
        let comma = refused(&|inv| inv.gpus[1].uuid = "GPU-1,GPU-0a".into());
        assert!(comma.contains("device id"), "{comma}");
        let long = refused(&|inv| inv.gpus[1].uuid = "G".repeat(1 << 20));
        assert!(
            long.len() < 300,
            "error quotes a short prefix: {} bytes",
            long.len()
        );
        let many = refused(&|inv| {
            let g = inv.gpus[1].clone();
            inv.gpus = (0..65)
                .map(|i| GpuInfo {
                    index: i,
                    uuid: format!("GPU-{i}"),
                    ..g.clone()
                })
                .collect();
        });
        assert!(many.contains("65 GPUs"), "{many}");
        let same_start = refused(&|inv| {
            if let Some(m) = inv.gpus[0].mig.as_mut() {
                let mut again = m.instances[0].clone();
                again.uuid = "MIG-2".into();
                m.instances.push(again);
            }
        });
        assert!(same_start.contains("start at 4"), "{same_start}");
    }
}

//! The `--fake-inventory FILE` fixture: GPUs, MIG instances and a synthetic NUMA topology read
//! from JSON, so the whole agent runs for real on machines without GPUs. The file is read on
//! every discovery, so editing it (e.g. flipping `healthy`) is seen like a hardware change.

use std::path::{Path, PathBuf};

use kubesched_core::inventory::{GpuInfo, INVENTORY_VERSION, NodeInventory, NumaNodeInfo};
use kubesched_core::numa::TopologyPolicy;
use serde::{Deserialize, Serialize};

use super::{Discovered, DiscoveryError, GpuInventory};
use crate::discovery::normalise_bus_id;
use crate::topology::{HostTopology, TopologyError};

/// The fixture's JSON layout (camelCase, like the inventory document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeFixture {
    /// NVIDIA driver version reported as discovered; `None` shows as unknown.
    #[serde(default)]
    pub driver_version: Option<String>,
    /// The kubelet topology manager policy of the simulated node; `none` when absent.
    #[serde(default)]
    pub topology_policy: TopologyPolicy,
    /// NUMA nodes with their CPUs and memory, served as the host topology.
    #[serde(default)]
    pub numa_nodes: Vec<NumaNodeInfo>,
    /// The simulated GPUs, with their MIG mode and instances; PCI bus ids are normalised on load.
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
}

/// Discovery and topology served from a fixture file.
#[derive(Debug, Clone)]
pub struct FakeInventory {
    path: PathBuf,
}

impl FakeInventory {
    /// Checks the fixture once so a broken file is reported at start-up.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DiscoveryError> {
        let inventory = FakeInventory { path: path.into() };
        inventory.load()?;
        Ok(inventory)
    }

    /// The fixture file this inventory reads on every discovery.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and validates the fixture, normalising PCI bus ids.
    pub fn load(&self) -> Result<FakeFixture, DiscoveryError> {
        let path = self.path.display().to_string();
        let text =
            std::fs::read_to_string(&self.path).map_err(|source| DiscoveryError::FixtureIo {
                path: path.clone(),
                source,
            })?;
        let mut fixture: FakeFixture =
            serde_json::from_str(&text).map_err(|source| DiscoveryError::FixtureFormat {
                path: path.clone(),
                source,
            })?;
        for gpu in &mut fixture.gpus {
            gpu.pci_bus_id =
                normalise_bus_id(&gpu.pci_bus_id).map_err(|e| DiscoveryError::FixtureInvalid {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        }
        // The rules every published inventory meets (unique, safe device ids; MIG instances
        // inside their GPU), checked by the one implementation of them.
        NodeInventory {
            version: INVENTORY_VERSION,
            node: "fixture".into(),
            agent_version: String::new(),
            topology_policy: fixture.topology_policy,
            numa_nodes: fixture.numa_nodes.clone(),
            gpus: fixture.gpus.clone(),
            draining: false,
        }
        .validate()
        .map_err(|e| DiscoveryError::FixtureInvalid {
            path,
            message: e.to_string(),
        })?;
        Ok(fixture)
    }
}

impl GpuInventory for FakeInventory {
    fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let fixture = self.load()?;
        // Fixtures have no GPU instance ids; number each GPU's instances in order like NVML does.
        let gpu_instance_ids = fixture
            .gpus
            .iter()
            .filter_map(|g| g.mig.as_ref())
            .flat_map(|m| {
                m.instances
                    .iter()
                    .enumerate()
                    .map(|(i, inst)| (inst.uuid.clone(), i as u32 + 1))
            })
            .collect();
        Ok(Discovered {
            driver_version: fixture.driver_version,
            gpus: fixture.gpus,
            gpu_instance_ids,
        })
    }

    fn kind(&self) -> &'static str {
        "fake"
    }
}

impl HostTopology for FakeInventory {
    fn numa_nodes(&self) -> Result<Vec<NumaNodeInfo>, TopologyError> {
        let fixture = self
            .load()
            .map_err(|e| TopologyError::Unavailable(e.to_string()))?;
        Ok(fixture.numa_nodes)
    }

    fn numa_of_pci(&self, bus_id: &str) -> Option<u32> {
        let wanted = normalise_bus_id(bus_id).ok()?;
        let fixture = self.load().ok()?;
        fixture
            .gpus
            .iter()
            .find(|g| g.pci_bus_id == wanted)
            .and_then(|g| g.numa_node)
    }

    fn kind(&self) -> &'static str {
        "fake"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, gpus: &str) -> Result<FakeFixture, DiscoveryError> {
        let path = std::env::temp_dir().join(format!("ks-fake-{}-{name}.json", std::process::id()));
        std::fs::write(&path, format!(r#"{{"gpus": {gpus}}}"#)).unwrap();
        let loaded = FakeInventory::open(&path).and_then(|fake| fake.load());
        std::fs::remove_file(&path).unwrap();
        loaded
    }

    const GPU: &str = r#"{"index": 0, "uuid": "GPU-0", "model": "H100-80GB", "pciBusId": "00000000:1B:00.0", "memoryMib": 81559, "healthy": true}"#;

    #[test]
    fn fixtures_meet_the_published_inventorys_rules() {
        let ok = load("ok", &format!("[{GPU}]")).unwrap();
        assert_eq!(ok.gpus[0].pci_bus_id, "0000:1b:00.0");
        let twice = load(
            "twice",
            &format!("[{GPU}, {}]", GPU.replace("\"index\": 0", "\"index\": 1")),
        );
        assert!(
            matches!(twice, Err(DiscoveryError::FixtureInvalid { .. })),
            "{twice:?}"
        );
        // An id that would split NVIDIA_VISIBLE_DEVICES is refused like in a published one.
        let comma = load(
            "comma",
            &format!("[{}]", GPU.replace("GPU-0", "GPU-0,GPU-1")),
        );
        assert!(
            matches!(comma, Err(DiscoveryError::FixtureInvalid { .. })),
            "{comma:?}"
        );
    }
}

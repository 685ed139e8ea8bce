//! GPU discovery behind the [`GpuInventory`] trait: NVML on real nodes, a JSON fixture
//! (`--fake-inventory`) in tests and demos. Both return core inventory types.

pub mod fake;
pub mod fake_mig;
pub mod nvml;
pub mod nvml_mig;

use std::collections::BTreeMap;

use kubesched_core::inventory::GpuInfo;

/// What discovery found on the node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovered {
    /// NVIDIA driver version, when known.
    pub driver_version: Option<String>,
    pub gpus: Vec<GpuInfo>,
    /// GPU instance id of each MIG device (by MIG UUID): XID events name the GPU instance,
    /// not the MIG UUID, so health attribution needs this map.
    pub gpu_instance_ids: BTreeMap<String, u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The NVML library could not be loaded at all.
    #[error("no NVIDIA driver on this node ({0})")]
    NoDriver(String),
    #[error("NVML call {call} failed: {message}")]
    Nvml { call: &'static str, message: String },
    #[error("cannot read fake inventory {path}: {source}")]
    FixtureIo {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed fake inventory {path}: {source}")]
    FixtureFormat {
        path: String,
        source: serde_json::Error,
    },
    #[error("fake inventory {path}: {message}")]
    FixtureInvalid { path: String, message: String },
}

/// A source of the node's GPUs. Calls may block (NVML); run them off the async runtime.
pub trait GpuInventory: Send + Sync {
    fn discover(&self) -> Result<Discovered, DiscoveryError>;
    /// Short name for logs and `doctor` ("nvml", "fake").
    fn kind(&self) -> &'static str;
}

//! GPU discovery behind the [`GpuInventory`] trait: NVML on real nodes, a JSON fixture
//! (`--fake-inventory`) in tests and demos. Both return core inventory types. XID events come
//! from NVML's event thread, or with the fixture from an injected-XID file (`fake_xid`).

mod fake;
mod fake_xid;
mod nvml;
mod pci;

pub use fake::{FakeFixture, FakeInventory};
pub use fake_xid::{BadXidLine, FAKE_XID_POLL, parse_xid_line, spawn_fake_xid_events};
pub(crate) use nvml::{GiProfile, gi_profiles};
pub use nvml::{NvmlInventory, RawEvent, xid_event};
pub use pci::{BadBusId, normalise_bus_id};

use std::collections::BTreeMap;

use kubesched_core::inventory::GpuInfo;

/// What discovery found on the node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovered {
    /// NVIDIA driver version, when known.
    pub driver_version: Option<String>,
    /// The node's GPUs with their MIG mode and instances (NVML index order on real nodes).
    pub gpus: Vec<GpuInfo>,
    /// GPU instance id of each MIG device (by MIG UUID): XID events name the GPU instance,
    /// not the MIG UUID, so health attribution needs this map.
    pub gpu_instance_ids: BTreeMap<String, u32>,
}

/// Why GPU discovery failed, on real NVML or on a fixture.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The NVML library could not be loaded at all.
    #[error("no NVIDIA driver on this node ({0})")]
    NoDriver(String),
    /// A raw NVML call returned an error code, or the driver lacks the symbol.
    #[error("NVML call {call} failed: {message}")]
    Nvml {
        /// The NVML function.
        call: &'static str,
        /// What went wrong.
        message: String,
    },
    /// An NVML call through the safe wrapper failed.
    #[error("NVML call {call} failed: {source}")]
    NvmlCall {
        /// The NVML function.
        call: &'static str,
        /// NVML's error.
        source: nvml_wrapper::error::NvmlError,
    },
    /// NVML reported a PCI bus id that does not parse.
    #[error(transparent)]
    BusId(#[from] crate::discovery::BadBusId),
    /// The thread that waits for XID events could not be started.
    #[error("cannot start the XID event thread: {0}")]
    EventThread(#[source] std::io::Error),
    /// The blocking discovery task panicked.
    #[error("the discovery task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The fake inventory fixture file could not be read.
    #[error("cannot read fake inventory {path}: {source}")]
    FixtureIo {
        /// The fixture file.
        path: String,
        /// The read error.
        source: std::io::Error,
    },
    /// The fake inventory fixture is not valid JSON of the fixture layout.
    #[error("malformed fake inventory {path}: {source}")]
    FixtureFormat {
        /// The fixture file.
        path: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The fake inventory fixture parses but is inconsistent.
    #[error("fake inventory {path}: {message}")]
    FixtureInvalid {
        /// The fixture file (`fake MIG backend` for the MIG fixture).
        path: String,
        /// What is wrong: a bad PCI bus id, a duplicate UUID, a MIG instance off the geometry.
        message: String,
    },
}

/// A source of the node's GPUs. Calls may block (NVML); run them off the async runtime.
pub trait GpuInventory: Send + Sync {
    /// Finds the node's GPUs with their MIG instances and health (the agent fills in missing
    /// NUMA nodes from the host topology). Err when an NVML call fails or the fixture cannot
    /// be read.
    fn discover(&self) -> Result<Discovered, DiscoveryError>;
    /// Short name for logs and `doctor` ("nvml", "fake").
    fn kind(&self) -> &'static str;
}

//! The [`MigBackend`] trait: create and destroy MIG GPU instances (each with one compute
//! instance spanning it) at exact placements, list them, and report what makes a GPU unsafe to
//! touch (processes, a pending MIG mode change). NVML implements it on real nodes
//! (`discovery::nvml_mig`), an in-memory fake with the same rules and errors in tests and
//! `--fake-inventory` runs (`discovery::fake_mig`). Calls may block: run them off the runtime.

/// One GPU instance on a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInstance {
    pub profile: String,
    pub start: u8,
    /// The MIG device UUID; `None` for a GPU instance without a compute instance (a creation
    /// interrupted half-way), which still occupies its positions.
    pub uuid: Option<String>,
}

/// A process running on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuProcess {
    pub pid: u32,
    /// Start position of the GPU instance it runs in; `None` when it runs on the whole GPU.
    pub start: Option<u8>,
}

/// What the backend knows about a GPU besides its instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuCondition {
    /// MIG mode will change at the next GPU reset: the geometry is about to go away.
    pub pending_mode_change: bool,
    pub processes: Vec<GpuProcess>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigBackendError {
    #[error("GPU {0} is not known to the MIG backend")]
    UnknownGpu(String),
    #[error("GPU {gpu} has no MIG profile {profile}")]
    UnknownProfile { gpu: String, profile: String },
    #[error("{profile} cannot start at position {start} on GPU {gpu} (allowed: {allowed:?})")]
    InvalidPlacement {
        gpu: String,
        profile: String,
        start: u8,
        allowed: Vec<u8>,
    },
    /// NVML's `NVML_ERROR_INSUFFICIENT_RESOURCES`: the placement (or the GPU's compute slices,
    /// instance count or media engines) is already taken.
    #[error(
        "insufficient resources to create {profile} at position {start} on GPU {gpu}: {detail}"
    )]
    InsufficientResources {
        gpu: String,
        profile: String,
        start: u8,
        detail: String,
    },
    #[error("no GPU instance starts at position {start} on GPU {gpu}")]
    NoInstance { gpu: String, start: u8 },
    #[error("the GPU instance at position {start} on GPU {gpu} is in use")]
    InUse { gpu: String, start: u8 },
    #[error("NVML call {call} failed: {message}")]
    Nvml { call: &'static str, message: String },
}

/// Creates, destroys and lists MIG instances of the node's GPUs (by GPU UUID).
pub trait MigBackend: Send + Sync {
    /// The GPU's instances, lowest start first.
    fn instances(&self, gpu: &str) -> Result<Vec<LiveInstance>, MigBackendError>;
    /// Creates a GPU instance of `profile` at exactly `start` and one compute instance over all
    /// of it; returns the new instance with its MIG device UUID. Never picks another position.
    fn create(&self, gpu: &str, profile: &str, start: u8) -> Result<LiveInstance, MigBackendError>;
    /// Destroys the instance starting at `start` (its compute instances first).
    fn destroy(&self, gpu: &str, start: u8) -> Result<(), MigBackendError>;
    fn condition(&self, gpu: &str) -> Result<GpuCondition, MigBackendError>;
    /// Short name for logs and `doctor` ("nvml", "fake").
    fn kind(&self) -> &'static str;
}

//! The [`MigBackend`] trait: create and destroy MIG GPU instances (each with one compute
//! instance spanning it) at exact placements, list them, and report what makes a GPU unsafe to
//! touch (processes, a pending MIG mode change). NVML implements it on real nodes
//! (`mig::nvml`), an in-memory fake with the same rules and errors in tests and
//! `--fake-inventory` runs (`mig::fake`). Calls may block: run them off the runtime.

/// One GPU instance on a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInstance {
    /// MIG profile of the instance, e.g. `1g.10gb`.
    pub profile: String,
    /// Start position of the instance on its GPU, in memory slices (NVML's placement start).
    pub start: u8,
    /// The MIG device UUID; `None` for a GPU instance without a compute instance (a creation
    /// interrupted half-way), which still occupies its positions.
    pub uuid: Option<String>,
}

/// The driver's numbering of a MIG instance, which names its device nodes (see
/// `devices::cdi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceIds {
    /// Minor number of the parent GPU (`/dev/nvidia<minor>`); `None` when the backend does not
    /// know it (the fake), and the GPU's index stands in.
    pub gpu_minor: Option<u32>,
    /// The GPU instance id.
    pub gpu_instance: u32,
    /// The id of the compute instance spanning the GPU instance.
    pub compute_instance: u32,
}

/// A process running on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuProcess {
    /// The process id, as NVML reports it.
    pub pid: u32,
    /// Start position of the GPU instance it runs in; `None` when it runs on the whole GPU.
    pub start: Option<u8>,
}

/// What the backend knows about a GPU besides its instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuCondition {
    /// MIG mode will change at the next GPU reset: the geometry is about to go away.
    pub pending_mode_change: bool,
    /// Compute processes running on the GPU, in MIG instances or on the whole GPU.
    pub processes: Vec<GpuProcess>,
}

/// Why a MIG backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigBackendError {
    /// No GPU with this UUID is known to the backend (NVML finds none, or the fake holds none);
    /// holds the UUID.
    #[error("GPU {0} is not known to the MIG backend")]
    UnknownGpu(String),
    /// The GPU offers no MIG profile of that name.
    #[error("GPU {gpu} has no MIG profile {profile}")]
    UnknownProfile {
        /// UUID of the GPU.
        gpu: String,
        /// The MIG profile asked for, e.g. `5g.50gb`.
        profile: String,
    },
    /// The profile cannot start at that position on this GPU (not one of its placements).
    #[error("{profile} cannot start at position {start} on GPU {gpu} (allowed: {allowed:?})")]
    InvalidPlacement {
        /// UUID of the GPU.
        gpu: String,
        /// The MIG profile asked for, e.g. `3g.40gb`.
        profile: String,
        /// The start position asked for.
        start: u8,
        /// The start positions the GPU allows for this profile.
        allowed: Vec<u8>,
    },
    /// NVML's `NVML_ERROR_INSUFFICIENT_RESOURCES`: the placement (or the GPU's compute slices,
    /// instance count or media engines) is already taken.
    #[error(
        "insufficient resources to create {profile} at position {start} on GPU {gpu}: {detail}"
    )]
    InsufficientResources {
        /// UUID of the GPU.
        gpu: String,
        /// The MIG profile asked for, e.g. `1g.10gb`.
        profile: String,
        /// The start position asked for.
        start: u8,
        /// What NVML or the fake's occupancy check said was taken.
        detail: String,
    },
    /// No GPU instance starts at the position asked to destroy.
    #[error("no GPU instance starts at position {start} on GPU {gpu}")]
    NoInstance {
        /// UUID of the GPU.
        gpu: String,
        /// The start position where an instance was expected.
        start: u8,
    },
    /// The instance cannot be destroyed because a process runs in it (NVML's
    /// `NVML_ERROR_IN_USE`).
    #[error("the GPU instance at position {start} on GPU {gpu} is in use")]
    InUse {
        /// UUID of the GPU.
        gpu: String,
        /// Start position of the busy instance.
        start: u8,
    },
    /// An NVML call failed, or the driver does not export a function the backend needs.
    #[error("NVML call {call} failed: {message}")]
    Nvml {
        /// The NVML function.
        call: &'static str,
        /// What went wrong: NVML's error or return code, or a symbol the driver lacks.
        message: String,
    },
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
    /// The GPU minor and the GPU and compute instance ids of the instance starting at
    /// `start`: what names its device nodes. Err when no complete instance starts there.
    fn instance_ids(&self, gpu: &str, start: u8) -> Result<InstanceIds, MigBackendError>;
    /// What makes the GPU unsafe to touch: a pending MIG mode change and the compute processes
    /// running on it. Err for a GPU the backend does not know or a failed NVML call.
    fn condition(&self, gpu: &str) -> Result<GpuCondition, MigBackendError>;
    /// Short name for logs and `doctor` ("nvml", "fake").
    fn kind(&self) -> &'static str;
}

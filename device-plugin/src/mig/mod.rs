//! Dynamic MIG: GPU instances created where the scheduler chose, right before the pod's
//! container starts, and destroyed once no pod claims them. `backend` is the hardware boundary
//! (NVML on real nodes, an in-memory GPU in tests); `decisions` decides from plain data what to
//! keep and what to destroy; `dynamic` owns the state and carries the decisions out.

mod backend;
mod decisions;
mod dynamic;
mod fake;
mod nvml;

pub use backend::{
    GpuCondition, GpuProcess, InstanceIds, LiveInstance, MigBackend, MigBackendError,
};
pub use decisions::{Claim, Decisions, GpuSnapshot, OrphanTracker, SlotKey, decide};
pub use dynamic::{
    CleanupReport, DynamicCdiError, DynamicGpuStatus, DynamicMig, DynamicMigError, DynamicSelection,
};
pub use fake::FakeMigBackend;
pub use nvml::NvmlMigBackend;

//! The devices the agent advertises and hands out: which resources and devices exist
//! (`resources`), their current health and the resource manager that holds them
//! (`manager`, `health`), and the allocator that answers the kubelet's GetPreferredAllocation
//! and Allocate with exactly the devices the scheduler chose (`allocation`), named to the
//! container runtime per the device list strategies (`cdi`: `NVIDIA_VISIBLE_DEVICES`, CDI).

mod allocation;
pub mod cdi;
mod health;
mod manager;
mod resources;

pub use allocation::{AllocationError, Allocator, VISIBLE_DEVICES_ENV};
pub use health::{
    ALL_INSTANCES, APPLICATION_XIDS, HealthProbe, HealthTracker, XidEvent, is_critical, run_health,
};
pub use manager::{DeviceList, ResourceManager, ResourceSetChanged};
pub use resources::{
    AdvertisedDevice, MigSlice, ResourcePlan, is_valid_resource_name, plan, socket_name,
};

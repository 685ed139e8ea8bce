//! kubesched-ai node agent: discovers the node's GPUs, MIG instances and NUMA topology, keeps
//! their health, advertises them to the kubelet over the device plugin gRPC API (one server and
//! one registration per resource name), hands each pod exactly the devices the scheduler chose,
//! and publishes the node inventory for the scheduler extender.
//!
//! Layout, one folder per concern:
//! - `discovery`, `topology`: what the hardware has (NVML or a fixture; hwloc or sysfs).
//! - `devices`: what is advertised, its health, and who gets which device (the allocator).
//! - `kubelet`: the gRPC side: plugin host and server, registration, PodResources.
//! - `pods`: the pods bound to this node and the devices their annotations name.
//! - `mig`: dynamic MIG, instances created where the scheduler chose and destroyed after.
//! - `publish`: the inventory annotation, GPU health as a Node condition (and optional
//!   taint), and the agent's metrics endpoint.
//! - `agent`: wires all of it together; `doctor`: the node's self-check.

pub mod agent;
pub mod devices;
pub mod discovery;
pub mod doctor;
pub mod kubelet;
pub mod mig;
pub mod pods;
pub mod publish;
pub mod topology;

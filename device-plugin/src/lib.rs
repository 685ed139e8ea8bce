//! kubesched-ai node agent: discovers the node's GPUs, MIG instances and NUMA topology, keeps
//! their health, advertises them to the kubelet over the device plugin gRPC API (one server and
//! one registration per resource name), hands each pod exactly the devices the scheduler chose,
//! and publishes the node inventory for the scheduler extender.
//!
//! Layout: `discovery` and `topology` read the hardware; `resources` and `manager` decide what
//! is advertised and hold its state; `plugin_server` (with `h2_authority` for old kubelets),
//! `kubelet_registration` and `kubelet_watch` speak to the kubelet; `allocation`, `pods` and `kube_pods` turn pod
//! annotations into device hand-outs; `health`, `pod_resources` and `publisher` keep the picture current;
//! `mig_backend`, `mig_manager` and `reconcile` run dynamic MIG (instances created where the
//! scheduler chose, destroyed when their pods end); `agent` wires it all together.

pub mod agent;
pub mod agent_metrics;
pub mod allocation;
pub mod discovery;
pub mod doctor;
pub mod h2_authority;
pub mod health;
pub mod kube_pods;
pub mod kubelet_registration;
pub mod kubelet_watch;
pub mod manager;
pub mod mig_backend;
pub mod mig_manager;
pub mod node_agent;
pub mod pci;
pub mod plugin_server;
pub mod pod_arrival;
pub mod pod_resources;
pub mod pods;
pub mod publisher;
pub mod reconcile;
pub mod resources;
pub mod topology;
pub mod uds;

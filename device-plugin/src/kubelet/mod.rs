//! Everything that speaks to the kubelet: the plugin host (one gRPC server and one
//! registration per resource, restarted when the kubelet restarts), the DevicePlugin service,
//! registration, the socket watch, the PodResources client, gRPC over Unix sockets, and the
//! HTTP/2 `:authority` adapter for kubelets before 1.26.

mod h2_authority;
mod plugin_host;
mod plugin_server;
mod pod_resources;
mod registration;
mod socket_watch;
mod uds;

pub use h2_authority::{
    AuthorityFix, AuthorityRewriter, BLOCK_DEADLINE, ConnectionSlots, MAX_CONNECTIONS,
    MAX_HELD_BLOCK,
};
pub use plugin_host::{KubeletPaths, run_plugins};
pub use plugin_server::{DevicePluginService, PluginServer, ServerError, to_wire};
pub use pod_resources::{
    ContainerHolding, NodeUsage, NumaMemory, PodResourcesError, UsageReader, read_usage,
};
pub use registration::{REGISTER_TIMEOUT, RegistrationError, plugin_options, register};
pub use socket_watch::{POLL_INTERVAL, watch_kubelet_socket};
pub use uds::{ConnectError, connect};

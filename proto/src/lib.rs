//! The kubelet's gRPC APIs as Rust types, clients and servers: the device plugin API
//! (`v1beta1`) and the PodResources API (`v1`). The `.proto` files under `proto/` are our own,
//! kept wire-compatible with the kubelet's (same packages, names and field numbers); the
//! golden-bytes tests in `tests/` pin every field number.

/// Device plugin API v1beta1: `Registration` (served by the kubelet) and `DevicePlugin`
/// (served by each plugin).
pub mod deviceplugin {
    /// The `v1beta1` package, generated from `proto/proto/deviceplugin/v1beta1/api.proto` (the
    /// messages carry that file's comments; fields it leaves undocumented are the kubelet's).
    #[allow(missing_docs)]
    pub mod v1beta1 {
        tonic::include_proto!("v1beta1");

        /// The API version sent in `RegisterRequest::version`.
        pub const VERSION: &str = "v1beta1";
        /// `Device::health` of a usable device.
        pub const HEALTHY: &str = "Healthy";
        /// `Device::health` of a device the kubelet must not hand out.
        pub const UNHEALTHY: &str = "Unhealthy";
        /// Folder holding the kubelet's and the plugins' sockets.
        pub const DEVICE_PLUGIN_PATH: &str = "/var/lib/kubelet/device-plugins";
        /// File name of the kubelet's Registration socket inside [`DEVICE_PLUGIN_PATH`].
        pub const KUBELET_SOCKET_NAME: &str = "kubelet.sock";
    }
}

/// PodResources API v1: which devices, CPUs and memory each container holds.
pub mod podresources {
    /// The `v1` package, generated from `proto/proto/podresources/v1/api.proto`.
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("v1");

        /// Default socket of the kubelet's PodResources service.
        pub const POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
    }
}

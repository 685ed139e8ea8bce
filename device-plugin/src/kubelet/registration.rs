//! Registration with the kubelet: one `Register` call per resource name, naming our socket
//! (relative to the device plugin folder) and our options.

use std::path::Path;
use std::time::Duration;

use kubesched_proto::deviceplugin::v1beta1::registration_client::RegistrationClient;
use kubesched_proto::deviceplugin::v1beta1::{DevicePluginOptions, RegisterRequest, VERSION};

use super::uds;

/// How long one registration may take before it counts as failed.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why registering a resource with the kubelet failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The kubelet's Registration socket could not be reached.
    #[error(transparent)]
    Connect(#[from] uds::ConnectError),
    /// The `Register` call failed: the kubelet rejected it (an unsupported version or resource
    /// name) or did not answer in time.
    #[error("kubelet refused registration of {resource}: {status}")]
    Refused {
        /// Resource name we tried to register, e.g. `nvidia.com/gpu`.
        resource: String,
        /// The gRPC status of the failed `Register` call.
        status: tonic::Status,
    },
}

/// The options every plugin server of ours advertises.
pub fn plugin_options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// Registers `resource`, served on `endpoint` (a file name in the kubelet's folder).
pub async fn register(
    kubelet_socket: &Path,
    endpoint: &str,
    resource: &str,
) -> Result<(), RegistrationError> {
    let channel = uds::connect(kubelet_socket, REGISTER_TIMEOUT).await?;
    let request = RegisterRequest {
        version: VERSION.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: resource.to_string(),
        options: Some(plugin_options()),
    };
    RegistrationClient::new(channel)
        .register(request)
        .await
        .map_err(|status| RegistrationError::Refused {
            resource: resource.to_string(),
            status,
        })?;
    tracing::info!(resource, endpoint, "registered with the kubelet");
    Ok(())
}

//! gRPC channels over Unix sockets (the kubelet's Registration and PodResources services).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A gRPC channel to a kubelet Unix socket could not be opened (no listener, refused, or
/// timed out).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {path}: {source}")]
pub struct ConnectError {
    /// The Unix socket that could not be reached.
    pub path: String,
    /// The transport error from dialling the socket or the HTTP/2 handshake.
    #[source]
    pub source: tonic::transport::Error,
}

/// Connects to a gRPC server on a Unix socket; `timeout` bounds the connect and each call.
pub async fn connect(path: &Path, timeout: Duration) -> Result<Channel, ConnectError> {
    let socket: PathBuf = path.to_path_buf();
    // The URI must parse but is never used: the connector dials the socket.
    let endpoint = Endpoint::from_static("http://[::]:50051")
        .connect_timeout(timeout)
        .timeout(timeout);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|source| ConnectError {
            path: path.display().to_string(),
            source,
        })
}

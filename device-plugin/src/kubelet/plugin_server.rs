//! The DevicePlugin gRPC service for one resource name, served on its own Unix socket.
//! Device state comes from the [`ResourceManager`]; allocation decisions from the
//! [`Allocator`]. Requests never panic the server: bad input becomes a gRPC error.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use kubesched_proto::deviceplugin::v1beta1::device_plugin_server::{
    DevicePlugin, DevicePluginServer,
};
use kubesched_proto::deviceplugin::v1beta1::{
    AllocateRequest, AllocateResponse, Device, DevicePluginOptions, Empty, HEALTHY,
    ListAndWatchResponse, NumaNode, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse, TopologyInfo, UNHEALTHY,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::AuthorityFix;
use super::plugin_options;
use crate::devices::AdvertisedDevice;
use crate::devices::Allocator;
use crate::devices::ResourceManager;

/// The kubelet's wire form of a device: id, health and NUMA node.
pub fn to_wire(device: &AdvertisedDevice) -> Device {
    Device {
        id: device.id.clone(),
        health: if device.healthy { HEALTHY } else { UNHEALTHY }.to_string(),
        topology: device.numa_node.map(|n| TopologyInfo {
            nodes: vec![NumaNode { id: i64::from(n) }],
        }),
    }
}

/// DevicePlugin for one resource.
pub struct DevicePluginService {
    resource: String,
    manager: Arc<ResourceManager>,
    allocator: Arc<Allocator>,
    shutdown: CancellationToken,
}

impl DevicePluginService {
    /// The service for `resource`, serving `manager`'s devices and deciding through `allocator`;
    /// its ListAndWatch streams end when `shutdown` is cancelled.
    pub fn new(
        resource: String,
        manager: Arc<ResourceManager>,
        allocator: Arc<Allocator>,
        shutdown: CancellationToken,
    ) -> Self {
        DevicePluginService {
            resource,
            manager,
            allocator,
            shutdown,
        }
    }
}

type ListAndWatchStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for DevicePluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(plugin_options()))
    }

    type ListAndWatchStream = ListAndWatchStream;

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut devices = self.manager.subscribe(&self.resource).ok_or_else(|| {
            Status::not_found(format!("resource {} is not served here", self.resource))
        })?;
        let shutdown = self.shutdown.clone();
        let resource = self.resource.clone();
        let (tx, rx) = mpsc::channel(4);
        // Forwards every change until the client goes away or the server stops; ending the
        // stream on shutdown lets graceful shutdown complete.
        tokio::spawn(async move {
            loop {
                let list = devices.borrow_and_update().clone();
                let response = ListAndWatchResponse {
                    devices: list.iter().map(to_wire).collect(),
                };
                tracing::debug!(resource = %resource, devices = response.devices.len(), "ListAndWatch update");
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = devices.changed() => if changed.is_err() { return },
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let request = request.into_inner();
        let mut responses = Vec::with_capacity(request.container_requests.len());
        for container in &request.container_requests {
            responses.push(self.allocator.preferred(&self.resource, container).await?);
        }
        Ok(Response::new(PreferredAllocationResponse {
            container_responses: responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let request = request.into_inner();
        let mut responses = Vec::with_capacity(request.container_requests.len());
        for container in &request.container_requests {
            responses.push(
                self.allocator
                    .allocate(&self.resource, &container.devices_ids)
                    .await?,
            );
        }
        Ok(Response::new(AllocateResponse {
            container_responses: responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        // Not requested in our options; answer anyway so a misconfigured kubelet does not fail pods.
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// Why a device plugin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The plugin socket could not be bound, or a stale file in its place could not be removed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: String,
        /// The I/O error from removing the stale file or binding.
        source: std::io::Error,
    },
}

/// A running plugin server; [`PluginServer::stop`] shuts it down and removes its socket.
pub struct PluginServer {
    socket: PathBuf,
    stop: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl PluginServer {
    /// Binds `socket` (replacing a stale file) and serves `resource` on it.
    pub fn start(
        socket: &Path,
        resource: &str,
        manager: Arc<ResourceManager>,
        allocator: Arc<Allocator>,
    ) -> Result<Self, ServerError> {
        let bind_error = |source| ServerError::Bind {
            path: socket.display().to_string(),
            source,
        };
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_error(e)),
        }
        let listener = tokio::net::UnixListener::bind(socket).map_err(bind_error)?;
        let stop = CancellationToken::new();
        let service =
            DevicePluginService::new(resource.to_string(), manager, allocator, stop.clone());
        let shutdown = stop.clone();
        // Kubelets before 1.26 send the socket path as `:authority`, which h2 rejects. The
        // kubelet opens one or two connections: past a few, new ones are closed at once.
        let slots = super::ConnectionSlots::default();
        let incoming = UnixListenerStream::new(listener)
            .filter_map(move |conn| AuthorityFix::admit(&slots, conn));
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(service))
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()),
        );
        tracing::info!(resource, socket = %socket.display(), "device plugin server listening");
        Ok(PluginServer {
            socket: socket.to_path_buf(),
            stop,
            task,
        })
    }

    /// The Unix socket this server listens on, in the kubelet's device plugin folder.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the server task ended on its own (a transport failure).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops serving, waits for the server to finish and removes the socket file.
    pub async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, socket = %self.socket.display(), "plugin server ended with an error")
            }
            Err(error) => {
                tracing::warn!(%error, socket = %self.socket.display(), "plugin server task failed")
            }
        }
        // The kubelet may already have deleted it (restart); anything else is worth a log line.
        if let Err(error) = std::fs::remove_file(&self.socket)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, socket = %self.socket.display(), "cannot remove plugin socket");
        }
    }
}

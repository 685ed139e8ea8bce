//! The plugin host: one gRPC server and one kubelet registration per advertised resource,
//! restarted and re-registered whenever the kubelet recreates its socket, and retried while
//! the kubelet is not there yet. Sockets are removed on shutdown. Whether every resource is
//! registered is reported on a watch channel: until then the kubelet cannot hand our devices.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::register;
use super::watch_kubelet_socket;
use super::{PluginServer, ServerError};
use crate::devices::Allocator;
use crate::devices::ResourceManager;
use crate::devices::socket_name;

/// Where the kubelet and our plugins meet.
#[derive(Debug, Clone)]
pub struct KubeletPaths {
    /// The device plugin folder; our sockets go here.
    pub plugin_dir: PathBuf,
    /// The kubelet's Registration socket (normally `<plugin_dir>/kubelet.sock`).
    pub kubelet_socket: PathBuf,
    /// How often to look for a recreated kubelet socket.
    pub poll_interval: Duration,
    /// How long to wait before retrying failed registrations.
    pub retry_interval: Duration,
}

struct Served {
    resource: String,
    server: PluginServer,
    registered: bool,
}

/// Serves and registers every resource of `manager` until `shutdown` is cancelled;
/// `registered` is true while every one of them is registered with the kubelet.
pub async fn run_plugins(
    paths: KubeletPaths,
    manager: Arc<ResourceManager>,
    allocator: Arc<Allocator>,
    shutdown: CancellationToken,
    registered: watch::Sender<bool>,
) -> Result<(), ServerError> {
    let mut kubelet_restarts =
        watch_kubelet_socket(paths.kubelet_socket.clone(), paths.poll_interval);
    loop {
        registered.send_replace(false);
        let mut served = Vec::new();
        for resource in manager.resource_names() {
            let socket = paths.plugin_dir.join(socket_name(&resource));
            match PluginServer::start(&socket, &resource, manager.clone(), allocator.clone()) {
                Ok(server) => served.push(Served {
                    resource,
                    server,
                    registered: false,
                }),
                Err(error) => {
                    stop_all(served).await;
                    return Err(error);
                }
            }
        }
        registered.send_replace(register_pending(&paths, &mut served).await);
        // A restart signal raised while we were already restarting is spent.
        while kubelet_restarts.try_recv().is_ok() {}
        let mut socket_check = tokio::time::interval(paths.poll_interval);
        socket_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let restart = loop {
            let all_registered = served.iter().all(|s| s.registered);
            let retry = tokio::time::sleep(if all_registered {
                Duration::MAX / 4
            } else {
                paths.retry_interval
            });
            tokio::select! {
                signal = kubelet_restarts.recv() => {
                    if signal.is_none() {
                        break false;
                    }
                    tracing::info!("kubelet restarted; serving and registering every resource again");
                    break true;
                }
                () = retry => {
                    registered.send_replace(register_pending(&paths, &mut served).await);
                }
                // The kubelet wipes the folder when it starts. Our sockets vanishing is a sure
                // sign even when the new kubelet.sock is indistinguishable from the old one
                // (same inode number, created within one tick of the file system clock).
                _ = socket_check.tick() => {
                    if paths.kubelet_socket.exists()
                        && served.iter().any(|s| !s.server.socket().exists())
                    {
                        tracing::info!("our plugin sockets were removed (kubelet restart); serving and registering every resource again");
                        break true;
                    }
                }
                () = shutdown.cancelled() => break false,
            }
            if served.iter().any(|s| s.server.is_finished()) {
                tracing::warn!("a plugin server stopped; restarting all of them");
                break true;
            }
        };
        registered.send_replace(false);
        stop_all(served).await;
        if !restart {
            return Ok(());
        }
    }
}

/// Registers what is not yet; returns whether every resource now is.
async fn register_pending(paths: &KubeletPaths, served: &mut [Served]) -> bool {
    for entry in served.iter_mut().filter(|s| !s.registered) {
        let endpoint = socket_name(&entry.resource);
        match register(&paths.kubelet_socket, &endpoint, &entry.resource).await {
            Ok(()) => entry.registered = true,
            Err(error) => {
                tracing::warn!(resource = %entry.resource, %error, "registration failed; will retry")
            }
        }
    }
    served.iter().all(|s| s.registered)
}

async fn stop_all(served: Vec<Served>) {
    for entry in served {
        entry.server.stop().await;
    }
}

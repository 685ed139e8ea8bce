//! The kubelet's PodResources API (v1 `List`) over its Unix socket: what the kubelet itself
//! says each container holds. Kubelet 1.20 implements `List` only (`GetAllocatableResources`
//! came in 1.21).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use kubesched_proto::podresources::v1::ListPodResourcesRequest;
use kubesched_proto::podresources::v1::pod_resources_lister_client::PodResourcesListerClient;
use tonic::transport::{Endpoint, Uri};

/// What one container holds according to the kubelet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    /// Resource name -> device ids.
    pub devices: BTreeMap<String, BTreeSet<String>>,
    /// Exclusive CPUs (CPU manager `static`); empty for shared-pool containers.
    pub cpus: BTreeSet<i64>,
}

/// (namespace, pod, container) -> what it holds, from one `List` call.
pub async fn list(socket: &Path) -> anyhow::Result<BTreeMap<(String, String, String), Holding>> {
    let path: PathBuf = socket.to_path_buf();
    // The URI must parse but is never dialled: the connector opens the socket.
    let channel = Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to the PodResources socket {}", socket.display()))?;
    let listed = PodResourcesListerClient::new(channel)
        .list(ListPodResourcesRequest {})
        .await
        .context("PodResources List")?
        .into_inner();
    let mut out = BTreeMap::new();
    for pod in listed.pod_resources {
        for container in pod.containers {
            let mut holding = Holding {
                cpus: container.cpu_ids.iter().copied().collect(),
                ..Holding::default()
            };
            for devices in container.devices {
                holding
                    .devices
                    .entry(devices.resource_name)
                    .or_default()
                    .extend(devices.device_ids);
            }
            out.insert(
                (pod.namespace.clone(), pod.name.clone(), container.name),
                holding,
            );
        }
    }
    Ok(out)
}

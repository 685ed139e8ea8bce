//! Test harness: a temp folder standing in for the kubelet's device plugin folder, an
//! in-test fake kubelet (Registration server on a real Unix socket), and the agent's plugin
//! host started against the fake-inventory fixture.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kubesched_core::annotation::{AssignedDevice, AssignedMig, DEVICES_VERSION, DevicesAnnotation};
use kubesched_core::inventory::{INVENTORY_VERSION, NodeInventory};
use kubesched_core::request::{GpuDemand, GpuResource, ResourceNames};
use kubesched_device_plugin::devices::Allocator;
use kubesched_device_plugin::devices::ResourceManager;
use kubesched_device_plugin::devices::{plan, socket_name};
use kubesched_device_plugin::discovery::FakeInventory;
use kubesched_device_plugin::discovery::GpuInventory;
use kubesched_device_plugin::kubelet;
use kubesched_device_plugin::kubelet::{KubeletPaths, run_plugins};
use kubesched_device_plugin::pods::{InMemoryPods, PodDevices, PodSource, PodView};
use kubesched_k8s::PodRef;
use kubesched_proto::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use kubesched_proto::deviceplugin::v1beta1::registration_server::{
    Registration, RegistrationServer,
};
use kubesched_proto::deviceplugin::v1beta1::{Empty, RegisterRequest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The whole agent on `fake`'s GPUs with a kubelet in `dir` and nothing else wired (no
/// publisher, no dynamic MIG, no PodResources); tests set what they exercise.
pub fn test_agent(
    dir: &Path,
    fake: FakeInventory,
    pods: Arc<InMemoryPods>,
) -> kubesched_device_plugin::agent::NodeAgent {
    kubesched_device_plugin::agent::NodeAgent {
        node_name: "test-node".into(),
        names: ResourceNames::default(),
        topology_policy: kubesched_core::numa::TopologyPolicy::None,
        paths: KubeletPaths {
            plugin_dir: dir.to_path_buf(),
            kubelet_socket: dir.join("kubelet.sock"),
            poll_interval: Duration::from_millis(50),
            retry_interval: Duration::from_millis(200),
        },
        inventory: Some(Arc::new(fake.clone())),
        topology: Arc::new(fake),
        probe: Arc::new(AlwaysOk),
        xid_events: None,
        pods,
        annotation_prefix: "kubesched.ai".into(),
        pod_wait: Duration::ZERO,
        pod_resources_socket: None,
        pod_resources_every: Duration::from_secs(3600),
        publisher: None,
        rediscover_every: Duration::from_secs(3600),
        health_quiet_period: Duration::from_secs(60),
        node_health: None,
        dynamic_mig: None,
        documents: tokio::sync::watch::channel(None).0,
        mig_cleanup_every: Duration::from_secs(3600),
        cdi: Default::default(),
        drain_grace: Duration::ZERO,
    }
}

/// A health probe for which every GPU answers.
pub struct AlwaysOk;
impl kubesched_device_plugin::devices::HealthProbe for AlwaysOk {
    fn gpu_ok(&self, _: &str) -> bool {
        true
    }
}

pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node.json");

/// A unique folder under the system temp dir, removed on drop. Kept short: Unix socket
/// paths are limited to about 100 bytes.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ksdp-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Records every Register call.
struct FakeRegistration {
    calls: mpsc::UnboundedSender<RegisterRequest>,
}

#[tonic::async_trait]
impl Registration for FakeRegistration {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<Empty>, tonic::Status> {
        let request = request.into_inner();
        if request.version != "v1beta1" {
            return Err(tonic::Status::invalid_argument("unsupported version"));
        }
        let _ = self.calls.send(request);
        Ok(tonic::Response::new(Empty {}))
    }
}

/// A fake kubelet serving Registration on `<dir>/kubelet.sock`.
pub struct FakeKubelet {
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeKubelet {
    pub fn start(dir: &Path, calls: mpsc::UnboundedSender<RegisterRequest>) -> Self {
        let socket = dir.join("kubelet.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(FakeRegistration { calls }))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeKubelet {
            socket,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and, like a starting kubelet, wipes the device plugin folder.
    pub async fn stop_and_wipe(&mut self, dir: &Path) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A pod asking for `count` of `resource`, annotated (as the extender would) with the
/// fixture devices `assigned`, or unannotated.
pub fn pod(name: &str, resource: &str, count: u32, assigned: Option<&[&str]>) -> PodView {
    let demand = match ResourceNames::default().classify(resource).unwrap() {
        Some(GpuResource::Whole) => GpuDemand::Whole { count },
        Some(GpuResource::Mig(profile)) => GpuDemand::Mig { profile, count },
        None => GpuDemand::None,
    };
    let devices = match assigned {
        None => PodDevices::Unassigned,
        Some(ids) => PodDevices::Assigned(annotation(resource, ids)),
    };
    PodView {
        id: PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        demand,
        devices,
        admitted: false,
    }
}

/// The devices annotation naming fixture devices by their advertised ids.
pub fn annotation(resource: &str, ids: &[&str]) -> DevicesAnnotation {
    let fixture = FakeInventory::open(FIXTURE).unwrap().load().unwrap();
    let devices = ids
        .iter()
        .map(|id| {
            fixture
                .gpus
                .iter()
                .find_map(|g| {
                    if g.uuid == *id {
                        return Some(AssignedDevice {
                            gpu_uuid: g.uuid.clone(),
                            gpu_index: g.index,
                            mig: None,
                        });
                    }
                    let slice = g.mig.as_ref()?.instances.iter().find(|i| i.uuid == *id)?;
                    Some(AssignedDevice {
                        gpu_uuid: g.uuid.clone(),
                        gpu_index: g.index,
                        mig: Some(AssignedMig {
                            profile: slice.profile.clone(),
                            start: slice.start,
                            uuid: Some(slice.uuid.clone()),
                        }),
                    })
                })
                .unwrap_or_else(|| panic!("{id} is not a fixture device"))
        })
        .collect();
    DevicesAnnotation {
        version: DEVICES_VERSION,
        node: "test-node".into(),
        resource: resource.into(),
        devices,
        numa_node: None,
        signature: None,
    }
}

/// The agent's plugin host running against the fixture, plus the fake kubelet.
pub struct Harness {
    pub dir: TempDir,
    pub kubelet: FakeKubelet,
    pub registrations: mpsc::UnboundedReceiver<RegisterRequest>,
    pub registration_tx: mpsc::UnboundedSender<RegisterRequest>,
    pub manager: Arc<ResourceManager>,
    pub allocator: Arc<Allocator>,
    pub pods: Arc<InMemoryPods>,
    stop: CancellationToken,
    host: Option<JoinHandle<()>>,
}

pub fn build_from_fixture(pods: Arc<InMemoryPods>) -> (Arc<ResourceManager>, Arc<Allocator>) {
    build_waiting_from_fixture(pods, Duration::ZERO)
}

/// As [`build_from_fixture`], the allocator waiting up to `pod_wait` for the pod being admitted.
pub fn build_waiting_from_fixture(
    pods: Arc<InMemoryPods>,
    pod_wait: Duration,
) -> (Arc<ResourceManager>, Arc<Allocator>) {
    build_over_source(pods, pod_wait)
}

/// As [`build_waiting_from_fixture`], over any pod source.
pub fn build_over_source(
    pods: Arc<dyn PodSource>,
    pod_wait: Duration,
) -> (Arc<ResourceManager>, Arc<Allocator>) {
    let fake = FakeInventory::open(FIXTURE).unwrap();
    let found = fake.discover().unwrap();
    let names = ResourceNames::default();
    let manager = Arc::new(ResourceManager::new(plan(
        &found.gpus,
        &names,
        &found.gpu_instance_ids,
    )));
    let fixture = fake.load().unwrap();
    let inventory = NodeInventory {
        version: INVENTORY_VERSION,
        node: "test-node".into(),
        agent_version: "test".into(),
        topology_policy: fixture.topology_policy,
        numa_nodes: fixture.numa_nodes,
        gpus: found.gpus,
        draining: false,
    };
    let allocator =
        Arc::new(Allocator::new(manager.clone(), pods, names, inventory).with_pod_wait(pod_wait));
    (manager, allocator)
}

impl Harness {
    pub async fn start() -> Self {
        let dir = TempDir::new();
        let (registration_tx, registrations) = mpsc::unbounded_channel();
        let kubelet = FakeKubelet::start(&dir.0, registration_tx.clone());
        let pods = Arc::new(InMemoryPods::default());
        let (manager, allocator) = build_from_fixture(pods.clone());
        let paths = KubeletPaths {
            plugin_dir: dir.0.clone(),
            kubelet_socket: kubelet.socket.clone(),
            poll_interval: Duration::from_millis(50),
            retry_interval: Duration::from_millis(200),
        };
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let host = tokio::spawn({
            let (manager, allocator) = (manager.clone(), allocator.clone());
            async move {
                let (registered, _) = tokio::sync::watch::channel(false);
                run_plugins(paths, manager, allocator, stopped, registered)
                    .await
                    .unwrap()
            }
        });
        Harness {
            dir,
            kubelet,
            registrations,
            registration_tx,
            manager,
            allocator,
            pods,
            stop,
            host: Some(host),
        }
    }

    /// The next `n` registrations, failing after `within`.
    pub async fn expect_registrations(
        &mut self,
        n: usize,
        within: Duration,
    ) -> Vec<RegisterRequest> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.registrations.recv()).await {
                Ok(Some(r)) => got.push(r),
                _ => panic!(
                    "only {} of {n} registrations within {within:?}: {got:?}",
                    got.len()
                ),
            }
        }
        got.sort_by(|a, b| a.resource_name.cmp(&b.resource_name));
        got
    }

    pub async fn client(&self, resource: &str) -> DevicePluginClient<Channel> {
        let socket = self.dir.0.join(socket_name(resource));
        DevicePluginClient::new(
            kubelet::connect(&socket, Duration::from_secs(5))
                .await
                .unwrap(),
        )
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(host) = self.host.take() {
            tokio::time::timeout(Duration::from_secs(5), host)
                .await
                .expect("plugin host stops")
                .unwrap();
        }
    }
}

//! `kubesched-agent`: the node agent binary (argument parsing and wiring only).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kubesched_core::annotation::{DEFAULT_PREFIX, key};
use kubesched_core::inventory::INVENTORY_ANNOTATION;
use kubesched_core::numa::TopologyPolicy;
use kubesched_core::request::{DEFAULT_DOMAIN, ResourceNames};
use kubesched_core::signing::SigningKey;
use kubesched_device_plugin::agent::NodeAgent;
use kubesched_device_plugin::devices::cdi::{
    CdiConfig, CdiSpecs, DEFAULT_CDI_ANNOTATION_PREFIX, DEFAULT_CDI_KIND, DEFAULT_CDI_SPEC_DIR,
    DeviceListStrategy,
};
use kubesched_device_plugin::devices::{HealthProbe, plan, socket_name};
use kubesched_device_plugin::discovery::{
    DiscoveryError, FakeInventory, GpuInventory, NvmlInventory, spawn_fake_xid_events,
};
use kubesched_device_plugin::doctor;
use kubesched_device_plugin::kubelet::{self, KubeletPaths};
use kubesched_device_plugin::mig::{
    DynamicMig, DynamicSelection, FakeMigBackend, MigBackend, NvmlMigBackend,
};
use kubesched_device_plugin::pods::{self, InMemoryPods, KubePods, PodReader, PodSource};
use kubesched_device_plugin::publish::{
    self, KubeNodeAnnotator, KubeNodeHealthWriter, NodeAnnotator, NodeHealthOptions,
    NodeHealthWriter,
};
use kubesched_device_plugin::topology::{self, HostTopology};
use kubesched_proto::deviceplugin::v1beta1::{DEVICE_PLUGIN_PATH, KUBELET_SOCKET_NAME};
use kubesched_proto::podresources::v1::POD_RESOURCES_SOCKET;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "kubesched-ai node agent: GPU and MIG device plugin")]
struct Cli {
    /// This node's name: whose pods to follow and which Node to annotate.
    #[arg(long, env = "NODE_NAME", default_value = "")]
    node_name: String,
    /// Resource domain: `<domain>/gpu`, `<domain>/mig-<profile>`.
    #[arg(long, default_value = DEFAULT_DOMAIN)]
    resource_domain: String,
    /// Annotation prefix: the inventory goes to `<prefix>/inventory`, the scheduler's choice
    /// is read from `<prefix>/devices`.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    annotation_prefix: String,
    /// The kubelet's device plugin folder; our sockets go here.
    #[arg(long, default_value = DEVICE_PLUGIN_PATH)]
    device_plugin_dir: PathBuf,
    /// Defaults to `<device-plugin-dir>/kubelet.sock`.
    #[arg(long, env = "KUBELET_SOCKET")]
    kubelet_socket: Option<PathBuf>,
    /// The kubelet PodResources socket (devices and CPUs each container holds).
    #[arg(long, default_value = POD_RESOURCES_SOCKET)]
    pod_resources_socket: PathBuf,
    /// The kubelet's --topology-manager-policy (published for the scheduler).
    #[arg(long, default_value = "none", value_parser = parse_policy)]
    topology_policy: TopologyPolicy,
    /// How Allocate names devices to the container runtime: `envvar` (NVIDIA_VISIBLE_DEVICES),
    /// `cdi-cri` (the CRI's CDI device list), `cdi-annotations` (a `cdi.k8s.io/` container
    /// annotation); comma-separated to combine. `volume-mounts` is not supported.
    #[arg(long, env = "DEVICE_LIST_STRATEGY", default_value = "envvar")]
    device_list_strategy: DeviceListStrategy,
    /// CDI kind of the devices: CDI names are `<kind>=<GPU or MIG UUID>`.
    #[arg(long, default_value = DEFAULT_CDI_KIND)]
    cdi_kind: String,
    /// Prefix of the CDI container annotation keys (`cdi-annotations`).
    #[arg(long, default_value = DEFAULT_CDI_ANNOTATION_PREFIX)]
    cdi_annotation_prefix: String,
    /// Folder of the agent's CDI spec for the MIG instances it creates (with a CDI strategy);
    /// the toolkit's specs are read from here and /etc/cdi, /var/run/cdi.
    #[arg(long, default_value = DEFAULT_CDI_SPEC_DIR)]
    cdi_spec_dir: PathBuf,
    /// Replace NVML and hwloc with this JSON fixture.
    #[arg(long)]
    fake_inventory: Option<PathBuf>,
    /// With --fake-inventory: inject XID events by appending lines
    /// `<gpu-uuid> <xid> [<gpu-instance-id>]` to this file (it may not exist yet). They take
    /// the same health path as NVML's events.
    #[arg(long, requires = "fake_inventory")]
    fake_xid_file: Option<PathBuf>,
    /// Seconds a faulted device must go without a new XID, and its GPU answer a probe, before
    /// it is advertised healthy again.
    #[arg(long, env = "HEALTH_QUIET_SECS", default_value_t = 60)]
    health_quiet_secs: u64,
    /// Report GPU health as the `GPUHealthy` condition of this Node (`--node-condition=false`
    /// to turn off). Ignored with --standalone.
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    node_condition: bool,
    /// Taint this Node `<annotation-prefix>/gpu-unhealthy=true:NoSchedule` while every
    /// advertised GPU device is faulted, and remove the taint once one recovers. Needs
    /// --node-condition; ignored with --standalone.
    #[arg(long, env = "TAINT_WHEN_NO_HEALTHY_GPU")]
    taint_when_no_healthy_gpu: bool,
    #[arg(long, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Do not talk to the Kubernetes API: no pod annotations (every pod gets the placement
    /// policy's choice) and no inventory publishing. For demos.
    #[arg(long)]
    standalone: bool,
    /// Dynamic MIG: `all` MIG-enabled GPUs, or a comma-separated list of GPU UUIDs. The agent
    /// then creates each MIG instance where the scheduler placed the pod and destroys it when
    /// the pod ends (it never changes MIG mode). On a cluster, set it per node from the
    /// DaemonSet (e.g. one DaemonSet per node pool, selected by a node label).
    #[arg(long, env = "DYNAMIC_MIG")]
    dynamic_mig: Option<DynamicSelection>,
    /// Seconds a dynamic MIG instance no running pod holds (found after a restart, or made by
    /// someone else) is kept before it is destroyed.
    #[arg(long, default_value_t = 60)]
    mig_orphan_grace_secs: u64,
    /// On shutdown (SIGTERM), seconds the device plugins keep serving after the inventory is
    /// marked `draining` (the extender then places nothing here), so pods bound just before
    /// are still admitted. Keep it below the pod's termination grace period.
    #[arg(long, env = "DRAIN_GRACE_SECS", default_value_t = 2)]
    drain_grace_secs: u64,
    /// Seconds between reconciliations of dynamic MIG instances with the pods.
    #[arg(long, default_value_t = 2)]
    mig_reconcile_secs: u64,
    /// Serve /metrics, /healthz and /readyz here (e.g. 0.0.0.0:9400); off when absent.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Key file shared with the scheduler extender (at least 16 bytes): only devices
    /// annotations it signed for the very pod are followed. Without it any annotation on a
    /// pod is believed, so anyone who can create pods can steer devices.
    #[arg(long, env = "SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check this node and print a pass/fail table; exits 1 only when a check fails.
    Doctor(DoctorArgs),
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// containerd's config, read for whether it injects CDI devices (`enable_cdi`).
    #[arg(long, default_value = doctor::CONTAINERD_CONFIG)]
    containerd_config: PathBuf,
    /// A folder of CDI spec files to look in (repeat for several); `/etc/cdi` and
    /// `/var/run/cdi` when not given.
    #[arg(long = "cdi-spec-dir")]
    cdi_spec_dirs: Vec<PathBuf>,
}

fn parse_policy(text: &str) -> Result<TopologyPolicy, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|e| e.to_string())
}

/// Probe for fake nodes: the fixture's own health flag.
struct FixtureProbe(FakeInventory);

impl HealthProbe for FixtureProbe {
    fn gpu_ok(&self, gpu_uuid: &str) -> bool {
        self.0
            .load()
            .is_ok_and(|f| f.gpus.iter().any(|g| g.uuid == gpu_uuid && g.healthy))
    }
}

/// Without a driver nothing is healthy to recover.
struct NoGpus;

impl HealthProbe for NoGpus {
    fn gpu_ok(&self, _: &str) -> bool {
        false
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let cdi = CdiConfig {
        strategies: cli.device_list_strategy,
        kind: cli.cdi_kind.clone(),
        annotation_prefix: cli.cdi_annotation_prefix.clone(),
        spec_dir: cli.cdi_spec_dir.clone(),
    };
    cdi.validate().context("CDI settings")?;
    tracing::info!(strategy = %cdi.strategies, kind = %cdi.kind, "device list strategy");
    let kubelet_socket = cli
        .kubelet_socket
        .clone()
        .unwrap_or_else(|| cli.device_plugin_dir.join(KUBELET_SOCKET_NAME));

    let fake = match &cli.fake_inventory {
        Some(path) => Some(FakeInventory::open(path).context("loading the fake inventory")?),
        None => None,
    };
    let nvml = if fake.is_none() {
        Some(NvmlInventory::open())
    } else {
        None
    };
    let topology: Arc<dyn HostTopology> = match &fake {
        Some(fake) => Arc::new(fake.clone()),
        None => Arc::from(topology::detect(&cli.sysfs_root)),
    };

    let mig_backend: Option<Arc<dyn MigBackend>> = match (&cli.dynamic_mig, &fake, &nvml) {
        (None, _, _) => None,
        (Some(_), Some(fake), _) => Some(Arc::new(
            FakeMigBackend::from_fixture(&fake.load()?).context("fake MIG backend")?,
        )),
        (Some(_), None, Some(Ok(nvml))) => Some(Arc::new(NvmlMigBackend::new(nvml.nvml()))),
        (Some(_), None, _) => None,
    };

    if let Some(Command::Doctor(args)) = &cli.command {
        let mut checks = match (&fake, &nvml) {
            (Some(fake), _) => doctor::gpu_checks(Ok(fake)),
            (None, Some(Ok(nvml))) => doctor::gpu_checks(Ok(nvml)),
            (None, Some(Err(error))) => doctor::gpu_checks(Err(error)),
            (None, None) => Vec::new(),
        };
        let inventory: Option<&dyn GpuInventory> = match (&fake, &nvml) {
            (Some(fake), _) => Some(fake),
            (None, Some(Ok(nvml))) => Some(nvml),
            _ => None,
        };
        if let (Some(backend), Some(selection)) = (&mig_backend, &cli.dynamic_mig) {
            let dynamic: Vec<String> = inventory
                .and_then(|i| i.discover().ok())
                .map(|found| {
                    found
                        .gpus
                        .into_iter()
                        .filter(|g| g.mig.is_some() && selection.selects(&g.uuid))
                        .map(|g| g.uuid)
                        .collect()
                })
                .unwrap_or_default();
            checks.extend(doctor::dynamic_mig_checks(backend.as_ref(), &dynamic));
        }
        checks.extend(doctor::topology_checks(topology.as_ref()));
        checks.extend(doctor::kubelet_checks(
            &cli.device_plugin_dir,
            &kubelet_socket,
        ));
        checks.push(doctor::pod_resources_check(&cli.pod_resources_socket));
        // The sockets this agent would serve, so they are not taken for another plugin's.
        let names = ResourceNames::new(cli.resource_domain.clone());
        let our_sockets: Vec<String> = inventory
            .and_then(|i| i.discover().ok())
            .map(|found| {
                plan(&found.gpus, &names, &found.gpu_instance_ids)
                    .keys()
                    .map(|resource| socket_name(resource))
                    .collect()
            })
            .unwrap_or_default();
        checks.extend(doctor::other_plugin_checks(
            &cli.device_plugin_dir,
            &cli.resource_domain,
            &our_sockets,
        ));
        let spec_dirs: Vec<PathBuf> = if args.cdi_spec_dirs.is_empty() {
            doctor::CDI_SPEC_DIRS.iter().map(PathBuf::from).collect()
        } else {
            args.cdi_spec_dirs.clone()
        };
        checks.extend(doctor::cdi_checks(&spec_dirs, &args.containerd_config));
        print!("{}", doctor::render(&checks));
        let failed = checks.iter().any(|c| c.status == doctor::Status::Fail);
        std::process::exit(i32::from(failed));
    }

    let (inventory, probe, xid_events): (Option<Arc<dyn GpuInventory>>, Arc<dyn HealthProbe>, _) =
        match (fake, nvml) {
            (Some(fake), _) => (
                Some(Arc::new(fake.clone())),
                Arc::new(FixtureProbe(fake)),
                cli.fake_xid_file.clone().map(spawn_fake_xid_events),
            ),
            (None, Some(Ok(nvml))) => {
                let events = nvml
                    .spawn_xid_events()
                    .context("starting NVML event thread")?;
                let nvml = Arc::new(nvml);
                (Some(nvml.clone()), nvml, Some(events))
            }
            (None, Some(Err(DiscoveryError::NoDriver(detail)))) => {
                tracing::warn!(%detail, "no NVIDIA driver on this node; advertising nothing");
                (None, Arc::new(NoGpus), None)
            }
            (None, Some(Err(error))) => return Err(error).context("initialising NVML"),
            (None, None) => (None, Arc::new(NoGpus), None),
        };

    let signer = match &cli.signing_key_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the signing key {}", path.display()))?;
            Some(
                SigningKey::from_bytes(&bytes)
                    .with_context(|| format!("signing key {}", path.display()))?,
            )
        }
        None => None,
    };
    if signer.is_none() && !cli.standalone {
        tracing::warn!(
            "no --signing-key-file: devices annotations are followed unauthenticated, so anyone \
             who can create pods can steer which devices pods get"
        );
    }
    // `shutdown` (a signal) starts the agent's drain; the pod watch and the metrics endpoint
    // run until the agent has stopped (`services`): Allocate still needs the pods meanwhile.
    let shutdown = CancellationToken::new();
    let services = CancellationToken::new();
    let names = ResourceNames::new(cli.resource_domain.clone());
    if cli.taint_when_no_healthy_gpu && (cli.standalone || !cli.node_condition) {
        tracing::warn!(
            "--taint-when-no-healthy-gpu needs the Kubernetes API and --node-condition; the node \
             will not be tainted"
        );
    }
    let (pods, publisher, node_health, pod_wait): (Arc<dyn PodSource>, _, _, _) = if cli.standalone
    {
        (
            Arc::new(InMemoryPods::default()),
            None,
            None,
            Duration::ZERO,
        )
    } else {
        anyhow::ensure!(
            !cli.node_name.is_empty(),
            "--node-name (or NODE_NAME) is required unless --standalone"
        );
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (use --standalone to run without)")?;
        let reader = PodReader::new(
            names.clone(),
            &cli.annotation_prefix,
            cli.node_name.clone(),
            signer.clone(),
        );
        let pods = KubePods::spawn(client.clone(), reader, services.clone());
        let node_health = cli.node_condition.then(|| {
            let writer: Arc<dyn NodeHealthWriter> = Arc::new(KubeNodeHealthWriter::new(
                client.clone(),
                cli.node_name.clone(),
                publish::gpu_unhealthy_taint_key(&cli.annotation_prefix),
            ));
            let options = NodeHealthOptions {
                taint: cli.taint_when_no_healthy_gpu,
                ..NodeHealthOptions::default()
            };
            (writer, options)
        });
        let annotator: Arc<dyn NodeAnnotator> =
            Arc::new(KubeNodeAnnotator::new(client, cli.node_name.clone()));
        (
            Arc::new(pods),
            Some((annotator, key(&cli.annotation_prefix, INVENTORY_ANNOTATION))),
            node_health,
            pods::POD_WAIT,
        )
    };

    let dynamic_mig = match (mig_backend, cli.dynamic_mig) {
        (Some(backend), Some(selection)) => {
            let mut dynamic = DynamicMig::new(
                backend,
                selection,
                Duration::from_secs(cli.mig_orphan_grace_secs),
            );
            // Instances created on demand are in no toolkit spec: the agent writes theirs.
            if cdi.strategies.uses_cdi() {
                dynamic = dynamic.with_cdi_specs(Arc::new(CdiSpecs::new(&cdi)));
            }
            Some(Arc::new(dynamic))
        }
        _ => None,
    };
    let (documents, document_stream) = tokio::sync::watch::channel(None);
    if let Some(addr) = cli.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for metrics"))?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(publish::serve_metrics(
            listener,
            document_stream,
            services.clone().cancelled_owned(),
        ));
    }
    let agent = NodeAgent {
        node_name: cli.node_name,
        names,
        topology_policy: cli.topology_policy,
        paths: KubeletPaths {
            plugin_dir: cli.device_plugin_dir,
            kubelet_socket,
            poll_interval: kubelet::POLL_INTERVAL,
            retry_interval: Duration::from_secs(5),
        },
        inventory,
        topology,
        probe,
        xid_events,
        pods,
        annotation_prefix: cli.annotation_prefix,
        pod_wait,
        pod_resources_socket: Some(cli.pod_resources_socket),
        pod_resources_every: Duration::from_secs(10),
        publisher,
        rediscover_every: Duration::from_secs(30),
        health_quiet_period: Duration::from_secs(cli.health_quiet_secs),
        node_health,
        cdi,
        dynamic_mig,
        documents,
        mig_cleanup_every: Duration::from_secs(cli.mig_reconcile_secs.max(1)),
        drain_grace: Duration::from_secs(cli.drain_grace_secs),
    };
    // The kubelet stops DaemonSet pods with SIGTERM; Ctrl-C for interactive runs.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm.recv() => {}
        }
        tracing::info!("shutting down");
        stop.cancel();
    });
    let result = agent.run(shutdown).await.context("node agent failed");
    services.cancel();
    result
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn health_and_doctor_flags_parse() {
        Cli::command().debug_assert();
        assert!(
            Cli::try_parse_from(["kubesched-agent", "--fake-xid-file", "xids"]).is_err(),
            "--fake-xid-file needs --fake-inventory"
        );
        let cli = Cli::try_parse_from(["kubesched-agent"]).unwrap();
        assert!(cli.node_condition);
        let cli = Cli::try_parse_from([
            "kubesched-agent",
            "--fake-inventory",
            "node.json",
            "--fake-xid-file",
            "xids",
            "--health-quiet-secs",
            "5",
            "--node-condition=false",
            "--taint-when-no-healthy-gpu",
            "doctor",
            "--containerd-config",
            "config.toml",
            "--cdi-spec-dir",
            "a",
            "--cdi-spec-dir",
            "b",
        ])
        .unwrap();
        assert_eq!(cli.health_quiet_secs, 5);
        assert!(!cli.node_condition && cli.taint_when_no_healthy_gpu);
        let Some(Command::Doctor(args)) = cli.command else {
            panic!("doctor expected");
        };
        assert_eq!(args.containerd_config, PathBuf::from("config.toml"));
        assert_eq!(args.cdi_spec_dirs.len(), 2);
    }
}

//! The whole node agent: discovery and topology, the resource manager and allocator, the
//! plugin host, XID health, periodic rediscovery, hand-outs synced with the kubelet's
//! PodResources, and inventory publishing, until shutdown. A change in the set of advertised
//! resources (MIG re-partitioning) rebuilds the plugins. With dynamic MIG it also destroys, every
//! `mig_cleanup_every`, the instances no pod claims, and re-advertises whenever one comes or goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubesched_core::inventory::{GpuInfo, INVENTORY_VERSION, NodeInventory};
use kubesched_core::numa::TopologyPolicy;
use kubesched_core::request::ResourceNames;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::devices::Allocator;
use crate::devices::cdi::CdiConfig;
use crate::devices::plan;
use crate::devices::{HealthProbe, HealthTracker, XidEvent, run_health};
use crate::devices::{ResourceManager, ResourceSetChanged};
use crate::discovery::{Discovered, DiscoveryError, GpuInventory};
use crate::kubelet::ServerError;
use crate::kubelet::{KubeletPaths, run_plugins};
use crate::kubelet::{NodeUsage, UsageReader};
use crate::mig::DynamicMig;
use crate::pods::PodSource;
use crate::publish::{Backoff, InventoryDocument, NodeAnnotator, run_publisher};
use crate::publish::{NodeHealthOptions, NodeHealthWriter, run_node_health};
use crate::topology::HostTopology;

/// Everything the agent is wired with.
pub struct NodeAgent {
    /// The Kubernetes node this agent runs on; names the node in the published inventory.
    pub node_name: String,
    /// Resource names under the configured domain (`nvidia.com/gpu`, `nvidia.com/mig-1g.10gb`).
    pub names: ResourceNames,
    /// The kubelet's topology manager policy, published with the inventory for the extender.
    pub topology_policy: TopologyPolicy,
    /// The device plugin folder and kubelet socket the plugins register and serve through.
    pub paths: KubeletPaths,
    /// Where GPUs are discovered (NVML or a fixture); `None` on a node without a driver,
    /// which then advertises nothing.
    pub inventory: Option<Arc<dyn GpuInventory>>,
    /// Host NUMA topology: NUMA node of each GPU and the nodes' CPUs and memory.
    pub topology: Arc<dyn HostTopology>,
    /// Asks whether a faulted GPU works again before its XID fault is cleared.
    pub probe: Arc<dyn HealthProbe>,
    /// XID error events from NVML; `None` when there is no event source (fixtures, no driver).
    pub xid_events: Option<mpsc::Receiver<XidEvent>>,
    /// The pods bound to this node, as Allocate and dynamic-MIG clean-up see them.
    pub pods: Arc<dyn PodSource>,
    /// Prefix of the annotations the agent writes on containers.
    pub annotation_prefix: String,
    /// How long Allocate waits for the pod source to show the pod being admitted.
    pub pod_wait: Duration,
    /// The kubelet PodResources socket; `None` skips reconciliation and free CPU figures.
    pub pod_resources_socket: Option<PathBuf>,
    /// How often PodResources is read.
    pub pod_resources_every: Duration,
    /// Where to publish the inventory, with the annotation key; `None` runs without an API server.
    pub publisher: Option<(Arc<dyn NodeAnnotator>, String)>,
    /// Every inventory document the agent builds, for the publisher and for the metrics
    /// endpoint, which subscribe.
    pub documents: watch::Sender<Option<Arc<InventoryDocument>>>,
    /// How often GPUs are rediscovered and the advertised resources re-planned.
    pub rediscover_every: Duration,
    /// How long a faulted device must go without a new XID before it may recover.
    pub health_quiet_period: Duration,
    /// Where to report GPU health as the `GPUHealthy` Node condition (and, if the options say
    /// so, the `gpu-unhealthy` taint while no device is healthy); `None` reports nothing.
    pub node_health: Option<(Arc<dyn NodeHealthWriter>, NodeHealthOptions)>,
    /// Dynamic MIG, when some GPUs are in dynamic mode.
    pub dynamic_mig: Option<Arc<DynamicMig>>,
    /// How often unclaimed dynamic-MIG instances are cleaned up.
    pub mig_cleanup_every: Duration,
    /// How Allocate names devices to the container runtime (`NVIDIA_VISIBLE_DEVICES`, CDI).
    /// With a CDI strategy, `dynamic_mig` must write CDI specs (`DynamicMig::with_cdi_specs`).
    pub cdi: CdiConfig,
    /// On shutdown, how long the plugins keep serving after the inventory says `draining`:
    /// pods bound just before the extender saw it are admitted meanwhile.
    pub drain_grace: Duration,
}

/// The longest the last (draining) inventory patch may take on shutdown.
const DRAIN_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The publisher task: stopped apart from the agent, after the draining document is written.
struct Publisher {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Why the agent stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A device plugin server could not be served (its socket could not be bound).
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The GPUs could not be discovered at start.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The plugin host task panicked or was cancelled.
    #[error("the device plugin host failed")]
    PluginHost(#[source] tokio::task::JoinError),
}

impl NodeAgent {
    /// Discovers GPUs (none without a driver) and fills in NUMA nodes from the host topology.
    async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let Some(inventory) = self.inventory.clone() else {
            return Ok(Discovered::default());
        };
        // NVML calls block.
        let mut found = tokio::task::spawn_blocking(move || inventory.discover())
            .await
            .map_err(DiscoveryError::Task)??;
        for gpu in &mut found.gpus {
            if gpu.numa_node.is_none() {
                gpu.numa_node = self.topology.numa_of_pci(&gpu.pci_bus_id);
            }
        }
        Ok(found)
    }

    /// The discovered GPUs as advertised: dynamic ones with their live instances.
    fn advertised(&self, found: &Discovered) -> Vec<GpuInfo> {
        match &self.dynamic_mig {
            Some(dynamic) => dynamic.overlay(&found.gpus),
            None => found.gpus.clone(),
        }
    }

    /// Hands the discovered GPUs to dynamic MIG (it reads their instances: blocking calls).
    async fn track_dynamic(&self, found: &Discovered) {
        let Some(dynamic) = self.dynamic_mig.clone() else {
            return;
        };
        let gpus = found.gpus.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || dynamic.track(&gpus)).await {
            tracing::warn!(%error, "dynamic MIG tracking task failed");
        }
    }

    /// One dynamic-MIG clean-up pass; skipped when the pods cannot be listed (never
    /// destroy on missing information).
    async fn clean_up_mig(&self, usage: Option<&NodeUsage>) {
        let Some(dynamic) = self.dynamic_mig.clone() else {
            return;
        };
        let pods = match self.pods.pods_on_node().await {
            Ok(pods) => pods,
            Err(error) => {
                tracing::warn!(%error, "cannot list pods; dynamic MIG clean-up skipped");
                return;
            }
        };
        let held = usage.map(NodeUsage::devices_by_pod);
        let pass = tokio::task::spawn_blocking(move || {
            dynamic.clean_up(&pods, held.as_ref(), Instant::now())
        });
        match pass.await {
            Ok(report) if !report.failed.is_empty() => {
                tracing::debug!(failed = ?report.failed, "dynamic MIG clean-up left work for the next pass");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "dynamic MIG clean-up task failed"),
        }
    }

    /// Re-plans what `found` advertises and publishes the inventory that makes. `Err` when the
    /// set of resources changed: the device plugins must then be rebuilt.
    fn replan(
        &self,
        found: &Discovered,
        manager: &ResourceManager,
        allocator: &Allocator,
        usage: Option<&NodeUsage>,
        draining: bool,
    ) -> Result<(), ResourceSetChanged> {
        manager.update_plan(plan(
            &self.advertised(found),
            &self.names,
            &found.gpu_instance_ids,
        ))?;
        let document = self.document(found, manager, usage, draining);
        allocator.set_inventory(document.clone());
        self.announce(document);
        Ok(())
    }

    fn document(
        &self,
        found: &Discovered,
        manager: &ResourceManager,
        usage: Option<&NodeUsage>,
        draining: bool,
    ) -> NodeInventory {
        let faults = manager.faults();
        let mut gpus = self.advertised(found);
        // Health seen by XID checks goes into the published document too.
        for gpu in &mut gpus {
            if faults.contains_key(&gpu.uuid) {
                gpu.healthy = false;
            }
            for instance in gpu.mig.iter_mut().flat_map(|m| m.instances.iter_mut()) {
                if faults.contains_key(&instance.uuid) {
                    instance.healthy = false;
                }
            }
        }
        let mut numa_nodes = self.topology.numa_nodes().unwrap_or_else(|error| {
            tracing::warn!(%error, "NUMA topology unavailable; publishing none");
            Vec::new()
        });
        if let Some(usage) = usage {
            usage.apply_free(&mut numa_nodes);
        }
        NodeInventory {
            version: INVENTORY_VERSION,
            node: self.node_name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            topology_policy: self.topology_policy,
            numa_nodes,
            gpus,
            draining,
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let mut found = self.discover().await?;
        self.track_dynamic(&found).await;
        let mut reader = self
            .pod_resources_socket
            .clone()
            .map(|socket| UsageReader::new(socket, Duration::from_secs(5)));
        let mut usage = match &mut reader {
            Some(reader) => reader.read().await,
            None => None,
        };
        // The publisher outlives `shutdown`: the draining document goes out after it. It
        // stops when this function returns, whichever way.
        let mut publisher = self.publisher.clone().map(|(annotator, key)| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(run_publisher(
                annotator,
                key,
                self.documents.subscribe(),
                Backoff::default(),
                stop.clone(),
            ));
            Publisher { stop, task }
        });
        let _stop_publisher = publisher.as_ref().map(|p| p.stop.clone().drop_guard());
        // After a restart, adopt the instances of running pods before advertising anything.
        self.clean_up_mig(usage.as_ref()).await;
        let (_no_dynamic_mig, no_changes) = watch::channel(0u64);
        let mut mig_changes = self
            .dynamic_mig
            .as_ref()
            .map_or(no_changes, |d| d.subscribe());
        let mut node_health_task: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let manager = Arc::new(ResourceManager::new(plan(
                &self.advertised(&found),
                &self.names,
                &found.gpu_instance_ids,
            )));
            tracing::info!(resources = ?manager.resource_names(), devices = manager.all_devices().len(), "advertising");
            // Draining until the plugin host says every resource is registered.
            let (registered_tx, mut registered) = watch::channel(false);
            let mut host_reports = true;
            let document = self.document(&found, &manager, usage.as_ref(), true);
            let mut allocator = Allocator::new(
                manager.clone(),
                self.pods.clone(),
                self.names.clone(),
                document.clone(),
            )
            .with_annotation_prefix(&self.annotation_prefix)
            .with_pod_wait(self.pod_wait)
            .with_cdi(self.cdi.clone());
            if let Some(dynamic) = &self.dynamic_mig {
                allocator = allocator.with_dynamic_mig(dynamic.clone());
            }
            let allocator = Arc::new(allocator);
            if let Some(usage) = &usage {
                self.sync_hand_outs(&allocator, usage).await;
            }
            self.announce(document);

            // Ends this generation's tasks on a rebuild or, after the drain, on shutdown: not
            // a child of `shutdown`, so the plugins keep serving while the agent drains.
            let generation = CancellationToken::new();
            let _end_generation = generation.clone().drop_guard();
            let tracker = HealthTracker::new(manager.clone(), self.health_quiet_period);
            let events = self.xid_events.take().unwrap_or_else(|| mpsc::channel(1).1);
            let (event_tx, event_rx) = mpsc::channel(64);
            // Forward events through a per-generation channel so the source survives rebuilds.
            let health = tokio::spawn(run_health(
                tracker,
                event_rx,
                self.probe.clone(),
                Duration::from_secs(10),
                generation.clone(),
            ));
            let forward = tokio::spawn(forward_events(events, event_tx, generation.clone()));
            if let Some(previous) = node_health_task.take() {
                // The last generation's writer is cancelled already; waiting for it keeps its
                // last write from landing after this generation's first.
                let _ = previous.await;
            }
            node_health_task = self.node_health.clone().map(|(writer, options)| {
                tokio::spawn(run_node_health(
                    manager.clone(),
                    writer,
                    options,
                    generation.clone(),
                ))
            });
            let mut host = tokio::spawn(run_plugins(
                self.paths.clone(),
                manager.clone(),
                allocator.clone(),
                generation.clone(),
                registered_tx,
            ));

            let mut ticker = tokio::time::interval(self.rediscover_every);
            ticker.tick().await;
            let mut usage_ticker = tokio::time::interval(self.pod_resources_every);
            usage_ticker.tick().await;
            let mut mig_ticker = tokio::time::interval(self.mig_cleanup_every);
            mig_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            mig_ticker.tick().await;
            mig_changes.mark_unchanged();
            let rebuild = loop {
                tokio::select! {
                    result = &mut host => {
                        generation.cancel();
                        let _ = health.await;
                        return match result {
                            Ok(result) => result.map_err(AgentError::from),
                            Err(e) => Err(AgentError::PluginHost(e)),
                        };
                    }
                    _ = ticker.tick() => {
                        match self.discover().await {
                            Ok(next) => {
                                found = next;
                                self.track_dynamic(&found).await;
                                if let Err(change) = self.replan(&found, &manager, &allocator, usage.as_ref(), !*registered.borrow()) {
                                    tracing::info!(%change, "rebuilding the device plugins");
                                    break true;
                                }
                            }
                            Err(error) => tracing::warn!(%error, "rediscovery failed; keeping the last inventory"),
                        }
                    }
                    _ = usage_ticker.tick(), if reader.is_some() => {
                        if let Some(reader) = &mut reader {
                            usage = reader.read().await;
                        }
                        if let Some(usage) = &usage {
                            self.sync_hand_outs(&allocator, usage).await;
                        }
                        // The publisher skips documents equal to the last one it wrote.
                        self.announce(self.document(&found, &manager, usage.as_ref(), !*registered.borrow()));
                    }
                    // Registered with the kubelet, or not any more (it restarted): say so.
                    changed = registered.changed(), if host_reports => {
                        if changed.is_err() {
                            // The host ended; its own branch says why.
                            host_reports = false;
                            continue;
                        }
                        let serving = *registered.borrow_and_update();
                        tracing::info!(serving, "device plugins registered with the kubelet: {serving}");
                        self.announce(self.document(&found, &manager, usage.as_ref(), !serving));
                    }
                    _ = mig_ticker.tick(), if self.dynamic_mig.is_some() => {
                        self.clean_up_mig(usage.as_ref()).await;
                    }
                    // Instances came or went: re-advertise the free placements at once.
                    changed = mig_changes.changed(), if self.dynamic_mig.is_some() => {
                        if changed.is_err() {
                            continue;
                        }
                        if let Err(change) = self.replan(&found, &manager, &allocator, usage.as_ref(), !*registered.borrow()) {
                            tracing::info!(%change, "rebuilding the device plugins");
                            break true;
                        }
                    }
                    () = shutdown.cancelled() => break false,
                }
            };
            if !rebuild {
                let last = self.document(&found, &manager, usage.as_ref(), true);
                self.drain(last, publisher.take()).await;
            }
            generation.cancel();
            if let Ok(Err(error)) = host.await {
                tracing::warn!(%error, "plugin host stopped with an error");
            }
            let _ = health.await;
            if let Ok(events) = forward.await {
                self.xid_events = Some(events);
            }
            if !rebuild {
                return Ok(());
            }
        }
    }
}

impl NodeAgent {
    /// Before the plugins stop: the inventory says `draining`, so the extender places nothing
    /// more here, and pods bound just before it saw that get `drain_grace` to be admitted
    /// while the plugins still serve. Best effort: an unreachable API server only costs the
    /// timeout.
    async fn drain(&self, document: NodeInventory, publisher: Option<Publisher>) {
        self.announce(document.clone());
        let (Some(publisher), Some((annotator, key))) = (publisher, &self.publisher) else {
            return;
        };
        // Stopped first, so no older document lands after the draining one.
        publisher.stop.cancel();
        let _ = publisher.task.await;
        let json = InventoryDocument::new(document).json().to_string();
        match tokio::time::timeout(DRAIN_PUBLISH_TIMEOUT, annotator.annotate(key, &json)).await {
            Ok(Ok(())) => {
                tracing::info!(grace = ?self.drain_grace, "inventory marked draining; plugins serve for the grace period")
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot mark the inventory draining"),
            Err(_) => {
                tracing::warn!(timeout = ?DRAIN_PUBLISH_TIMEOUT, "marking the inventory draining timed out")
            }
        }
        tokio::time::sleep(self.drain_grace).await;
    }

    /// Hands a new document to the publisher and the metrics endpoint.
    fn announce(&self, document: NodeInventory) {
        self.documents
            .send_replace(Some(Arc::new(InventoryDocument::new(document))));
    }

    /// Rebuilds the allocator's hand-out records from what the kubelet says pods hold.
    async fn sync_hand_outs(&self, allocator: &Allocator, usage: &NodeUsage) {
        match self.pods.pods_on_node().await {
            Ok(pods) => {
                allocator.record_holdings(&pods, &usage.devices_by_pod());
            }
            Err(error) => tracing::warn!(%error, "cannot sync hand-outs with the kubelet"),
        }
    }
}

/// Moves events to this generation's health task; hands the source back when it ends.
async fn forward_events(
    mut events: mpsc::Receiver<XidEvent>,
    to: mpsc::Sender<XidEvent>,
    stop: CancellationToken,
) -> mpsc::Receiver<XidEvent> {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => if to.send(event).await.is_err() { return events },
                None => { stop.cancelled().await; return events }
            },
            () = stop.cancelled() => return events,
        }
    }
}

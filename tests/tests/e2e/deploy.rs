//! The chart deployed as a platform team deploys it (`deploy/README.md`): images built from
//! this tree and loaded into the node, the chart rendered with the team's values, `kubectl
//! apply`; the agent DaemonSet and the scheduler Deployment then run under the real kubelet
//! and controller-manager. With GPU pods running throughout: a rolling upgrade of the agent,
//! the leader scheduler pod killed, and an uninstall.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubesched_core::inventory::{INVENTORY_ANNOTATION, NodeInventory};
use kubesched_e2e::agent::{node_resources, remove_inventory_annotation};
use kubesched_e2e::deploy::{self, kubectl};
use kubesched_e2e::rbac::NAMESPACE;
use kubesched_e2e::{Cluster, cluster, pods, poll};

use super::scheduling::{check_pod_devices, check_pod_resources, container_id, one_numa_fixture};
use super::{ANNOTATION_PREFIX, DOMAIN, expected_resources, load_fixture};

const SCENARIO: &str = "deploy";
const INVENTORY_CONFIGMAP: &str = "kubesched-e2e-inventory";
/// The label every object of the chart carries (release `kubesched`).
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance=kubesched";
const AGENT_PODS: &str = "app.kubernetes.io/instance=kubesched,app.kubernetes.io/component=agent";
const SCHEDULER_PODS: &str =
    "app.kubernetes.io/instance=kubesched,app.kubernetes.io/component=scheduler";
/// The label that selects the node for the agent DaemonSet (one of `agent.gpuNodeLabels`).
const GPU_NODE_LABEL: (&str, &str) = ("kubesched.ai/gpu", "true");

/// The values a platform team on this cluster sets: images from the node's own store, two
/// scheduler replicas, the v1beta1 scheduler configuration of Kubernetes 1.19-1.21 and the
/// kube-scheduler of the cluster's version, the kubelet's topology policy, and the GPUs from
/// a ConfigMap (no NVML here).
fn values(agent_tag: &str, kube_version: &str) -> String {
    format!(
        "imageRegistry: localhost
scheduler:
  replicas: 2
  configApiVersion: v1beta1
  image: {{repository: localhost/kube-scheduler, tag: {kube_version}}}
extender:
  image: {{tag: e2e-1}}
agent:
  image: {{tag: {agent_tag}}}
  topologyPolicy: single-numa-node
  simulatedInventory: {{configMap: {INVENTORY_CONFIGMAP}}}
"
    )
}

/// (name, resource) of the pods of each phase; together exactly the fixture's devices.
fn requests(names: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    names
        .iter()
        .map(|(name, profile)| (*name, format!("{DOMAIN}/{profile}")))
        .collect()
}

pub async fn deploy(cluster: &Cluster) -> anyhow::Result<()> {
    let result = deploy_and_operate(cluster).await;
    let cleaned = cleanup(cluster).await;
    result.and(cleaned)
}

async fn cleanup(cluster: &Cluster) -> anyhow::Result<()> {
    pods::delete_scenario(&cluster.client, SCENARIO).await?;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let label = GPU_NODE_LABEL.0;
    nodes
        .patch(
            &cluster.node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {label: null}}})),
        )
        .await?;
    Ok(())
}

async fn deploy_and_operate(cluster: &Cluster) -> anyhow::Result<()> {
    let client = &cluster.client;
    // The test's own stack stands down: its dedicated kube-scheduler (the chart's pods take
    // over its schedulerName and Lease) and the harness's copy of the chart's RBAC, so the
    // install meets a cluster without kubesched.
    tokio::task::spawn_blocking(|| cluster::script(&["stop-scheduler"])).await??;
    delete_namespace(client).await?;
    remove_inventory_annotation(cluster).await?;

    let images = deploy::build_and_load_images(cluster, &["e2e-1", "e2e-2"])?;
    for image in &images {
        eprintln!(
            "[e2e] image {}: {:.1} MB (debug build, stripped)",
            image.names,
            image.archive_bytes as f64 / 1e6
        );
    }
    let kube_version = client.apiserver_version().await?.git_version;
    let v1 = deploy::render(cluster, "manifests-v1", &values("e2e-1", &kube_version))?;
    let v2 = deploy::render(cluster, "manifests-v2", &values("e2e-2", &kube_version))?;
    let fixture = one_numa_fixture(cluster)?;
    let loaded = load_fixture(&fixture)?;
    let expected = expected_resources(&loaded);

    // --- install
    let (label, value) = GPU_NODE_LABEL;
    kubectl(
        cluster,
        &[
            "label",
            "node",
            &cluster.node,
            &format!("{label}={value}"),
            "--overwrite",
        ],
    )?;
    let applied = Instant::now();
    deploy::install(cluster, &v1, || {
        kubectl(
            cluster,
            &[
                "-n",
                NAMESPACE,
                "create",
                "configmap",
                INVENTORY_CONFIGMAP,
                &format!("--from-file=inventory.json={}", fixture.display()),
            ],
        )
        .map(drop)
    })?;
    let first = requests(&[
        ("d-gpu-1", "gpu"),
        ("d-gpu-0", "gpu"),
        ("d-mig-1g", "mig-1g.10gb"),
        ("d-mig-2g", "mig-2g.20gb"),
        ("d-mig-3g", "mig-3g.40gb"),
    ]);
    let created = applied.elapsed();
    let latency = create_running(cluster, &first, Duration::from_secs(240)).await?;
    let to_first = created + latency.values().copied().min().unwrap_or_default();
    eprintln!(
        "[e2e] kubectl apply -> first GPU pod Running: {:.1} s (all {} Running {:.1} s after \
         the apply)",
        to_first.as_secs_f64(),
        first.len(),
        applied.elapsed().as_secs_f64()
    );
    wait_workloads_ready(cluster, 2).await?;
    check_published(cluster, &expected, loaded.gpus.len()).await?;
    let mut running = first.clone();
    check_devices(cluster, &running).await?;

    // --- agent upgrade
    let before = containers(cluster, &running).await?;
    // One pod created as the roll begins (the old agent drains), one once the old agent's
    // plugins are gone (no agent serves), one after the roll on a device freed by a deletion.
    let roll = upgrade_agent(cluster, &v2, &expected).await?;
    let during = requests(&[("u-during", "mig-1g.10gb")]);
    let gap = requests(&[("u-gap", "mig-2g.20gb")]);
    let (waited, gap_waited) = tokio::join!(
        create_running(cluster, &during, Duration::from_secs(300)),
        roll.await_done(cluster, &gap)
    );
    eprintln!(
        "[e2e] create -> Running: {:?} for the pod created as the roll began, {:?} for the one \
         created while no agent served",
        waited?, gap_waited?
    );
    same_containers(cluster, &before).await?;
    running.extend(during);
    running.extend(gap);
    let freed = "d-mig-3g";
    pods::api(&cluster.client)
        .delete(freed, &DeleteParams::default())
        .await?;
    running.retain(|(name, _)| *name != freed);
    let after = requests(&[("u-after", "mig-3g.40gb")]);
    create_running(cluster, &after, Duration::from_secs(120)).await?;
    running.extend(after);
    check_devices(cluster, &running).await?;

    // --- scheduler failover
    let failover = requests(&[("f-after", "mig-1g.10gb")]);
    scheduler_failover(cluster, &failover).await?;
    running.extend(failover);
    check_devices(cluster, &running).await?;

    // --- uninstall
    let before = containers(cluster, &running).await?;
    let start = Instant::now();
    deploy::uninstall(cluster, &v1)?;
    eprintln!(
        "[e2e] kubectl delete -f (namespace included) returned in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    no_objects_left(cluster).await?;
    same_containers(cluster, &before).await?;
    check_pod_resources(cluster, &running).await?;
    eprintln!(
        "[e2e] uninstalled: nothing of the release left; {} GPU pods kept their containers \
         and devices",
        running.len()
    );
    Ok(())
}

/// Deletes our namespace (if there) and waits until the namespace controller has removed it.
async fn delete_namespace(client: &kube::Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.delete(NAMESPACE, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    let namespaces = &namespaces;
    poll(
        "the namespace to be deleted",
        // The namespace controller waits for terminating pods (up to their grace period).
        Duration::from_secs(240),
        Duration::from_millis(250),
        || async move {
            match namespaces.get_opt(NAMESPACE).await? {
                None => Ok(Some(())),
                Some(_) => anyhow::bail!("namespace {NAMESPACE} still there"),
            }
        },
    )
    .await
}

/// Creates the pods (pinned to the real node; the fake nodes of earlier scenarios are there
/// too) and waits until they run; returns create -> Running per pod.
async fn create_running(
    cluster: &Cluster,
    requests: &[(&str, String)],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Duration>> {
    let mut specs = Vec::new();
    for (name, resource) in requests {
        specs.push(pinned_pod(cluster, name, resource)?);
    }
    pods::create_and_wait_running(&cluster.client, specs, timeout).await
}

/// A pod asking one `resource`, pinned to the real node (the fake nodes of earlier scenarios
/// are there too), printing its environment.
fn pinned_pod(cluster: &Cluster, name: &str, resource: &str) -> anyhow::Result<Pod> {
    pods::pod(
        name,
        SCENARIO,
        resource,
        1,
        "env; exec sleep 3600",
        Some(("kubernetes.io/hostname", cluster.node.as_str())),
    )
}

/// Every pod sees exactly its annotated device, none twice; the kubelet's PodResources agree.
async fn check_devices(cluster: &Cluster, requests: &[(&str, String)]) -> anyhow::Result<()> {
    let mut handed_out = BTreeSet::new();
    for (name, resource) in requests {
        for id in check_pod_devices(cluster, name, resource).await? {
            anyhow::ensure!(
                handed_out.insert(id.clone()),
                "device {id} handed out twice"
            );
        }
    }
    check_pod_resources(cluster, requests).await
}

/// The agent DaemonSet has its pod Ready and the scheduler Deployment `replicas` Ready.
async fn wait_workloads_ready(cluster: &Cluster, replicas: i32) -> anyhow::Result<()> {
    let daemonsets: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let (daemonsets, deployments) = (&daemonsets, &deployments);
    poll(
        "the agent DaemonSet and the scheduler Deployment to be Ready",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || async move {
            let ds = daemonsets.get("kubesched-agent").await?.status;
            let deploy = deployments.get("kubesched-scheduler").await?.status;
            let ds_ready = ds.as_ref().map_or(0, |s| s.number_ready);
            let deploy_ready = deploy.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            anyhow::ensure!(
                ds_ready == 1 && deploy_ready == replicas,
                "agent pods ready {ds_ready}/1, scheduler pods ready {deploy_ready}/{replicas}"
            );
            Ok(Some(()))
        },
    )
    .await
}

/// The agent in its container registered with the kubelet (allocatable = the inventory) and
/// published the inventory annotation.
async fn check_published(
    cluster: &Cluster,
    expected: &BTreeMap<String, i64>,
    gpus: usize,
) -> anyhow::Result<()> {
    let node = Api::<Node>::all(cluster.client.clone())
        .get(&cluster.node)
        .await?;
    let (_, allocatable) = node_resources(&node);
    anyhow::ensure!(
        &allocatable == expected,
        "allocatable {allocatable:?}, the inventory has {expected:?}"
    );
    let key = format!("{ANNOTATION_PREFIX}/{INVENTORY_ANNOTATION}");
    let text = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&key))
        .with_context(|| format!("no {key} on the node"))?;
    let inventory = NodeInventory::from_json(text)?;
    anyhow::ensure!(
        inventory.node == cluster.node && inventory.gpus.len() == gpus,
        "the published inventory names node {} with {} GPUs",
        inventory.node,
        inventory.gpus.len()
    );
    eprintln!(
        "[e2e] the agent pod registered with the kubelet and published the inventory \
         (allocatable {allocatable:?})"
    );
    Ok(())
}

/// Container id and restart count of each pod.
async fn containers(
    cluster: &Cluster,
    requests: &[(&str, String)],
) -> anyhow::Result<BTreeMap<String, (String, i32)>> {
    let api = pods::api(&cluster.client);
    let mut out = BTreeMap::new();
    for (name, _) in requests {
        let pod = api.get(name).await?;
        out.insert(name.to_string(), (container_id(&pod)?, restarts(&pod)));
    }
    Ok(out)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// The pods still run the very containers recorded in `before`, never restarted.
async fn same_containers(
    cluster: &Cluster,
    before: &BTreeMap<String, (String, i32)>,
) -> anyhow::Result<()> {
    let api = pods::api(&cluster.client);
    for (name, was) in before {
        let pod = api.get(name).await?;
        let now = (container_id(&pod)?, restarts(&pod));
        anyhow::ensure!(
            pods::phase(&pod) == "Running" && &now == was,
            "pod {name}: {} with container {now:?}, before {was:?}",
            pods::phase(&pod)
        );
    }
    Ok(())
}

/// Identity of each socket of ours in the kubelet's plugin folder.
fn plugin_sockets(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension() == Some(OsStr::new("sock"))
                && p.file_name() != Some(OsStr::new("kubelet.sock"))
        })
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p, (m.ino(), m.ctime(), m.ctime_nsec())))
        })
        .collect()
}

/// A rolling upgrade of the agent DaemonSet in progress.
struct Roll {
    old_pod: String,
    applied: Instant,
    old_sockets: BTreeMap<PathBuf, (u64, i64, i64)>,
    expected: BTreeMap<String, i64>,
}

/// Applies the agent at a new image tag (the rest of the release unchanged).
async fn upgrade_agent(
    cluster: &Cluster,
    rendered: &Path,
    expected: &BTreeMap<String, i64>,
) -> anyhow::Result<Roll> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let old = pods.list(&ListParams::default().labels(AGENT_PODS)).await?;
    anyhow::ensure!(old.items.len() == 1, "{} agent pods", old.items.len());
    let old_pod = old.items[0].metadata.name.clone().context("unnamed pod")?;
    let old_sockets = plugin_sockets(&cluster.device_plugin_dir);
    anyhow::ensure!(!old_sockets.is_empty(), "no plugin socket of the agent pod");
    let applied = Instant::now();
    deploy::apply(cluster, rendered, "agent.yaml")?;
    Ok(Roll {
        old_pod,
        applied,
        old_sockets,
        expected: expected.clone(),
    })
}

impl Roll {
    /// Waits for the new agent pod (new image) to be Ready with all its plugins registered
    /// again; logs how long the node had no registered plugin. Creates the `gap` pods as soon
    /// as the old plugins are gone, and returns how long they took to run once created.
    async fn await_done(
        &self,
        cluster: &Cluster,
        gap: &[(&str, String)],
    ) -> anyhow::Result<Duration> {
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
        let nodes: Api<Node> = Api::all(cluster.client.clone());
        // Generous: kubelet 1.20 took up to 54 s to confirm the old agent pod's deletion,
        // which the DaemonSet controller waits for before it creates the new one.
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut old_gone: Option<Instant> = None;
        let mut registered: Option<Instant> = None;
        let mut gap_running: Option<Duration> = None;
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the agent upgrade did not finish in 300 s"
            );
            let sockets = plugin_sockets(&cluster.device_plugin_dir);
            if old_gone.is_none()
                && self
                    .old_sockets
                    .iter()
                    .any(|(p, id)| sockets.get(p) != Some(id))
            {
                old_gone = Some(Instant::now());
                for (name, resource) in gap {
                    pods::api(&cluster.client)
                        .create(
                            &PostParams::default(),
                            &pinned_pod(cluster, name, resource)?,
                        )
                        .await?;
                }
            }
            let fresh = !sockets.is_empty()
                && sockets.len() >= self.old_sockets.len()
                && sockets
                    .iter()
                    .all(|(p, id)| self.old_sockets.get(p) != Some(id));
            if old_gone.is_some() && registered.is_none() && fresh {
                let (_, allocatable) = node_resources(&nodes.get(&cluster.node).await?);
                if allocatable == self.expected {
                    registered = Some(Instant::now());
                }
            }
            if let Some(gone) = old_gone
                && gap_running.is_none()
            {
                let mut all = true;
                for (name, _) in gap {
                    all &= pods::phase(&pods::api(&cluster.client).get(name).await?) == "Running";
                }
                if all {
                    gap_running = Some(gone.elapsed());
                }
            }
            let list = pods.list(&ListParams::default().labels(AGENT_PODS)).await?;
            let new_ready = list.items.iter().any(|p| {
                p.metadata.name.as_deref() != Some(self.old_pod.as_str())
                    && image_of(p).is_some_and(|i| i.ends_with(":e2e-2"))
                    && ready(p)
            });
            let old_left = list
                .items
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(self.old_pod.as_str()));
            if let (Some(gone), Some(back), Some(gap_ran)) = (old_gone, registered, gap_running)
                && new_ready
                && !old_left
            {
                eprintln!(
                    "[e2e] agent upgrade e2e-1 -> e2e-2: the old plugin's sockets went \
                     {:.1} s after the apply; the new agent re-registered (new sockets, \
                     allocatable back) {:.2} s after that; new pod Ready {:.1} s after the \
                     apply",
                    (gone - self.applied).as_secs_f64(),
                    (back - gone).as_secs_f64(),
                    self.applied.elapsed().as_secs_f64()
                );
                return Ok(gap_ran);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn image_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod holding the scheduler's Lease (its holder identity starts with the pod's name,
/// which is kube-scheduler's host name).
async fn leader(cluster: &Cluster) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let Some(lease) = leases.get_opt("kubesched-scheduler").await? else {
        return Ok(None);
    };
    Ok(lease
        .spec
        .and_then(|s| s.holder_identity)
        .map(|h| h.split('_').next().unwrap_or_default().to_string()))
}

/// Kills the leader scheduler pod (deleted with no grace period) with a GPU pod waiting to
/// be scheduled: the other replica takes the Lease and binds it.
async fn scheduler_failover(cluster: &Cluster, requests: &[(&str, String)]) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let (pods_ref, cluster_ref) = (&pods, cluster);
    let (old_leader, other) = poll(
        "a scheduler pod holding the Lease, and a second one Ready",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || async move {
            let list = pods_ref
                .list(&ListParams::default().labels(SCHEDULER_PODS))
                .await?;
            let names: Vec<String> = list
                .items
                .iter()
                .filter(|p| ready(p))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            let leader = leader(cluster_ref).await?.context("no Lease yet")?;
            anyhow::ensure!(
                names.len() == 2 && names.contains(&leader),
                "scheduler pods ready {names:?}, leader {leader}"
            );
            let other = names.into_iter().find(|n| *n != leader).unwrap_or_default();
            Ok(Some((leader, other)))
        },
    )
    .await?;
    // Deleted with a short grace period: the pod object goes once the kubelet has stopped its
    // containers, so the dying leader cannot bind what is created after that.
    let killed = Instant::now();
    let grace = DeleteParams {
        grace_period_seconds: Some(1),
        ..DeleteParams::default()
    };
    pods.delete(&old_leader, &grace).await?;
    let old_ref = &old_leader;
    poll(
        "the killed leader pod to be gone",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async move { Ok(pods_ref.get_opt(old_ref).await?.is_none().then_some(())) },
    )
    .await?;
    let stopped = killed.elapsed();
    let (name, resource) = &requests[0];
    let pod = pinned_pod(cluster, name, resource)?;
    let api = pods::api(&cluster.client);
    api.create(&PostParams::default(), &pod).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut took_over = None;
    let bound = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pod {name} not bound 120 s after the leader was killed (Lease held by {:?})",
            leader(cluster).await?
        );
        if took_over.is_none() && leader(cluster).await?.is_some_and(|h| h != old_leader) {
            took_over = Some(killed.elapsed());
        }
        if pods::node_name(&api.get(name).await?).is_some() {
            break killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The standby, or the replacement the Deployment started meanwhile: whichever asked first
    // once the Lease expired.
    let new_leader = leader(cluster).await?.unwrap_or_default();
    let scheduler_pods: Vec<String> = pods
        .list(&ListParams::default().labels(SCHEDULER_PODS))
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    anyhow::ensure!(
        new_leader != old_leader && scheduler_pods.contains(&new_leader),
        "the Lease is held by {new_leader:?}; scheduler pods {scheduler_pods:?}"
    );
    let which = if new_leader == other {
        "the standby"
    } else {
        "the Deployment's replacement pod"
    };
    let took_over = took_over.unwrap_or(bound);
    create_wait(cluster, name).await?;
    eprintln!(
        "[e2e] scheduler failover: leader {old_leader} killed, its containers stopped after \
         {:.1} s; {which} {new_leader} took the Lease {:.1} s after the kill and bound the \
         waiting pod {:.1} s after the kill",
        stopped.as_secs_f64(),
        took_over.as_secs_f64(),
        bound.as_secs_f64()
    );
    Ok(())
}

/// Waits for an already created pod to run.
async fn create_wait(cluster: &Cluster, name: &str) -> anyhow::Result<()> {
    let api = pods::api(&cluster.client);
    let api = &api;
    poll(
        "the pod to run",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async move {
            let pod = api.get(name).await?;
            anyhow::ensure!(
                pods::phase(&pod) == "Running",
                "pod {name} {}",
                pods::phase(&pod)
            );
            Ok(Some(()))
        },
    )
    .await
}

/// After the uninstall: the namespace (with its Secret, ConfigMaps, Lease, ReplicaSets) is
/// gone, no cluster-scoped object of the release is left, and no pod of it runs anywhere.
async fn no_objects_left(cluster: &Cluster) -> anyhow::Result<()> {
    let client = &cluster.client;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    anyhow::ensure!(
        namespaces.get_opt(NAMESPACE).await?.is_none(),
        "namespace {NAMESPACE} still there after kubectl delete"
    );
    let by_label = ListParams::default().labels(INSTANCE_LABEL);
    let roles = Api::<ClusterRole>::all(client.clone())
        .list(&by_label)
        .await?;
    let bindings = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&by_label)
        .await?;
    let pods = Api::<Pod>::all(client.clone()).list(&by_label).await?;
    let config_maps = Api::<ConfigMap>::all(client.clone())
        .list(&by_label)
        .await?;
    let left: Vec<String> = roles
        .items
        .iter()
        .map(|o| format!("ClusterRole {:?}", o.metadata.name))
        .chain(
            bindings
                .items
                .iter()
                .map(|o| format!("ClusterRoleBinding {:?}", o.metadata.name)),
        )
        .chain(
            pods.items
                .iter()
                .map(|o| format!("Pod {:?}", o.metadata.name)),
        )
        .chain(
            config_maps
                .items
                .iter()
                .map(|o| format!("ConfigMap {:?}", o.metadata.name)),
        )
        .collect();
    anyhow::ensure!(left.is_empty(), "left after the uninstall: {left:?}");
    Ok(())
}

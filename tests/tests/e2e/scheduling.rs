//! Pods scheduled by the real kube-scheduler through our extender (the chart's v1beta1
//! configuration, the extender under the chart's service account), admitted by the real
//! kubelet with our plugin, and what survives a kubelet restart.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kubesched_e2e::agent::{online_cpus, start_agent, wait_allocatable};
use kubesched_e2e::extender::Extender;
use kubesched_e2e::pods::{self, SCHEDULER_NAME};
use kubesched_e2e::{Cluster, Proc, cluster, http, poll};

use super::{ANNOTATION_PREFIX, DOMAIN, FIXTURE, expected_resources, load_fixture};

/// The two-NUMA fixture moved onto this machine's one NUMA node and real CPUs: the kubelet
/// admits a device only on a NUMA node it has, so pods that run must use these.
pub fn one_numa_fixture(cluster: &Cluster) -> anyhow::Result<PathBuf> {
    let source = cluster.fixture(FIXTURE)?;
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&source)?)?;
    doc["numaNodes"] = serde_json::json!([{"id": 0, "cpus": online_cpus()?, "memoryMib": 65536}]);
    for gpu in doc["gpus"].as_array_mut().context("fixture without gpus")? {
        gpu["numaNode"] = serde_json::json!(0);
    }
    let path = cluster.path("one-numa-mig.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    Ok(path)
}

/// What the scheduling scenarios share: the agent on the real node and the extender stack.
pub struct Stack {
    pub agent: Proc,
    pub extender: Extender,
    pub expected: BTreeMap<String, i64>,
}

const SCENARIO_A: &str = "devices";

/// Scenario (a)'s pods: (name, resource), one device each.
pub fn device_requests() -> Vec<(&'static str, String)> {
    vec![
        // Created in this order: name order and arrival order differ for the two pods that
        // share a resource, so an agent guessing by name (or creation second) would swap them.
        ("a-gpu-1", format!("{DOMAIN}/gpu")),
        ("a-gpu-0", format!("{DOMAIN}/gpu")),
        ("a-mig-1g", format!("{DOMAIN}/mig-1g.10gb")),
        ("a-mig-2g", format!("{DOMAIN}/mig-2g.20gb")),
        ("a-mig-3g", format!("{DOMAIN}/mig-3g.40gb")),
    ]
}

/// (a) Whole-GPU and MIG pods through kube-scheduler + our extender, admitted by the kubelet
/// with our plugin; each container's NVIDIA_VISIBLE_DEVICES names exactly the devices of its
/// annotation, and no device is handed out twice.
pub async fn pods_get_their_devices(cluster: &Cluster) -> anyhow::Result<Stack> {
    let fixture_path = one_numa_fixture(cluster)?;
    let expected = expected_resources(&load_fixture(&fixture_path)?);
    let agent = start_agent(cluster, &fixture_path, "agent-scheduling.log").await?;
    wait_allocatable(cluster, &agent, &expected, Duration::from_secs(60)).await?;
    let extender = Extender::start(cluster).await?;
    eprintln!(
        "[e2e] extender ready on {}, dedicated kube-scheduler {SCHEDULER_NAME} up",
        extender.addr
    );

    // A reused cluster may hold a failed earlier run's pods.
    cleanup_devices_pods(cluster).await?;
    let requests = device_requests();
    let mut specs = Vec::new();
    for (name, resource) in &requests {
        specs.push(pods::pod(
            name,
            SCENARIO_A,
            resource,
            1,
            "env; exec sleep 3600",
            None,
        )?);
    }
    // Created together, so pods asking for the same resource (the two whole-GPU pods) share a
    // creation second: the agent must still tell which one the kubelet is admitting.
    let latency =
        pods::create_and_wait_running(&cluster.client, specs, Duration::from_secs(120)).await?;
    let whole: BTreeSet<_> = requests
        .iter()
        .filter(|(_, r)| r.ends_with("/gpu"))
        .map(|(name, _)| name)
        .collect();
    let api = pods::api(&cluster.client);
    let mut seconds = BTreeSet::new();
    for name in &whole {
        seconds.insert(api.get(name).await?.metadata.creation_timestamp);
    }
    eprintln!(
        "[e2e] whole-GPU pods {whole:?} created in {} distinct second(s)",
        seconds.len()
    );
    let times: Vec<f64> = latency.values().map(Duration::as_secs_f64).collect();
    eprintln!(
        "[e2e] pod start latency (create -> Running), {} pods: min {:.2} s, \
         mean {:.2} s, max {:.2} s; {latency:?}",
        times.len(),
        times.iter().copied().fold(f64::INFINITY, f64::min),
        times.iter().sum::<f64>() / times.len() as f64,
        times.iter().copied().fold(0.0, f64::max),
    );

    let mut handed_out = BTreeSet::new();
    for (name, resource) in &requests {
        let devices = check_pod_devices(cluster, name, resource).await?;
        for id in devices {
            anyhow::ensure!(
                handed_out.insert(id.clone()),
                "device {id} handed out twice"
            );
        }
    }
    eprintln!("[e2e] every container sees exactly its annotated devices: {handed_out:?}");
    check_pod_resources(cluster, &requests).await?;
    Ok(Stack {
        agent,
        extender,
        expected,
    })
}

/// Checks pod `name`: on our node, annotated for `resource`, and its container's
/// NVIDIA_VISIBLE_DEVICES is exactly the annotated device ids. Returns those ids.
pub async fn check_pod_devices(
    cluster: &Cluster,
    name: &str,
    resource: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let pod = pods::api(&cluster.client).get(name).await?;
    anyhow::ensure!(
        pods::node_name(&pod) == Some(cluster.node.as_str()),
        "pod {name} on node {:?}",
        pods::node_name(&pod)
    );
    let annotation = pods::devices(&pod, ANNOTATION_PREFIX)?
        .with_context(|| format!("pod {name} has no devices annotation"))?;
    anyhow::ensure!(
        annotation.resource == resource && annotation.node == cluster.node,
        "pod {name} annotated for {} on {}",
        annotation.resource,
        annotation.node
    );
    let annotated: BTreeSet<String> = annotation.devices.iter().map(|d| d.device_id()).collect();
    anyhow::ensure!(
        annotated.len() == 1,
        "pod {name} annotated with {annotated:?}"
    );
    let logs = pods::logs(&cluster.client, name).await?;
    let visible = pods::env_value(&logs, "NVIDIA_VISIBLE_DEVICES")
        .with_context(|| format!("pod {name}: no NVIDIA_VISIBLE_DEVICES in its environment"))?;
    let visible: BTreeSet<String> = visible.split(',').map(String::from).collect();
    anyhow::ensure!(
        visible == annotated,
        "pod {name}: NVIDIA_VISIBLE_DEVICES {visible:?}, annotation {annotated:?}"
    );
    Ok(annotated)
}

/// The kubelet's PodResources API (`List` over its socket) agrees with our annotations: each
/// pod's container holds, for its resource, exactly the annotated device ids, and nothing else
/// of ours.
pub async fn check_pod_resources(
    cluster: &Cluster,
    requests: &[(&str, String)],
) -> anyhow::Result<()> {
    let listed = kubesched_e2e::pod_resources::list(&cluster.pod_resources_socket).await?;
    let api = pods::api(&cluster.client);
    for (name, resource) in requests {
        let pod = api.get(name).await?;
        let annotated: BTreeSet<String> = pods::devices(&pod, ANNOTATION_PREFIX)?
            .with_context(|| format!("pod {name} has no devices annotation"))?
            .devices
            .iter()
            .map(|d| d.device_id())
            .collect();
        let key = (
            pods::NAMESPACE.to_string(),
            name.to_string(),
            "main".to_string(),
        );
        let holding = listed
            .get(&key)
            .with_context(|| format!("PodResources List has no container {key:?}"))?;
        let ours: BTreeMap<&String, &BTreeSet<String>> = holding
            .devices
            .iter()
            .filter(|(r, _)| r.starts_with(&format!("{DOMAIN}/")))
            .collect();
        anyhow::ensure!(
            ours.len() == 1 && ours.get(resource) == Some(&&annotated),
            "pod {name}: the kubelet's PodResources say {ours:?}, the annotation {resource} \
             {annotated:?}"
        );
    }
    eprintln!(
        "[e2e] PodResources List agrees with the annotations of {} pods",
        requests.len()
    );
    Ok(())
}

/// The id of the pod's (first) container.
pub fn container_id(pod: &k8s_openapi::api::core::v1::Pod) -> anyhow::Result<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .context("pod without a container id")
}

/// Identity of the file at `path`, if it exists: inode and change time (an inode number
/// alone is reused at once for a new file).
fn identity(path: &Path) -> Option<(u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
}

/// (b) The kubelet restarts (deleting every socket in its plugin folder): our plugin
/// re-registers within a second of the new kubelet socket, the node's allocatable comes back,
/// and the running pods keep their containers and devices.
pub async fn kubelet_restart(cluster: &Cluster, stack: &Stack) -> anyhow::Result<()> {
    let dir = cluster.device_plugin_dir.clone();
    let kubelet_socket = dir.join("kubelet.sock");
    let ours: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with("kubesched-"))
        })
        .collect();
    anyhow::ensure!(!ours.is_empty(), "no plugin sockets in {}", dir.display());
    let before: Vec<_> = ours.iter().map(|p| identity(p)).collect();
    let kubelet_before = identity(&kubelet_socket);
    let api = pods::api(&cluster.client);
    let mut containers = BTreeMap::new();
    for pod in api
        .list(&kube::api::ListParams::default().labels(&format!("{}={SCENARIO_A}", pods::LABEL)))
        .await?
    {
        let id = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.container_id.clone())
            .context("running pod without a container id")?;
        containers.insert(pod.metadata.name.clone().unwrap_or_default(), id);
    }

    // Watch the folder while the kubelet restarts: when its new socket appears, and when all
    // of ours are back (new files: the kubelet deleted the old ones).
    let watcher = tokio::spawn(async move {
        let mut kubelet_at = None;
        let mut gone = vec![false; ours.len()];
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let now = Instant::now();
            let kubelet = identity(&kubelet_socket);
            if kubelet_at.is_none() && kubelet.is_some() && kubelet != kubelet_before {
                kubelet_at = Some(now);
            }
            let mut back = true;
            for ((path, old), gone) in ours.iter().zip(&before).zip(&mut gone) {
                let now = identity(path);
                *gone |= now.is_none();
                back &= now.is_some() && (*gone || now != *old);
            }
            if let (Some(k), true) = (kubelet_at, back) {
                return Some(now.saturating_duration_since(k));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    });
    let restarted = Instant::now();
    tokio::task::spawn_blocking(|| cluster::script(&["restart-kubelet"])).await??;
    let reregistered = watcher
        .await?
        .context("our plugin sockets did not come back after the kubelet restart")?;
    eprintln!(
        "[e2e] kubelet restarted (node Ready after {:.1} s); our plugin re-registered {:.0} ms \
         after the new kubelet socket appeared",
        restarted.elapsed().as_secs_f64(),
        reregistered.as_secs_f64() * 1000.0
    );
    anyhow::ensure!(
        reregistered < Duration::from_secs(1),
        "re-registration took {reregistered:?}"
    );
    stack.agent.ensure_running()?;
    stack.extender.proc.ensure_running()?;

    // Capacity comes back; the pods' devices stay allocated (allocatable is capacity: the
    // kubelet's allocatable does not subtract what pods use).
    wait_allocatable(
        cluster,
        &stack.agent,
        &stack.expected,
        Duration::from_secs(60),
    )
    .await?;
    for (name, container) in &containers {
        let pod = api.get(name).await?;
        let status = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .context("pod lost its container status")?;
        anyhow::ensure!(
            pods::phase(&pod) == "Running"
                && status.container_id.as_ref() == Some(container)
                && status.restart_count == 0,
            "pod {name} after the kubelet restart: phase {}, container {:?} (was {container}), \
             restarts {}",
            pods::phase(&pod),
            status.container_id,
            status.restart_count
        );
    }
    for (name, resource) in &device_requests() {
        check_pod_devices(cluster, name, resource).await?;
    }
    check_pod_resources(cluster, &device_requests()).await?;
    eprintln!(
        "[e2e] {} pods kept their containers and devices",
        containers.len()
    );
    Ok(())
}

/// Deletes scenario (a)'s pods.
pub async fn cleanup_devices_pods(cluster: &Cluster) -> anyhow::Result<()> {
    pods::delete_scenario(&cluster.client, SCENARIO_A).await
}

/// Waits until the extender's picture of the real node (its `/ui/data`) holds no device, so
/// the next scenario meets an extender that has seen the deleted pods go. After an API
/// server outage its pod watch may still be listing again (seconds), and a pod that 1.20's
/// kube-scheduler finds unschedulable meanwhile is parked for 60 s.
pub async fn wait_node_free_in_extender(
    cluster: &Cluster,
    extender: &Extender,
) -> anyhow::Result<()> {
    let node = cluster.node.as_str();
    poll(
        "the extender to see every device of the node free",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async move {
            let (status, body) = http::get(&extender.metrics_addr, "/ui/data").await?;
            anyhow::ensure!(status == 200, "/ui/data {status}: {body}");
            let report: serde_json::Value = serde_json::from_str(&body)?;
            let gpus = report["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["name"] == node)
                .and_then(|n| n["gpus"].as_array().cloned())
                .with_context(|| format!("node {node} is not in the extender's report"))?;
            let held: Vec<String> = gpus
                .iter()
                .filter(|g| g["free_milli"] != 1000)
                .map(|g| g["uuid"].to_string())
                .collect();
            if held.is_empty() {
                Ok(Some(()))
            } else {
                anyhow::bail!("the extender still counts devices held on {held:?}")
            }
        },
    )
    .await
}

/// A cpulist such as `1-3,6`.
fn parse_cpulist(text: &str) -> anyhow::Result<BTreeSet<u32>> {
    let mut cpus = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(lo.trim().parse::<u32>()?..=hi.trim().parse::<u32>()?);
    }
    Ok(cpus)
}

const SCENARIO_NUMA: &str = "numa";

/// (d) A Guaranteed pod (integer CPUs, one whole GPU) under `single-numa-node` and the static
/// CPU manager: its annotation names a NUMA node, the GPU it names is on that node, and its
/// container's exclusive CPUs (its `Cpus_allowed_list`, the kubelet's PodResources and
/// `cpu_manager_state`) are that node's CPUs.
pub async fn guaranteed_pod_on_one_numa_node(cluster: &Cluster) -> anyhow::Result<()> {
    let resource = format!("{DOMAIN}/gpu");
    let mut pod = pods::pod(
        "n-guaranteed",
        SCENARIO_NUMA,
        &resource,
        1,
        "grep Cpus_allowed_list /proc/self/status; env; exec sleep 3600",
        None,
    )?;
    let resources = pod
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
        .and_then(|c| c.resources.as_mut())
        .context("pod without resources")?;
    let limits = resources.limits.get_or_insert_default();
    for (k, v) in [("cpu", "1"), ("memory", "64Mi")] {
        limits.insert(
            k.into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.into()),
        );
    }
    let result = async {
        pods::create_and_wait_running(&cluster.client, vec![pod], Duration::from_secs(120)).await?;
        let devices = check_pod_devices(cluster, "n-guaranteed", &resource).await?;
        let pod = pods::api(&cluster.client).get("n-guaranteed").await?;
        anyhow::ensure!(
            pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) == Some("Guaranteed"),
            "n-guaranteed is not Guaranteed"
        );
        let annotation = pods::devices(&pod, ANNOTATION_PREFIX)?.context("no annotation")?;
        let numa = annotation
            .numa_node
            .context("the devices annotation names no NUMA node")?;
        // The GPU is on that NUMA node in the agent's published inventory.
        let node = Api::<Node>::all(cluster.client.clone())
            .get(&cluster.node)
            .await?;
        let text = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| {
                a.get(&format!(
                    "{ANNOTATION_PREFIX}/{}",
                    kubesched_core::inventory::INVENTORY_ANNOTATION
                ))
            })
            .context("no inventory annotation")?;
        let inventory = kubesched_core::inventory::NodeInventory::from_json(text)?;
        for device in &annotation.devices {
            let gpu = inventory
                .gpus
                .iter()
                .find(|g| g.uuid == device.gpu_uuid)
                .context("annotated GPU not in the inventory")?;
            anyhow::ensure!(
                gpu.numa_node == Some(numa),
                "GPU {} on NUMA {:?}, annotation says {numa}",
                gpu.uuid,
                gpu.numa_node
            );
        }
        // Its CPUs, three ways: the container's affinity, PodResources, cpu_manager_state.
        let logs = pods::logs(&cluster.client, "n-guaranteed").await?;
        let allowed = logs
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .context("no Cpus_allowed_list in the container's output")?;
        let allowed = parse_cpulist(allowed)?;
        let node_cpus = parse_cpulist(&std::fs::read_to_string(format!(
            "/sys/devices/system/node/node{numa}/cpulist"
        ))?)?;
        anyhow::ensure!(
            allowed.len() == 1 && allowed.is_subset(&node_cpus),
            "container CPUs {allowed:?}, NUMA node {numa} has {node_cpus:?}"
        );
        let listed = kubesched_e2e::pod_resources::list(&cluster.pod_resources_socket).await?;
        let holding = listed
            .get(&(
                pods::NAMESPACE.to_string(),
                "n-guaranteed".to_string(),
                "main".to_string(),
            ))
            .context("n-guaranteed not in PodResources List")?;
        let listed_cpus: BTreeSet<u32> = holding
            .cpus
            .iter()
            .filter_map(|c| u32::try_from(*c).ok())
            .collect();
        anyhow::ensure!(
            listed_cpus == allowed,
            "PodResources CPUs {listed_cpus:?}, container {allowed:?}"
        );
        let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            "/var/lib/kubelet/cpu_manager_state",
        )?)?;
        let uid = pod.metadata.uid.clone().context("pod without uid")?;
        let assigned = state["entries"][&uid]["main"]
            .as_str()
            .context("no cpu_manager_state entry for the container")?;
        anyhow::ensure!(
            parse_cpulist(assigned)? == allowed,
            "cpu_manager_state {assigned}, container {allowed:?}"
        );
        eprintln!(
            "[e2e] Guaranteed pod on NUMA node {numa}: GPU {devices:?}, exclusive CPUs \
             {allowed:?} (container, PodResources and cpu_manager_state agree)"
        );
        anyhow::Ok(())
    }
    .await;
    let cleaned = pods::delete_scenario(&cluster.client, SCENARIO_NUMA).await;
    result.and(cleaned)
}

//! CDI in Allocate: the exact response for a whole GPU and a static MIG slice under each device
//! list strategy, and a dynamic MIG instance whose CDI device (nodes from a fake capability
//! table, shared edits from a fake toolkit spec) is in the agent's spec file when Allocate
//! answers and gone once clean-up destroys the instance. Refusals: no spec writer, or a spec
//! that cannot be written.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TempDir, build_from_fixture, pod};
use kubesched_core::annotation::{
    AssignedDevice, AssignedMig, DEVICES_VERSION, DevicesAnnotation, dynamic_slot_id,
};
use kubesched_core::catalogue;
use kubesched_core::inventory::{GpuInfo, INVENTORY_VERSION, MigInfo, MigMode, NodeInventory};
use kubesched_core::numa::TopologyPolicy;
use kubesched_core::request::{GpuDemand, ResourceNames};
use kubesched_device_plugin::devices::cdi::{CdiConfig, CdiSpecs, HostDevices, SPEC_FILE_NAME};
use kubesched_device_plugin::devices::{AllocationError, Allocator, ResourceManager, plan};
use kubesched_device_plugin::mig::{DynamicMig, DynamicSelection, FakeMigBackend, MigBackend};
use kubesched_device_plugin::pods::{InMemoryPods, PodDevices, PodView};
use kubesched_k8s::PodRef;
use kubesched_proto::deviceplugin::v1beta1::{CdiDevice, ContainerAllocateResponse};
use serde_json::{Value, json};

const GPU: &str = "nvidia.com/gpu";
const MIG_1G: &str = "nvidia.com/mig-1g.10gb";
const MIG_3G: &str = "nvidia.com/mig-3g.40gb";
const DYNAMIC_GPU: &str = "GPU-dyn";
/// Index of the dynamic GPU: the fake backend knows no minor, so this names `/dev/nvidia2`.
const DYNAMIC_INDEX: u32 = 2;

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn config(strategies: &str) -> CdiConfig {
    CdiConfig {
        strategies: strategies.parse().unwrap(),
        ..CdiConfig::default()
    }
}

/// A response from literal parts.
fn response(
    envs: &[(&str, &str)],
    annotations: &[(&str, &str)],
    cdi: &[&str],
) -> ContainerAllocateResponse {
    let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    ContainerAllocateResponse {
        envs: map(envs),
        annotations: map(annotations),
        cdi_devices: cdi
            .iter()
            .map(|name| CdiDevice {
                name: name.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

/// The fixture's allocator naming devices per `cdi`, with `pods` bound to the node.
fn static_allocator(cdi: CdiConfig, pods: Vec<PodView>) -> Allocator {
    let source = Arc::new(InMemoryPods::default());
    source.set(pods);
    let (_manager, allocator) = build_from_fixture(source);
    Arc::into_inner(allocator).unwrap().with_cdi(cdi)
}

/// Every strategy combination, for a whole GPU and a static MIG slice: the exact response.
#[tokio::test]
async fn static_devices_get_the_exact_response_of_each_strategy() {
    let whole_pod = ("kubesched.ai/pod", "default/whole");
    let slice_pod = ("kubesched.ai/pod", "default/slice");
    let visible = |id| ("NVIDIA_VISIBLE_DEVICES", id);
    let cases = [
        (
            "envvar",
            GPU,
            "GPU-1",
            response(&[visible("GPU-1")], &[whole_pod], &[]),
        ),
        (
            "cdi-cri",
            GPU,
            "GPU-1",
            response(&[], &[whole_pod], &["nvidia.com/gpu=GPU-1"]),
        ),
        (
            "cdi-annotations",
            GPU,
            "GPU-1",
            response(
                &[],
                &[
                    whole_pod,
                    (
                        "cdi.k8s.io/kubesched-agent_nvidia.com_gpu",
                        "nvidia.com/gpu=GPU-1",
                    ),
                ],
                &[],
            ),
        ),
        (
            "envvar,cdi-cri",
            GPU,
            "GPU-1",
            response(&[visible("GPU-1")], &[whole_pod], &["nvidia.com/gpu=GPU-1"]),
        ),
        (
            "envvar",
            MIG_1G,
            "MIG-1b",
            response(&[visible("MIG-1b")], &[slice_pod], &[]),
        ),
        (
            "cdi-cri",
            MIG_1G,
            "MIG-1b",
            response(&[], &[slice_pod], &["nvidia.com/gpu=MIG-1b"]),
        ),
        (
            "cdi-annotations",
            MIG_1G,
            "MIG-1b",
            response(
                &[],
                &[
                    slice_pod,
                    (
                        "cdi.k8s.io/kubesched-agent_nvidia.com_mig-1g.10gb",
                        "nvidia.com/gpu=MIG-1b",
                    ),
                ],
                &[],
            ),
        ),
        (
            "envvar,cdi-cri",
            MIG_1G,
            "MIG-1b",
            response(
                &[visible("MIG-1b")],
                &[slice_pod],
                &["nvidia.com/gpu=MIG-1b"],
            ),
        ),
    ];
    for (strategies, resource, device, expected) in cases {
        let name = if resource == GPU { "whole" } else { "slice" };
        let allocator = static_allocator(
            config(strategies),
            vec![pod(name, resource, 1, Some(&[device]))],
        );
        let got = allocator
            .allocate(resource, &strings(&[device]))
            .await
            .unwrap();
        assert_eq!(got, expected, "{strategies} for {device}");
    }
}

/// A configured kind and annotation prefix name several devices in order.
#[tokio::test]
async fn kind_and_prefix_are_configurable() {
    let cdi = CdiConfig {
        strategies: "cdi-annotations,cdi-cri".parse().unwrap(),
        kind: "example.com/accel".into(),
        annotation_prefix: "cdi.example.org/".into(),
        spec_dir: PathBuf::from("unused"),
    };
    cdi.validate().unwrap();
    let allocator = static_allocator(cdi, vec![pod("pair", GPU, 2, Some(&["GPU-0", "GPU-3"]))]);
    let got = allocator
        .allocate(GPU, &strings(&["GPU-0", "GPU-3"]))
        .await
        .unwrap();
    assert_eq!(
        got,
        response(
            &[],
            &[
                ("kubesched.ai/pod", "default/pair"),
                (
                    "cdi.example.org/kubesched-agent_nvidia.com_gpu",
                    "example.com/accel=GPU-0,example.com/accel=GPU-3"
                ),
            ],
            &["example.com/accel=GPU-0", "example.com/accel=GPU-3"],
        )
    );
}

/// What the NVIDIA toolkit would have written: devices by index, UUID and `all`, and the
/// shared edits (libraries, hooks, control node) every injected device gets.
const TOOLKIT_SPEC: &str = r#"{
  "cdiVersion": "0.5.0",
  "kind": "nvidia.com/gpu",
  "devices": [
    { "name": "2", "containerEdits": { "deviceNodes": [{ "path": "/dev/nvidia2" }] } },
    { "name": "GPU-dyn", "containerEdits": { "deviceNodes": [{ "path": "/dev/nvidia2" }] } },
    { "name": "all", "containerEdits": { "deviceNodes": [{ "path": "/dev/nvidia2" }] } }
  ],
  "containerEdits": {
    "env": ["NVIDIA_VISIBLE_DEVICES=void"],
    "deviceNodes": [{ "path": "/dev/nvidiactl" }],
    "hooks": [{ "hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook",
                "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/lib64"] }],
    "mounts": [{ "hostPath": "/usr/lib64/libcuda.so.1", "containerPath": "/usr/lib64/libcuda.so.1",
                 "options": ["ro", "nosuid", "nodev", "bind"] }]
  }
}"#;

/// A spec of another kind in the same folder: its edits must not be copied.
const OTHER_KIND_SPEC: &str = r#"{
  "cdiVersion": "0.6.0",
  "kind": "management.nvidia.com/gpu",
  "devices": [{ "name": "all", "containerEdits": { "deviceNodes": [{ "path": "/dev/nvidia2" }] } }],
  "containerEdits": { "env": ["MANAGEMENT=1"] }
}"#;

/// The driver's capability table: GPU 2's instance 1 and its compute instance 0 among others.
const MIG_MINORS: &str = "config 1\nmonitor 2\ngpu0/gi1/access 12\ngpu0/gi1/ci0/access 13\n\
                          gpu2/gi1/access 30\ngpu2/gi1/ci0/access 31\ngpu2/gi2/access 39\n";

/// One MIG GPU in dynamic mode over the fake backend, with a fake host (spec folder, device
/// nodes, capability table) under a temp folder.
struct DynamicNode {
    dir: TempDir,
    backend: Arc<FakeMigBackend>,
    dynamic: Arc<DynamicMig>,
    pods: Arc<InMemoryPods>,
    allocator: Allocator,
}

impl DynamicNode {
    fn spec_dir(&self) -> PathBuf {
        self.dir.0.join("cdi")
    }

    fn spec_file(&self) -> PathBuf {
        self.spec_dir().join(SPEC_FILE_NAME)
    }

    /// The MIG UUID of the instance at `start`.
    fn uuid_at(&self, start: u8) -> String {
        self.backend
            .instances(DYNAMIC_GPU)
            .unwrap()
            .into_iter()
            .find(|i| i.start == start)
            .and_then(|i| i.uuid)
            .unwrap()
    }
}

fn dynamic_node(strategies: &str, write_specs: bool) -> DynamicNode {
    let dir = TempDir::new();
    let spec_dir = dir.0.join("cdi");
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::write(spec_dir.join("nvidia.com-gpu.json"), TOOLKIT_SPEC).unwrap();
    std::fs::write(spec_dir.join("management.json"), OTHER_KIND_SPEC).unwrap();
    let dev = dir.0.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    // nvidia-uvm-tools is absent on this host: it is left out.
    for node in ["nvidiactl", "nvidia-uvm", "nvidia2"] {
        std::fs::write(dev.join(node), "").unwrap();
    }
    std::fs::write(dir.0.join("mig-minors"), MIG_MINORS).unwrap();
    let cdi = CdiConfig {
        strategies: strategies.parse().unwrap(),
        spec_dir: spec_dir.clone(),
        ..CdiConfig::default()
    };

    let backend = Arc::new(FakeMigBackend::default());
    backend.add_gpu(DYNAMIC_GPU, catalogue::mig_geometry("H100-80GB").unwrap());
    let mut dynamic = DynamicMig::new(
        backend.clone(),
        DynamicSelection::All,
        Duration::from_secs(60),
    );
    if write_specs {
        let specs = CdiSpecs::new(&cdi)
            .with_search_dirs(vec![spec_dir])
            .with_host_devices(HostDevices::new(dir.0.join("mig-minors"), dev));
        dynamic = dynamic.with_cdi_specs(Arc::new(specs));
    }
    let dynamic = Arc::new(dynamic);
    let gpus = vec![GpuInfo {
        index: DYNAMIC_INDEX,
        uuid: DYNAMIC_GPU.into(),
        model: "H100-80GB".into(),
        pci_bus_id: "0000:9b:00.0".into(),
        numa_node: Some(0),
        memory_mib: 81559,
        healthy: true,
        mig: Some(MigInfo {
            mode: MigMode::Static,
            instances: vec![],
            geometry: None,
            blocked: None,
        }),
    }];
    dynamic.track(&gpus);
    let names = ResourceNames::default();
    let advertised = dynamic.overlay(&gpus);
    let manager = Arc::new(ResourceManager::new(plan(
        &advertised,
        &names,
        &BTreeMap::new(),
    )));
    let inventory = NodeInventory {
        version: INVENTORY_VERSION,
        node: "test-node".into(),
        agent_version: "test".into(),
        topology_policy: TopologyPolicy::None,
        numa_nodes: Vec::new(),
        gpus: advertised,
        draining: false,
    };
    let pods = Arc::new(InMemoryPods::default());
    let allocator = Allocator::new(manager, pods.clone(), names, inventory)
        .with_dynamic_mig(dynamic.clone())
        .with_cdi(cdi);
    DynamicNode {
        dir,
        backend,
        dynamic,
        pods,
        allocator,
    }
}

/// A pod the extender placed at `profile@start` on the dynamic GPU (no MIG UUID yet).
fn dynamic_pod(name: &str, profile: &str, start: u8) -> PodView {
    PodView {
        id: PodRef {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        demand: GpuDemand::Mig {
            profile: profile.into(),
            count: 1,
        },
        devices: PodDevices::Assigned(DevicesAnnotation {
            version: DEVICES_VERSION,
            node: "test-node".into(),
            resource: ResourceNames::default().mig(profile),
            devices: vec![AssignedDevice {
                gpu_uuid: DYNAMIC_GPU.into(),
                gpu_index: DYNAMIC_INDEX,
                mig: Some(AssignedMig {
                    profile: profile.into(),
                    start,
                    uuid: None,
                }),
            }],
            numa_node: None,
            signature: None,
        }),
        admitted: false,
    }
}

/// With `cdi-cri`, Allocate creates the instance, writes its CDI device (GPU node by index,
/// the GPU and compute instance capabilities from the table, the uvm node the toolkit's shared
/// edits lack; those edits copied from the spec of the same kind) and only then answers with
/// the CDI name. Clean-up destroying the instance removes the device, and with it the file.
#[tokio::test]
async fn dynamic_instance_gets_a_cdi_device_until_it_is_destroyed() {
    let node = dynamic_node("cdi-cri", true);
    node.pods.set(vec![dynamic_pod("trainer", "3g.40gb", 4)]);
    let slot = dynamic_slot_id(DYNAMIC_GPU, "3g.40gb", 4);
    assert!(!node.spec_file().exists());
    let got = node
        .allocator
        .allocate(MIG_3G, std::slice::from_ref(&slot))
        .await
        .unwrap();
    let uuid = node.uuid_at(4);
    assert!(uuid.starts_with("MIG-"), "{uuid}");
    let name = format!("nvidia.com/gpu={uuid}");
    assert_eq!(
        got,
        response(
            &[],
            &[("kubesched.ai/pod", "default/trainer")],
            &[name.as_str()],
        )
    );

    let text = std::fs::read_to_string(node.spec_file()).unwrap();
    let written: Value = serde_json::from_str(&text).unwrap();
    let toolkit: Value = serde_json::from_str(TOOLKIT_SPEC).unwrap();
    assert_eq!(
        written,
        json!({
            "cdiVersion": "0.6.0",
            "kind": "nvidia.com/gpu",
            "devices": [{
                "name": uuid,
                "containerEdits": {
                    "deviceNodes": [
                        { "path": "/dev/nvidia2" },
                        { "path": "/dev/nvidia-caps/nvidia-cap30" },
                        { "path": "/dev/nvidia-caps/nvidia-cap31" },
                        { "path": "/dev/nvidia-uvm" }
                    ]
                }
            }],
            "containerEdits": toolkit["containerEdits"].clone()
        })
    );
    let mode = std::fs::metadata(node.spec_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    // The toolkit's own file is untouched.
    assert_eq!(
        std::fs::read_to_string(node.spec_dir().join("nvidia.com-gpu.json")).unwrap(),
        TOOLKIT_SPEC
    );

    // The kubelet asking again gets the same answer; the file still holds one device.
    let again = node.allocator.allocate(MIG_3G, &[slot]).await.unwrap();
    assert_eq!(again, got);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(node.spec_file()).unwrap()).unwrap();
    assert_eq!(written["devices"].as_array().unwrap().len(), 1);

    // The pod ends (gone from the pods and the kubelet): the instance and its device go.
    node.pods.set(vec![]);
    let report = node
        .dynamic
        .clean_up(&[], Some(&BTreeMap::new()), Instant::now());
    assert_eq!(report.destroyed, [format!("{DYNAMIC_GPU}@4")]);
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(node.backend.instances(DYNAMIC_GPU).unwrap().is_empty());
    assert!(
        !node.spec_file().exists(),
        "the last device went, and the file with it"
    );
}

/// `envvar` alone writes no spec even with a writer, and `cdi-annotations` needs the device
/// as much as `cdi-cri` does.
#[tokio::test]
async fn only_cdi_strategies_write_the_spec() {
    let node = dynamic_node("envvar", true);
    node.pods.set(vec![dynamic_pod("plain", "3g.40gb", 0)]);
    let slot = dynamic_slot_id(DYNAMIC_GPU, "3g.40gb", 0);
    let got = node.allocator.allocate(MIG_3G, &[slot]).await.unwrap();
    let uuid = node.uuid_at(0);
    assert_eq!(
        got,
        response(
            &[("NVIDIA_VISIBLE_DEVICES", uuid.as_str())],
            &[("kubesched.ai/pod", "default/plain")],
            &[],
        )
    );
    assert!(!node.spec_file().exists());

    let node = dynamic_node("envvar,cdi-annotations", true);
    node.pods.set(vec![dynamic_pod("annotated", "1g.10gb", 6)]);
    let slot = dynamic_slot_id(DYNAMIC_GPU, "1g.10gb", 6);
    let got = node.allocator.allocate(MIG_1G, &[slot]).await.unwrap();
    let uuid = node.uuid_at(6);
    assert_eq!(
        got.annotations["cdi.k8s.io/kubesched-agent_nvidia.com_mig-1g.10gb"],
        format!("nvidia.com/gpu={uuid}")
    );
    assert_eq!(got.envs["NVIDIA_VISIBLE_DEVICES"], uuid);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(node.spec_file()).unwrap()).unwrap();
    assert_eq!(written["devices"][0]["name"], json!(uuid));
}

/// A CDI strategy with a dynamic MIG that writes no spec, or a spec folder that cannot be
/// made, fails the Allocate clearly rather than naming a device the runtime cannot inject; the
/// kubelet's retry succeeds once the folder can be made.
#[tokio::test]
async fn unwritable_cdi_devices_fail_the_allocate() {
    let node = dynamic_node("cdi-cri", false);
    node.pods.set(vec![dynamic_pod("orphaned", "3g.40gb", 4)]);
    let slot = dynamic_slot_id(DYNAMIC_GPU, "3g.40gb", 4);
    let err = node
        .allocator
        .allocate(MIG_3G, std::slice::from_ref(&slot))
        .await
        .unwrap_err();
    assert!(matches!(err, AllocationError::CdiSpec { .. }), "{err}");
    assert!(
        err.to_string().contains("writes no CDI spec")
            && err.to_string().contains("default/orphaned"),
        "{err}"
    );
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::FailedPrecondition
    );

    let node = dynamic_node("cdi-cri", true);
    node.pods.set(vec![dynamic_pod("blocked", "3g.40gb", 4)]);
    // A file where the spec folder should be: the folder cannot be made.
    std::fs::remove_dir_all(node.spec_dir()).unwrap();
    std::fs::write(node.spec_dir(), "").unwrap();
    let err = node
        .allocator
        .allocate(MIG_3G, std::slice::from_ref(&slot))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, AllocationError::CdiSpec { .. })
            && message.contains("cannot write the CDI spec")
            && message.contains("could not inject"),
        "{message}"
    );
    // The folder can be made now (it is missing): the retry gets the instance made before.
    std::fs::remove_file(node.spec_dir()).unwrap();
    let got = node.allocator.allocate(MIG_3G, &[slot]).await.unwrap();
    let uuid = node.uuid_at(4);
    assert_eq!(got.cdi_devices[0].name, format!("nvidia.com/gpu={uuid}"));
    assert!(node.spec_file().exists());
    assert_eq!(node.backend.instances(DYNAMIC_GPU).unwrap().len(), 1);
}

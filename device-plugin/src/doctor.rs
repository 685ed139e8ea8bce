//! `kubesched-agent doctor`: checks what the agent needs on this node (NVML and the driver,
//! MIG mode per GPU, NUMA topology, the kubelet socket and the plugin folder's permissions,
//! for dynamic-MIG GPUs whether the agent may touch them, whether the container runtime injects
//! CDI devices, and whether another device plugin already serves our resources) and prints a
//! pass/fail table with what to do about each failure. Run as the DaemonSet's init container,
//! it exits non-zero only on a failure, so warnings never keep the agent from starting.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use kubesched_proto::deviceplugin::v1beta1::KUBELET_SOCKET_NAME;

use crate::devices::socket_name;
use crate::discovery::{DiscoveryError, GpuInventory};
use crate::mig::MigBackend;
use crate::topology::HostTopology;

/// Outcome of one doctor check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// All is as the agent needs.
    Pass,
    /// The agent runs, but with less (no GPU found, no free CPU figures); `doctor` still passes.
    Warn,
    /// The agent cannot work like this; `doctor` exits with status 1.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One row of the doctor's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. `nvml`, `gpu 0`, `kubelet socket`.
    pub name: String,
    /// Whether the check passed, warned or failed.
    pub status: Status,
    /// What was found, and for a failure or warning what to do about it.
    pub detail: String,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
    }
}

/// GPU checks from an opened inventory, or the reason it could not be opened.
pub fn gpu_checks(inventory: Result<&dyn GpuInventory, &DiscoveryError>) -> Vec<Check> {
    let inventory = match inventory {
        Ok(inventory) => inventory,
        Err(error @ DiscoveryError::NoDriver(_)) => {
            return vec![check(
                "nvml",
                Status::Fail,
                format!("{error}: install the NVIDIA driver or mount libnvidia-ml.so.1"),
            )];
        }
        Err(error) => return vec![check("nvml", Status::Fail, error.to_string())],
    };
    let found = match inventory.discover() {
        Ok(found) => found,
        Err(error) => return vec![check("discovery", Status::Fail, error.to_string())],
    };
    let mut checks = vec![check(
        inventory.kind(),
        Status::Pass,
        format!(
            "driver {}",
            found.driver_version.as_deref().unwrap_or("unknown")
        ),
    )];
    if found.gpus.is_empty() {
        checks.push(check(
            "gpus",
            Status::Warn,
            "no GPU found: nothing will be advertised",
        ));
    }
    for gpu in &found.gpus {
        let mig = match &gpu.mig {
            None => "MIG off".to_string(),
            Some(m) if m.instances.is_empty() => {
                "MIG on, no instances: create some (nvidia-smi mig -cgi) to advertise them".into()
            }
            Some(m) => format!("MIG on, {} instance(s): {}", m.instances.len(), {
                let names: Vec<String> = m
                    .instances
                    .iter()
                    .map(|i| format!("{}@{}", i.profile, i.start))
                    .collect();
                names.join(", ")
            }),
        };
        let status = if gpu.healthy {
            Status::Pass
        } else {
            Status::Warn
        };
        checks.push(check(
            format!("gpu {}", gpu.index),
            status,
            format!("{} {} {}; {mig}", gpu.model, gpu.uuid, gpu.pci_bus_id),
        ));
    }
    checks
}

/// Dynamic-MIG GPUs: their instances, and a warning for each GPU the agent will leave alone
/// (MIG mode change pending, processes on it; without pods at hand every process is listed).
pub fn dynamic_mig_checks(backend: &dyn MigBackend, gpus: &[String]) -> Vec<Check> {
    gpus.iter()
        .map(|gpu| {
            let name = format!("dynamic mig {gpu} ({})", backend.kind());
            let read = backend
                .instances(gpu)
                .and_then(|i| Ok((i, backend.condition(gpu)?)));
            let (instances, condition) = match read {
                Ok(read) => read,
                Err(error) => return check(name, Status::Fail, error.to_string()),
            };
            let placed: Vec<String> = instances
                .iter()
                .map(|i| format!("{}@{}", i.profile, i.start))
                .collect();
            let mut problems = Vec::new();
            if condition.pending_mode_change {
                problems.push(
                    "MIG mode change pending a GPU reset: reset the GPU or revert the change"
                        .to_string(),
                );
            }
            if !condition.processes.is_empty() {
                let pids: Vec<String> = condition
                    .processes
                    .iter()
                    .map(|p| p.pid.to_string())
                    .collect();
                problems.push(format!(
                    "processes {} (the agent leaves the GPU alone if they are not its pods')",
                    pids.join(", ")
                ));
            }
            let detail = format!("{} instance(s) [{}]", instances.len(), placed.join(", "));
            if problems.is_empty() {
                check(name, Status::Pass, detail)
            } else {
                check(
                    name,
                    Status::Warn,
                    format!("{detail}; {}", problems.join("; ")),
                )
            }
        })
        .collect()
}

/// The NUMA check: the host topology's nodes with their CPUs and memory, or why it cannot be
/// read.
pub fn topology_checks(topology: &dyn HostTopology) -> Vec<Check> {
    match topology.numa_nodes() {
        Ok(nodes) => {
            let summary: Vec<String> = nodes
                .iter()
                .map(|n| format!("node {}: {} cpus, {} MiB", n.id, n.cpus.len(), n.memory_mib))
                .collect();
            vec![check(
                format!("numa ({})", topology.kind()),
                Status::Pass,
                summary.join("; "),
            )]
        }
        Err(error) => vec![check(
            format!("numa ({})", topology.kind()),
            Status::Fail,
            error.to_string(),
        )],
    }
}

/// The kubelet socket must exist and be a socket; the folder must take our sockets.
pub fn kubelet_checks(plugin_dir: &Path, kubelet_socket: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    match std::fs::metadata(kubelet_socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            checks.push(check(
                "kubelet socket",
                Status::Pass,
                kubelet_socket.display().to_string(),
            ));
        }
        Ok(_) => checks.push(check(
            "kubelet socket",
            Status::Fail,
            format!("{} is not a socket", kubelet_socket.display()),
        )),
        Err(error) => checks.push(check(
            "kubelet socket",
            Status::Fail,
            format!(
                "{}: {error}; is the kubelet running and the folder mounted?",
                kubelet_socket.display()
            ),
        )),
    }
    let probe = plugin_dir.join(".kubesched-doctor");
    match std::fs::write(&probe, b"").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => checks.push(check(
            "plugin folder writable",
            Status::Pass,
            plugin_dir.display().to_string(),
        )),
        Err(error) => checks.push(check(
            "plugin folder writable",
            Status::Fail,
            format!(
                "{}: {error}; run as root or mount it read-write",
                plugin_dir.display()
            ),
        )),
    }
    checks
}

/// The kubelet PodResources socket: without it the agent runs but publishes no free CPUs.
pub fn pod_resources_check(socket: &Path) -> Check {
    match std::fs::metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => check(
            "pod-resources socket",
            Status::Pass,
            socket.display().to_string(),
        ),
        Ok(_) => check(
            "pod-resources socket",
            Status::Fail,
            format!("{} is not a socket", socket.display()),
        ),
        Err(error) => check(
            "pod-resources socket",
            Status::Warn,
            format!(
                "{}: {error}; free CPUs and memory will not be published (mount the kubelet's pod-resources folder)",
                socket.display()
            ),
        ),
    }
}

/// Folders the container runtime reads CDI spec files from (static, then transient).
pub const CDI_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];
/// containerd's configuration file.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// The CDI kind NVIDIA's container toolkit declares for GPUs and MIG devices.
const NVIDIA_CDI_KIND: &str = "nvidia.com/gpu";
/// The file, in the kubelet's device plugin folder, where the kubelet records registered
/// resources and the devices it handed out.
pub const KUBELET_CHECKPOINT: &str = "kubelet_internal_checkpoint";
/// Where to read about moving a node from another device plugin to this agent.
const MIGRATION_GUIDE: &str = "see the migration guide in deploy/README.md";

/// Whether the container runtime injects CDI devices named in the CRI request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuntimeCdi {
    On,
    Off,
    Unknown,
}

/// What containerd's config says about CDI, with the line that says it.
fn containerd_cdi(config: &str) -> (RuntimeCdi, &'static str) {
    let mut version_3 = false;
    let mut enabled = None;
    for line in config.lines() {
        // TOML comments run to the end of the line; a `#` inside a string is rare enough here.
        let line = line.split('#').next().unwrap_or_default();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match (key.trim(), value.trim()) {
            ("version", "3") => version_3 = true,
            ("enable_cdi", "true") => enabled = Some(true),
            ("enable_cdi", "false") if enabled.is_none() => enabled = Some(false),
            _ => {}
        }
    }
    match (enabled, version_3) {
        (Some(true), _) => (RuntimeCdi::On, "enable_cdi = true"),
        (Some(false), _) => (RuntimeCdi::Off, "enable_cdi = false"),
        (None, true) => (
            RuntimeCdi::On,
            "config version 3 (containerd 2.x): CDI on by default",
        ),
        (None, false) => (
            RuntimeCdi::Off,
            "no enable_cdi (containerd 1.7 leaves CDI off; set enable_cdi = true in the CRI plugin section)",
        ),
    }
}

/// Whether a CDI spec's text declares NVIDIA's kind, as `kind: nvidia.com/gpu` (YAML) or
/// `"kind":"nvidia.com/gpu"` (JSON); a text scan, not a parse.
fn declares_nvidia_kind(spec: &str) -> bool {
    let wanted = format!("kind:{NVIDIA_CDI_KIND}");
    spec.lines().any(|line| {
        let squeezed: String = line
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
            .collect();
        squeezed.match_indices(&wanted).any(|(at, _)| {
            // `nvidia.com/gpu` itself, not a longer kind that starts with it.
            squeezed[at + wanted.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
        })
    })
}

/// CDI spec files in `dirs`: those declaring NVIDIA's kind, and how many others. The agent's
/// own spec (`kubesched*`) is not the toolkit's and is left out.
fn nvidia_cdi_specs(dirs: &[PathBuf]) -> (Vec<PathBuf>, usize) {
    let mut nvidia = Vec::new();
    let mut others = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let is_spec = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "json" | "yaml" | "yml"));
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kubesched"));
            if !is_spec || ours {
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) if declares_nvidia_kind(&text) => nvidia.push(path),
                _ => others += 1,
            }
        }
    }
    (nvidia, others)
}

/// Whether this node's container runtime can inject CDI devices, whether NVIDIA's CDI spec is
/// there, and which `--device-list-strategy` fits: `cdi-cri` when both are, else `envvar`.
/// Warnings at most: either strategy runs.
pub fn cdi_checks(spec_dirs: &[PathBuf], containerd_config: &Path) -> Vec<Check> {
    let (runtime, runtime_check) = match std::fs::read_to_string(containerd_config) {
        Ok(text) => {
            let (runtime, why) = containerd_cdi(&text);
            let state = if runtime == RuntimeCdi::On {
                "on"
            } else {
                "off"
            };
            (
                runtime,
                check(
                    "runtime cdi",
                    Status::Pass,
                    format!(
                        "containerd CDI injection {state}: {why} ({})",
                        containerd_config.display()
                    ),
                ),
            )
        }
        Err(error) => (
            RuntimeCdi::Unknown,
            check(
                "runtime cdi",
                Status::Warn,
                format!(
                    "unknown: cannot read {}: {error} (not containerd, or its config is not mounted; pass --containerd-config)",
                    containerd_config.display()
                ),
            ),
        ),
    };
    let (specs, others) = nvidia_cdi_specs(spec_dirs);
    let dirs: Vec<String> = spec_dirs.iter().map(|d| d.display().to_string()).collect();
    let spec_check = if specs.is_empty() {
        check(
            "nvidia cdi spec",
            if runtime == RuntimeCdi::On {
                Status::Warn
            } else {
                Status::Pass
            },
            format!(
                "none of kind {NVIDIA_CDI_KIND} in {} ({others} other spec file(s)); generate one with `nvidia-ctk cdi generate` to use CDI",
                dirs.join(", ")
            ),
        )
    } else {
        let names: Vec<String> = specs.iter().map(|p| p.display().to_string()).collect();
        check(
            "nvidia cdi spec",
            Status::Pass,
            format!("kind {NVIDIA_CDI_KIND} in {}", names.join(", ")),
        )
    };
    let strategy = if runtime == RuntimeCdi::On && !specs.is_empty() {
        check(
            "device list strategy",
            Status::Pass,
            "cdi-cri: the runtime injects the devices from NVIDIA's CDI spec",
        )
    } else {
        // CDI half there (spec without runtime support or the reverse) deserves a look.
        let half = matches!(
            (runtime, specs.is_empty()),
            (RuntimeCdi::On, true) | (RuntimeCdi::Off, false)
        );
        check(
            "device list strategy",
            if half || runtime == RuntimeCdi::Unknown {
                Status::Warn
            } else {
                Status::Pass
            },
            "envvar: NVIDIA_VISIBLE_DEVICES only; on a node whose GPU Operator enables CDI by \
             default, GPU containers then need `runtimeClassName: nvidia`",
        )
    };
    vec![runtime_check, spec_check, strategy]
}

/// Resource names the kubelet's checkpoint records as registered (`Data.RegisteredDevices`).
fn registered_resources(checkpoint: &str) -> Result<BTreeSet<String>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(checkpoint)?;
    Ok(value
        .get("Data")
        .and_then(|d| d.get("RegisteredDevices"))
        .and_then(serde_json::Value::as_object)
        .map(|devices| devices.keys().cloned().collect())
        .unwrap_or_default())
}

/// Whether something listens on `socket` (a socket file left by a stopped plugin refuses).
fn listening(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Other device plugins on this node: sockets in the kubelet's device plugin folder besides
/// the kubelet's and `our_socket_names` (which also always include the socket this agent uses
/// for each resource of `domain` the kubelet has registered). A live foreign socket that serves
/// a resource of `domain` fails: two plugins cannot serve one resource. It serves one when
/// named by the domain's vendor (`nvidia-gpu.sock`, `nvidia-mig-<profile>.sock` for
/// `nvidia.com`), or when its name ends in `-<name>` of a resource of `domain` the kubelet's
/// checkpoint registers (and no other vendor's resource of that name explains it). Plugins of
/// other resources pass with a note; a foreign socket nothing listens on warns.
pub fn other_plugin_checks(
    device_plugin_dir: &Path,
    domain: &str,
    our_socket_names: &[String],
) -> Vec<Check> {
    let entries = match std::fs::read_dir(device_plugin_dir) {
        Ok(entries) => entries,
        Err(error) => {
            return vec![check(
                "other device plugins",
                Status::Warn,
                format!("cannot list {}: {error}", device_plugin_dir.display()),
            )];
        }
    };
    let sockets: BTreeSet<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".sock") && name != KUBELET_SOCKET_NAME)
        .collect();
    let mut checks = Vec::new();
    let registered = match std::fs::read_to_string(device_plugin_dir.join(KUBELET_CHECKPOINT)) {
        Ok(text) => match registered_resources(&text) {
            Ok(registered) => Some(registered),
            Err(error) => {
                checks.push(check(
                    "kubelet checkpoint",
                    Status::Warn,
                    format!("{KUBELET_CHECKPOINT} does not parse: {error}"),
                ));
                None
            }
        },
        Err(_) => None,
    };
    let prefix = format!("{domain}/");
    let (ours_registered, others_registered): (Vec<&String>, Vec<&String>) = registered
        .iter()
        .flatten()
        .partition(|r| r.starts_with(&prefix));
    let mut ours: BTreeSet<String> = our_socket_names.iter().cloned().collect();
    ours.extend(ours_registered.iter().map(|r| socket_name(r)));
    let vendor = domain.split('.').next().unwrap_or(domain);
    // Another vendor registered a resource of this short name: a `<vendor>-<name>` socket is
    // theirs.
    let theirs = |label: &str, short: &str| {
        others_registered.iter().any(|r| {
            r.split_once('/')
                .is_some_and(|(d, s)| s == short && d.split('.').next().unwrap_or(d) == label)
        })
    };

    // Resource of our domain -> the live foreign sockets serving it.
    let mut conflicts: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut stale = Vec::new();
    let mut unrelated = Vec::new();
    for socket in sockets.iter().filter(|s| !ours.contains(*s)) {
        let stem = socket.trim_end_matches(".sock");
        let label = stem.split_once('-').map_or(stem, |(label, _)| label);
        let mut serves = Vec::new();
        if let Some(short) = stem.strip_prefix(vendor).and_then(|r| r.strip_prefix('-'))
            && !short.is_empty()
        {
            serves.push(format!("{prefix}{short}"));
        } else {
            for resource in &ours_registered {
                let short = &resource[prefix.len()..];
                let named = stem == short || stem.ends_with(&format!("-{short}"));
                if named && !theirs(label, short) {
                    serves.push((*resource).clone());
                }
            }
        }
        if serves.is_empty() {
            unrelated.push(socket.as_str());
        } else if !listening(&device_plugin_dir.join(socket)) {
            stale.push(socket.as_str());
        } else {
            for resource in serves {
                conflicts
                    .entry(resource)
                    .or_default()
                    .insert(socket.as_str());
            }
        }
    }
    for (resource, by) in &conflicts {
        let by: Vec<&str> = by.iter().copied().collect();
        checks.push(check(
            format!("plugin conflict {resource}"),
            Status::Fail,
            format!(
                "another device plugin serves {resource} on this node ({}): remove it from this \
                 node before running kubesched-agent ({MIGRATION_GUIDE})",
                by.join(", ")
            ),
        ));
    }
    if !stale.is_empty() {
        checks.push(check(
            "stale plugin sockets",
            Status::Warn,
            format!(
                "{} in {}: named for our resources but nothing listens (a removed plugin's \
                 leftovers); delete them",
                stale.join(", "),
                device_plugin_dir.display()
            ),
        ));
    }
    let mut detail = if unrelated.is_empty() {
        "none besides the kubelet's and ours".to_string()
    } else {
        format!(
            "{} (not ours; they serve other resources and are left alone)",
            unrelated.join(", ")
        )
    };
    if !others_registered.is_empty() {
        let names: Vec<&str> = others_registered.iter().map(|r| r.as_str()).collect();
        let _ = write!(detail, "; other registered resources: {}", names.join(", "));
    }
    if registered.is_none() {
        let _ = write!(detail, "; no readable {KUBELET_CHECKPOINT}");
    }
    checks.push(check("other device plugins", Status::Pass, detail));
    checks
}

/// A fixed-width table under a header; the last line says whether everything passed (and how
/// many warnings there were).
pub fn render(checks: &[Check]) -> String {
    let width = checks
        .iter()
        .map(|c| c.name.len())
        .chain(std::iter::once("CHECK".len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "{:4}  {:width$}  DETAIL", "", "CHECK");
    for c in checks {
        let _ = writeln!(out, "{}  {:width$}  {}", c.status.label(), c.name, c.detail);
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    let warnings = match warned {
        0 => String::new(),
        n => format!(" ({n} warning(s))"),
    };
    let _ = writeln!(
        out,
        "{}",
        if failed == 0 {
            format!("all checks passed{warnings}")
        } else {
            format!("{failed} check(s) failed")
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::FakeInventory;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node.json");

    #[test]
    fn fake_node_passes_gpu_and_numa_checks() {
        let fake = FakeInventory::open(FIXTURE).unwrap();
        let checks = gpu_checks(Ok(&fake));
        assert_eq!(checks[0].detail, "driver 550.54.15");
        assert!(checks.iter().all(|c| c.status == Status::Pass));
        let mig = checks.iter().find(|c| c.name == "gpu 2").unwrap();
        assert!(
            mig.detail.contains("MIG on, 3 instance(s): 3g.40gb@4"),
            "{}",
            mig.detail
        );
        let numa = topology_checks(&fake);
        assert_eq!(
            numa[0].detail,
            "node 0: 4 cpus, 65536 MiB; node 1: 4 cpus, 65536 MiB"
        );
    }

    #[test]
    fn dynamic_mig_gpus_with_pending_mode_change_or_processes_warn() {
        use crate::mig::FakeMigBackend;
        use crate::mig::{GpuCondition, GpuProcess};
        let backend = FakeMigBackend::default();
        let geometry = kubesched_core::catalogue::mig_geometry("H100-80GB").unwrap();
        backend.add_gpu("GPU-a", geometry.clone());
        backend.add_gpu("GPU-b", geometry);
        backend.create("GPU-a", "3g.40gb", 4).unwrap();
        backend
            .set_condition(
                "GPU-b",
                GpuCondition {
                    pending_mode_change: true,
                    processes: vec![GpuProcess {
                        pid: 99,
                        start: None,
                    }],
                },
            )
            .unwrap();
        let checks = dynamic_mig_checks(
            &backend,
            &[
                "GPU-a".to_string(),
                "GPU-b".to_string(),
                "GPU-z".to_string(),
            ],
        );
        assert_eq!(checks[0].status, Status::Pass);
        assert_eq!(checks[0].detail, "1 instance(s) [3g.40gb@4]");
        assert_eq!(checks[1].status, Status::Warn);
        assert!(
            checks[1].detail.contains("pending") && checks[1].detail.contains("99"),
            "{}",
            checks[1].detail
        );
        assert_eq!(checks[2].status, Status::Fail);
    }

    #[test]
    fn missing_driver_and_kubelet_fail_with_advice() {
        let err =
            DiscoveryError::NoDriver("libnvidia-ml.so.1: cannot open shared object file".into());
        let checks = gpu_checks(Err(&err));
        assert_eq!(checks[0].status, Status::Fail);
        assert!(
            checks[0]
                .detail
                .starts_with("no NVIDIA driver on this node")
        );
        let dir = std::env::temp_dir();
        let kubelet = kubelet_checks(&dir, &dir.join("no-such-kubelet.sock"));
        assert_eq!(kubelet[0].status, Status::Fail);
        assert_eq!(kubelet[1].status, Status::Pass);
        let pod_resources = pod_resources_check(&dir.join("no-such-pod-resources.sock"));
        assert_eq!(
            pod_resources.status,
            Status::Warn,
            "{}",
            pod_resources.detail
        );
        assert!(pod_resources.detail.contains("free CPUs"));
        let table = render(&[checks, kubelet].concat());
        assert!(
            table.contains("FAIL  nvml") && table.ends_with("2 check(s) failed\n"),
            "{table}"
        );
    }

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let dir =
                std::env::temp_dir().join(format!("ks-doctor-{}-{n}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const NVIDIA_YAML: &str = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n";
    const NVIDIA_JSON: &str = r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[]}"#;

    fn by_name<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in {checks:?}"))
    }

    #[test]
    fn containerd_configs_and_spec_kinds_are_read() {
        assert_eq!(
            containerd_cdi(
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_cdi = true\n"
            )
            .0,
            RuntimeCdi::On
        );
        assert_eq!(containerd_cdi("version = 3\n").0, RuntimeCdi::On);
        assert_eq!(
            containerd_cdi("version = 3\n  enable_cdi = false # off\n").0,
            RuntimeCdi::Off
        );
        assert_eq!(
            containerd_cdi("version = 2\n# enable_cdi = true\n").0,
            RuntimeCdi::Off
        );
        assert!(declares_nvidia_kind(NVIDIA_YAML));
        assert!(declares_nvidia_kind(NVIDIA_JSON));
        assert!(declares_nvidia_kind("kind: 'nvidia.com/gpu'"));
        assert!(!declares_nvidia_kind("kind: nvidia.com/gpus"));
        assert!(!declares_nvidia_kind("kind: vendor.example/fpga"));
    }

    #[test]
    fn cdi_cri_is_recommended_only_with_runtime_cdi_and_an_nvidia_spec() {
        let etc = TempDir::new("etc-cdi");
        let run = TempDir::new("run-cdi");
        let conf = TempDir::new("containerd");
        let on = conf.write("on.toml", "version = 3\n");
        let off = conf.write("off.toml", "version = 2\n");
        let dirs = [etc.0.clone(), run.0.clone()];

        // No spec, runtime CDI off: envvar, nothing to warn about.
        let checks = cdi_checks(&dirs, &off);
        assert!(
            checks.iter().all(|c| c.status == Status::Pass),
            "{checks:?}"
        );
        assert!(
            by_name(&checks, "device list strategy")
                .detail
                .starts_with("envvar")
        );
        assert!(
            by_name(&checks, "device list strategy")
                .detail
                .contains("runtimeClassName: nvidia")
        );

        // Runtime CDI on, only someone else's spec (and our own, which never counts): warn.
        etc.write("vendor.yaml", "kind: vendor.example/fpga\n");
        run.write("kubesched-agent.json", NVIDIA_JSON);
        let checks = cdi_checks(&dirs, &on);
        assert_eq!(by_name(&checks, "nvidia cdi spec").status, Status::Warn);
        assert!(
            by_name(&checks, "nvidia cdi spec")
                .detail
                .contains("1 other"),
            "{checks:?}"
        );
        assert_eq!(
            by_name(&checks, "device list strategy").status,
            Status::Warn
        );

        // NVIDIA's spec and runtime CDI: cdi-cri.
        run.write("nvidia.yaml", NVIDIA_YAML);
        let checks = cdi_checks(&dirs, &on);
        assert!(
            checks.iter().all(|c| c.status == Status::Pass),
            "{checks:?}"
        );
        assert!(
            by_name(&checks, "device list strategy")
                .detail
                .starts_with("cdi-cri")
        );
        assert!(
            by_name(&checks, "nvidia cdi spec")
                .detail
                .contains("nvidia.yaml")
        );

        // A containerd config that cannot be read: unknown, a warning, never a failure.
        let checks = cdi_checks(&dirs, &conf.0.join("missing.toml"));
        assert_eq!(by_name(&checks, "runtime cdi").status, Status::Warn);
        assert!(
            by_name(&checks, "runtime cdi")
                .detail
                .starts_with("unknown")
        );
        assert!(checks.iter().all(|c| c.status != Status::Fail));
    }

    #[test]
    fn another_plugin_serving_our_resources_fails_and_others_pass() {
        use std::os::unix::net::UnixListener;
        let dir = TempDir::new("plugins");
        let _kubelet = UnixListener::bind(dir.0.join("kubelet.sock")).unwrap();
        let _ours = UnixListener::bind(dir.0.join("kubesched-gpu.sock")).unwrap();
        let _nvidia = UnixListener::bind(dir.0.join("nvidia-gpu.sock")).unwrap();
        let _mig = UnixListener::bind(dir.0.join("nvidia-mig-1g.10gb.sock")).unwrap();
        let _fpga = UnixListener::bind(dir.0.join("vendor-fpga.sock")).unwrap();
        let _amd = UnixListener::bind(dir.0.join("amd-gpu.sock")).unwrap();
        dir.write(
            KUBELET_CHECKPOINT,
            r#"{"Data":{"PodDeviceEntries":null,"RegisteredDevices":{
                "nvidia.com/gpu":["GPU-0"],"nvidia.com/mig-1g.10gb":["MIG-1"],
                "vendor.example/fpga":["f0"],"amd.com/gpu":["a0"]}},"Checksum":1}"#,
        );
        let checks = other_plugin_checks(&dir.0, "nvidia.com", &["kubesched-gpu.sock".into()]);
        let failed: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Fail).collect();
        assert_eq!(failed.len(), 2, "{checks:?}");
        assert_eq!(failed[0].name, "plugin conflict nvidia.com/gpu");
        assert!(
            failed[0].detail.starts_with(
                "another device plugin serves nvidia.com/gpu on this node (nvidia-gpu.sock): remove it"
            ),
            "{}",
            failed[0].detail
        );
        assert!(failed[0].detail.contains("deploy/README.md"));
        assert_eq!(failed[1].name, "plugin conflict nvidia.com/mig-1g.10gb");
        let others = by_name(&checks, "other device plugins");
        assert_eq!(others.status, Status::Pass);
        assert!(
            others
                .detail
                .starts_with("amd-gpu.sock, vendor-fpga.sock (not ours"),
            "{}",
            others.detail
        );
    }

    #[test]
    fn only_our_sockets_pass_and_dead_foreign_ones_warn() {
        let dir = TempDir::new("plugins-ours");
        dir.write("kubelet.sock", "");
        // Our socket from an earlier run, known by the checkpoint only.
        dir.write("kubesched-mig-1g.10gb.sock", "");
        dir.write(
            KUBELET_CHECKPOINT,
            r#"{"Data":{"RegisteredDevices":{"nvidia.com/mig-1g.10gb":["MIG-1"]}}}"#,
        );
        let checks = other_plugin_checks(&dir.0, "nvidia.com", &[]);
        assert_eq!(checks.len(), 1, "{checks:?}");
        assert_eq!(checks[0].status, Status::Pass);
        assert!(
            checks[0].detail.starts_with("none besides"),
            "{}",
            checks[0].detail
        );

        // NVIDIA's socket without the checkpoint, nothing listening: a leftover, a warning.
        std::fs::remove_file(dir.0.join(KUBELET_CHECKPOINT)).unwrap();
        dir.write("nvidia-gpu.sock", "");
        let checks = other_plugin_checks(&dir.0, "nvidia.com", &[]);
        assert!(
            checks.iter().all(|c| c.status != Status::Fail),
            "{checks:?}"
        );
        assert_eq!(
            by_name(&checks, "stale plugin sockets").status,
            Status::Warn
        );
        assert!(
            by_name(&checks, "other device plugins")
                .detail
                .contains("no readable")
        );
    }

    #[test]
    fn the_table_has_a_header_and_counts_warnings() {
        let table = render(&[
            check("a", Status::Pass, "fine"),
            check("longer name", Status::Warn, "hmm"),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "      CHECK        DETAIL");
        assert_eq!(lines[1], "PASS  a            fine");
        assert_eq!(lines[2], "WARN  longer name  hmm");
        assert_eq!(lines[3], "all checks passed (1 warning(s))");
    }
}

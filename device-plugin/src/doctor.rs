//! `kubesched-agent doctor`: checks what the agent needs on this node (NVML and the driver,
//! MIG mode per GPU, NUMA topology, the kubelet socket and the plugin folder's permissions,
//! and for dynamic-MIG GPUs whether the agent may touch them) and prints a pass/fail table
//! with what to do about each failure.

use std::fmt::Write as _;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

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

/// A fixed-width table; the last line says whether everything passed.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(out, "{}  {:width$}  {}", c.status.label(), c.name, c.detail);
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let _ = writeln!(
        out,
        "{}",
        if failed == 0 {
            "all checks passed".to_string()
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
}

//! Finding the cluster: an existing one (`KUBESCHED_E2E_KUBECONFIG`), or one brought up with
//! `scripts/cluster.sh` (`KUBESCHED_E2E=1`), or none (the tests are skipped).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Admin kubeconfig of an existing cluster.
pub const ENV_KUBECONFIG: &str = "KUBESCHED_E2E_KUBECONFIG";
/// `1`: bring a cluster up with `scripts/cluster.sh` (and fail, never skip, if that fails).
pub const ENV_E2E: &str = "KUBESCHED_E2E";
/// `1`: leave the cluster (and the work folder) in place at the end.
pub const ENV_KEEP: &str = "KUBESCHED_E2E_KEEP";
/// Node whose kubelet runs on this machine (`localhost`).
pub const ENV_NODE: &str = "KUBESCHED_E2E_NODE";
/// That kubelet's device-plugin folder [/var/lib/kubelet/device-plugins].
pub const ENV_PLUGIN_DIR: &str = "KUBESCHED_E2E_DEVICE_PLUGIN_DIR";
/// That kubelet's PodResources socket [/var/lib/kubelet/pod-resources/kubelet.sock].
pub const ENV_POD_RESOURCES: &str = "KUBESCHED_E2E_POD_RESOURCES_SOCKET";

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A cluster to test against, with an admin client (for setting up and checking only: our
/// binaries get service-account credentials, see [`crate::rbac`]).
pub struct Cluster {
    /// Admin kubeconfig of the cluster (given, or written by `cluster.sh`).
    pub kubeconfig: PathBuf,
    /// API client with admin credentials, for setting up and checking scenarios.
    pub client: kube::Client,
    /// The node with a real kubelet on this machine.
    pub node: String,
    /// That kubelet's device-plugin folder, given to the agent for its plugin sockets.
    pub device_plugin_dir: PathBuf,
    /// That kubelet's PodResources socket, given to the agent and queried by the scenarios.
    pub pod_resources_socket: PathBuf,
    /// Scratch folder of this run: kubeconfigs, fixtures, logs.
    pub work_dir: PathBuf,
    /// Brought up by us: `cluster.sh down` on drop.
    owned: bool,
    /// A scenario failed: keep the work folder (logs) for inspection.
    failed: AtomicBool,
}

impl Cluster {
    /// The cluster to use, or `None` (with a message on stderr) when the tests should be
    /// skipped because none is configured.
    pub async fn find(test: &str) -> anyhow::Result<Option<Cluster>> {
        let (kubeconfig, owned) = if let Some(path) = std::env::var_os(ENV_KUBECONFIG) {
            (PathBuf::from(path), false)
        } else if env_flag(ENV_E2E) {
            bring_up()?
        } else {
            eprintln!(
                "SKIPPED {test}: no cluster. Set {ENV_E2E}=1 to bring one up with \
                 scripts/cluster.sh (root, Debian; ~8 min the first time) or \
                 {ENV_KUBECONFIG}=<admin kubeconfig> to use an existing one."
            );
            return Ok(None);
        };
        match Self::connect(test, kubeconfig, owned).await {
            Ok(cluster) => Ok(Some(cluster)),
            Err(error) => {
                if owned && !env_flag(ENV_KEEP) {
                    let _ = script(&["down"]);
                }
                Err(error)
            }
        }
    }

    /// A cluster of `scripts/cluster.sh` started afresh (an empty etcd; one already up is
    /// taken down first), taken down again when dropped. For runs that must not see each
    /// other's objects, such as the benchmark's phases.
    pub async fn fresh(test: &str) -> anyhow::Result<Cluster> {
        // Nothing to take down is not an error here.
        let _ = script(&["down"]);
        script(&["build"])?;
        if let Err(error) = script(&["up"]) {
            let _ = script(&["down"]);
            return Err(error);
        }
        let connected = match script(&["kubeconfig"]) {
            Ok(path) => Self::connect(test, PathBuf::from(path), true).await,
            Err(error) => Err(error),
        };
        if connected.is_err() {
            let _ = script(&["down"]);
        }
        connected
    }

    async fn connect(test: &str, kubeconfig: PathBuf, owned: bool) -> anyhow::Result<Cluster> {
        let work_dir =
            std::env::temp_dir().join(format!("kubesched-e2e-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        let var_or = |name: &str, default: &str| {
            std::env::var_os(name).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        let client = client_from(&kubeconfig).await?;
        let version = client
            .apiserver_version()
            .await
            .context("asking the API server for its version")?;
        let cluster = Cluster {
            client,
            kubeconfig,
            node: std::env::var(ENV_NODE).unwrap_or_else(|_| "localhost".into()),
            device_plugin_dir: var_or(ENV_PLUGIN_DIR, "/var/lib/kubelet/device-plugins"),
            pod_resources_socket: var_or(
                ENV_POD_RESOURCES,
                "/var/lib/kubelet/pod-resources/kubelet.sock",
            ),
            work_dir,
            owned,
            failed: AtomicBool::new(false),
        };
        eprintln!(
            "[e2e] {test}: cluster {} (Kubernetes {}.{}), node {}, work folder {}",
            cluster.kubeconfig.display(),
            version.major,
            version.minor,
            cluster.node,
            cluster.work_dir.display()
        );
        Ok(cluster)
    }

    /// Keeps the work folder (logs, kubeconfigs) after the run; call it when a scenario fails.
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Path of a file in this run's work folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.work_dir.join(name)
    }

    /// Copies `tests/fixtures/<name>` into the work folder (so a test may edit its copy).
    pub fn fixture(&self, name: &str) -> anyhow::Result<PathBuf> {
        let src = repo_root().join("tests/fixtures").join(name);
        let dst = self.path(name);
        std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        Ok(dst)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep =
            env_flag(ENV_KEEP) || std::thread::panicking() || self.failed.load(Ordering::Relaxed);
        if self.owned
            && !env_flag(ENV_KEEP)
            && let Err(error) = script(&["down"])
        {
            eprintln!("[e2e] cluster.sh down failed: {error:#}");
        }
        if keep {
            eprintln!("[e2e] work folder kept: {}", self.work_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// An admin client from a kubeconfig file (its current context).
pub async fn client_from(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))?;
    kube::Client::try_from(config).context("building a Kubernetes client")
}

/// Runs `scripts/cluster.sh ARGS`, returning its stdout (stderr passes through). The
/// scenarios that need the dedicated kube-scheduler or restart components use it, so they run
/// only against a cluster of that script.
pub fn script(args: &[&str]) -> anyhow::Result<String> {
    let path = repo_root().join("scripts/cluster.sh");
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/cluster.sh {} failed ({})",
        args.join(" "),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Reuses a cluster that is already up, else builds and starts one. Returns its admin
/// kubeconfig and whether we own it (must take it down).
fn bring_up() -> anyhow::Result<(PathBuf, bool)> {
    let path = repo_root().join("scripts/cluster.sh");
    let already_up = Command::new("bash")
        .arg(&path)
        .arg("status")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let owned = if already_up {
        eprintln!("[e2e] reusing the cluster that is already up (it stays up)");
        false
    } else {
        script(&["build"])?;
        if let Err(error) = script(&["up"]) {
            let _ = script(&["down"]);
            return Err(error);
        }
        true
    };
    Ok((PathBuf::from(script(&["kubeconfig"])?), owned))
}

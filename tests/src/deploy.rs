//! Installing the chart as a platform team does (`deploy/README.md`): our images built from
//! this tree (`scripts/images.sh`) and loaded into the node's containerd, the chart rendered
//! with the team's values (`scripts/render-manifests.sh`), and `kubectl` against the cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::cluster::{repo_root, script};
use crate::process::bin_dir;
use crate::rbac::NAMESPACE;
use crate::{Cluster, agent};

/// The plain manifests a user applies to install, in the README's order (the namespace, then
/// the signing key Secret, then these).
pub const INSTALL_FILES: [&str; 5] = [
    "rbac.yaml",
    "scheduler-rbac.yaml",
    "scheduler.yaml",
    "agent.yaml",
    "metrics.yaml",
];

/// The chart's signing key Secret (the manifests hold none: the README has the user make it).
pub const SIGNING_SECRET: &str = "kubesched-signing-key";

/// Runs `kubectl ARGS` with the cluster's admin kubeconfig; returns stdout, fails with stderr.
pub fn kubectl(cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .output()
        .context("running kubectl")?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An image built for the test: its names and the size of its archive.
pub struct Image {
    /// Its names, comma-separated.
    pub names: String,
    /// Size of its docker-archive tar.
    pub archive_bytes: u64,
}

/// Builds the agent and extender images from the binaries under test (`scripts/images.sh
/// --bin-dir`), named `localhost/kubesched/{agent,extender}:<tag>` for every tag, and imports
/// them into the node's containerd.
pub fn build_and_load_images(cluster: &Cluster, tags: &[&str]) -> anyhow::Result<Vec<Image>> {
    let out_dir = cluster.path("images");
    let bins = bin_dir()?;
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/images.sh"))
        .arg("--bin-dir")
        .arg(&bins)
        .args(["--registry", "localhost", "--tag", &tags.join(",")])
        .arg("--out")
        .arg(&out_dir)
        .status()
        .context("running scripts/images.sh")?;
    anyhow::ensure!(status.success(), "scripts/images.sh failed ({status})");
    let mut images = Vec::new();
    for name in ["agent", "extender"] {
        let archive = out_dir.join(format!("{name}.tar"));
        let archive_bytes = std::fs::metadata(&archive)
            .with_context(|| format!("{} not built", archive.display()))?
            .len();
        script(&["load-image", &archive.to_string_lossy()])?;
        let names = tags
            .iter()
            .map(|t| format!("localhost/kubesched/{name}:{t}"))
            .collect::<Vec<_>>()
            .join(", ");
        images.push(Image {
            names,
            archive_bytes,
        });
    }
    Ok(images)
}

/// Renders the chart with `values` (a values file's YAML) into the work folder `<name>/`, the
/// same files as `deploy/manifests`.
pub fn render(cluster: &Cluster, name: &str, values: &str) -> anyhow::Result<PathBuf> {
    let dir = cluster.path(name);
    std::fs::create_dir_all(&dir)?;
    let values_file = cluster.path(&format!("{name}-values.yaml"));
    std::fs::write(&values_file, values)?;
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/render-manifests.sh"))
        .arg("--out")
        .arg(&dir)
        .arg("-f")
        .arg(&values_file)
        .status()
        .context("running scripts/render-manifests.sh")?;
    anyhow::ensure!(status.success(), "rendering the chart failed ({status})");
    Ok(dir)
}

/// `kubectl ARGS -f DIR/FILE...`.
fn kubectl_files(
    cluster: &Cluster,
    args: &[&str],
    dir: &Path,
    files: &[&str],
) -> anyhow::Result<String> {
    let paths: Vec<String> = files
        .iter()
        .map(|f| dir.join(f).to_string_lossy().into_owned())
        .collect();
    let mut all = args.to_vec();
    for path in &paths {
        all.extend(["-f", path]);
    }
    kubectl(cluster, &all)
}

/// The README's install: the namespace, the signing key Secret, then [`INSTALL_FILES`];
/// `before_workloads` runs once the namespace exists (what a value refers to, e.g. a
/// ConfigMap).
pub fn install(
    cluster: &Cluster,
    dir: &Path,
    before_workloads: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    kubectl_files(cluster, &["apply"], dir, &["namespace.yaml"])?;
    let key = std::fs::read_to_string(agent::signing_key_file(cluster)?)?;
    kubectl(
        cluster,
        &[
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            SIGNING_SECRET,
            &format!("--from-literal=key={}", key.trim()),
        ],
    )?;
    before_workloads()?;
    kubectl_files(cluster, &["apply"], dir, &INSTALL_FILES)?;
    Ok(())
}

/// Applies one rendered file again (an upgrade of what it holds).
pub fn apply(cluster: &Cluster, dir: &Path, file: &str) -> anyhow::Result<()> {
    kubectl_files(cluster, &["apply"], dir, &[file])?;
    Ok(())
}

/// The README's uninstall: every installed file in reverse order, the namespace last (its
/// deletion takes the Secret and what the controllers made with it); waits until it is gone.
pub fn uninstall(cluster: &Cluster, dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<&str> = INSTALL_FILES.iter().rev().copied().collect();
    files.push("namespace.yaml");
    kubectl_files(cluster, &["delete", "--ignore-not-found"], dir, &files)?;
    Ok(())
}

//! The chart's RBAC, applied from the rendered manifests, and kubeconfigs that carry a
//! service account's token so our binaries run with exactly the chart's permissions.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use serde::Deserialize as _;

use crate::cluster::{Cluster, repo_root};

/// Namespace of the rendered manifests.
pub const NAMESPACE: &str = "kubesched-system";
/// Service account of the scheduler pod (the extender sidecar runs as it).
pub const EXTENDER_SERVICE_ACCOUNT: &str = "kubesched-scheduler";
/// Service account of the node agent DaemonSet.
pub const AGENT_SERVICE_ACCOUNT: &str = "kubesched-agent";
/// The rendered manifests the tests apply: the namespace and the least-privilege RBAC of the
/// extender and the agent (kube-scheduler's own bindings in `scheduler-rbac.yaml` are not
/// needed: the test's kube-scheduler is the cluster's).
pub const RBAC_MANIFESTS: [&str; 2] = ["namespace.yaml", "rbac.yaml"];

/// `deploy/manifests/<name>`.
pub fn manifest_path(name: &str) -> PathBuf {
    repo_root().join("deploy/manifests").join(name)
}

/// Server-side applies every object of a multi-document YAML file.
pub async fn apply_file(client: &kube::Client, path: &Path) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut applied = 0;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(document)
            .with_context(|| format!("parsing {}", path.display()))?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(value)
            .with_context(|| format!("reading an object of {}", path.display()))?;
        apply_object(client, &object)
            .await
            .with_context(|| format!("applying {}", path.display()))?;
        applied += 1;
    }
    Ok(applied)
}

async fn apply_object(client: &kube::Client, object: &DynamicObject) -> anyhow::Result<()> {
    let types = object
        .types
        .as_ref()
        .context("object without apiVersion/kind")?;
    let (group, version) = match types.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", types.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &types.kind);
    let (resource, caps) = pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discovering {}", types.kind))?;
    let name = object
        .metadata
        .name
        .as_deref()
        .context("object without a name")?;
    let api: Api<DynamicObject> = match (&caps.scope, object.metadata.namespace.as_deref()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        name,
        &PatchParams::apply("kubesched-e2e").force(),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| format!("applying {} {name}", types.kind))?;
    Ok(())
}

/// Applies [`RBAC_MANIFESTS`].
pub async fn install(cluster: &Cluster) -> anyhow::Result<()> {
    let mut total = 0;
    for name in RBAC_MANIFESTS {
        total += apply_file(&cluster.client, &manifest_path(name)).await?;
    }
    eprintln!("[e2e] applied {total} objects from deploy/manifests {RBAC_MANIFESTS:?}");
    Ok(())
}

/// Writes a kubeconfig for `namespace/name` (a fresh one-hour TokenRequest token, the
/// cluster's server and CA) and returns its path.
pub async fn service_account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> anyhow::Result<PathBuf> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(cluster.client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for service account {namespace}/{name}"))?
        .status
        .context("TokenRequest without status")?
        .token;

    let admin = Kubeconfig::read_from(&cluster.kubeconfig)
        .with_context(|| format!("reading {}", cluster.kubeconfig.display()))?;
    let context_name = admin
        .current_context
        .clone()
        .context("admin kubeconfig has no current-context")?;
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .context("current context not found")?;
    let entry = admin
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .context("current context's cluster not found")?;
    let server = entry.server.clone().context("cluster without server")?;

    // YAML is a superset of JSON: quote every value as a JSON string.
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut cluster_fields = vec![format!("server: {}", q(&server))];
    if let Some(ca) = &entry.certificate_authority {
        let ca_path = Path::new(ca);
        let ca_path = if ca_path.is_absolute() {
            ca_path.to_path_buf()
        } else {
            // relative paths in a kubeconfig are relative to the file
            cluster
                .kubeconfig
                .parent()
                .unwrap_or(Path::new("."))
                .join(ca_path)
        };
        cluster_fields.push(format!(
            "certificate-authority: {}",
            q(&ca_path.display().to_string())
        ));
    }
    if let Some(data) = &entry.certificate_authority_data {
        cluster_fields.push(format!("certificate-authority-data: {}", q(data)));
    }
    if entry.insecure_skip_tls_verify == Some(true) {
        cluster_fields.push("insecure-skip-tls-verify: true".into());
    }
    if let Some(tls_name) = &entry.tls_server_name {
        cluster_fields.push(format!("tls-server-name: {}", q(tls_name)));
    }
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{{}}}\nusers:\n- name: {}\n  \
         user: {{token: {}}}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: {}}}\n\
         current-context: e2e\n",
        cluster_fields.join(", "),
        q(&user),
        q(&token),
        q(&user),
    );
    let path = cluster.path(&format!("{name}.kubeconfig"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

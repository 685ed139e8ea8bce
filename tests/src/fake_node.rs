//! Fake GPU nodes: Node objects with capacity and the inventory annotation but no kubelet,
//! as the agent would publish them, and the check that pods bound to them never share a
//! device.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubesched_core::catalogue;
use kubesched_core::inventory::{INVENTORY_ANNOTATION, MigMode, NodeInventory};

use crate::pods;

/// Default resource domain of the binaries and the chart.
pub const DOMAIN: &str = "nvidia.com";
/// Default annotation prefix of the binaries and the chart.
pub const ANNOTATION_PREFIX: &str = "kubesched.ai";
/// Label on every fake node.
pub const FAKE_LABEL: &str = "kubesched-e2e/fake";

/// Extended resources of an inventory, as the agent would advertise them.
pub fn capacity(inventory: &NodeInventory) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for gpu in &inventory.gpus {
        match &gpu.mig {
            None => *out.entry(format!("{DOMAIN}/gpu")).or_insert(0) += 1,
            // A dynamic GPU is advertised as one slot per profile and start position.
            Some(mig) if mig.mode == MigMode::Dynamic => {
                for profile in &catalogue::mig_geometry(&gpu.model)?.profiles {
                    *out.entry(format!("{DOMAIN}/mig-{}", profile.name))
                        .or_insert(0) += profile.starts.len() as i64;
                }
            }
            Some(mig) => {
                for i in &mig.instances {
                    *out.entry(format!("{DOMAIN}/mig-{}", i.profile))
                        .or_insert(0) += 1;
                }
            }
        }
    }
    Ok(out)
}

/// A fake Node (no kubelet) publishing `inventory`, its capacity as the agent would
/// advertise it, labelled `FAKE_LABEL` and `labels`.
pub async fn create_node_with(
    client: &kube::Client,
    name: &str,
    inventory: &NodeInventory,
    labels: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut resources = serde_json::json!({"cpu": "64", "memory": "256Gi", "pods": "250"});
    for (k, v) in capacity(inventory)? {
        resources[k] = serde_json::json!(v.to_string());
    }
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels.iter().fold(
                serde_json::json!({FAKE_LABEL: "true", "kubernetes.io/hostname": name}),
                |mut all, (k, v)| { all[*k] = serde_json::json!(v); all },
            ),
            "annotations": {
                format!("{ANNOTATION_PREFIX}/{INVENTORY_ANNOTATION}"): inventory.to_json()
            },
        },
        "status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "fake node (no kubelet)"}],
        },
    }))?;
    let api: Api<Node> = Api::all(client.clone());
    api.create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("creating fake node {name}"))?;
    // Status is not taken from a create: set it through the status subresource.
    let status = serde_json::json!({"status": node.status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("setting the status of fake node {name}"))?;
    Ok(())
}

/// Every bound pod's devices exist on its node with the requested profile, and no device is
/// handed out twice. Returns the devices handed out.
pub fn check_no_device_twice(
    bound: &[Pod],
    inventories: &BTreeMap<String, NodeInventory>,
) -> anyhow::Result<BTreeSet<String>> {
    let mut used = BTreeSet::new();
    for pod in bound {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pods::node_name(pod).context("unbound")?;
        let annotation = pods::devices(pod, ANNOTATION_PREFIX)?
            .with_context(|| format!("{name} bound without a devices annotation"))?;
        anyhow::ensure!(
            annotation.node == node,
            "{name}: annotation for {}",
            annotation.node
        );
        let inventory = inventories
            .get(node)
            .with_context(|| format!("{name} on {node}"))?;
        let requested = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.resources.as_ref())
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.keys().find(|k| k.starts_with(DOMAIN)).cloned())
            .context("pod without our resource")?;
        anyhow::ensure!(
            annotation.resource == requested,
            "{name}: {} for {requested}",
            annotation.resource
        );
        for device in &annotation.devices {
            let gpu = inventory
                .gpus
                .iter()
                .find(|g| g.uuid == device.gpu_uuid)
                .with_context(|| format!("{name}: GPU {} not on {node}", device.gpu_uuid))?;
            match (&device.mig, &gpu.mig) {
                (None, None) => {}
                (Some(m), Some(inv)) => {
                    let instance = inv
                        .instances
                        .iter()
                        .find(|i| {
                            Some(&i.uuid) == m.uuid.as_ref()
                                && i.start == m.start
                                && i.profile == m.profile
                        })
                        .with_context(|| {
                            format!("{name}: {m:?} is not an instance of {}", gpu.uuid)
                        })?;
                    anyhow::ensure!(
                        requested.ends_with(&instance.profile),
                        "{name}: {} for {requested}",
                        instance.profile
                    );
                }
                _ => anyhow::bail!("{name}: whole GPU / MIG mismatch on {}", gpu.uuid),
            }
            anyhow::ensure!(
                used.insert(device.device_id()),
                "{name}: device {} given twice",
                device.device_id()
            );
        }
    }
    Ok(used)
}

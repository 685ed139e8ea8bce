//! Which resources and devices the agent advertises: whole GPUs of GPUs without MIG as
//! `<domain>/gpu`, and each existing MIG instance as `<domain>/mig-<profile>` (NVIDIA's
//! "mixed" strategy). Device ids are GPU and MIG UUIDs; a slice inherits its GPU's NUMA node.

use std::collections::BTreeMap;

use kubesched_core::inventory::GpuInfo;
use kubesched_core::request::ResourceNames;

/// Where a MIG slice sits on its GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigSlice {
    pub profile: String,
    pub start: u8,
    /// NVML GPU instance id, when known (XID events name it).
    pub gpu_instance_id: Option<u32>,
}

/// One device as the kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedDevice {
    /// GPU UUID, or MIG UUID for a slice.
    pub id: String,
    pub resource: String,
    pub numa_node: Option<u32>,
    /// Health as discovered (the manager overlays XID health on top).
    pub healthy: bool,
    pub gpu_uuid: String,
    pub gpu_index: u32,
    pub mig: Option<MigSlice>,
}

/// Devices per resource name, in a stable order.
pub type ResourcePlan = BTreeMap<String, Vec<AdvertisedDevice>>;

/// Builds the advertised resources from the discovered GPUs.
pub fn plan(
    gpus: &[GpuInfo],
    names: &ResourceNames,
    gpu_instance_ids: &BTreeMap<String, u32>,
) -> ResourcePlan {
    let mut plan = ResourcePlan::new();
    for gpu in gpus {
        match &gpu.mig {
            None => plan
                .entry(names.whole_gpu())
                .or_default()
                .push(AdvertisedDevice {
                    id: gpu.uuid.clone(),
                    resource: names.whole_gpu(),
                    numa_node: gpu.numa_node,
                    healthy: gpu.healthy,
                    gpu_uuid: gpu.uuid.clone(),
                    gpu_index: gpu.index,
                    mig: None,
                }),
            // A MIG-enabled GPU is handed out only as its slices, never whole.
            Some(mig) => {
                for instance in &mig.instances {
                    let resource = names.mig(&instance.profile);
                    plan.entry(resource.clone())
                        .or_default()
                        .push(AdvertisedDevice {
                            id: instance.uuid.clone(),
                            resource,
                            numa_node: gpu.numa_node,
                            healthy: gpu.healthy && instance.healthy,
                            gpu_uuid: gpu.uuid.clone(),
                            gpu_index: gpu.index,
                            mig: Some(MigSlice {
                                profile: instance.profile.clone(),
                                start: instance.start,
                                gpu_instance_id: gpu_instance_ids.get(&instance.uuid).copied(),
                            }),
                        });
                }
            }
        }
    }
    plan
}

/// Socket file name for a resource: `kubesched-gpu.sock`, `kubesched-mig-1g.10gb.sock`.
/// The domain is left out (one domain per agent); characters a file name should not carry
/// become `_`.
pub fn socket_name(resource: &str) -> String {
    let short = resource.rsplit_once('/').map_or(resource, |(_, name)| name);
    let safe: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("kubesched-{safe}.sock")
}

#[cfg(test)]
mod tests {
    use kubesched_core::inventory::{MigInfo, MigInstanceInfo, MigMode};

    use super::*;

    fn gpu(index: u32, numa: Option<u32>, mig: Option<Vec<(&str, u8, &str)>>) -> GpuInfo {
        GpuInfo {
            index,
            uuid: format!("GPU-{index}"),
            model: "H100-80GB".into(),
            pci_bus_id: format!("0000:{:02x}:00.0", index + 1),
            numa_node: numa,
            memory_mib: 81559,
            healthy: true,
            mig: mig.map(|instances| MigInfo {
                mode: MigMode::Static,
                instances: instances
                    .into_iter()
                    .map(|(profile, start, uuid)| MigInstanceInfo {
                        profile: profile.into(),
                        start,
                        uuid: uuid.into(),
                        healthy: uuid != "MIG-sick",
                    })
                    .collect(),
                geometry: None,
            }),
        }
    }

    #[test]
    fn whole_gpus_and_mig_profiles_become_separate_resources() {
        let gpus = vec![
            gpu(0, Some(0), None),
            gpu(
                1,
                Some(1),
                Some(vec![
                    ("3g.40gb", 4, "MIG-a"),
                    ("1g.10gb", 0, "MIG-b"),
                    ("1g.10gb", 1, "MIG-sick"),
                ]),
            ),
            gpu(2, Some(1), Some(vec![])),
        ];
        let ids = BTreeMap::from([("MIG-a".to_string(), 2)]);
        let plan = plan(&gpus, &ResourceNames::default(), &ids);
        assert_eq!(
            plan.keys().collect::<Vec<_>>(),
            [
                "nvidia.com/gpu",
                "nvidia.com/mig-1g.10gb",
                "nvidia.com/mig-3g.40gb"
            ]
        );
        assert_eq!(
            plan["nvidia.com/gpu"]
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>(),
            ["GPU-0"]
        );
        let slice = &plan["nvidia.com/mig-3g.40gb"][0];
        assert_eq!(
            slice.numa_node,
            Some(1),
            "a slice inherits its parent's NUMA node"
        );
        assert_eq!(slice.gpu_uuid, "GPU-1");
        assert_eq!(
            slice.mig,
            Some(MigSlice {
                profile: "3g.40gb".into(),
                start: 4,
                gpu_instance_id: Some(2)
            })
        );
        let small: Vec<_> = plan["nvidia.com/mig-1g.10gb"]
            .iter()
            .map(|d| (d.id.as_str(), d.healthy))
            .collect();
        assert_eq!(small, [("MIG-b", true), ("MIG-sick", false)]);
    }

    #[test]
    fn socket_names() {
        assert_eq!(socket_name("nvidia.com/gpu"), "kubesched-gpu.sock");
        assert_eq!(
            socket_name("nvidia.com/mig-1g.10gb"),
            "kubesched-mig-1g.10gb.sock"
        );
        assert_eq!(
            socket_name("nvidia.com/mig-1g.10gb+me"),
            "kubesched-mig-1g.10gb_me.sock"
        );
    }
}

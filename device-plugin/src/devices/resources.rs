//! Which resources and devices the agent advertises: whole GPUs of GPUs without MIG as
//! `<domain>/gpu`, and each existing MIG instance as `<domain>/mig-<profile>` (NVIDIA's
//! "mixed" strategy). Device ids are GPU and MIG UUIDs; a slice inherits its GPU's NUMA node.
//! A dynamic-MIG GPU advertises, for every profile of its geometry, one device per placement
//! still free plus one per live instance, each named by its dynamic slot id
//! (`<gpu>::<profile>@<start>`); placements overlapping a live instance are left out.

use std::collections::BTreeMap;

use kubesched_core::annotation::dynamic_slot_id;
use kubesched_core::catalogue;
use kubesched_core::inventory::{GpuInfo, MigInfo, MigMode};
use kubesched_core::mig::MigGpu;
use kubesched_core::request::ResourceNames;

/// Where a MIG slice sits on its GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigSlice {
    /// MIG profile of the slice, e.g. `1g.10gb` or `1g.10gb+me`.
    pub profile: String,
    /// Start of the GPU instance's placement on its GPU, in memory slices (NVML's placement
    /// start).
    pub start: u8,
    /// NVML GPU instance id, when known (XID events name it).
    pub gpu_instance_id: Option<u32>,
}

/// One device as the kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedDevice {
    /// GPU UUID, MIG UUID for a slice, or `<gpu>::<profile>@<start>` for a dynamic-MIG slot
    /// (the instance is created on Allocate).
    pub id: String,
    /// Resource name the device is advertised under, e.g. `nvidia.com/mig-1g.10gb`.
    pub resource: String,
    /// NUMA node of the GPU (a slice inherits its GPU's); `None` without NUMA affinity. The
    /// kubelet gets it as the device's topology hint.
    pub numa_node: Option<u32>,
    /// Health as discovered (the manager overlays XID health on top).
    pub healthy: bool,
    /// UUID of the GPU the device is on: the device itself for a whole GPU, the parent GPU for a
    /// slice.
    pub gpu_uuid: String,
    /// NVML index of the GPU the device is on (`nvidia-smi` numbering).
    pub gpu_index: u32,
    /// Where the slice sits on its GPU; `None` for a whole GPU.
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
            Some(mig) if mig.mode == MigMode::Dynamic => {
                plan_dynamic(&mut plan, gpu, mig, names, gpu_instance_ids);
            }
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

/// Whether the kubelet accepts `name` as an extended resource name (a qualified name:
/// alphanumerics, `-`, `_`, `.`). A name still carrying a profile's `+` (`mig-1g.10gb+me`) is
/// not; its resource form from `ResourceNames::mig` (`mig-1g.10gb.me`, `mig-1g.23gb.me.all`,
/// `mig-1g.24gb.gfx`, `mig-1g.23gb-me`) is.
pub fn is_valid_resource_name(name: &str) -> bool {
    let short = name.rsplit_once('/').map_or(name, |(_, n)| n);
    !short.is_empty()
        && short.len() <= 63
        && short
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && short.starts_with(|c: char| c.is_ascii_alphanumeric())
        && short.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn plan_dynamic(
    plan: &mut ResourcePlan,
    gpu: &GpuInfo,
    mig: &MigInfo,
    names: &ResourceNames,
    gpu_instance_ids: &BTreeMap<String, u32>,
) {
    let geometry = match &mig.geometry {
        Some(geometry) => std::sync::Arc::new(geometry.clone()),
        None => match catalogue::mig_geometry(&gpu.model) {
            Ok(geometry) => geometry,
            Err(error) => {
                tracing::warn!(gpu = %gpu.uuid, %error, "dynamic MIG GPU of unknown geometry; nothing advertised");
                return;
            }
        },
    };
    let mut occupancy = MigGpu::new(geometry.clone());
    for instance in &mig.instances {
        let placed = geometry
            .profile(&instance.profile)
            .map_err(|e| e.to_string())
            .and_then(|(idx, _)| {
                occupancy
                    .place(idx, instance.start)
                    .map_err(|e| e.to_string())
            });
        if let Err(error) = placed {
            tracing::warn!(gpu = %gpu.uuid, profile = %instance.profile, start = instance.start, %error, "live MIG instance outside the geometry");
        }
    }
    for (idx, profile) in geometry.profiles.iter().enumerate() {
        let resource = names.mig(&profile.name);
        if !is_valid_resource_name(&resource) {
            tracing::debug!(%resource, "not a valid extended resource name; profile not advertised");
            continue;
        }
        let device = |start: u8, healthy: bool, gpu_instance_id: Option<u32>| AdvertisedDevice {
            id: dynamic_slot_id(&gpu.uuid, &profile.name, start),
            resource: resource.clone(),
            numa_node: gpu.numa_node,
            healthy: gpu.healthy && healthy,
            gpu_uuid: gpu.uuid.clone(),
            gpu_index: gpu.index,
            mig: Some(MigSlice {
                profile: profile.name.clone(),
                start,
                gpu_instance_id,
            }),
        };
        let mut devices: Vec<AdvertisedDevice> = mig
            .instances
            .iter()
            .filter(|i| i.profile == profile.name)
            .map(|i| device(i.start, i.healthy, gpu_instance_ids.get(&i.uuid).copied()))
            .chain(
                occupancy
                    .placements(idx)
                    .into_iter()
                    .map(|start| device(start, true, None)),
            )
            .collect();
        devices.sort_by_key(|d| d.mig.as_ref().map(|m| m.start));
        // Every profile gets its resource even with nothing free, so creating an instance
        // never changes the set of resources (which would restart the plugin servers).
        plan.entry(resource).or_default().extend(devices);
    }
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
                blocked: None,
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
    fn dynamic_gpus_advertise_free_placements_and_live_slots() {
        let mut dynamic = gpu(4, Some(1), Some(vec![("3g.40gb", 4, "MIG-live")]));
        if let Some(mig) = &mut dynamic.mig {
            mig.mode = MigMode::Dynamic;
        }
        let plan = plan(&[dynamic], &ResourceNames::default(), &BTreeMap::new());
        let ids = |r: &str| -> Vec<String> { plan[r].iter().map(|d| d.id.clone()).collect() };
        assert_eq!(
            ids("nvidia.com/mig-1g.10gb"),
            [
                "GPU-4::1g.10gb@0",
                "GPU-4::1g.10gb@1",
                "GPU-4::1g.10gb@2",
                "GPU-4::1g.10gb@3"
            ],
            "placements overlapping the live 3g are gone"
        );
        assert_eq!(
            ids("nvidia.com/mig-3g.40gb"),
            ["GPU-4::3g.40gb@0", "GPU-4::3g.40gb@4"],
            "the live instance keeps its slot"
        );
        assert!(
            plan["nvidia.com/mig-7g.80gb"].is_empty(),
            "listed, with nothing free"
        );
        assert!(!plan.contains_key("nvidia.com/mig-1g.10gb+me"));
        assert!(plan.values().flatten().all(|d| d.numa_node == Some(1)));
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

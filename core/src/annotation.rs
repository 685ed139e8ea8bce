//! The pod annotation `kubesched.ai/devices`: the devices the extender chose
//! at bind time, which the node agent hands over in Allocate. Also the
//! mapping between that document and a node's `DeviceChoice`.

use serde::{Deserialize, Serialize};

use crate::node::{GpuSlots, NodeState};
use crate::placement::{Candidate, DeviceChoice, MigPick};
use crate::request::GpuDemand;
use crate::text::quote;
use crate::versioned::{self, VersionedError};

/// Default annotation prefix; configurable in both programs.
pub const DEFAULT_PREFIX: &str = "kubesched.ai";
/// Key suffix of the devices annotation (`<prefix>/devices`).
pub const DEVICES_ANNOTATION: &str = "devices";
/// Version of the devices annotation document this build writes and understands.
pub const DEVICES_VERSION: u32 = 1;

/// Full annotation key for a prefix and suffix.
pub fn key(prefix: &str, suffix: &str) -> String {
    format!("{prefix}/{suffix}")
}

/// The devices annotation: which GPUs or MIG slots on which node the extender chose for a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicesAnnotation {
    /// Document version (`DEVICES_VERSION` when written); newer versions are refused on read.
    pub version: u32,
    /// Node the devices were chosen on; an agent refuses an annotation for another node.
    pub node: String,
    /// The extended resource these devices satisfy (`nvidia.com/mig-3g.40gb`).
    pub resource: String,
    /// The devices assigned to the pod, one entry per whole GPU or MIG instance.
    pub devices: Vec<AssignedDevice>,
    /// NUMA node the devices were chosen within, when the placement was NUMA-aligned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// The extender's signature over the pod UID and the fields above (`signing`); agents
    /// with the key follow only annotations it verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// One device assigned to a pod: a whole GPU, or a MIG instance on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedDevice {
    /// UUID of the physical GPU (`GPU-...`).
    pub gpu_uuid: String,
    /// Index of the GPU on its node, as NVML numbers it.
    pub gpu_index: u32,
    /// The MIG instance on this GPU; absent when the whole GPU is assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<AssignedMig>,
}

/// Where a MIG instance lies on its GPU: its profile and start position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedMig {
    /// MIG profile name without the resource prefix, e.g. `3g.40gb`.
    pub profile: String,
    /// Memory position the instance starts at (one of the profile's allowed starts).
    pub start: u8,
    /// The MIG device UUID of a pre-created (static) instance; absent for a
    /// dynamic instance the agent has yet to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

impl AssignedDevice {
    /// The device ID the agent advertises to the kubelet for this device.
    pub fn device_id(&self) -> String {
        match &self.mig {
            None => self.gpu_uuid.clone(),
            Some(AssignedMig { uuid: Some(u), .. }) => u.clone(),
            Some(AssignedMig {
                profile,
                start,
                uuid: None,
            }) => dynamic_slot_id(&self.gpu_uuid, profile, *start),
        }
    }
}

/// Device ID of a dynamic MIG slot that does not exist yet.
pub fn dynamic_slot_id(gpu_uuid: &str, profile: &str, start: u8) -> String {
    format!("{gpu_uuid}::{profile}@{start}")
}

/// (GPU UUID, profile, start) of a `dynamic_slot_id`, `None` for other ids.
pub fn parse_dynamic_slot_id(id: &str) -> Option<(&str, &str, u8)> {
    let (gpu, rest) = id.split_once("::")?;
    let (profile, start) = rest.rsplit_once('@')?;
    Some((gpu, profile, start.parse().ok()?)).filter(|(g, p, _)| !g.is_empty() && !p.is_empty())
}

/// Why a devices annotation could not be read, built or mapped onto a node.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    /// The annotation is not a readable devices document (malformed, too large or too new).
    #[error(transparent)]
    Document(#[from] VersionedError),
    /// The annotation was written for another node than the one reading it.
    #[error("annotation is for node {annotated}, not {node}")]
    WrongNode {
        /// Node named in the annotation (quoted, as outside text).
        annotated: String,
        /// Name of the node that read the annotation.
        node: String,
    },
    /// A GPU the annotation names (by UUID, or `#index` when building) is not on this node.
    #[error("GPU {0} named in the annotation is not on this node")]
    UnknownGpu(String),
    /// A device does not match its GPU: a MIG placement where a whole GPU was asked for, or a
    /// missing, wrong-profile or misplaced MIG instance, or a GPU not in the mode needed.
    #[error("GPU {gpu}: {detail}")]
    BadMig {
        /// UUID of the GPU concerned (quoted when it comes from the annotation).
        gpu: String,
        /// What is wrong with the placement, for the error message.
        detail: String,
    },
    /// The pod asks for a fractional GPU share, which is never described by a devices annotation.
    #[error("fractional GPU shares have no device annotation")]
    Unsupported,
    /// The annotation names a different number of devices than the pod requests.
    #[error("the annotation names {found} device(s); the pod asks for {wanted}")]
    WrongCount {
        /// Devices the pod's GPU demand asks for.
        wanted: u32,
        /// Devices listed in the annotation.
        found: usize,
    },
    /// The same whole GPU or MIG slot is listed more than once.
    #[error("the annotation names {device} twice")]
    Duplicate {
        /// Device ID (GPU UUID or MIG slot ID) that appears twice, quoted.
        device: String,
    },
}

impl DevicesAnnotation {
    /// Parses and version-checks an annotation read from a pod; `Err` if it is malformed or
    /// newer than this build understands.
    pub fn from_json(text: &str) -> Result<Self, AnnotationError> {
        Ok(versioned::parse(text, "devices", DEVICES_VERSION)?)
    }

    /// Serialises the annotation to the compact JSON written to the pod.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Describes a candidate on `node` as an annotation.
    pub fn from_candidate(
        node: &NodeState,
        resource: &str,
        cand: &Candidate,
    ) -> Result<Self, AnnotationError> {
        let gpu = |i: usize| {
            node.gpus
                .get(i)
                .ok_or_else(|| AnnotationError::UnknownGpu(format!("#{i}")))
        };
        let devices = match &cand.choice {
            DeviceChoice::None => Vec::new(),
            DeviceChoice::Share { .. } => return Err(AnnotationError::Unsupported),
            DeviceChoice::Gpus(gpus) => gpus
                .iter()
                .map(|&i| {
                    gpu(i).map(|g| AssignedDevice {
                        gpu_uuid: g.uuid.to_string(),
                        gpu_index: g.index,
                        mig: None,
                    })
                })
                .collect::<Result<_, _>>()?,
            DeviceChoice::Mig(picks) => picks
                .iter()
                .map(|p| {
                    let g = gpu(p.gpu)?;
                    let GpuSlots::Mig(m) = &g.slots else {
                        return Err(AnnotationError::BadMig {
                            gpu: g.uuid.to_string(),
                            detail: "not in MIG mode".into(),
                        });
                    };
                    let profile = m
                        .gpu
                        .geometry()
                        .profiles
                        .get(p.profile)
                        .map(|p| p.name.clone())
                        .unwrap_or_default();
                    Ok(AssignedDevice {
                        gpu_uuid: g.uuid.to_string(),
                        gpu_index: g.index,
                        mig: Some(AssignedMig {
                            profile,
                            start: p.start,
                            uuid: m.uuid_at(p.start).map(|u| u.to_string()),
                        }),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(DevicesAnnotation {
            version: DEVICES_VERSION,
            node: node.name.clone(),
            resource: resource.to_string(),
            devices,
            numa_node: cand.numa,
            signature: None,
        })
    }

    /// Maps the annotation back to positions on `node` (checking that every
    /// GPU and profile exists there; whether they are free is `apply`'s job).
    pub fn to_candidate(
        &self,
        node: &NodeState,
        demand: &GpuDemand,
    ) -> Result<Candidate, AnnotationError> {
        if self.node != node.name {
            return Err(AnnotationError::WrongNode {
                annotated: quote(&self.node),
                node: node.name.clone(),
            });
        }
        let position = |uuid: &str| {
            node.gpus
                .iter()
                .position(|g| &*g.uuid == uuid)
                .ok_or_else(|| AnnotationError::UnknownGpu(quote(uuid)))
        };
        let wanted = match demand {
            GpuDemand::None => 0,
            GpuDemand::Share { .. } => return Err(AnnotationError::Unsupported),
            GpuDemand::Whole { count } | GpuDemand::Mig { count, .. } => *count,
        };
        // Compared before anything is built from the list: its length is the outside's.
        if usize::try_from(wanted).ok() != Some(self.devices.len()) {
            return Err(AnnotationError::WrongCount {
                wanted,
                found: self.devices.len(),
            });
        }
        let choice = match demand {
            GpuDemand::None | GpuDemand::Share { .. } => DeviceChoice::None,
            GpuDemand::Whole { .. } => {
                let mut gpus = Vec::with_capacity(self.devices.len());
                for d in &self.devices {
                    let gpu = position(&d.gpu_uuid)?;
                    if d.mig.is_some() || !matches!(node.gpus[gpu].slots, GpuSlots::Plain { .. }) {
                        return Err(AnnotationError::BadMig {
                            gpu: quote(&d.gpu_uuid),
                            detail: "a whole GPU was asked for".into(),
                        });
                    }
                    if gpus.contains(&gpu) {
                        return Err(AnnotationError::Duplicate {
                            device: quote(&d.gpu_uuid),
                        });
                    }
                    gpus.push(gpu);
                }
                DeviceChoice::Gpus(gpus)
            }
            GpuDemand::Mig {
                profile: wanted_profile,
                ..
            } => {
                let mut picks: Vec<MigPick> = Vec::with_capacity(self.devices.len());
                for d in &self.devices {
                    let gpu = position(&d.gpu_uuid)?;
                    let bad = |detail: String| AnnotationError::BadMig {
                        gpu: quote(&d.gpu_uuid),
                        detail,
                    };
                    let mig = d
                        .mig
                        .as_ref()
                        .ok_or_else(|| bad("no MIG placement in annotation".into()))?;
                    let GpuSlots::Mig(m) = &node.gpus[gpu].slots else {
                        return Err(bad("not in MIG mode".into()));
                    };
                    if &mig.profile != wanted_profile {
                        return Err(bad(format!(
                            "profile {} where the pod asks for {wanted_profile}",
                            quote(&mig.profile)
                        )));
                    }
                    let (profile, p) = m
                        .gpu
                        .geometry()
                        .profile(&mig.profile)
                        .map_err(|e| bad(e.to_string()))?;
                    if !p.starts.contains(&mig.start) {
                        return Err(bad(format!(
                            "{} cannot start at position {} (allowed: {:?})",
                            p.name, mig.start, p.starts
                        )));
                    }
                    let pick = MigPick {
                        gpu,
                        profile,
                        start: mig.start,
                    };
                    if picks.iter().any(|q| q.gpu == gpu && q.start == mig.start) {
                        return Err(AnnotationError::Duplicate {
                            device: quote(&d.device_id()),
                        });
                    }
                    picks.push(pick);
                }
                DeviceChoice::Mig(picks)
            }
        };
        Ok(Candidate {
            choice,
            numa: self.numa_node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::mig_geometry;
    use crate::node::GpuState;
    use crate::placement;
    use crate::request::PodRequest;

    #[test]
    fn golden_format_and_round_trip() {
        let mut node = NodeState::new("gpu-node-1", 8000, 8192);
        node.gpus.push(GpuState::dynamic_mig(
            0,
            "GPU-a",
            "H100-80GB",
            Some(1),
            mig_geometry("H100-80GB").unwrap(),
        ));
        let demand = GpuDemand::Mig {
            profile: "3g.40gb".into(),
            count: 1,
        };
        let req = PodRequest::cpu_only(1000, 0).with_gpu(demand.clone());
        let cand = placement::candidates(&node, &req).unwrap().remove(0);
        let ann =
            DevicesAnnotation::from_candidate(&node, "nvidia.com/mig-3g.40gb", &cand).unwrap();
        let golden = r#"{"version":1,"node":"gpu-node-1","resource":"nvidia.com/mig-3g.40gb","devices":[{"gpuUuid":"GPU-a","gpuIndex":0,"mig":{"profile":"3g.40gb","start":0}}],"numaNode":1}"#;
        assert_eq!(ann.to_json(), golden);
        let back = DevicesAnnotation::from_json(golden).unwrap();
        assert_eq!(back.to_candidate(&node, &demand).unwrap(), cand);
        assert_eq!(back.devices[0].device_id(), "GPU-a::3g.40gb@0");
        assert_eq!(
            parse_dynamic_slot_id("GPU-a::3g.40gb@0"),
            Some(("GPU-a", "3g.40gb", 0))
        );
        assert_eq!(
            parse_dynamic_slot_id("GPU-a::1g.10gb+me@6"),
            Some(("GPU-a", "1g.10gb+me", 6))
        );
        assert_eq!(parse_dynamic_slot_id("MIG-123"), None);
        assert_eq!(parse_dynamic_slot_id("GPU-a::3g.40gb@x"), None);
        assert_eq!(parse_dynamic_slot_id("::3g.40gb@1"), None);
    }

    #[test]
    fn foreign_or_newer_annotations_are_refused() {
        let node = NodeState::new("other", 0, 0);
        let text = r#"{"version":1,"node":"gpu-node-1","resource":"nvidia.com/gpu","devices":[]}"#;
        let ann = DevicesAnnotation::from_json(text).unwrap();
        assert!(matches!(
            ann.to_candidate(&node, &GpuDemand::Whole { count: 1 }),
            Err(AnnotationError::WrongNode { .. })
        ));
        let newer = text.replace("\"version\":1", "\"version\":2");
        assert!(
            DevicesAnnotation::from_json(&newer)
                .unwrap_err()
                .to_string()
                .contains("newer")
        );
        let mut mine = ann.clone();
        mine.node = "other".into();
        mine.devices.push(AssignedDevice {
            gpu_uuid: "GPU-x".into(),
            gpu_index: 0,
            mig: None,
        });
        assert!(matches!(
            mine.to_candidate(&node, &GpuDemand::Whole { count: 1 }),
            Err(AnnotationError::UnknownGpu(_))
        ));
    }
}

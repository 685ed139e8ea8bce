//! The in-memory [`MigBackend`] behind `--fake-inventory` and the tests: each MIG GPU of the
//! fixture is a core [`MigGpu`] occupancy map, so creation follows the same placement rules
//! (start positions, overlap, per-profile maximum, compute slices, one `+me` per GPU) and
//! fails with the same errors NVML gives: an invalid start is refused, a taken placement is
//! "insufficient resources", an instance with processes is "in use". Tests can add processes
//! and pending MIG mode changes to exercise the agent's hands-off rules. Each instance gets
//! the lowest free GPU instance id from 1 and compute instance id 0, as on a fresh GPU; the
//! fake knows no GPU minor (the agent then uses the GPU index).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kubesched_core::catalogue::{self, MigGeometry};
use kubesched_core::mig::{MigError, MigGpu};

use super::{GpuCondition, GpuProcess, InstanceIds, LiveInstance, MigBackend, MigBackendError};
use crate::discovery::DiscoveryError;
use crate::discovery::FakeFixture;

#[derive(Debug)]
struct FakeGpu {
    occupancy: MigGpu,
    /// MIG UUID of each instance, by start position.
    uuids: BTreeMap<u8, String>,
    /// GPU instance id of each instance, by start position.
    gi_ids: BTreeMap<u8, u32>,
    condition: GpuCondition,
}

impl FakeGpu {
    /// Records a new instance at `start` under the lowest GPU instance id not in use.
    fn number(&mut self, start: u8) {
        let used: Vec<u32> = self.gi_ids.values().copied().collect();
        let id = (1..).find(|id| !used.contains(id)).unwrap_or(1);
        self.gi_ids.insert(start, id);
    }
}

#[derive(Debug, Default)]
struct State {
    gpus: BTreeMap<String, FakeGpu>,
    next_uuid: u64,
}

/// MIG GPUs held in memory.
#[derive(Debug, Default)]
pub struct FakeMigBackend {
    state: Mutex<State>,
}

impl FakeMigBackend {
    /// The MIG-enabled GPUs of a fixture with their instances (geometry from the fixture, else
    /// from the catalogue by model).
    pub fn from_fixture(fixture: &FakeFixture) -> Result<Self, DiscoveryError> {
        let backend = FakeMigBackend::default();
        for gpu in &fixture.gpus {
            let Some(mig) = &gpu.mig else { continue };
            let invalid = |message: String| DiscoveryError::FixtureInvalid {
                path: "fake MIG backend".into(),
                message,
            };
            let geometry = match &mig.geometry {
                Some(geometry) => Arc::new(geometry.clone()),
                None => catalogue::mig_geometry(&gpu.model)
                    .map_err(|e| invalid(format!("GPU {}: {e}", gpu.uuid)))?,
            };
            backend.add_gpu(&gpu.uuid, geometry);
            let mut state = backend.state();
            let Some(fake) = state.gpus.get_mut(&gpu.uuid) else {
                continue;
            };
            for instance in &mig.instances {
                let (idx, _) = fake
                    .occupancy
                    .geometry()
                    .profile(&instance.profile)
                    .map_err(|e| invalid(format!("GPU {}: {e}", gpu.uuid)))?;
                fake.occupancy
                    .place(idx, instance.start)
                    .map_err(|e| invalid(format!("GPU {}: {e}", gpu.uuid)))?;
                fake.uuids.insert(instance.start, instance.uuid.clone());
                fake.number(instance.start);
            }
        }
        Ok(backend)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below is completed before the guard drops; a panic cannot leave half of one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds an empty MIG GPU (replacing one with the same UUID).
    pub fn add_gpu(&self, uuid: &str, geometry: Arc<MigGeometry>) {
        self.state().gpus.insert(
            uuid.to_string(),
            FakeGpu {
                occupancy: MigGpu::new(geometry),
                uuids: BTreeMap::new(),
                gi_ids: BTreeMap::new(),
                condition: GpuCondition::default(),
            },
        );
    }

    /// Sets what [`MigBackend::condition`] reports for a GPU (processes, pending mode change).
    pub fn set_condition(&self, gpu: &str, condition: GpuCondition) -> Result<(), MigBackendError> {
        let mut state = self.state();
        let fake = state
            .gpus
            .get_mut(gpu)
            .ok_or_else(|| MigBackendError::UnknownGpu(gpu.to_string()))?;
        fake.condition = condition;
        Ok(())
    }

    /// Bit mask of the GPU's occupied memory positions.
    pub fn used_mask(&self, gpu: &str) -> Option<u8> {
        self.state().gpus.get(gpu).map(|g| g.occupancy.used_mask())
    }
}

fn insufficient(gpu: &str, profile: &str, start: u8, error: &MigError) -> MigBackendError {
    MigBackendError::InsufficientResources {
        gpu: gpu.to_string(),
        profile: profile.to_string(),
        start,
        detail: error.to_string(),
    }
}

impl MigBackend for FakeMigBackend {
    fn instances(&self, gpu: &str) -> Result<Vec<LiveInstance>, MigBackendError> {
        let state = self.state();
        let fake = state
            .gpus
            .get(gpu)
            .ok_or_else(|| MigBackendError::UnknownGpu(gpu.to_string()))?;
        let geometry = fake.occupancy.geometry();
        let mut out: Vec<LiveInstance> = fake
            .occupancy
            .slots()
            .iter()
            .filter_map(|slot| {
                Some(LiveInstance {
                    profile: geometry.profiles.get(slot.profile)?.name.clone(),
                    start: slot.start,
                    uuid: fake.uuids.get(&slot.start).cloned(),
                })
            })
            .collect();
        out.sort_by_key(|i| i.start);
        Ok(out)
    }

    fn create(&self, gpu: &str, profile: &str, start: u8) -> Result<LiveInstance, MigBackendError> {
        let mut state = self.state();
        let serial = state.next_uuid;
        let fake = state
            .gpus
            .get_mut(gpu)
            .ok_or_else(|| MigBackendError::UnknownGpu(gpu.to_string()))?;
        let (idx, _) = fake.occupancy.geometry().profile(profile).map_err(|_| {
            MigBackendError::UnknownProfile {
                gpu: gpu.to_string(),
                profile: profile.to_string(),
            }
        })?;
        match fake.occupancy.place(idx, start) {
            Ok(_) => {}
            // NVML refuses a start outside the profile's placements as an invalid argument,
            // and everything else that is in the way as insufficient resources.
            Err(MigError::InvalidStart { allowed, .. }) => {
                return Err(MigBackendError::InvalidPlacement {
                    gpu: gpu.to_string(),
                    profile: profile.to_string(),
                    start,
                    allowed,
                });
            }
            Err(error) => return Err(insufficient(gpu, profile, start, &error)),
        }
        let uuid = format!("MIG-fake-{serial:06}");
        fake.uuids.insert(start, uuid.clone());
        fake.number(start);
        state.next_uuid += 1;
        Ok(LiveInstance {
            profile: profile.to_string(),
            start,
            uuid: Some(uuid),
        })
    }

    fn destroy(&self, gpu: &str, start: u8) -> Result<(), MigBackendError> {
        let mut state = self.state();
        let fake = state
            .gpus
            .get_mut(gpu)
            .ok_or_else(|| MigBackendError::UnknownGpu(gpu.to_string()))?;
        if !fake.occupancy.slots().iter().any(|s| s.start == start) {
            return Err(MigBackendError::NoInstance {
                gpu: gpu.to_string(),
                start,
            });
        }
        if fake
            .condition
            .processes
            .iter()
            .any(|p: &GpuProcess| p.start == Some(start))
        {
            return Err(MigBackendError::InUse {
                gpu: gpu.to_string(),
                start,
            });
        }
        fake.occupancy
            .free(start)
            .map_err(|_| MigBackendError::NoInstance {
                gpu: gpu.to_string(),
                start,
            })?;
        fake.uuids.remove(&start);
        fake.gi_ids.remove(&start);
        Ok(())
    }

    fn instance_ids(&self, gpu: &str, start: u8) -> Result<InstanceIds, MigBackendError> {
        let state = self.state();
        let fake = state
            .gpus
            .get(gpu)
            .ok_or_else(|| MigBackendError::UnknownGpu(gpu.to_string()))?;
        let gpu_instance =
            fake.gi_ids
                .get(&start)
                .copied()
                .ok_or_else(|| MigBackendError::NoInstance {
                    gpu: gpu.to_string(),
                    start,
                })?;
        Ok(InstanceIds {
            gpu_minor: None,
            gpu_instance,
            compute_instance: 0,
        })
    }

    fn condition(&self, gpu: &str) -> Result<GpuCondition, MigBackendError> {
        self.state()
            .gpus
            .get(gpu)
            .map(|g| g.condition.clone())
            .ok_or_else(|| MigBackendError::UnknownGpu(gpu.to_string()))
    }

    fn kind(&self) -> &'static str {
        "fake"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> FakeMigBackend {
        let backend = FakeMigBackend::default();
        backend.add_gpu("GPU-a", catalogue::mig_geometry("H100-80GB").unwrap());
        backend
    }

    #[test]
    fn creation_follows_the_placement_rules_with_nvml_errors() {
        let b = backend();
        let three = b.create("GPU-a", "3g.40gb", 4).unwrap();
        assert_eq!((three.profile.as_str(), three.start), ("3g.40gb", 4));
        assert!(three.uuid.is_some());
        assert_eq!(b.used_mask("GPU-a"), Some(0b1111_0000));
        // A 1g inside the 3g's positions: taken.
        let err = b.create("GPU-a", "1g.10gb", 5).unwrap_err();
        assert!(
            matches!(err, MigBackendError::InsufficientResources { start: 5, .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("insufficient resources"),
            "{err}"
        );
        // 4g@0 fits next to a 3g@4 (7 compute slices); then nothing is left.
        b.create("GPU-a", "4g.40gb", 0).unwrap();
        assert!(matches!(
            b.create("GPU-a", "1g.10gb", 0),
            Err(MigBackendError::InsufficientResources { .. })
        ));
        // A start the profile does not allow is an invalid placement, not a resource shortage.
        assert!(matches!(
            b.create("GPU-a", "3g.40gb", 2),
            Err(MigBackendError::InvalidPlacement { ref allowed, .. }) if allowed == &[0, 4]
        ));
        assert!(matches!(
            b.create("GPU-a", "5g.50gb", 0),
            Err(MigBackendError::UnknownProfile { .. })
        ));
        assert!(matches!(
            b.create("GPU-z", "1g.10gb", 0),
            Err(MigBackendError::UnknownGpu(_))
        ));
        let starts: Vec<u8> = b
            .instances("GPU-a")
            .unwrap()
            .iter()
            .map(|i| i.start)
            .collect();
        assert_eq!(starts, [0, 4]);
    }

    #[test]
    fn instances_get_the_lowest_free_gpu_instance_id() {
        let b = backend();
        b.create("GPU-a", "3g.40gb", 4).unwrap();
        b.create("GPU-a", "1g.10gb", 0).unwrap();
        let ids = |start| b.instance_ids("GPU-a", start);
        assert_eq!(
            ids(4),
            Ok(InstanceIds {
                gpu_minor: None,
                gpu_instance: 1,
                compute_instance: 0
            })
        );
        assert_eq!(ids(0).map(|i| i.gpu_instance), Ok(2));
        b.destroy("GPU-a", 4).unwrap();
        assert!(matches!(ids(4), Err(MigBackendError::NoInstance { .. })));
        b.create("GPU-a", "1g.10gb", 1).unwrap();
        assert_eq!(ids(1).map(|i| i.gpu_instance), Ok(1));
    }

    #[test]
    fn only_one_media_extension_and_busy_instances_stay() {
        let b = backend();
        b.create("GPU-a", "1g.10gb+me", 0).unwrap();
        assert!(matches!(
            b.create("GPU-a", "1g.10gb+me", 3),
            Err(MigBackendError::InsufficientResources { .. })
        ));
        b.set_condition(
            "GPU-a",
            GpuCondition {
                pending_mode_change: false,
                processes: vec![GpuProcess {
                    pid: 42,
                    start: Some(0),
                }],
            },
        )
        .unwrap();
        assert_eq!(
            b.destroy("GPU-a", 0),
            Err(MigBackendError::InUse {
                gpu: "GPU-a".into(),
                start: 0
            })
        );
        b.set_condition("GPU-a", GpuCondition::default()).unwrap();
        b.destroy("GPU-a", 0).unwrap();
        assert_eq!(
            b.destroy("GPU-a", 0),
            Err(MigBackendError::NoInstance {
                gpu: "GPU-a".into(),
                start: 0
            })
        );
        assert_eq!(b.used_mask("GPU-a"), Some(0));
    }
}

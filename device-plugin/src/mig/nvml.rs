//! The NVML [`MigBackend`]: GPU and compute instances created, listed and destroyed through
//! raw `nvml-wrapper-sys` calls (the safe API has none), each symbol checked before it is
//! called (the driver may not export it). The GPU instance goes at exactly the requested
//! placement (`nvmlDeviceCreateGpuInstanceWithPlacement`), taken from the driver's own list of
//! possible placements; its compute instance spans all of it. A half-created instance is
//! destroyed again. MIG mode is only read, never changed. Needs root (or the `mig/config`
//! capability); not exercised by the tests (no GPU there): the fake backend follows the
//! same contract.
// The NVML calls the safe wrapper lacks, made through its raw bindings: the agent's only
// `unsafe`, each block with the invariant it relies on.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::os::raw::c_uint;
use std::sync::Arc;

use nvml_wrapper::Nvml;
use nvml_wrapper::device::Device;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper_sys::bindings::{
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, NVML_COMPUTE_INSTANCE_PROFILE_COUNT,
    nvmlComputeInstance_t, nvmlComputeInstanceProfileInfo_t, nvmlGpuInstance_t,
    nvmlGpuInstanceInfo_t, nvmlGpuInstancePlacement_t, nvmlReturn_enum_NVML_ERROR_IN_USE,
    nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_RESOURCES, nvmlReturn_enum_NVML_SUCCESS, nvmlReturn_t,
};

use super::{GpuCondition, GpuProcess, InstanceIds, LiveInstance, MigBackend, MigBackendError};
use crate::discovery::{GiProfile, gi_profiles};

/// Room for every GPU instance or placement of one profile (at most 8 memory positions).
const BUFFER: usize = 16;

/// The raw function `$name` of the loaded library, or an error naming it.
macro_rules! sym {
    ($lib:expr, $name:ident) => {
        *$lib.$name.as_ref().map_err(|_| MigBackendError::Nvml {
            call: stringify!($name),
            message: "not exported by this driver".into(),
        })?
    };
}

fn check(code: nvmlReturn_t, call: &'static str) -> Result<(), MigBackendError> {
    if code == nvmlReturn_enum_NVML_SUCCESS {
        Ok(())
    } else {
        Err(MigBackendError::Nvml {
            call,
            message: format!("NVML return code {code}"),
        })
    }
}

fn wrapped(call: &'static str) -> impl Fn(NvmlError) -> MigBackendError {
    move |e| MigBackendError::Nvml {
        call,
        message: e.to_string(),
    }
}

/// Compute instance profile index spanning a GPU instance of `slices` compute slices.
fn full_compute_profile(slices: u32) -> Option<u32> {
    // NVML_COMPUTE_INSTANCE_PROFILE_{1,2,3,4,7,8,6}_SLICE.
    Some(match slices {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        7 => 4,
        8 => 5,
        6 => 6,
        _ => return None,
    })
}

/// A GPU instance with its NVML handle.
struct RawInstance {
    handle: nvmlGpuInstance_t,
    id: u32,
    profile: GiProfile,
    start: u8,
}

/// The [`MigBackend`] of real nodes: creates and destroys GPU instances at exact placements
/// through NVML's raw calls, which the safe wrapper does not expose.
pub struct NvmlMigBackend {
    nvml: Arc<Nvml>,
}

impl NvmlMigBackend {
    /// A backend over an initialised NVML, shared with discovery.
    pub fn new(nvml: Arc<Nvml>) -> Self {
        NvmlMigBackend { nvml }
    }

    fn device(&self, gpu: &str) -> Result<Device<'_>, MigBackendError> {
        self.nvml.device_by_uuid(gpu).map_err(|e| match e {
            NvmlError::NotFound => MigBackendError::UnknownGpu(gpu.to_string()),
            e => wrapped("nvmlDeviceGetHandleByUUID")(e),
        })
    }

    /// Every GPU instance of the device, over all profiles.
    fn raw_instances(&self, device: &Device<'_>) -> Result<Vec<RawInstance>, MigBackendError> {
        let lib = self.nvml.lib();
        let list = sym!(lib, nvmlDeviceGetGpuInstances);
        let info = sym!(lib, nvmlGpuInstanceGetInfo);
        let mut out = Vec::new();
        for profile in gi_profiles(device) {
            let mut handles: [nvmlGpuInstance_t; BUFFER] = [std::ptr::null_mut(); BUFFER];
            let mut count: c_uint = 0;
            // SAFETY: the symbol exists (checked by `sym!`), the device handle is live while
            // `device` borrows `self.nvml`, and the buffer holds more than a profile's maximum.
            let code = unsafe {
                list(
                    device.handle(),
                    profile.id,
                    handles.as_mut_ptr(),
                    &mut count,
                )
            };
            if code != nvmlReturn_enum_NVML_SUCCESS {
                // Profiles this GPU does not offer answer "not supported": nothing to list.
                tracing::debug!(profile = %profile.name, code, "no GPU instances listed for profile");
                continue;
            }
            for &handle in handles.iter().take(count as usize) {
                // SAFETY: a zeroed info struct (integers and a pointer) is a valid out-parameter.
                let mut data: nvmlGpuInstanceInfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: `handle` was just returned by NVML for this device.
                check(unsafe { info(handle, &mut data) }, "nvmlGpuInstanceGetInfo")?;
                let start =
                    u8::try_from(data.placement.start).map_err(|_| MigBackendError::Nvml {
                        call: "nvmlGpuInstanceGetInfo",
                        message: format!("placement start {} out of range", data.placement.start),
                    })?;
                out.push(RawInstance {
                    handle,
                    id: data.id,
                    profile: profile.clone(),
                    start,
                });
            }
        }
        out.sort_by_key(|i| i.start);
        Ok(out)
    }

    /// MIG device UUID of each GPU instance id (instances without a compute instance have none).
    /// The GPU instance of `gpu` (this `device`) starting at memory position `start`.
    fn instance_at(
        &self,
        device: &Device<'_>,
        gpu: &str,
        start: u8,
    ) -> Result<RawInstance, MigBackendError> {
        self.raw_instances(device)?
            .into_iter()
            .find(|i| i.start == start)
            .ok_or_else(|| MigBackendError::NoInstance {
                gpu: gpu.to_string(),
                start,
            })
    }

    /// The GPU's MIG devices (one per compute instance), each with its GPU instance id.
    fn mig_devices<'n>(
        &self,
        device: &Device<'n>,
    ) -> Result<Vec<(u32, Device<'n>)>, MigBackendError> {
        let gi_of = sym!(self.nvml.lib(), nvmlDeviceGetGpuInstanceId);
        let max = device
            .mig_device_count()
            .map_err(wrapped("nvmlDeviceGetMaxMigDeviceCount"))?;
        let mut out = Vec::new();
        for index in 0..max {
            // Indices without a MIG device answer NotFound.
            let Ok(mig) = device.mig_device_by_index(index) else {
                continue;
            };
            let mut id: c_uint = 0;
            // SAFETY: the symbol exists; `mig` is a live MIG device handle.
            let code = unsafe { gi_of(mig.handle(), &mut id) };
            check(code, "nvmlDeviceGetGpuInstanceId")?;
            out.push((id, mig));
        }
        Ok(out)
    }

    fn mig_uuids(&self, device: &Device<'_>) -> Result<BTreeMap<u32, String>, MigBackendError> {
        self.mig_devices(device)?
            .into_iter()
            .map(|(id, mig)| Ok((id, mig.uuid().map_err(wrapped("nvmlDeviceGetUUID"))?)))
            .collect()
    }

    /// Destroys every compute instance of a GPU instance.
    fn destroy_compute_instances(
        &self,
        gpu: &str,
        instance: &RawInstance,
    ) -> Result<(), MigBackendError> {
        let lib = self.nvml.lib();
        let profile_info = sym!(lib, nvmlGpuInstanceGetComputeInstanceProfileInfo);
        let list = sym!(lib, nvmlGpuInstanceGetComputeInstances);
        let destroy = sym!(lib, nvmlComputeInstanceDestroy);
        for index in 0..NVML_COMPUTE_INSTANCE_PROFILE_COUNT {
            // SAFETY: a zeroed info struct (integers only) is a valid out-parameter.
            let mut info: nvmlComputeInstanceProfileInfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: the symbols exist; `instance.handle` is a live GPU instance of this GPU.
            let code = unsafe {
                profile_info(
                    instance.handle,
                    index,
                    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
                    &mut info,
                )
            };
            if code != nvmlReturn_enum_NVML_SUCCESS {
                continue;
            }
            let mut handles: [nvmlComputeInstance_t; BUFFER] = [std::ptr::null_mut(); BUFFER];
            let mut count: c_uint = 0;
            // SAFETY: as above; the buffer holds more compute instances than a GPU instance has.
            let code = unsafe { list(instance.handle, info.id, handles.as_mut_ptr(), &mut count) };
            if code != nvmlReturn_enum_NVML_SUCCESS {
                continue;
            }
            for &handle in handles.iter().take(count as usize) {
                // SAFETY: `handle` was just returned by NVML.
                let code = unsafe { destroy(handle) };
                if code == nvmlReturn_enum_NVML_ERROR_IN_USE {
                    return Err(MigBackendError::InUse {
                        gpu: gpu.to_string(),
                        start: instance.start,
                    });
                }
                check(code, "nvmlComputeInstanceDestroy")?;
            }
        }
        Ok(())
    }

    /// Creates the compute instance spanning `gi`; returns NVML's code on failure.
    fn create_compute_instance(
        &self,
        gi: nvmlGpuInstance_t,
        slices: u32,
    ) -> Result<(), MigBackendError> {
        let lib = self.nvml.lib();
        let profile_info = sym!(lib, nvmlGpuInstanceGetComputeInstanceProfileInfo);
        let create = sym!(lib, nvmlGpuInstanceCreateComputeInstance);
        let index = full_compute_profile(slices).ok_or_else(|| MigBackendError::Nvml {
            call: "nvmlGpuInstanceGetComputeInstanceProfileInfo",
            message: format!("no compute instance profile of {slices} slices"),
        })?;
        // SAFETY: a zeroed info struct (integers only) is a valid out-parameter.
        let mut info: nvmlComputeInstanceProfileInfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: the symbols exist; `gi` is the GPU instance just created.
        let code = unsafe {
            profile_info(
                gi,
                index,
                NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
                &mut info,
            )
        };
        check(code, "nvmlGpuInstanceGetComputeInstanceProfileInfo")?;
        let mut ci: nvmlComputeInstance_t = std::ptr::null_mut();
        // SAFETY: as above.
        check(
            unsafe { create(gi, info.id, &mut ci) },
            "nvmlGpuInstanceCreateComputeInstance",
        )
    }
}

impl MigBackend for NvmlMigBackend {
    fn instances(&self, gpu: &str) -> Result<Vec<LiveInstance>, MigBackendError> {
        let device = self.device(gpu)?;
        let uuids = self.mig_uuids(&device)?;
        Ok(self
            .raw_instances(&device)?
            .into_iter()
            .map(|i| LiveInstance {
                uuid: uuids.get(&i.id).cloned(),
                profile: i.profile.name,
                start: i.start,
            })
            .collect())
    }

    fn create(&self, gpu: &str, profile: &str, start: u8) -> Result<LiveInstance, MigBackendError> {
        let device = self.device(gpu)?;
        let lib = self.nvml.lib();
        let possible = sym!(lib, nvmlDeviceGetGpuInstancePossiblePlacements_v2);
        let create = sym!(lib, nvmlDeviceCreateGpuInstanceWithPlacement);
        let destroy = sym!(lib, nvmlGpuInstanceDestroy);
        let info = sym!(lib, nvmlGpuInstanceGetInfo);
        let chosen = gi_profiles(&device)
            .into_iter()
            .find(|p| p.name == profile)
            .ok_or_else(|| MigBackendError::UnknownProfile {
                gpu: gpu.to_string(),
                profile: profile.to_string(),
            })?;
        let mut placements = [nvmlGpuInstancePlacement_t { start: 0, size: 0 }; BUFFER];
        let mut count: c_uint = 0;
        // SAFETY: the symbols exist; the device handle is live; the buffer holds more
        // placements than a GPU has memory positions.
        let code = unsafe {
            possible(
                device.handle(),
                chosen.id,
                placements.as_mut_ptr(),
                &mut count,
            )
        };
        check(code, "nvmlDeviceGetGpuInstancePossiblePlacements_v2")?;
        let placements = placements.get(..count as usize).unwrap_or_default();
        let Some(placement) = placements.iter().find(|p| p.start == u32::from(start)) else {
            return Err(MigBackendError::InvalidPlacement {
                gpu: gpu.to_string(),
                profile: profile.to_string(),
                start,
                allowed: placements
                    .iter()
                    .filter_map(|p| u8::try_from(p.start).ok())
                    .collect(),
            });
        };
        let mut gi: nvmlGpuInstance_t = std::ptr::null_mut();
        // SAFETY: as above; `placement` is one NVML itself offered for this profile.
        let code = unsafe { create(device.handle(), chosen.id, placement, &mut gi) };
        if code == nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_RESOURCES {
            return Err(MigBackendError::InsufficientResources {
                gpu: gpu.to_string(),
                profile: profile.to_string(),
                start,
                detail: "NVML_ERROR_INSUFFICIENT_RESOURCES (the positions are taken)".into(),
            });
        }
        check(code, "nvmlDeviceCreateGpuInstanceWithPlacement")?;
        if let Err(error) = self.create_compute_instance(gi, chosen.slice_count) {
            // Leave nothing half-made behind.
            // SAFETY: `gi` was just created and has no compute instance.
            let code = unsafe { destroy(gi) };
            if code != nvmlReturn_enum_NVML_SUCCESS {
                tracing::warn!(
                    gpu,
                    start,
                    code,
                    "cannot destroy a GPU instance whose compute instance failed"
                );
            }
            return Err(error);
        }
        // SAFETY: a zeroed info struct is a valid out-parameter; `gi` is live.
        let mut data: nvmlGpuInstanceInfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        check(unsafe { info(gi, &mut data) }, "nvmlGpuInstanceGetInfo")?;
        let uuid = self.mig_uuids(&device)?.get(&data.id).cloned();
        Ok(LiveInstance {
            profile: profile.to_string(),
            start,
            uuid,
        })
    }

    fn destroy(&self, gpu: &str, start: u8) -> Result<(), MigBackendError> {
        let device = self.device(gpu)?;
        let destroy = sym!(self.nvml.lib(), nvmlGpuInstanceDestroy);
        let instance = self.instance_at(&device, gpu, start)?;
        self.destroy_compute_instances(gpu, &instance)?;
        // SAFETY: the symbol exists; `instance.handle` is a live GPU instance of this GPU.
        let code = unsafe { destroy(instance.handle) };
        if code == nvmlReturn_enum_NVML_ERROR_IN_USE {
            return Err(MigBackendError::InUse {
                gpu: gpu.to_string(),
                start,
            });
        }
        check(code, "nvmlGpuInstanceDestroy")
    }

    fn instance_ids(&self, gpu: &str, start: u8) -> Result<InstanceIds, MigBackendError> {
        let device = self.device(gpu)?;
        let minor = device
            .minor_number()
            .map_err(wrapped("nvmlDeviceGetMinorNumber"))?;
        let instance = self.instance_at(&device, gpu, start)?;
        let ci_of = sym!(self.nvml.lib(), nvmlDeviceGetComputeInstanceId);
        if let Some((_, mig)) = self
            .mig_devices(&device)?
            .into_iter()
            .find(|(gi, _)| *gi == instance.id)
        {
            let mut ci: c_uint = 0;
            // SAFETY: the symbol exists; `mig` is a live MIG device handle.
            let code = unsafe { ci_of(mig.handle(), &mut ci) };
            check(code, "nvmlDeviceGetComputeInstanceId")?;
            return Ok(InstanceIds {
                gpu_minor: Some(minor),
                gpu_instance: instance.id,
                compute_instance: ci,
            });
        }
        // A GPU instance without a compute instance has no MIG device to name.
        Err(MigBackendError::NoInstance {
            gpu: gpu.to_string(),
            start,
        })
    }

    fn condition(&self, gpu: &str) -> Result<GpuCondition, MigBackendError> {
        let device = self.device(gpu)?;
        let mode = device.mig_mode().map_err(wrapped("nvmlDeviceGetMigMode"))?;
        let starts: BTreeMap<u32, u8> = self
            .raw_instances(&device)?
            .into_iter()
            .map(|i| (i.id, i.start))
            .collect();
        let processes = device
            .running_compute_processes()
            .map_err(wrapped("nvmlDeviceGetComputeRunningProcesses"))?
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                // A process in an instance we cannot place counts as on the whole GPU.
                start: p.gpu_instance_id.and_then(|id| starts.get(&id).copied()),
            })
            .collect();
        Ok(GpuCondition {
            pending_mode_change: mode.current != mode.pending,
            processes,
        })
    }

    fn kind(&self) -> &'static str {
        "nvml"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_instances_span_their_gpu_instance() {
        assert_eq!(full_compute_profile(1), Some(0));
        assert_eq!(full_compute_profile(3), Some(2));
        assert_eq!(full_compute_profile(7), Some(4));
        assert_eq!(full_compute_profile(5), None);
    }
}

//! NVML discovery through `nvml-wrapper`: GPUs, model, UUID, PCI bus id, memory, MIG mode and
//! the existing MIG instances (profile, start position, GPU instance id). The safe API lacks
//! GPU instance queries, so those go through raw `nvml-wrapper-sys` calls, each preceded by a
//! check that the driver exports the symbol (the raw wrappers panic on a missing one).
//! Also the XID event source and the recovery probe for `health`. XID events are read with
//! the raw `nvmlEventSetWait_v2`, because the safe event API drops the GPU instance id that
//! tells which MIG slice the error hit.
// The NVML calls the safe wrapper lacks, made through its raw bindings: the agent's only
// `unsafe`, each block with the invariant it relies on.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kubesched_core::inventory::{GpuInfo, MigInfo, MigInstanceInfo, MigMode};
use kubesched_core::mig_name::{self, GPU_INSTANCE_PROFILE_COUNT};
use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::device::Device;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper_sys::bindings::{
    nvmlEventData_t, nvmlEventTypeXidCriticalError, nvmlGpuInstance_t, nvmlGpuInstanceInfo_t,
    nvmlReturn_enum_NVML_ERROR_TIMEOUT, nvmlReturn_enum_NVML_SUCCESS,
};
use tokio::sync::mpsc;

use super::{Discovered, DiscoveryError, GpuInventory};
use crate::devices::{ALL_INSTANCES, HealthProbe, XidEvent};
use crate::discovery::normalise_bus_id;

/// A GPU instance profile the GPU supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GiProfile {
    /// NVML profile id (what creation and placement calls take).
    pub id: u32,
    /// Compute slices.
    pub slice_count: u32,
    /// Named as NVIDIA's device plugin names it (`kubesched_core::mig_name`): slice count, the
    /// profile's share of the GPU's memory as NVIDIA rounds it, and the attribute its NVML
    /// index carries (`1g.18gb`, `1g.23gb+me.all`).
    pub name: String,
}

/// The GPU instance profiles of a device, over every NVML profile index. Indices this GPU or
/// driver does not offer fail `profile_info` and are left out. Without the GPU's total memory
/// no profile can be named: none is returned.
pub(crate) fn gi_profiles(device: &Device<'_>) -> Vec<GiProfile> {
    let total = match device.memory_info() {
        Ok(memory) if memory.total > 0 => memory.total,
        Ok(_) => {
            tracing::warn!("NVML reports no memory for this GPU; its MIG profiles are not named");
            return Vec::new();
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the GPU's total memory; its MIG profiles are not named");
            return Vec::new();
        }
    };
    let mut profiles = Vec::new();
    let mut skipped = Vec::new();
    for index in 0..GPU_INSTANCE_PROFILE_COUNT {
        let Ok(info) = device.profile_info(index) else {
            skipped.push(index);
            continue;
        };
        let gb = mig_name::profile_memory_gb(info.memory_size_mb, total);
        profiles.push(GiProfile {
            id: info.id,
            slice_count: info.slice_count,
            name: mig_name::profile_name(info.slice_count, gb, mig_name::profile_attribute(index)),
        });
    }
    if !skipped.is_empty() {
        tracing::debug!(
            ?skipped,
            "GPU instance profile indices not offered by this GPU or driver"
        );
    }
    profiles
}

/// The node's GPUs as NVML sees them: the [`GpuInventory`] and [`HealthProbe`] of a node with
/// an NVIDIA driver, and the source of its XID events.
pub struct NvmlInventory {
    nvml: Arc<Nvml>,
}

fn nvml_error(call: &'static str) -> impl Fn(NvmlError) -> DiscoveryError {
    move |source| DiscoveryError::NvmlCall { call, source }
}

impl NvmlInventory {
    /// Loads NVML. No library at all is reported as [`DiscoveryError::NoDriver`].
    pub fn open() -> Result<Self, DiscoveryError> {
        match Nvml::init() {
            Ok(nvml) => Ok(NvmlInventory {
                nvml: Arc::new(nvml),
            }),
            Err(NvmlError::LibloadingError(e)) => Err(DiscoveryError::NoDriver(e.to_string())),
            Err(e) => Err(nvml_error("nvmlInit")(e)),
        }
    }

    /// The NVIDIA driver version NVML reports (e.g. `550.54.15`); Err when the query fails.
    pub fn driver_version(&self) -> Result<String, DiscoveryError> {
        self.nvml
            .sys_driver_version()
            .map_err(nvml_error("nvmlSystemGetDriverVersion"))
    }

    /// Profile id -> profile name (`3g.40gb`, `1g.23gb+me.all`).
    fn profile_names(device: &Device<'_>) -> HashMap<u32, String> {
        gi_profiles(device)
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect()
    }

    /// The NVML handle, shared with the MIG backend.
    pub fn nvml(&self) -> Arc<Nvml> {
        self.nvml.clone()
    }

    /// GPU instance id, profile id and start position of a MIG device, via raw NVML.
    fn instance_placement(
        &self,
        parent: &Device<'_>,
        mig: &Device<'_>,
    ) -> Result<(u32, u32, u8), DiscoveryError> {
        let lib = self.nvml.lib();
        let missing = |call: &'static str| DiscoveryError::Nvml {
            call,
            message: "not exported by this driver".into(),
        };
        if lib.nvmlDeviceGetGpuInstanceId.is_err() {
            return Err(missing("nvmlDeviceGetGpuInstanceId"));
        }
        if lib.nvmlDeviceGetGpuInstanceById.is_err() {
            return Err(missing("nvmlDeviceGetGpuInstanceById"));
        }
        if lib.nvmlGpuInstanceGetInfo.is_err() {
            return Err(missing("nvmlGpuInstanceGetInfo"));
        }
        let failed = |call: &'static str, code: u32| DiscoveryError::Nvml {
            call,
            message: format!("NVML return code {code}"),
        };
        let mut gi_id: u32 = 0;
        // SAFETY: the symbols exist (checked above); the handles come from live `Device`s that
        // borrow `self.nvml`, and the out-pointers point at locals of the right types.
        let code = unsafe { lib.nvmlDeviceGetGpuInstanceId(mig.handle(), &mut gi_id) };
        if code != nvmlReturn_enum_NVML_SUCCESS {
            return Err(failed("nvmlDeviceGetGpuInstanceId", code));
        }
        let mut instance: nvmlGpuInstance_t = std::ptr::null_mut();
        // SAFETY: as above.
        let code =
            unsafe { lib.nvmlDeviceGetGpuInstanceById(parent.handle(), gi_id, &mut instance) };
        if code != nvmlReturn_enum_NVML_SUCCESS {
            return Err(failed("nvmlDeviceGetGpuInstanceById", code));
        }
        // SAFETY: a zeroed info struct (plain integers and pointers) is a valid out-parameter.
        let mut info: nvmlGpuInstanceInfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `instance` was just returned by NVML for this device.
        let code = unsafe { lib.nvmlGpuInstanceGetInfo(instance, &mut info) };
        if code != nvmlReturn_enum_NVML_SUCCESS {
            return Err(failed("nvmlGpuInstanceGetInfo", code));
        }
        let start = u8::try_from(info.placement.start)
            .map_err(|_| failed("nvmlGpuInstanceGetInfo", info.placement.start))?;
        Ok((gi_id, info.profileId, start))
    }

    fn mig_info(
        &self,
        device: &Device<'_>,
        gpu_instance_ids: &mut BTreeMap<String, u32>,
    ) -> Result<Option<MigInfo>, DiscoveryError> {
        // GPUs without MIG support answer NotSupported: they are plain GPUs.
        let enabled = match device.mig_mode() {
            Ok(mode) => mode.current == 1,
            Err(NvmlError::NotSupported) => false,
            Err(e) => return Err(nvml_error("nvmlDeviceGetMigMode")(e)),
        };
        if !enabled {
            return Ok(None);
        }
        let names = Self::profile_names(device);
        let max = device
            .mig_device_count()
            .map_err(nvml_error("nvmlDeviceGetMaxMigDeviceCount"))?;
        let mut instances = Vec::new();
        for i in 0..max {
            // Indices without an instance answer NotFound.
            let Ok(mig) = device.mig_device_by_index(i) else {
                continue;
            };
            let uuid = mig.uuid().map_err(nvml_error("nvmlDeviceGetUUID"))?;
            let (gi_id, profile_id, start) = self.instance_placement(device, &mig)?;
            let Some(profile) = names.get(&profile_id) else {
                tracing::warn!(%uuid, profile_id, "MIG instance of an unknown profile; not advertised");
                continue;
            };
            gpu_instance_ids.insert(uuid.clone(), gi_id);
            instances.push(MigInstanceInfo {
                profile: profile.clone(),
                start,
                uuid,
                healthy: true,
            });
        }
        instances.sort_by_key(|i| i.start);
        // Instances created by an administrator: this agent hands out the free ones.
        Ok(Some(MigInfo {
            mode: MigMode::Static,
            instances,
            geometry: None,
            blocked: None,
        }))
    }
}

impl GpuInventory for NvmlInventory {
    fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let count = self
            .nvml
            .device_count()
            .map_err(nvml_error("nvmlDeviceGetCount"))?;
        let mut gpus = Vec::new();
        let mut gpu_instance_ids = BTreeMap::new();
        for index in 0..count {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(nvml_error("nvmlDeviceGetHandleByIndex"))?;
            let pci = device
                .pci_info()
                .map_err(nvml_error("nvmlDeviceGetPciInfo"))?;
            let pci_bus_id = normalise_bus_id(&pci.bus_id)?;
            let memory = device
                .memory_info()
                .map_err(nvml_error("nvmlDeviceGetMemoryInfo"))?;
            gpus.push(GpuInfo {
                index,
                uuid: device.uuid().map_err(nvml_error("nvmlDeviceGetUUID"))?,
                model: device.name().map_err(nvml_error("nvmlDeviceGetName"))?,
                pci_bus_id,
                // Filled from the host topology by the agent.
                numa_node: None,
                memory_mib: memory.total / (1024 * 1024),
                healthy: true,
                mig: self.mig_info(&device, &mut gpu_instance_ids)?,
            });
        }
        Ok(Discovered {
            driver_version: self.driver_version().ok(),
            gpus,
            gpu_instance_ids,
        })
    }

    fn kind(&self) -> &'static str {
        "nvml"
    }
}

impl HealthProbe for NvmlInventory {
    fn gpu_ok(&self, gpu_uuid: &str) -> bool {
        // A GPU that fell off the bus or awaits a reset fails even this simple query.
        self.nvml
            .device_by_uuid(gpu_uuid)
            .and_then(|d| d.memory_info())
            .is_ok()
    }
}

impl NvmlInventory {
    /// Streams critical XID events of every GPU from a dedicated thread (NVML waits block),
    /// each naming the GPU instance it hit when NVML says so.
    pub fn spawn_xid_events(&self) -> Result<mpsc::Receiver<XidEvent>, DiscoveryError> {
        let (tx, rx) = mpsc::channel(64);
        let nvml = self.nvml.clone();
        std::thread::Builder::new()
            .name("nvml-events".into())
            .spawn(move || xid_loop(&nvml, &tx))
            .map_err(DiscoveryError::EventThread)?;
        Ok(rx)
    }
}

fn xid_loop(nvml: &Nvml, tx: &mpsc::Sender<XidEvent>) {
    let mut set = match nvml.create_event_set() {
        Ok(set) => set,
        Err(error) => {
            tracing::warn!(%error, "cannot create an NVML event set; XID health checks are off");
            return;
        }
    };
    let count = nvml.device_count().unwrap_or(0);
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        let supported = device
            .supported_event_types()
            .unwrap_or(EventTypes::empty());
        if !supported.contains(EventTypes::CRITICAL_XID_ERROR) {
            continue;
        }
        set = match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!(index, error = %error.error, "cannot register XID events; XID health checks are off");
                return;
            }
        };
    }
    let Ok(wait) = nvml.lib().nvmlEventSetWait_v2.as_ref().copied() else {
        tracing::warn!("this driver lacks nvmlEventSetWait_v2; XID health checks are off");
        return;
    };
    // SAFETY: the handle is only used while `set` is alive (it lives to the end of this
    // function) and is never freed through another `EventSet`.
    let handle = unsafe { set.handle() };
    loop {
        // SAFETY: zeroed plain integers and a null device handle are a valid out-parameter.
        let mut data: nvmlEventData_t = unsafe { std::mem::zeroed() };
        // SAFETY: the symbol exists (checked above), `handle` is a live event set and `data`
        // is a properly typed local.
        let code = unsafe { wait(handle, &mut data, 5000) };
        if code == nvmlReturn_enum_NVML_ERROR_TIMEOUT {
            if tx.is_closed() {
                return;
            }
            continue;
        }
        if code != nvmlReturn_enum_NVML_SUCCESS {
            tracing::warn!(code, "waiting for NVML events failed; retrying");
            std::thread::sleep(Duration::from_secs(5));
            continue;
        }
        let raw = RawEvent {
            event_type: data.eventType,
            event_data: data.eventData,
            gpu_instance_id: data.gpuInstanceId,
        };
        // SAFETY: NVML filled `device` with the handle of a GPU registered in this set; the
        // `Device` borrows `nvml`, which outlives it.
        let device = unsafe { Device::new(data.device, nvml) };
        let Ok(gpu_uuid) = device.uuid() else {
            continue;
        };
        let Some(event) = xid_event(gpu_uuid, raw) else {
            continue;
        };
        if tx.blocking_send(event).is_err() {
            return;
        }
    }
}

/// An NVML event as `nvmlEventSetWait_v2` reports it, reduced to plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    /// NVML event type bits (`nvmlEventType*`); only XID critical errors become health events.
    pub event_type: u64,
    /// The XID number for XID events.
    pub event_data: u64,
    /// GPU instance the event happened in; `0xFFFFFFFF` for the whole GPU.
    pub gpu_instance_id: u32,
}

/// The health event for a raw NVML event, `None` for events that are not critical XIDs.
/// An event naming a GPU instance concerns that MIG slice only.
pub fn xid_event(gpu_uuid: String, raw: RawEvent) -> Option<XidEvent> {
    if raw.event_type & u64::from(nvmlEventTypeXidCriticalError) == 0 {
        return None;
    }
    Some(XidEvent {
        gpu_uuid,
        gpu_instance_id: (raw.gpu_instance_id != ALL_INSTANCES).then_some(raw.gpu_instance_id),
        xid: raw.event_data,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use kubesched_core::inventory::{GpuInfo, MigInfo, MigInstanceInfo, MigMode};
    use kubesched_core::request::ResourceNames;

    use super::*;
    use crate::devices::HealthTracker;
    use crate::devices::ResourceManager;
    use crate::devices::plan;

    fn xid(xid: u64, gpu_instance_id: u32) -> RawEvent {
        RawEvent {
            event_type: u64::from(nvmlEventTypeXidCriticalError),
            event_data: xid,
            gpu_instance_id,
        }
    }

    #[test]
    fn raw_events_map_to_slice_or_whole_gpu_xids() {
        assert_eq!(
            xid_event("GPU-a".into(), xid(94, 3)),
            Some(XidEvent {
                gpu_uuid: "GPU-a".into(),
                gpu_instance_id: Some(3),
                xid: 94
            })
        );
        assert_eq!(
            xid_event("GPU-a".into(), xid(79, 0xFFFF_FFFF)).map(|e| e.gpu_instance_id),
            Some(None),
            "the whole-GPU marker names no instance"
        );
        let ecc = RawEvent {
            event_type: 0x2, // double-bit ECC: not an XID
            event_data: 0,
            gpu_instance_id: 0xFFFF_FFFF,
        };
        assert_eq!(xid_event("GPU-a".into(), ecc), None);
    }

    /// An XID on one slice, attributed through the discovered GPU instance ids, marks only
    /// that slice unhealthy; its sibling on the same GPU keeps serving.
    #[test]
    fn an_xid_on_one_slice_marks_only_that_slice() {
        let instance = |profile: &str, start: u8, uuid: &str| MigInstanceInfo {
            profile: profile.into(),
            start,
            uuid: uuid.into(),
            healthy: true,
        };
        let gpus = vec![GpuInfo {
            index: 0,
            uuid: "GPU-a".into(),
            model: "H100-80GB".into(),
            pci_bus_id: "0000:3b:00.0".into(),
            numa_node: Some(0),
            memory_mib: 81559,
            healthy: true,
            mig: Some(MigInfo {
                mode: MigMode::Static,
                instances: vec![
                    instance("3g.40gb", 0, "MIG-left"),
                    instance("3g.40gb", 4, "MIG-right"),
                ],
                geometry: None,
                blocked: None,
            }),
        }];
        // NVML numbers GPU instances itself; discovery records them by MIG UUID.
        let ids = BTreeMap::from([("MIG-left".to_string(), 1), ("MIG-right".to_string(), 2)]);
        let manager = Arc::new(ResourceManager::new(plan(
            &gpus,
            &ResourceNames::default(),
            &ids,
        )));
        let mut tracker = HealthTracker::new(manager.clone(), Duration::from_secs(60));
        let event = xid_event("GPU-a".into(), xid(94, 2)).unwrap();
        assert_eq!(
            tracker.on_xid(&event, Instant::now()),
            vec!["MIG-right".to_string()]
        );
        assert!(manager.lookup("MIG-left").unwrap().healthy);
        assert!(!manager.lookup("MIG-right").unwrap().healthy);
    }
}

//! A node's live occupancy: its GPUs (plain or MIG, static or dynamic), free
//! CPU and memory, and NUMA nodes. Built from an inventory document; the
//! placements of running pods are then applied on top (see `placement`).

use std::sync::Arc;

use crate::catalogue::{self, CatalogueError, MigGeometry};
use crate::inventory::{GpuInfo, InvalidInventory, MigMode, NodeInventory};
use crate::mig::{MigError, MigGpu};
use crate::numa::{NumaState, TopologyPolicy};
use crate::request::GpuDemand;

/// Capacity of one GPU in thousandths.
pub const GPU_MILLI: u32 = 1000;

/// One GPU and what is still free on it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuState {
    /// GPU index on the node, as NVML numbers it.
    pub index: u32,
    /// GPU UUID (`GPU-...`), its device id for the kubelet.
    pub uuid: Arc<str>,
    /// GPU model name as the inventory reports it (catalogue name or NVML's).
    pub model: Arc<str>,
    /// NUMA node the GPU is attached to; `None` when it has no NUMA affinity.
    pub numa: Option<u32>,
    /// Whether the GPU can take new pods: healthy and, in MIG mode, not blocked by the agent.
    pub healthy: bool,
    /// What is in use on the GPU: a milli-GPU count, or its MIG instances.
    pub slots: GpuSlots,
}

/// How a GPU is divided among pods.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuSlots {
    /// A GPU without MIG: thousandths in use (1000 once taken whole).
    Plain {
        /// Milli-GPU allocated to pods (0 to 1000).
        used_milli: u32,
    },
    /// A GPU in MIG mode, handed out by MIG instance.
    Mig(MigSlots),
}

/// A MIG GPU. `gpu` holds every live instance: in static mode the
/// pre-created ones, in dynamic mode the ones created for pods (possibly
/// before the pod is known here). `allocated` marks, by start position, the
/// instances handed to pods.
#[derive(Debug, Clone, PartialEq)]
pub struct MigSlots {
    /// Whether instances are pre-created (static) or created for pods (dynamic).
    pub mode: MigMode,
    /// Occupancy map of the GPU's live MIG instances.
    pub gpu: MigGpu,
    /// Bit `s` set: the instance starting at `s` is held by a pod.
    pub allocated: u8,
    /// Bit `s` set: the static instance starting at `s` is unhealthy.
    pub unhealthy: u8,
    /// Device UUIDs of the static instances, by start position.
    pub uuids: Vec<(u8, Arc<str>)>,
}

impl MigSlots {
    /// Start positions of free, healthy static instances of `profile`.
    pub fn free_static(&self, profile: usize) -> impl Iterator<Item = u8> + '_ {
        self.gpu
            .slots()
            .iter()
            .filter(move |s| {
                s.profile == profile && (self.allocated | self.unhealthy) & (1 << s.start) == 0
            })
            .map(|s| s.start)
    }

    /// Device UUID of the static instance starting at `start`; `None` if no static instance
    /// starts there.
    pub fn uuid_at(&self, start: u8) -> Option<&Arc<str>> {
        self.uuids.iter().find(|(s, _)| *s == start).map(|(_, u)| u)
    }

    /// Memory positions not given to any pod (static: not under an allocated instance).
    pub fn free_positions(&self) -> u32 {
        self.free_mask().count_ones()
    }

    /// Bit `p` set: memory position `p` is not given to any pod (dynamic: under no live
    /// instance; static: under no allocated instance).
    pub fn free_mask(&self) -> u8 {
        let geometry = self.gpu.geometry();
        let held = match self.mode {
            MigMode::Dynamic => self.gpu.used_mask(),
            MigMode::Static => self
                .gpu
                .slots()
                .iter()
                .filter(|s| self.allocated & (1 << s.start) != 0)
                .filter_map(|s| geometry.profiles.get(s.profile).map(|p| p.mask_at(s.start)))
                .fold(0u8, |a, m| a | m),
        };
        geometry.full_mask() & !held
    }
}

impl GpuState {
    /// A plain GPU (no MIG), free.
    pub fn plain(index: u32, uuid: &str, model: &str, numa: Option<u32>) -> Self {
        GpuState {
            index,
            uuid: uuid.into(),
            model: model.into(),
            numa,
            healthy: true,
            slots: GpuSlots::Plain { used_milli: 0 },
        }
    }

    /// A dynamic-MIG GPU, empty.
    pub fn dynamic_mig(
        index: u32,
        uuid: &str,
        model: &str,
        numa: Option<u32>,
        geometry: Arc<MigGeometry>,
    ) -> Self {
        GpuState {
            index,
            uuid: uuid.into(),
            model: model.into(),
            numa,
            healthy: true,
            slots: GpuSlots::Mig(MigSlots {
                mode: MigMode::Dynamic,
                gpu: MigGpu::new(geometry),
                allocated: 0,
                unhealthy: 0,
                uuids: Vec::new(),
            }),
        }
    }

    /// Unallocated thousandths of this GPU (0 when unhealthy: it cannot be used).
    pub fn free_milli(&self) -> u32 {
        if !self.healthy {
            return 0;
        }
        match &self.slots {
            GpuSlots::Plain { used_milli } => GPU_MILLI.saturating_sub(*used_milli),
            GpuSlots::Mig(m) => m.free_positions() * m.gpu.geometry().milli_per_position(),
        }
    }

    /// Whether the GPU is in MIG mode.
    pub fn is_mig(&self) -> bool {
        matches!(self.slots, GpuSlots::Mig(_))
    }
}

/// A node's live occupancy: what is still free on it for placement.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// Name of the Kubernetes node.
    pub name: String,
    /// Allocatable CPU not yet requested by pods, in millicores.
    pub cpu_free_milli: u64,
    /// Allocatable memory not yet requested by pods, in MiB.
    pub memory_free_mib: u64,
    /// Allocatable CPU of the node, in millicores (what `cpu_free_milli` starts from).
    pub cpu_allocatable_milli: u64,
    /// Allocatable memory of the node, in MiB.
    pub memory_allocatable_mib: u64,
    /// The node's GPUs, in inventory order; placements refer to them by position here.
    pub gpus: Vec<GpuState>,
    /// Free CPUs and memory per NUMA node; empty when the node reports no NUMA layout.
    pub numa: Vec<NumaState>,
    /// The kubelet's Topology Manager policy, which decides NUMA admission.
    pub policy: TopologyPolicy,
    /// How many running pods of each GPU demand the node holds (for
    /// affinity-style policies and reports).
    pub classes: Vec<(GpuDemand, u32)>,
}

/// Why a node's state could not be built from its inventory.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NodeError {
    /// The inventory breaks one of its rules.
    #[error(transparent)]
    Inventory(#[from] InvalidInventory),
    /// A MIG GPU has no geometry (its model is unknown or not MIG-capable), or an instance's
    /// profile is not in the GPU's geometry.
    #[error("GPU {gpu}: {source}")]
    Catalogue {
        /// Index of the GPU concerned.
        gpu: u32,
        /// The catalogue lookup that failed.
        source: CatalogueError,
    },
    /// A MIG instance listed in the inventory cannot be placed on its GPU (invalid start,
    /// overlap or a per-GPU limit).
    #[error("GPU {gpu}: instance {profile} at {start}: {source}")]
    Instance {
        /// Index of the GPU holding the instance.
        gpu: u32,
        /// Profile name of the instance.
        profile: String,
        /// Memory position the instance starts at.
        start: u8,
        /// Why the instance does not fit.
        source: MigError,
    },
}

impl NodeState {
    /// A node with the given allocatable CPU and memory and no GPUs yet.
    pub fn new(name: impl Into<String>, cpu_milli: u64, memory_mib: u64) -> Self {
        NodeState {
            name: name.into(),
            cpu_free_milli: cpu_milli,
            memory_free_mib: memory_mib,
            cpu_allocatable_milli: cpu_milli,
            memory_allocatable_mib: memory_mib,
            gpus: Vec::new(),
            numa: Vec::new(),
            policy: TopologyPolicy::None,
            classes: Vec::new(),
        }
    }

    /// Builds the empty state of a node from its inventory and allocatable
    /// CPU/memory (which the Node object, not the agent, reports).
    pub fn from_inventory(
        inv: &NodeInventory,
        cpu_milli: u64,
        memory_mib: u64,
    ) -> Result<Self, NodeError> {
        // Documents from outside are checked once here too, whoever parsed them.
        inv.validate()?;
        let mut node = NodeState::new(inv.node.clone(), cpu_milli, memory_mib);
        node.policy = inv.topology_policy;
        node.numa = inv
            .numa_nodes
            .iter()
            .map(|n| NumaState {
                id: n.id,
                cpus_free: n.free_cpus.as_ref().map_or(n.cpus.len(), Vec::len) as u32,
                cpus_total: n.cpus.len() as u32,
                memory_free_mib: n.free_memory_mib.unwrap_or(n.memory_mib),
            })
            .collect();
        for g in &inv.gpus {
            node.gpus.push(gpu_from_info(g)?);
        }
        Ok(node)
    }

    /// Total GPU capacity of the node, in milli-GPU (1000 per GPU).
    pub fn capacity_milli(&self) -> u64 {
        self.gpus.len() as u64 * u64::from(GPU_MILLI)
    }

    /// GPU share not allocated to any pod, in milli-GPU (unhealthy GPUs count none).
    pub fn free_milli(&self) -> u64 {
        self.gpus.iter().map(|g| u64::from(g.free_milli())).sum()
    }

    /// Counts one more (or, with `delta` -1, one fewer) pod of `demand`.
    pub(crate) fn count_class(&mut self, demand: &GpuDemand, delta: i32) {
        if demand.is_none() {
            return;
        }
        match self.classes.iter_mut().position(|(d, _)| d == demand) {
            Some(i) => {
                let n = &mut self.classes[i].1;
                *n = n.saturating_add_signed(delta);
                if *n == 0 {
                    self.classes.swap_remove(i);
                }
            }
            None if delta > 0 => self.classes.push((demand.clone(), delta as u32)),
            None => {}
        }
    }
}

fn gpu_from_info(g: &GpuInfo) -> Result<GpuState, NodeError> {
    let Some(mig) = &g.mig else {
        let mut s = GpuState::plain(g.index, &g.uuid, &g.model, g.numa_node);
        s.healthy = g.healthy;
        return Ok(s);
    };
    let geometry = match &mig.geometry {
        // Validated with the inventory.
        Some(geo) => Arc::new(geo.clone()),
        None => catalogue::mig_geometry(&g.model).map_err(|source| NodeError::Catalogue {
            gpu: g.index,
            source,
        })?,
    };
    let mut state = GpuState::dynamic_mig(g.index, &g.uuid, &g.model, g.numa_node, geometry);
    // A blocked GPU is not ours to place on, whatever its health.
    state.healthy = g.healthy && mig.blocked.is_none();
    if let GpuSlots::Mig(slots) = &mut state.slots {
        slots.mode = mig.mode;
        // Live instances occupy their positions in both modes: in dynamic
        // mode they are the ones the agent created (pods claim them on apply).
        for inst in &mig.instances {
            let err = |source| NodeError::Instance {
                gpu: g.index,
                profile: inst.profile.clone(),
                start: inst.start,
                source,
            };
            let (idx, _) = slots
                .gpu
                .geometry()
                .profile(&inst.profile)
                .map_err(|source| NodeError::Catalogue {
                    gpu: g.index,
                    source,
                })?;
            slots.gpu.place(idx, inst.start).map_err(err)?;
            slots.uuids.push((inst.start, inst.uuid.as_str().into()));
            if !inst.healthy {
                slots.unhealthy |= 1 << inst.start;
            }
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::NodeInventory;

    #[test]
    fn static_mig_counts_only_unallocated_positions_as_free() {
        let inv = NodeInventory::from_json(
            r#"{"version":1,"node":"n","agentVersion":"t","gpus":[{"index":0,"uuid":"G0","model":"A100-80GB","pciBusId":"0000:01:00.0","memoryMib":1,"healthy":true,
            "mig":{"mode":"static","instances":[{"profile":"3g.40gb","start":0,"uuid":"M0"},{"profile":"3g.40gb","start":4,"uuid":"M1","healthy":false}]}}]}"#,
        )
        .unwrap();
        let mut node = NodeState::from_inventory(&inv, 8000, 1024).unwrap();
        assert_eq!(node.free_milli(), 1000);
        let GpuSlots::Mig(m) = &mut node.gpus[0].slots else {
            panic!("mig expected")
        };
        assert_eq!(m.free_static(0).count(), 0, "profile 0 is 1g.10gb");
        let three = m.gpu.geometry().profile("3g.40gb").unwrap().0;
        assert_eq!(
            m.free_static(three).collect::<Vec<_>>(),
            vec![0],
            "the unhealthy one is not offered"
        );
        m.allocated |= 1;
        assert_eq!(node.free_milli(), 500);
    }

    #[test]
    fn overlapping_inventory_instances_are_an_error() {
        let inv = NodeInventory::from_json(
            r#"{"version":1,"node":"n","agentVersion":"t","gpus":[{"index":0,"uuid":"G0","model":"H100-80GB","pciBusId":"0000:01:00.0","memoryMib":1,"healthy":true,
            "mig":{"mode":"static","instances":[{"profile":"4g.40gb","start":0,"uuid":"M0"},{"profile":"1g.10gb","start":2,"uuid":"M1"}]}}]}"#,
        )
        .unwrap();
        let err = NodeState::from_inventory(&inv, 0, 0).unwrap_err();
        assert!(matches!(err, NodeError::Instance { .. }), "{err}");
    }

    #[test]
    fn unknown_mig_model_is_an_error() {
        let inv = NodeInventory::from_json(
            r#"{"version":1,"node":"n","agentVersion":"t","gpus":[{"index":0,"uuid":"G0","model":"Z9000","pciBusId":"x","memoryMib":1,"healthy":true,"mig":{"mode":"dynamic"}}]}"#,
        )
        .unwrap();
        assert!(NodeState::from_inventory(&inv, 0, 0).is_err());
    }
}

//! The built-in scenario `simulate` runs when no trace is given: a small
//! GPU cluster (H100 and A100 nodes in MIG mode, L40S nodes for whole-GPU
//! work; 224 CPUs and two NUMA nodes each) and a synthetic inference mix, so the main
//! command works on any machine with no data and no cluster.

use kubesched_core::catalogue;
use kubesched_core::inventory::MigMode;
use kubesched_core::node::{GpuSlots, GpuState, NodeState};
use kubesched_core::numa::{NumaState, TopologyPolicy};
use kubesched_core::request::{GpuDemand, PodRequest};
use kubesched_core::rng::SplitMix64;

use super::Scenario;

/// Static layouts an administrator might have cut (profile, start), cycled
/// over the GPUs in static mode.
const STATIC_LAYOUTS: [&[(&str, u8)]; 3] = [
    &[
        ("1g.10gb", 0),
        ("1g.10gb", 1),
        ("2g.20gb", 2),
        ("3g.40gb", 4),
    ],
    &[("3g.40gb", 0), ("3g.40gb", 4)],
    &[
        ("1g.10gb", 0),
        ("1g.10gb", 1),
        ("1g.10gb", 2),
        ("1g.10gb", 3),
        ("1g.10gb", 4),
        ("1g.10gb", 5),
        ("1g.10gb", 6),
    ],
];

/// (request, relative frequency): an inference-heavy mix.
pub fn mix() -> Vec<(PodRequest, u32)> {
    let mig = |p: &str, count, cpu, exclusive| PodRequest {
        exclusive_cpus: exclusive,
        ..PodRequest::cpu_only(cpu, 16_384).with_gpu(GpuDemand::Mig {
            profile: p.into(),
            count,
        })
    };
    let whole = |count, cpu, exclusive| PodRequest {
        exclusive_cpus: exclusive,
        ..PodRequest::cpu_only(cpu, 65_536).with_gpu(GpuDemand::Whole { count })
    };
    vec![
        (mig("1g.10gb", 1, 2000, false), 30),
        (mig("2g.20gb", 1, 4000, false), 15),
        (mig("3g.40gb", 1, 8000, true), 15),
        (mig("4g.40gb", 1, 8000, true), 5),
        (mig("7g.80gb", 1, 16_000, true), 8),
        (mig("1g.10gb", 2, 4000, false), 4),
        (whole(1, 8000, false), 6),
        (whole(2, 16_000, true), 2),
        (PodRequest::cpu_only(4000, 8192), 6),
    ]
}

/// One GPU of `model`: plain, or in MIG mode `mig` (static GPUs get one of
/// the `STATIC_LAYOUTS`, chosen by index, so a cluster mixes them).
pub fn gpu(
    index: u32,
    uuid: &str,
    model: &str,
    numa: Option<u32>,
    mig: Option<MigMode>,
) -> GpuState {
    let (Some(mode), Ok(geo)) = (mig, catalogue::mig_geometry(model)) else {
        return GpuState::plain(index, uuid, model, numa);
    };
    let mut s = GpuState::dynamic_mig(index, uuid, model, numa, geo.clone());
    if mode == MigMode::Static {
        // The layouts are valid on every 8-position geometry; others skip what does not fit.
        let placements: Vec<(usize, u8)> = STATIC_LAYOUTS[index as usize % STATIC_LAYOUTS.len()]
            .iter()
            .filter_map(|(profile, start)| geo.profile(profile).ok().map(|(idx, _)| (idx, *start)))
            .collect();
        cut_static(&mut s, &placements);
    }
    s
}

/// Turns a MIG GPU static, with instances at `placements` (profile index, start), named
/// `MIG-<GPU UUID>-<start>`; a placement that does not fit is skipped.
pub fn cut_static(gpu: &mut GpuState, placements: &[(usize, u8)]) {
    let uuid = gpu.uuid.clone();
    if let GpuSlots::Mig(m) = &mut gpu.slots {
        m.mode = MigMode::Static;
        for &(idx, start) in placements {
            if m.gpu.place(idx, start).is_ok() {
                m.uuids
                    .push((start, format!("MIG-{uuid}-{start}").as_str().into()));
            }
        }
    }
}

/// One node of the built-in scenario: 224 CPUs on two NUMA nodes, `gpus` GPUs of
/// `model` split evenly between them.
pub fn node(
    name: String,
    model: &str,
    gpus: u32,
    policy: TopologyPolicy,
    mig: Option<MigMode>,
) -> NodeState {
    sized_node(name, model, gpus, (224, 2 << 20), policy, mig)
}

/// A node of `cpus_mib.0` CPUs and `cpus_mib.1` MiB of memory, both split evenly over two
/// NUMA nodes, and `gpus` GPUs of `model` split evenly between them.
pub fn sized_node(
    name: String,
    model: &str,
    gpus: u32,
    (cpus, memory_mib): (u32, u64),
    policy: TopologyPolicy,
    mig: Option<MigMode>,
) -> NodeState {
    let mut n = NodeState::new(name.clone(), u64::from(cpus) * 1000, memory_mib);
    n.policy = policy;
    n.numa = (0..2)
        .map(|id| NumaState {
            id,
            cpus_free: cpus / 2,
            cpus_total: cpus / 2,
            memory_free_mib: memory_mib / 2,
        })
        .collect();
    for g in 0..gpus {
        let numa = Some(g * 2 / gpus.max(1));
        let state = gpu(g, &format!("GPU-{name}-{g}"), model, numa, mig);
        n.gpus.push(state);
    }
    n
}

/// The built-in scenario with MIG GPUs in `mode`; `pods` original requests.
pub fn scenario(mode: MigMode, pods: usize) -> Scenario {
    let mut nodes = Vec::new();
    for i in 0..24 {
        nodes.push(node(
            format!("h100-{i:02}"),
            "H100-80GB",
            8,
            TopologyPolicy::SingleNumaNode,
            Some(mode),
        ));
    }
    for i in 0..8 {
        nodes.push(node(
            format!("a100-{i:02}"),
            "A100-80GB",
            8,
            TopologyPolicy::BestEffort,
            Some(mode),
        ));
    }
    for i in 0..12 {
        nodes.push(node(
            format!("l40s-{i:02}"),
            "L40S",
            8,
            TopologyPolicy::SingleNumaNode,
            None,
        ));
    }
    let mix = mix();
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut rng = SplitMix64::new(2026);
    let requests: Vec<PodRequest> = (0..pods)
        .map(|_| {
            let mut draw = rng.below(total as usize) as u32;
            let mut chosen = &mix[0].0;
            for (req, w) in &mix {
                if draw < *w {
                    chosen = req;
                    break;
                }
                draw -= w;
            }
            chosen.clone()
        })
        .collect();
    let name = match mode {
        MigMode::Static => "built-in (static MIG)",
        MigMode::Dynamic => "built-in (dynamic MIG)",
    };
    Scenario::from_trace(name, nodes, requests, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_cluster_has_the_declared_shape() {
        let s = scenario(MigMode::Static, 100);
        assert_eq!(s.nodes.len(), 44);
        assert_eq!(s.gpu_count(), 24 * 8 + 8 * 8 + 12 * 8);
        assert_eq!(s.pods.len(), 100);
        // Static layouts really were cut.
        let GpuSlots::Mig(m) = &s.nodes[0].gpus[0].slots else {
            panic!("MIG expected")
        };
        assert_eq!(m.gpu.slots().len(), 4);
        assert_eq!(m.uuids.len(), 4);
        assert!(s.workload.types.len() >= 8);
    }
}

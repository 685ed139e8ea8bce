//! Property tests of placement, fragmentation and scoring invariants.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubesched_core::catalogue::mig_geometry;
use kubesched_core::fragmentation::{
    NodeFrag, Workload, cluster_fragmentation, node_fragmentation,
};
use kubesched_core::inventory::MigMode;
use kubesched_core::mig::longest_free_run;
use kubesched_core::node::{GpuSlots, GpuState, NodeState};
use kubesched_core::placement::{self, DeviceChoice};
use kubesched_core::request::{GpuDemand, PodRequest};
use kubesched_core::scoring::{self, ScoreContext};
use proptest::prelude::*;

fn demand() -> impl Strategy<Value = GpuDemand> {
    prop_oneof![
        Just(GpuDemand::None),
        (1u32..1000).prop_map(|milli| GpuDemand::Share { milli }),
        (1u32..4).prop_map(|count| GpuDemand::Whole { count }),
        (
            prop::sample::select(vec![
                "1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"
            ]),
            1u32..3
        )
            .prop_map(|(p, count)| GpuDemand::Mig {
                profile: p.to_string(),
                count
            }),
    ]
}

fn request() -> impl Strategy<Value = PodRequest> {
    (0u64..16_000, 0u64..4096, demand())
        .prop_map(|(cpu, mem, d)| PodRequest::cpu_only(cpu, mem).with_gpu(d))
}

/// A node with plain and dynamic-MIG GPUs, partly filled by random pods.
fn node() -> impl Strategy<Value = NodeState> {
    (
        1usize..4,
        0usize..4,
        prop::collection::vec(request(), 0..10),
    )
        .prop_map(|(plain, mig, pods)| {
            let mut n = NodeState::new("n", 32_000, 65_536);
            for i in 0..plain {
                n.gpus.push(GpuState::plain(
                    i as u32,
                    &format!("P{i}"),
                    "L4",
                    Some(i as u32 % 2),
                ));
            }
            for i in 0..mig {
                let idx = (plain + i) as u32;
                n.gpus.push(GpuState::dynamic_mig(
                    idx,
                    &format!("M{i}"),
                    "H100-80GB",
                    Some(idx % 2),
                    mig_geometry("H100-80GB").unwrap(),
                ));
            }
            for pod in pods {
                if let Ok(c) = placement::candidates(&n, &pod) {
                    placement::apply(&mut n, &pod, &c[0]).unwrap();
                }
            }
            n
        })
}

fn workload() -> impl Strategy<Value = Workload> {
    prop::collection::vec((request(), 1u64..10), 1..6).prop_map(Workload::from_counts)
}

proptest! {
    #[test]
    fn every_candidate_applies_and_releases_cleanly(n in node(), req in request()) {
        if let Ok(cands) = placement::candidates(&n, &req) {
            prop_assert!(!cands.is_empty());
            for c in cands {
                let mut m = n.clone();
                placement::apply(&mut m, &req, &c).unwrap();
                prop_assert!(m.free_milli() <= n.free_milli());
                placement::release(&mut m, &req, &c).unwrap();
                prop_assert_eq!(&m, &n);
            }
        }
    }

    #[test]
    fn no_slot_is_ever_shared(n in node(), reqs in prop::collection::vec(request(), 1..12)) {
        let mut m = n;
        for req in reqs {
            let Ok(c) = placement::candidates(&m, &req) else { continue };
            placement::apply(&mut m, &req, &c[0]).unwrap();
            for g in &m.gpus {
                match &g.slots {
                    GpuSlots::Plain { used_milli } => prop_assert!(*used_milli <= 1000),
                    GpuSlots::Mig(s) => {
                        let mut seen = 0u8;
                        for slot in s.gpu.slots() {
                            let mask = s.gpu.geometry().profiles[slot.profile].mask_at(slot.start);
                            prop_assert_eq!(seen & mask, 0);
                            seen |= mask;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn incremental_delta_equals_recomputation(n in node(), w in workload(), req in request()) {
        let frag = NodeFrag::new(&n, &w);
        prop_assert!((frag.value(n.cpu_free_milli, n.memory_free_mib, &w) - node_fragmentation(&n, &w)).abs() < 1e-6);
        if let Ok(cands) = placement::candidates(&n, &req) {
            for c in cands {
                let mut after = n.clone();
                placement::apply(&mut after, &req, &c).unwrap();
                let fast = frag.value_after(&n, &w, &req, &c).unwrap();
                prop_assert!((fast - node_fragmentation(&after, &w)).abs() < 1e-6, "fast {} slow {}", fast, node_fragmentation(&after, &w));
            }
        }
    }

    #[test]
    fn fragmentation_is_bounded_by_idle_share(n in node(), w in workload()) {
        let f = node_fragmentation(&n, &w);
        prop_assert!(f >= 0.0);
        prop_assert!(f <= n.free_milli() as f64 + 1e-6);
        let c = cluster_fragmentation([&n], &w);
        prop_assert!((c.fragment_milli - f).abs() < 1e-6);
        let by_cause: f64 = c.by_cause.values().sum();
        prop_assert!((by_cause - f).abs() < 1e-6);
    }

    #[test]
    fn policies_choose_a_feasible_candidate(n in node(), w in workload(), req in request(), seed in any::<u64>()) {
        let ctx = ScoreContext { workload: &w, seed, frag: None };
        for name in scoring::policy_names() {
            let policy = scoring::by_name(name).unwrap();
            match policy.choose(&n, &req, &ctx) {
                Ok(choice) => {
                    prop_assert!(choice.score.is_finite());
                    prop_assert!(!choice.reason.is_empty());
                    let cands = placement::candidates(&n, &req).unwrap();
                    prop_assert!(cands.contains(&choice.candidate));
                    if let DeviceChoice::Share { gpu, .. } = choice.candidate.choice {
                        prop_assert!(gpu < n.gpus.len());
                    }
                }
                Err(unfit) => prop_assert!(placement::fits(&n, &req).is_err(), "{} said {}", name, unfit),
            }
        }
    }

    /// The extender shares one evaluation among nodes in equal states: that is exact only if
    /// a policy that says it ignores identity chooses the same on another node's name and
    /// device UUIDs.
    #[test]
    fn policies_ignoring_identity_choose_alike_on_renamed_nodes(
        n in node(), w in workload(), req in request(), seed in any::<u64>()
    ) {
        let mut renamed = n.clone();
        renamed.name = "another-node".into();
        for gpu in &mut renamed.gpus {
            gpu.uuid = format!("GPU-other-{}", gpu.index).into();
        }
        let ctx = ScoreContext { workload: &w, seed, frag: None };
        for name in scoring::policy_names() {
            let policy = scoring::by_name(name).unwrap();
            if policy.uses_node_identity() {
                continue;
            }
            prop_assert_eq!(
                policy.choose(&n, &req, &ctx),
                policy.choose(&renamed, &req, &ctx),
                "{}", name
            );
        }
    }

    #[test]
    fn production_never_prefers_a_worse_fragmentation_step_or_a_costlier_mig_layout(
        n in node(), w in workload(), req in request()
    ) {
        let ctx = ScoreContext { workload: &w, seed: 0, frag: None };
        let policy = scoring::by_name("kubesched").unwrap();
        // FGD's 0..100 score in whole steps, as the policy counts it.
        let step = |after: f64, before: f64| (100.0 / (1.0 + ((after - before) / 1000.0).exp())).floor();
        if let (Ok(choice), Ok(cands)) = (policy.choose(&n, &req, &ctx), placement::candidates(&n, &req)) {
            let frag = NodeFrag::new(&n, &w);
            let before = frag.value(n.cpu_free_milli, n.memory_free_mib, &w);
            let chosen = step(frag.value_after(&n, &w, &req, &choice.candidate).unwrap(), before);
            let chosen_cost = layout_cost(&n, &choice.candidate.choice);
            // Other candidates with the same NUMA alignment never cost the GPU less (MIG:
            // its longest free run, then its legal placements) and, at equal cost, never
            // reach a better fragmentation step.
            for c in cands.iter().filter(|c| c.numa.is_some() == choice.candidate.numa.is_some()) {
                let cost = layout_cost(&n, &c.choice);
                prop_assert!(chosen_cost <= cost, "{chosen_cost:?} chosen, {cost:?} offered");
                if cost == chosen_cost {
                    prop_assert!(chosen >= step(frag.value_after(&n, &w, &req, c).unwrap(), before));
                }
            }
        }
    }
}

/// What a MIG choice costs the GPUs it touches: (longest free run lost, legal placements
/// lost); nothing for other choices.
fn layout_cost(node: &NodeState, choice: &DeviceChoice) -> (u32, u32) {
    let DeviceChoice::Mig(picks) = choice else {
        return (0, 0);
    };
    let mut touched: Vec<usize> = picks.iter().map(|p| p.gpu).collect();
    touched.sort_unstable();
    touched.dedup();
    let room = |g: &GpuState| match &g.slots {
        GpuSlots::Mig(m) => {
            let placements: usize = (0..m.gpu.geometry().profiles.len())
                .filter(|&i| !m.gpu.geometry().profiles[i].is_media_extension())
                .map(|i| match m.mode {
                    MigMode::Dynamic => m.gpu.placements(i).len(),
                    MigMode::Static => m.free_static(i).count(),
                })
                .sum();
            (longest_free_run(m.free_mask()), placements as u32)
        }
        GpuSlots::Plain { .. } => (0, 0),
    };
    touched.iter().fold((0, 0), |(run, left), &g| {
        let (r0, l0) = room(&node.gpus[g]);
        let (r1, l1) = room(&placement::gpu_after(node, g, choice).unwrap());
        (run + r0 - r1, left + l0 - l1)
    })
}

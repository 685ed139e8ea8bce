//! Property tests of the MIG slot allocator.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use kubesched_core::catalogue::{MigGeometry, mig_geometry};
use kubesched_core::mig::MigGpu;
use proptest::prelude::*;

fn geometries() -> impl Strategy<Value = Arc<MigGeometry>> {
    prop_oneof![
        Just(mig_geometry("H100-80GB").unwrap()),
        Just(mig_geometry("A100-SXM4-40GB").unwrap()),
        Just(mig_geometry("A30-24GB").unwrap()),
    ]
}

/// A GPU after a random sequence of place attempts (invalid ones refused).
fn occupied() -> impl Strategy<Value = MigGpu> {
    (
        geometries(),
        prop::collection::vec((0usize..8, 0u8..8), 0..12),
    )
        .prop_map(|(geo, ops)| {
            let n = geo.profiles.len();
            let mut g = MigGpu::new(geo);
            for (p, s) in ops {
                let _ = g.place(p % n, s);
            }
            g
        })
}

/// Most instances of `profile` that can be added, by trying every order.
fn exhaustive_fit(g: &MigGpu, profile: usize) -> u32 {
    let mut best = 0;
    for s in g.placements(profile) {
        let mut next = g.clone();
        if next.place(profile, s).is_ok() {
            best = best.max(1 + exhaustive_fit(&next, profile));
        }
    }
    best
}

proptest! {
    #[test]
    fn instances_never_overlap_and_respect_start_rules(g in occupied()) {
        let geo = g.geometry().clone();
        let mut seen = 0u8;
        let mut compute = 0u8;
        for slot in g.slots() {
            let p = &geo.profiles[slot.profile];
            prop_assert!(p.starts.contains(&slot.start));
            let mask = p.mask_at(slot.start);
            prop_assert_eq!(mask & seen, 0, "overlap at {}", slot.start);
            seen |= mask;
            compute += p.compute_slices;
        }
        prop_assert_eq!(seen, g.used_mask());
        prop_assert!(compute <= geo.compute_slices);
        prop_assert!(g.slots().iter().filter(|s| geo.profiles[s.profile].is_media_extension()).count() <= 1);
    }

    #[test]
    fn placements_are_exactly_the_starts_that_check(g in occupied(), p in 0usize..8) {
        let p = p % g.geometry().profiles.len();
        let brute: Vec<u8> = (0..g.geometry().positions).filter(|&s| g.check(p, s).is_ok()).collect();
        prop_assert_eq!(g.placements(p), brute.clone());
        prop_assert_eq!(g.can_place(p), !brute.is_empty());
    }

    #[test]
    fn place_then_free_restores_the_map(g in occupied(), p in 0usize..8) {
        let p = p % g.geometry().profiles.len();
        for s in g.placements(p) {
            let mut next = g.clone();
            next.place(p, s).unwrap();
            prop_assert_eq!(next.free_positions() + u32::from(g.geometry().profiles[p].width), g.free_positions());
            next.free(s).unwrap();
            prop_assert_eq!(next.used_mask(), g.used_mask());
            let mut a = next.slots().to_vec();
            let mut b = g.slots().to_vec();
            a.sort_by_key(|x| x.start);
            b.sort_by_key(|x| x.start);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn fit_counts_agree_with_exhaustive_search(g in occupied(), p in 0usize..8) {
        let p = p % g.geometry().profiles.len();
        prop_assert_eq!(g.fit_count(p), exhaustive_fit(&g, p));
    }

    #[test]
    fn largest_placeable_really_places(g in occupied()) {
        match g.largest_placeable() {
            Some(p) => {
                let (idx, _) = g.geometry().profile(&p.name).unwrap();
                prop_assert!(g.can_place(idx));
                for other in &g.geometry().profiles {
                    if other.compute_slices > p.compute_slices && !other.is_media_extension() {
                        let (i, _) = g.geometry().profile(&other.name).unwrap();
                        prop_assert!(!g.can_place(i));
                    }
                }
            }
            None => prop_assert!((0..g.geometry().profiles.len()).all(|i| !g.can_place(i) || g.geometry().profiles[i].is_media_extension())),
        }
    }
}

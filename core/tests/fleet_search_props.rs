//! The fleet search against trying every fleet: for any prices, bounds and any target that
//! more nodes never make harder to meet, it finds the same cheapest fleet.
// A test states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubesched_core::planning::{PricedType, Verdict, cheapest, exhaustive};
use proptest::prelude::*;

/// A monotone target: each type brings capacity of two kinds (compute, memory, say), with
/// diminishing returns past a knee, and both needs must be met.
fn target(caps: Vec<(u32, u32)>, need: (u32, u32), knee: u32) -> impl FnMut(&[u32]) -> Verdict {
    move |counts: &[u32]| {
        let mut have = (0u64, 0u64);
        for (&(a, b), &n) in caps.iter().zip(counts) {
            let useful = u64::from(n.min(knee)) * 2 + u64::from(n.saturating_sub(knee));
            have.0 += u64::from(a) * useful;
            have.1 += u64::from(b) * useful;
        }
        let short = u64::from(need.0).saturating_sub(have.0) as f64;
        Verdict {
            metric: short,
            meets: have.0 >= u64::from(need.0) && have.1 >= u64::from(need.1),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_search_finds_the_cheapest_fleet_every_fleet_tried_finds(
        types in prop::collection::vec((1u32..50, 0u32..7, 0u32..5, 0u32..5), 1..4),
        need in (0u32..40, 0u32..40),
        knee in 0u32..4,
    ) {
        let priced: Vec<PricedType> = types
            .iter()
            .enumerate()
            .map(|(i, &(price, max, _, _))| PricedType {
                name: format!("t{i}"),
                price_per_hour: f64::from(price) / 4.0,
                max_nodes: max,
            })
            .collect();
        let caps: Vec<(u32, u32)> = types.iter().map(|&(_, _, a, b)| (a, b)).collect();
        let found = cheapest(&priced, target(caps.clone(), need, knee));
        let every = exhaustive(&priced, target(caps, need, knee));
        prop_assert_eq!(
            found.best.as_ref().map(|p| (&p.counts, p.cost_per_hour)),
            every.best.as_ref().map(|p| (&p.counts, p.cost_per_hour))
        );
        prop_assert!(found.evaluated.len() <= every.evaluated.len());
    }
}

//! MIG layouts for a static pool: every legal layout of a GPU model (instance counts per
//! profile, the form NVIDIA's mig-parted configures), the layouts people pick by hand, and
//! the per-GPU layouts that serve a demand mix best.
//!
//! Demand is instances wanted at once per profile. A layout set serves, per profile, the
//! lesser of what is wanted and what is there; "served" weighs that by the profile's compute
//! slices, so a 3g counts three times a 1g. Among sets serving as much, the one that serves
//! most of the demand scaled up to the pool's size wins: spare slices go to the profiles in
//! proportion to their demand, the headroom a queue needs when arrivals bunch up. Then more
//! compute exposed in total.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::catalogue::MigGeometry;
use crate::mig::MigGpu;

/// One GPU's layout: instances per profile index of the geometry.
pub type Counts = Vec<u32>;

/// Where each instance of `counts` can start so that all fit on one GPU, as (profile index,
/// start), largest first; `None` when they do not fit together.
pub fn place(geometry: &Arc<MigGeometry>, counts: &[u32]) -> Option<Vec<(usize, u8)>> {
    let mut wanted: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| std::iter::repeat_n(i, n as usize))
        .collect();
    // Widest first: they have the fewest starts.
    wanted.sort_by_key(|&i| {
        std::cmp::Reverse(
            geometry
                .profiles
                .get(i)
                .map_or((0, 0), |p| (p.width, p.compute_slices)),
        )
    });
    let mut gpu = MigGpu::new(geometry.clone());
    let mut placed = Vec::with_capacity(wanted.len());
    fit(&mut gpu, &wanted, &mut placed).then_some(placed)
}

fn fit(gpu: &mut MigGpu, wanted: &[usize], placed: &mut Vec<(usize, u8)>) -> bool {
    let Some((&idx, rest)) = wanted.split_first() else {
        return true;
    };
    for start in gpu.placements(idx) {
        if gpu.place(idx, start).is_ok() {
            placed.push((idx, start));
            if fit(gpu, rest, placed) {
                return true;
            }
            placed.pop();
            // Freeing what was just placed cannot fail.
            let _ = gpu.free(start);
        }
    }
    false
}

/// Every maximal legal layout of `profiles` (indices into the geometry): no further
/// instance of any of them fits. In a stable order (by counts).
pub fn maximal_layouts(geometry: &Arc<MigGeometry>, profiles: &[usize]) -> Vec<Counts> {
    let mut found = HashSet::new();
    let mut gpu = MigGpu::new(geometry.clone());
    let mut counts = vec![0u32; geometry.profiles.len()];
    explore(&mut gpu, profiles, 0, &mut counts, &mut found);
    // A placement can be full while its counts are not: 3g at 0, 2g at 4 and 1g at 6 leave
    // no start for a second 1g, which 3g at 4, 2g at 0 and 1g at 2 and 3 have. Layouts are
    // counts (the GPU's driver places them), so only counts with no room for one more stay.
    let mut out: Vec<Counts> = found
        .into_iter()
        .filter(|c| {
            profiles.iter().all(|&p| {
                let mut more = c.clone();
                more[p] += 1;
                place(geometry, &more).is_none()
            })
        })
        .collect();
    out.sort();
    out
}

/// Places instances at increasing starts (so each set of placements is reached once) and
/// records the counts wherever nothing more fits.
fn explore(
    gpu: &mut MigGpu,
    profiles: &[usize],
    min_start: u8,
    counts: &mut Counts,
    found: &mut HashSet<Counts>,
) {
    if profiles.iter().all(|&p| !gpu.can_place(p)) {
        found.insert(counts.clone());
        return;
    }
    // A set whose room is only before `min_start` is reached in another order too.
    for &p in profiles {
        for start in gpu.placements(p) {
            if start < min_start || gpu.place(p, start).is_err() {
                continue;
            }
            counts[p] += 1;
            explore(gpu, profiles, start, counts, found);
            counts[p] -= 1;
            let _ = gpu.free(start);
        }
    }
}

/// Compute slices served by `supply` against `demand` (per profile index), and all the
/// compute the supply exposes.
pub fn served(geometry: &MigGeometry, demand: &[f64], supply: &[u32]) -> (f64, f64) {
    let mut served = 0.0;
    let mut exposed = 0.0;
    for (i, p) in geometry.profiles.iter().enumerate() {
        let have = f64::from(supply.get(i).copied().unwrap_or(0));
        let want = demand.get(i).copied().unwrap_or(0.0);
        let slices = f64::from(p.compute_slices);
        served += slices * want.min(have);
        exposed += slices * have;
    }
    (served, exposed)
}

fn total(layouts: &[&Counts], width: usize) -> Vec<u32> {
    let mut sum = vec![0u32; width];
    for l in layouts {
        for (s, &n) in sum.iter_mut().zip(l.iter()) {
            *s += n;
        }
    }
    sum
}

/// One layout per GPU, chosen among `options`, for `gpus` GPUs that together should serve
/// `demand` (instances wanted at once, per profile index): greedily GPU by GPU, then
/// improved one GPU at a time until no single change serves more. Returns indices into
/// `options`.
pub fn recommend(
    geometry: &MigGeometry,
    options: &[Counts],
    gpus: usize,
    demand: &[f64],
) -> Vec<usize> {
    if options.is_empty() {
        return Vec::new();
    }
    let width = geometry.profiles.len();
    // The demand grown to fill the pool (never shrunk).
    let wanted: f64 = geometry
        .profiles
        .iter()
        .zip(demand)
        .map(|(p, d)| f64::from(p.compute_slices) * d)
        .sum();
    let pool = (gpus as f64) * f64::from(geometry.compute_slices);
    let grow = if wanted > 0.0 {
        (pool / wanted).max(1.0)
    } else {
        1.0
    };
    let grown: Vec<f64> = demand.iter().map(|d| d * grow).collect();
    let score = |chosen: &[usize]| {
        let layouts: Vec<&Counts> = chosen.iter().filter_map(|&i| options.get(i)).collect();
        let supply = total(&layouts, width);
        let (now, exposed) = served(geometry, demand, &supply);
        (now, served(geometry, &grown, &supply).0, exposed)
    };
    let better = |a: (f64, f64, f64), b: (f64, f64, f64)| {
        let key = |s: (f64, f64, f64)| [s.0, s.1, s.2];
        for (x, y) in key(a).into_iter().zip(key(b)) {
            if x > y + 1e-9 {
                return true;
            }
            if x < y - 1e-9 {
                return false;
            }
        }
        false
    };
    let mut chosen: Vec<usize> = Vec::with_capacity(gpus);
    for _ in 0..gpus {
        let mut best = 0;
        let mut best_score = (f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for i in 0..options.len() {
            chosen.push(i);
            let s = score(&chosen);
            chosen.pop();
            if better(s, best_score) {
                best = i;
                best_score = s;
            }
        }
        chosen.push(best);
    }
    // One GPU at a time, while a change serves more; each pass must improve, so it ends.
    let mut current = score(&chosen);
    let mut improved = true;
    while improved {
        improved = false;
        for g in 0..chosen.len() {
            let keep = chosen[g];
            for i in 0..options.len() {
                chosen[g] = i;
                let s = score(&chosen);
                if better(s, current) {
                    current = s;
                    improved = true;
                    break;
                }
                chosen[g] = keep;
            }
        }
    }
    chosen.sort_unstable();
    chosen
}

/// The layouts people pick by hand, where the geometry has them: every GPU cut into the
/// smallest profile (`all-1g`), into 3-slice profiles (`all-3g`), and one each of the 3-,
/// 2- and 1-slice profiles with the rest in 1-slice ones (`balanced`). Only plain profiles
/// (no `+me`, `-me`, `+gfx`) are used.
pub fn hand_layouts(geometry: &Arc<MigGeometry>) -> Vec<(&'static str, Counts)> {
    let plain = |slices: u8| {
        geometry
            .profiles
            .iter()
            .enumerate()
            .filter(|(_, p)| p.compute_slices == slices && !p.name.contains(['+', '-']))
            .min_by_key(|(_, p)| p.width)
            .map(|(i, _)| i)
    };
    let width = geometry.profiles.len();
    let fill = |base: &[usize], filler: usize| {
        let mut counts = vec![0u32; width];
        for &b in base {
            counts[b] += 1;
        }
        place(geometry, &counts)?;
        loop {
            counts[filler] += 1;
            if place(geometry, &counts).is_none() {
                counts[filler] -= 1;
                return Some(counts);
            }
        }
    };
    let mut out = Vec::new();
    if let Some(one) = plain(1) {
        out.extend(fill(&[], one).map(|c| ("all-1g", c)));
        if let (Some(two), Some(three)) = (plain(2), plain(3)) {
            out.extend(fill(&[three, two], one).map(|c| ("balanced", c)));
        }
    }
    if let Some(three) = plain(3) {
        out.extend(fill(&[], three).map(|c| ("all-3g", c)));
    }
    out
}

/// A layout by profile name, without the profiles it has none of.
pub fn named(geometry: &MigGeometry, counts: &[u32]) -> BTreeMap<String, u32> {
    geometry
        .profiles
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| (p.name.clone(), *n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::mig_geometry;

    fn h100() -> Arc<MigGeometry> {
        mig_geometry("H100-80GB").expect("catalogue")
    }

    fn idx(g: &MigGeometry, name: &str) -> usize {
        g.profile(name).expect("profile").0
    }

    #[test]
    fn h100_layouts_of_the_plain_profiles() {
        let g = h100();
        let plain: Vec<usize> = ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
            .iter()
            .map(|n| idx(&g, n))
            .collect();
        let layouts = maximal_layouts(&g, &plain);
        let shown: Vec<_> = layouts.iter().map(|c| named(&g, c)).collect();
        // Two 3g fill it; 7 × 1g; 7g alone; 4g + 3g is the only mix with a 4g.
        for want in [
            vec![("3g.40gb", 2)],
            vec![("1g.10gb", 7)],
            vec![("7g.80gb", 1)],
            vec![("3g.40gb", 1), ("4g.40gb", 1)],
            vec![("1g.10gb", 2), ("2g.20gb", 1), ("3g.40gb", 1)],
        ] {
            let want: BTreeMap<String, u32> =
                want.into_iter().map(|(n, c)| (n.to_string(), c)).collect();
            assert!(shown.contains(&want), "{want:?} not in {shown:?}");
        }
        // Every one is legal, and none has room for another instance.
        for c in &layouts {
            assert!(place(&g, c).is_some(), "{c:?}");
            for &p in &plain {
                let mut more = c.clone();
                more[p] += 1;
                assert!(place(&g, &more).is_none(), "{c:?} + {p}");
            }
        }
        // 4g + 2g + 2 × 1g would take 8 compute slices of 7: not a layout.
        let bad = [
            (idx(&g, "4g.40gb"), 1),
            (idx(&g, "2g.20gb"), 1),
            (idx(&g, "1g.10gb"), 2),
        ];
        let mut counts = vec![0; g.profiles.len()];
        for (i, n) in bad {
            counts[i] = n;
        }
        assert!(place(&g, &counts).is_none());
    }

    #[test]
    fn hand_layouts_are_the_usual_ones() {
        let g = h100();
        let hand: BTreeMap<_, _> = hand_layouts(&g)
            .into_iter()
            .map(|(n, c)| (n, named(&g, &c)))
            .collect();
        assert_eq!(hand["all-1g"], BTreeMap::from([("1g.10gb".to_string(), 7)]));
        assert_eq!(hand["all-3g"], BTreeMap::from([("3g.40gb".to_string(), 2)]));
        assert_eq!(
            hand["balanced"],
            BTreeMap::from([
                ("1g.10gb".to_string(), 2),
                ("2g.20gb".to_string(), 1),
                ("3g.40gb".to_string(), 1)
            ])
        );
    }

    #[test]
    fn a_skewed_mix_gets_a_mixed_set_that_serves_it_all() {
        let g = h100();
        let plain: Vec<usize> = ["1g.10gb", "2g.20gb", "3g.40gb"]
            .iter()
            .map(|n| idx(&g, n))
            .collect();
        let options = maximal_layouts(&g, &plain);
        // 8 GPUs; wanted at once: 30 × 1g, 2 × 2g, 5 × 3g (30 + 4 + 15 = 49 slices of 56).
        let mut demand = vec![0.0; g.profiles.len()];
        demand[plain[0]] = 30.0;
        demand[plain[1]] = 2.0;
        demand[plain[2]] = 5.0;
        let chosen = recommend(&g, &options, 8, &demand);
        assert_eq!(chosen.len(), 8);
        let layouts: Vec<&Counts> = chosen.iter().map(|&i| &options[i]).collect();
        let supply = total(&layouts, g.profiles.len());
        let (served_slices, _) = served(&g, &demand, &supply);
        assert_eq!(served_slices, 49.0, "{supply:?}");
        // No all-same hand layout serves as much.
        for (name, layout) in hand_layouts(&g) {
            let all: Vec<u32> = layout.iter().map(|n| n * 8).collect();
            assert!(served(&g, &demand, &all).0 < served_slices, "{name}");
        }
    }
}

//! What a MIG placement leaves on the GPUs it touches: the longest run of
//! free memory positions and how many legal placements of the GPU's profiles
//! survive. HAMi's dynamic-MIG rule ranks positions by these, and so does the
//! production policy inside a node: a wide free run keeps room for the large
//! profiles that need aligned halves, and more surviving placements keep more
//! future requests placeable.

use crate::inventory::MigMode;
use crate::mig::longest_free_run;
use crate::node::{GpuSlots, GpuState, NodeState};
use crate::placement::{self, Candidate, DeviceChoice};

/// (longest free run, surviving placements), summed over the GPUs `cand` touches once it is
/// placed; (0, 0) for a choice without MIG slices.
pub(crate) fn leaves(node: &NodeState, cand: &Candidate) -> (u32, u32) {
    let DeviceChoice::Mig(picks) = &cand.choice else {
        return (0, 0);
    };
    let mut touched: Vec<usize> = picks.iter().map(|p| p.gpu).collect();
    touched.sort_unstable();
    touched.dedup();
    touched
        .into_iter()
        // A candidate from `placement::candidates` always applies; one that did not would
        // leave nothing.
        .filter_map(|g| placement::gpu_after(node, g, &cand.choice).ok())
        .map(|g| gpu_leaves(&g))
        .fold((0, 0), |(run, left), (r, l)| (run + r, left + l))
}

/// What placing `cand` costs the GPUs it touches: (free run lost, placements lost).
pub(crate) fn loses(node: &NodeState, cand: &Candidate) -> (u32, u32) {
    loses_with(node, cand, &mut Vec::new())
}

/// [`loses`], with each GPU's room before the placement kept in `before` (indexed by GPU
/// position) across the candidates of one node: the candidates of a request share GPUs.
pub(crate) fn loses_with(
    node: &NodeState,
    cand: &Candidate,
    before: &mut Vec<Option<(u32, u32)>>,
) -> (u32, u32) {
    let DeviceChoice::Mig(picks) = &cand.choice else {
        return (0, 0);
    };
    if before.len() < node.gpus.len() {
        before.resize(node.gpus.len(), None);
    }
    let (mut had, mut has) = ((0, 0), (0, 0));
    for (i, pick) in picks.iter().enumerate() {
        // Each touched GPU once.
        if picks[..i].iter().any(|p| p.gpu == pick.gpu) {
            continue;
        }
        let Some(gpu) = node.gpus.get(pick.gpu) else {
            continue;
        };
        let (run, left) = *before[pick.gpu].get_or_insert_with(|| gpu_leaves(gpu));
        had = (had.0 + run, had.1 + left);
        if let Ok(after) = placement::gpu_after(node, pick.gpu, &cand.choice) {
            let (run, left) = gpu_leaves(&after);
            has = (has.0 + run, has.1 + left);
        }
    }
    (had.0.saturating_sub(has.0), had.1.saturating_sub(has.1))
}

fn gpu_leaves(g: &GpuState) -> (u32, u32) {
    let GpuSlots::Mig(m) = &g.slots else {
        return (0, 0);
    };
    let profiles = m
        .gpu
        .geometry()
        .profiles
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.is_media_extension())
        .map(|(i, _)| i);
    let left: u32 = match m.mode {
        MigMode::Dynamic => profiles.map(|i| m.gpu.placement_count(i)).sum(),
        MigMode::Static => profiles.map(|i| m.free_static(i).count() as u32).sum(),
    };
    (longest_free_run(m.free_mask()), left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::mig_test::{h100_node, put, slice};

    #[test]
    fn a_slice_at_the_edge_leaves_the_widest_run() {
        let mut node = h100_node("n", 1);
        put(&mut node, 0, "1g.10gb", 0);
        let one = slice("1g.10gb", 1);
        let runs: Vec<(u8, (u32, u32))> = placement::candidates(&node, &one)
            .unwrap()
            .iter()
            .map(|c| match &c.choice {
                DeviceChoice::Mig(p) => (p[0].start, leaves(&node, c)),
                other => panic!("{other:?}"),
            })
            .collect();
        // Next to the first slice (start 1) leaves 2..=7 free: a run of 6; start 3 splits
        // the free positions into 1..=2 and 4..=7.
        let at = |s: u8| runs.iter().find(|(start, _)| *start == s).map(|(_, l)| *l);
        assert_eq!(at(1).map(|l| l.0), Some(6), "{runs:?}");
        assert_eq!(at(3).map(|l| l.0), Some(4), "{runs:?}");
        assert!(at(1).unwrap().1 > at(3).unwrap().1, "{runs:?}");
        assert_eq!(longest_free_run(0b1011_0111), 3);
        assert_eq!(longest_free_run(0), 0);
    }
}

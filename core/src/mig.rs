//! The MIG slot allocator: one GPU's occupancy map, the valid placements of a
//! profile on it, place/free, and how many more of each profile still fit.
//!
//! Free capacity is always derived from the occupancy map and the placement
//! rules, never by dividing free slices: a 1g slice at position 0 blocks a 4g,
//! anything blocks a 7g.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalogue::{MigGeometry, MigProfile};

/// The longest run of consecutive set bits in `mask`: with a free-positions mask, the widest
/// stretch of memory positions still free.
pub fn longest_free_run(mask: u8) -> u32 {
    let (mut best, mut run) = (0, 0);
    for bit in 0..8 {
        if mask & (1 << bit) != 0 {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

/// One MIG instance on a GPU: which profile, from which memory position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MigSlot {
    /// Index into the GPU's `MigGeometry::profiles`.
    pub profile: usize,
    /// Memory position the instance starts at.
    pub start: u8,
}

/// Why a MIG instance cannot be created or removed on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigError {
    /// The profile index is outside the GPU's geometry.
    #[error("profile index {0} is not part of this GPU's geometry")]
    NoSuchProfile(usize),
    /// The profile does not allow an instance to start at this position.
    #[error("{profile} cannot start at position {start} (allowed: {allowed:?})")]
    InvalidStart {
        /// Name of the profile asked for.
        profile: String,
        /// Start position asked for.
        start: u8,
        /// Start positions the profile does allow.
        allowed: Vec<u8>,
    },
    /// The instance would cover memory positions another instance already occupies.
    #[error("{profile} at position {start} overlaps positions already in use ({used})")]
    Overlap {
        /// Name of the profile asked for.
        profile: String,
        /// Start position asked for.
        start: u8,
        /// Occupied positions, as `describe_used` writes them.
        used: String,
    },
    /// The GPU already holds the most instances of this profile it allows.
    #[error("at most {max} instance(s) of {profile} per GPU")]
    MaxCount {
        /// Name of the profile asked for.
        profile: String,
        /// Instances of the profile allowed per GPU.
        max: u8,
    },
    /// Too few of the GPU's compute slices are left unused for this profile.
    #[error("not enough compute slices left for {profile}")]
    ComputeExhausted {
        /// Name of the profile asked for.
        profile: String,
    },
    /// A media-extension profile (`+me`, `+me.all`) was asked for, but another instance
    /// already holds the media engines.
    #[error("the GPU's media engines are already taken by another media-extension instance")]
    MediaEngineTaken,
    /// No instance starts at the position given for removal.
    #[error("no instance starts at position {0}")]
    NoInstanceAt(u8),
}

/// A MIG-enabled GPU's occupancy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigGpu {
    geometry: Arc<MigGeometry>,
    slots: Vec<MigSlot>,
    used: u8,
}

impl MigGpu {
    /// An empty GPU (no MIG instances) with the given geometry.
    pub fn new(geometry: Arc<MigGeometry>) -> Self {
        MigGpu {
            geometry,
            slots: Vec::new(),
            used: 0,
        }
    }

    /// The MIG layout rules of this GPU's model.
    pub fn geometry(&self) -> &Arc<MigGeometry> {
        &self.geometry
    }

    /// The MIG instances on this GPU, in no particular order.
    pub fn slots(&self) -> &[MigSlot] {
        &self.slots
    }

    /// Bit mask of memory positions in use.
    pub fn used_mask(&self) -> u8 {
        self.used
    }

    /// Number of memory positions not covered by any instance.
    pub fn free_positions(&self) -> u32 {
        (self.geometry.full_mask() & !self.used).count_ones()
    }

    /// Whether the GPU holds no MIG instance.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn profile(&self, idx: usize) -> Result<&MigProfile, MigError> {
        self.geometry
            .profiles
            .get(idx)
            .ok_or(MigError::NoSuchProfile(idx))
    }

    fn compute_used(&self) -> u32 {
        self.slots
            .iter()
            .filter_map(|s| self.geometry.profiles.get(s.profile))
            .map(|p| u32::from(p.compute_slices))
            .sum()
    }

    fn count_of(&self, idx: usize) -> usize {
        self.slots.iter().filter(|s| s.profile == idx).count()
    }

    fn media_engine_taken(&self) -> bool {
        self.slots
            .iter()
            .filter_map(|s| self.geometry.profiles.get(s.profile))
            .any(MigProfile::is_media_extension)
    }

    /// Why `profile` cannot start at `start`, or `Ok` if it can.
    pub fn check(&self, idx: usize, start: u8) -> Result<(), MigError> {
        let p = self.profile(idx)?;
        if !p.starts.contains(&start) {
            return Err(MigError::InvalidStart {
                profile: p.name.clone(),
                start,
                allowed: p.starts.clone(),
            });
        }
        self.check_counts(idx, p)?;
        if p.mask_at(start) & self.used != 0 {
            return Err(MigError::Overlap {
                profile: p.name.clone(),
                start,
                used: self.describe_used(),
            });
        }
        Ok(())
    }

    /// Per-GPU limits that do not depend on the position.
    fn check_counts(&self, idx: usize, p: &MigProfile) -> Result<(), MigError> {
        if self.count_of(idx) >= usize::from(p.max_count) {
            return Err(MigError::MaxCount {
                profile: p.name.clone(),
                max: p.max_count,
            });
        }
        if self.compute_used() + u32::from(p.compute_slices)
            > u32::from(self.geometry.compute_slices)
        {
            return Err(MigError::ComputeExhausted {
                profile: p.name.clone(),
            });
        }
        if p.is_media_extension() && self.media_engine_taken() {
            return Err(MigError::MediaEngineTaken);
        }
        Ok(())
    }

    /// Start positions where `profile` could be created now, lowest first.
    pub fn placements(&self, idx: usize) -> Vec<u8> {
        self.free_starts(idx).collect()
    }

    /// How many start positions `profile` could be created at now: `placements(idx).len()`
    /// without building the list (layout scoring counts them for every candidate).
    pub fn placement_count(&self, idx: usize) -> u32 {
        self.free_starts(idx).fold(0, |n, _| n + 1)
    }

    fn free_starts(&self, idx: usize) -> impl Iterator<Item = u8> + '_ {
        let profile = self
            .profile(idx)
            .ok()
            .filter(|p| self.check_counts(idx, p).is_ok());
        profile.into_iter().flat_map(move |p| {
            p.starts
                .iter()
                .copied()
                .filter(move |&s| p.mask_at(s) & self.used == 0)
        })
    }

    /// Whether one more instance of profile `idx` could be created somewhere now.
    pub fn can_place(&self, idx: usize) -> bool {
        match self.profile(idx) {
            Ok(p) => {
                self.check_counts(idx, p).is_ok()
                    && p.starts.iter().any(|&s| p.mask_at(s) & self.used == 0)
            }
            Err(_) => false,
        }
    }

    /// Creates an instance of profile `idx` at `start` and returns its slot; `Err`, leaving the
    /// GPU unchanged, when `check` refuses it.
    pub fn place(&mut self, idx: usize, start: u8) -> Result<MigSlot, MigError> {
        self.check(idx, start)?;
        let mask = self.profile(idx)?.mask_at(start);
        let slot = MigSlot {
            profile: idx,
            start,
        };
        self.slots.push(slot);
        self.used |= mask;
        Ok(slot)
    }

    /// Removes the instance that starts at `start`.
    pub fn free(&mut self, start: u8) -> Result<MigSlot, MigError> {
        let pos = self
            .slots
            .iter()
            .position(|s| s.start == start)
            .ok_or(MigError::NoInstanceAt(start))?;
        let slot = self.slots.swap_remove(pos);
        self.used = self.recompute_used();
        Ok(slot)
    }

    fn recompute_used(&self) -> u8 {
        self.slots
            .iter()
            .filter_map(|s| {
                self.geometry
                    .profiles
                    .get(s.profile)
                    .map(|p| p.mask_at(s.start))
            })
            .fold(0, |acc, m| acc | m)
    }

    /// How many more instances of `profile` could be created together.
    ///
    /// The placements of one profile are aligned intervals of equal width, so
    /// taking the lowest free start each time is optimal (interval scheduling).
    pub fn fit_count(&self, idx: usize) -> u32 {
        let Ok(p) = self.profile(idx) else { return 0 };
        let mut used = self.used;
        let mut placed = 0u32;
        for &s in &p.starts {
            if p.mask_at(s) & used == 0 {
                used |= p.mask_at(s);
                placed += 1;
            }
        }
        let by_count = usize::from(p.max_count).saturating_sub(self.count_of(idx));
        let by_count = u32::try_from(by_count).unwrap_or(u32::MAX);
        let compute_left =
            u32::from(self.geometry.compute_slices).saturating_sub(self.compute_used());
        let by_compute = compute_left / u32::from(p.compute_slices.max(1));
        let by_media = if p.is_media_extension() && self.media_engine_taken() {
            0
        } else {
            u32::MAX
        };
        placed.min(by_count).min(by_compute).min(by_media)
    }

    /// The placeable profile with the most compute (then memory), if any.
    pub fn largest_placeable(&self) -> Option<&MigProfile> {
        (0..self.geometry.profiles.len())
            .filter(|&i| self.can_place(i))
            .filter_map(|i| self.geometry.profiles.get(i))
            .filter(|p| !p.is_media_extension())
            .max_by_key(|p| (p.compute_slices, p.width))
    }

    /// Human-readable list of occupied positions, e.g. `0-3 (3g.40gb), 5 (1g.10gb)`.
    pub fn describe_used(&self) -> String {
        let mut slots = self.slots.clone();
        slots.sort_by_key(|s| s.start);
        let parts: Vec<String> = slots
            .iter()
            .filter_map(|s| {
                let p = self.geometry.profiles.get(s.profile)?;
                let end = s.start + p.width - 1;
                Some(if p.width == 1 {
                    format!("{} ({})", s.start, p.name)
                } else {
                    format!("{}-{} ({})", s.start, end, p.name)
                })
            })
            .collect();
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::mig_geometry;

    fn h100() -> MigGpu {
        MigGpu::new(mig_geometry("H100-80GB").unwrap())
    }

    fn idx(g: &MigGpu, name: &str) -> usize {
        g.geometry().profile(name).unwrap().0
    }

    #[test]
    fn small_slice_in_the_low_half_blocks_4g_but_not_3g() {
        let mut g = h100();
        let one = idx(&g, "1g.10gb");
        g.place(one, 1).unwrap();
        assert!(!g.can_place(idx(&g, "4g.40gb")));
        assert_eq!(g.placements(idx(&g, "3g.40gb")), vec![4]);
        assert!(!g.can_place(idx(&g, "7g.80gb")));
        assert_eq!(g.fit_count(idx(&g, "3g.40gb")), 1);
        assert_eq!(g.largest_placeable().unwrap().name, "3g.40gb");
    }

    #[test]
    fn small_slices_in_the_high_half_block_the_second_3g() {
        let mut g = h100();
        g.place(idx(&g, "1g.10gb"), 5).unwrap();
        assert_eq!(g.placements(idx(&g, "3g.40gb")), vec![0]);
        assert_eq!(g.fit_count(idx(&g, "4g.40gb")), 1);
    }

    #[test]
    fn overlap_and_bad_start_are_refused_with_reasons() {
        let mut g = h100();
        g.place(idx(&g, "3g.40gb"), 0).unwrap();
        let err = g.place(idx(&g, "2g.20gb"), 2).unwrap_err();
        assert!(err.to_string().contains("0-3 (3g.40gb)"), "{err}");
        let err = g.place(idx(&g, "2g.20gb"), 3).unwrap_err();
        assert!(matches!(err, MigError::InvalidStart { .. }));
    }

    #[test]
    fn only_one_media_extension_per_gpu() {
        let mut g = MigGpu::new(mig_geometry("A30").unwrap());
        let small_me = idx(&g, "1g.6gb+me");
        let big_me = idx(&g, "2g.12gb+me");
        g.place(small_me, 0).unwrap();
        assert_eq!(g.place(big_me, 2), Err(MigError::MediaEngineTaken));
        assert_eq!(g.fit_count(big_me), 0);
        assert!(matches!(
            g.place(small_me, 1),
            Err(MigError::MaxCount { .. })
        ));
    }

    #[test]
    fn seven_small_slices_fill_the_gpu() {
        let g = h100();
        assert_eq!(g.fit_count(idx(&g, "1g.10gb")), 7);
        assert_eq!(g.fit_count(idx(&g, "2g.20gb")), 3);
        assert_eq!(g.fit_count(idx(&g, "1g.20gb")), 4);
        assert_eq!(g.fit_count(idx(&g, "7g.80gb")), 1);
    }

    #[test]
    fn free_restores_and_reports_missing_instances() {
        let mut g = h100();
        g.place(idx(&g, "4g.40gb"), 0).unwrap();
        g.free(0).unwrap();
        assert_eq!(g, h100());
        assert_eq!(g.free(3), Err(MigError::NoInstanceAt(3)));
    }
}

//! The built-in GPU catalogue: GPU models and, for MIG-capable ones, their MIG
//! geometry (memory positions, compute slices, profiles and allowed starts).
//!
//! At run time the node agent reads the real placements from NVML; this table is
//! what simulation and tests use, and what an inventory falls back to.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

/// One MIG profile of a GPU model, e.g. `3g.40gb` on an H100-80GB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigProfile {
    /// Profile name without the resource prefix, e.g. `1g.10gb` or `1g.10gb+me`.
    pub name: String,
    /// Compute slices (the `Ng` part).
    pub compute_slices: u8,
    /// Memory positions occupied, counted from the start position.
    pub width: u8,
    /// Allowed start positions.
    pub starts: Vec<u8>,
    /// At most this many instances of the profile per GPU.
    pub max_count: u8,
}

impl MigProfile {
    /// Media-extension variants (`+me`) carry the GPU's single set of media engines.
    pub fn is_media_extension(&self) -> bool {
        self.name.ends_with("+me")
    }

    /// Bit mask of the memory positions an instance started at `start` occupies. Positions
    /// past the eighth do not exist: they are left out rather than overflow (a validated
    /// geometry never asks for them).
    pub fn mask_at(&self, start: u8) -> u8 {
        let width = u32::from(self.width).min(8);
        let bits = (1u32 << width) - 1;
        let shifted = bits.checked_shl(u32::from(start)).unwrap_or(0);
        (shifted & 0xff) as u8
    }

    /// Memory of one instance in MiB, read from the name (`<N>g.<M>gb`, `+me` allowed:
    /// `M` GiB). `None` when the name does not have that shape.
    pub fn memory_mib(&self) -> Option<u64> {
        let base = self.name.strip_suffix("+me").unwrap_or(self.name.as_str());
        let (compute, memory) = base.split_once("g.")?;
        let memory = memory.strip_suffix("gb")?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(compute) || !digits(memory) {
            return None;
        }
        memory.parse::<u64>().ok()?.checked_mul(1024)
    }
}

/// The MIG layout rules of one GPU model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigGeometry {
    /// Memory positions (8 on A100/H100/H200, 4 on A30). At most 8.
    pub positions: u8,
    /// Compute slices (7 on A100/H100/H200, 4 on A30).
    pub compute_slices: u8,
    /// The model's MIG profiles, in the order profile indices refer to.
    pub profiles: Vec<MigProfile>,
}

impl MigGeometry {
    /// Looks a profile up by its name (`1g.10gb`).
    pub fn profile(&self, name: &str) -> Result<(usize, &MigProfile), CatalogueError> {
        self.profiles
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name)
            .ok_or_else(|| CatalogueError::UnknownProfile {
                profile: name.to_string(),
                known: self.profiles.iter().map(|p| p.name.clone()).collect(),
            })
    }

    /// The smallest profile whose memory holds `memory_mib` MiB: fewest compute slices,
    /// then least memory (the first listed on a tie). Media-extension (`+me`) variants and
    /// profiles whose name gives no memory are left out. `None` when no profile is large
    /// enough.
    pub fn smallest_holding(&self, memory_mib: u64) -> Option<&MigProfile> {
        self.profiles
            .iter()
            .filter(|p| !p.is_media_extension())
            .filter_map(|p| p.memory_mib().filter(|&m| m >= memory_mib).map(|m| (p, m)))
            .min_by_key(|(p, m)| (p.compute_slices, *m))
            .map(|(p, _)| p)
    }

    /// Mask with every memory position set.
    pub fn full_mask(&self) -> u8 {
        ((1u32 << u32::from(self.positions).min(8)) - 1) as u8
    }

    /// Milli-GPU represented by one memory position (125 on 8-position GPUs).
    pub fn milli_per_position(&self) -> u32 {
        1000 / u32::from(self.positions)
    }

    /// Checks the geometry is internally consistent: every limit the allocator relies on
    /// holds, so a geometry read from outside (a node's inventory) cannot make it misplace
    /// or overflow. Arithmetic here is on outside values: widened, never wrapping.
    pub fn validate(&self) -> Result<(), CatalogueError> {
        let invalid = |detail: String| Err(CatalogueError::InvalidGeometry(detail));
        if self.positions == 0 || self.positions > 8 {
            return invalid(format!(
                "{} memory positions (1 to 8 supported)",
                self.positions
            ));
        }
        if self.compute_slices == 0 || self.compute_slices > 8 {
            return invalid(format!(
                "{} compute slices (1 to 8 supported)",
                self.compute_slices
            ));
        }
        if self.profiles.len() > MAX_PROFILES {
            return invalid(format!(
                "{} profiles (at most {MAX_PROFILES})",
                self.profiles.len()
            ));
        }
        for (i, p) in self.profiles.iter().enumerate() {
            let name = crate::text::quote(&p.name);
            if p.name.is_empty() || p.name.len() > MAX_PROFILE_NAME {
                return invalid(format!("profile name {name} is empty or too long"));
            }
            if self.profiles[..i].iter().any(|q| q.name == p.name) {
                return invalid(format!("profile {name} is listed twice"));
            }
            if p.width == 0 || p.width > self.positions {
                return invalid(format!(
                    "profile {name} is {} positions wide on a GPU of {}",
                    p.width, self.positions
                ));
            }
            if p.compute_slices == 0 || p.compute_slices > self.compute_slices {
                return invalid(format!(
                    "profile {name} takes {} compute slices of {}",
                    p.compute_slices, self.compute_slices
                ));
            }
            if p.max_count == 0 || p.max_count > self.positions {
                return invalid(format!(
                    "profile {name} allows {} instances on {} positions",
                    p.max_count, self.positions
                ));
            }
            if p.starts.is_empty() || p.starts.len() > usize::from(self.positions) {
                return invalid(format!("profile {name} has {} starts", p.starts.len()));
            }
            for (j, &s) in p.starts.iter().enumerate() {
                if u16::from(s) + u16::from(p.width) > u16::from(self.positions) {
                    return invalid(format!(
                        "profile {name} at start {s} does not fit in {} positions",
                        self.positions
                    ));
                }
                if p.starts[..j].contains(&s) {
                    return invalid(format!("profile {name} lists start {s} twice"));
                }
            }
        }
        Ok(())
    }
}

/// At most this many profiles per geometry (real GPUs offer under 20).
pub const MAX_PROFILES: usize = 32;
/// Longest profile name accepted (`1g.10gb+me` is 10 characters).
pub const MAX_PROFILE_NAME: usize = 32;

/// A GPU model known to the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuModel {
    /// Canonical name, e.g. `H100-80GB`.
    pub name: &'static str,
    /// Other spellings that NVML or node labels use for the same part.
    pub aliases: &'static [&'static str],
    /// Memory of one whole GPU, in GiB.
    pub memory_gib: u32,
    /// `None` for GPUs without MIG: they are scheduled whole.
    pub mig: Option<Arc<MigGeometry>>,
}

/// Why a GPU model, MIG profile or MIG geometry could not be found or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// No catalogue model has this name or alias.
    #[error("unknown GPU model {0:?}")]
    UnknownModel(String),
    /// The GPU model offers no MIG profile of this name.
    #[error("unknown MIG profile {profile:?}; this GPU model offers {known:?}")]
    UnknownProfile {
        /// Profile name that was asked for.
        profile: String,
        /// Profile names the GPU model does offer.
        known: Vec<String>,
    },
    /// The GPU model is known but cannot be partitioned with MIG.
    #[error("GPU model {0} does not support MIG")]
    NoMig(String),
    /// A MIG geometry (e.g. from a node's inventory) breaks a rule the allocator relies on.
    #[error("invalid MIG geometry: {0}")]
    InvalidGeometry(String),
}

/// Builds the 8-position, 7-slice geometry shared by A100, H100 and H200: only
/// the memory sizes in the profile names differ (`mem` is GB per 1g slice).
fn seven_slice(mem_1g: u32, mem_1g_double: u32, mem_3g: u32, mem_7g: u32) -> MigGeometry {
    let p = |name: String, compute, width, starts: &[u8], max| MigProfile {
        name,
        compute_slices: compute,
        width,
        starts: starts.to_vec(),
        max_count: max,
    };
    let small = format!("1g.{mem_1g}gb");
    MigGeometry {
        positions: 8,
        compute_slices: 7,
        profiles: vec![
            p(small.clone(), 1, 1, &[0, 1, 2, 3, 4, 5, 6], 7),
            p(format!("{small}+me"), 1, 1, &[0, 1, 2, 3, 4, 5, 6], 1),
            p(format!("1g.{mem_1g_double}gb"), 1, 2, &[0, 2, 4, 6], 4),
            p(format!("2g.{mem_1g_double}gb"), 2, 2, &[0, 2, 4], 3),
            p(format!("3g.{mem_3g}gb"), 3, 4, &[0, 4], 2),
            p(format!("4g.{mem_3g}gb"), 4, 4, &[0], 1),
            p(format!("7g.{mem_7g}gb"), 7, 8, &[0], 1),
        ],
    }
}

fn a30() -> MigGeometry {
    let p = |name: &str, compute, width, starts: &[u8], max| MigProfile {
        name: name.to_string(),
        compute_slices: compute,
        width,
        starts: starts.to_vec(),
        max_count: max,
    };
    MigGeometry {
        positions: 4,
        compute_slices: 4,
        profiles: vec![
            p("1g.6gb", 1, 1, &[0, 1, 2, 3], 4),
            p("1g.6gb+me", 1, 1, &[0, 1, 2, 3], 1),
            p("2g.12gb", 2, 2, &[0, 2], 2),
            p("2g.12gb+me", 2, 2, &[0, 2], 1),
            p("4g.24gb", 4, 4, &[0], 1),
        ],
    }
}

static CATALOGUE: LazyLock<Vec<GpuModel>> = LazyLock::new(|| {
    let a100_40 = Arc::new(seven_slice(5, 10, 20, 40));
    let gb80 = Arc::new(seven_slice(10, 20, 40, 80));
    let nvl = Arc::new(seven_slice(12, 24, 47, 94));
    let h200 = Arc::new(seven_slice(18, 35, 71, 141));
    let whole = |name, aliases, memory_gib| GpuModel {
        name,
        aliases,
        memory_gib,
        mig: None,
    };
    vec![
        GpuModel {
            name: "A100-SXM4-40GB",
            aliases: &["NVIDIA A100-SXM4-40GB", "A100-40GB", "A100-PCIE-40GB"],
            memory_gib: 40,
            mig: Some(a100_40),
        },
        GpuModel {
            name: "A100-80GB",
            aliases: &[
                "NVIDIA A100-SXM4-80GB",
                "NVIDIA A100 80GB PCIe",
                "A100-SXM4-80GB",
            ],
            memory_gib: 80,
            mig: Some(gb80.clone()),
        },
        GpuModel {
            name: "H100-80GB",
            aliases: &[
                "NVIDIA H100 80GB HBM3",
                "H100-SXM5-80GB",
                "NVIDIA H100 PCIe",
                "H100-PCIE-80GB",
            ],
            memory_gib: 80,
            mig: Some(gb80),
        },
        GpuModel {
            name: "H100-NVL",
            aliases: &["NVIDIA H100 NVL", "H100-NVL-94GB"],
            memory_gib: 94,
            mig: Some(nvl),
        },
        GpuModel {
            name: "H200-141GB",
            aliases: &["NVIDIA H200", "H200-SXM-141GB", "NVIDIA H200 NVL"],
            memory_gib: 141,
            mig: Some(h200),
        },
        GpuModel {
            name: "A30-24GB",
            aliases: &["NVIDIA A30", "A30"],
            memory_gib: 24,
            mig: Some(Arc::new(a30())),
        },
        whole("T4", &["Tesla T4", "NVIDIA T4"], 16),
        whole("V100-16GB", &["Tesla V100-SXM2-16GB", "V100M16"], 16),
        whole("V100-32GB", &["Tesla V100-SXM2-32GB", "V100M32"], 32),
        whole("A10", &["NVIDIA A10"], 24),
        whole("L4", &["NVIDIA L4"], 24),
        whole("L40S", &["NVIDIA L40S"], 48),
    ]
});

/// Every model the catalogue knows.
pub fn models() -> &'static [GpuModel] {
    &CATALOGUE
}

/// Looks a model up by canonical name or alias, ignoring ASCII case.
pub fn model(name: &str) -> Result<&'static GpuModel, CatalogueError> {
    CATALOGUE
        .iter()
        .find(|m| {
            m.name.eq_ignore_ascii_case(name)
                || m.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .ok_or_else(|| CatalogueError::UnknownModel(name.to_string()))
}

/// The MIG geometry of a model, or a typed error for non-MIG and unknown models.
pub fn mig_geometry(model_name: &str) -> Result<Arc<MigGeometry>, CatalogueError> {
    let m = model(model_name)?;
    m.mig
        .clone()
        .ok_or_else(|| CatalogueError::NoMig(m.name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h100_profiles_follow_the_published_geometry() {
        let g = mig_geometry("NVIDIA H100 80GB HBM3").unwrap();
        let starts = |n: &str| g.profile(n).unwrap().1.starts.clone();
        assert_eq!(starts("1g.10gb"), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(starts("1g.20gb"), vec![0, 2, 4, 6]);
        assert_eq!(starts("2g.20gb"), vec![0, 2, 4]);
        assert_eq!(starts("3g.40gb"), vec![0, 4]);
        assert_eq!(starts("4g.40gb"), vec![0]);
        assert_eq!(starts("7g.80gb"), vec![0]);
        assert_eq!(g.profile("3g.40gb").unwrap().1.width, 4);
    }

    #[test]
    fn same_name_means_different_width_on_40_and_80_gb_parts() {
        let a40 = mig_geometry("A100-SXM4-40GB").unwrap();
        let a80 = mig_geometry("A100-80GB").unwrap();
        assert_eq!(a40.profile("1g.10gb").unwrap().1.width, 2);
        assert_eq!(a80.profile("1g.10gb").unwrap().1.width, 1);
    }

    #[test]
    fn unknown_names_are_typed_errors() {
        assert_eq!(
            model("GTX-480"),
            Err(CatalogueError::UnknownModel("GTX-480".into()))
        );
        assert!(matches!(mig_geometry("T4"), Err(CatalogueError::NoMig(_))));
        let g = mig_geometry("A30").unwrap();
        assert!(matches!(
            g.profile("3g.20gb"),
            Err(CatalogueError::UnknownProfile { .. })
        ));
    }

    #[test]
    fn every_catalogue_geometry_is_valid() {
        for m in models() {
            if let Some(g) = &m.mig {
                g.validate().unwrap();
                for p in &g.profiles {
                    assert!(
                        p.compute_slices <= g.compute_slices,
                        "{} {}",
                        m.name,
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn profile_memory_comes_from_the_name() {
        let g = mig_geometry("H100-80GB").unwrap();
        let mem = |n: &str| g.profile(n).unwrap().1.memory_mib();
        assert_eq!(mem("1g.10gb"), Some(10 * 1024));
        assert_eq!(mem("1g.10gb+me"), Some(10 * 1024));
        assert_eq!(mem("7g.80gb"), Some(80 * 1024));
        let odd = MigProfile {
            name: "big".into(),
            compute_slices: 1,
            width: 1,
            starts: vec![0],
            max_count: 1,
        };
        assert_eq!(odd.memory_mib(), None);
        let odd = MigProfile {
            name: "1g.gb".into(),
            ..odd
        };
        assert_eq!(odd.memory_mib(), None);
    }

    #[test]
    fn smallest_profile_holding_a_memory_size() {
        let g = mig_geometry("H100-80GB").unwrap();
        let name = |mib: u64| g.smallest_holding(mib).map(|p| p.name.clone());
        assert_eq!(name(9000).as_deref(), Some("1g.10gb"));
        assert_eq!(name(10 * 1024).as_deref(), Some("1g.10gb"));
        assert_eq!(name(10 * 1024 + 1).as_deref(), Some("1g.20gb"));
        assert_eq!(name(20 * 1024 + 1).as_deref(), Some("3g.40gb"));
        assert_eq!(name(80 * 1024).as_deref(), Some("7g.80gb"));
        assert_eq!(name(81 * 1024), None);
        let a30 = mig_geometry("A30").unwrap();
        assert_eq!(
            a30.smallest_holding(1).map(|p| p.name.as_str()),
            Some("1g.6gb"),
            "+me variants are left out"
        );
    }

    #[test]
    fn masks_cover_the_right_positions() {
        let g = mig_geometry("H100-80GB").unwrap();
        assert_eq!(g.profile("3g.40gb").unwrap().1.mask_at(4), 0b1111_0000);
        assert_eq!(g.profile("7g.80gb").unwrap().1.mask_at(0), 0xff);
        assert_eq!(g.full_mask(), 0xff);
        assert_eq!(mig_geometry("A30").unwrap().full_mask(), 0x0f);
    }
}

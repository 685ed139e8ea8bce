//! The built-in GPU catalogue: GPU models and, for MIG-capable ones, their MIG
//! geometry (memory positions, compute slices, profiles and allowed starts).
//!
//! At run time the node agent reads the real placements from NVML; this table is
//! what simulation and tests use, and what an inventory falls back to. Profile names are
//! generated from each model's total memory by NVIDIA's naming rule (`mig_name`), so they
//! match what the agent reads from NVML and what NVIDIA's device plugin advertises.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use crate::mig_name::{self, ProfileAttribute, ProfileName};

/// One MIG profile of a GPU model, e.g. `3g.40gb` on an H100-80GB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigProfile {
    /// Profile name without the resource prefix, e.g. `1g.10gb`, `1g.10gb+me` or `1g.23gb-me`.
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
    /// Media-extension variants (`+me`, `+me.all`) carry the GPU's single set of media
    /// engines, so a GPU holds at most one of them. `-me` and `+gfx` variants do not.
    pub fn is_media_extension(&self) -> bool {
        mig_name::split_attribute(&self.name)
            .1
            .is_some_and(ProfileAttribute::takes_media_engines)
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

    /// Memory of one instance in MiB, read from the name (`<N>g.<M>gb` with any attribute
    /// suffix such as `+me`, `+me.all`, `-me` or `+gfx`: `M` GiB). `None` when the name does
    /// not have that shape.
    pub fn memory_mib(&self) -> Option<u64> {
        ProfileName::parse(&self.name)?.memory_gb.checked_mul(1024)
    }
}

/// The MIG layout rules of one GPU model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigGeometry {
    /// Memory positions (8 on A100/H100/H200/B200, 4 on A30 and RTX PRO 6000). At most 8.
    pub positions: u8,
    /// Compute slices (7 on A100/H100/H200/B200, 4 on A30 and RTX PRO 6000).
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
    /// then least memory (the first listed on a tie, so a plain profile before its `-me` or
    /// `+gfx` variant). Media-extension (`+me`, `+me.all`) variants and profiles whose name
    /// gives no memory are left out. `None` when no profile is large enough.
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

/// Bytes in one MiB: model totals are given in MiB, as NVML reports them.
const MIB: u64 = 1 << 20;

const ME: ProfileAttribute = ProfileAttribute::MediaExtension;
const ME_ALL: ProfileAttribute = ProfileAttribute::MediaExtensionAll;
const NO_ME: ProfileAttribute = ProfileAttribute::NoMediaExtension;
const GFX: ProfileAttribute = ProfileAttribute::Graphics;

/// One kind of GPU instance of a geometry. Its memory share is its width over the GPU's
/// positions, so its name follows from the GPU's total memory.
struct Kind {
    /// Compute (and GPU instance) slices: the `<g>g` of the name.
    compute: u8,
    /// Memory positions taken.
    width: u8,
    /// Allowed start positions.
    starts: &'static [u8],
    /// Instances of the plain profile per GPU.
    max: u8,
    /// Attribute variants offered besides the plain profile, each with its per-GPU limit;
    /// listed right after it, in this order.
    variants: &'static [(ProfileAttribute, u8)],
}

/// A [`Kind`], written on one line.
const fn kind(
    compute: u8,
    width: u8,
    starts: &'static [u8],
    max: u8,
    variants: &'static [(ProfileAttribute, u8)],
) -> Kind {
    Kind {
        compute,
        width,
        starts,
        max,
        variants,
    }
}

/// A geometry of `positions` memory positions and `compute_slices` slices on a GPU with
/// `total_mib` MiB, its profiles named by NVIDIA's rule.
fn geometry(positions: u8, compute_slices: u8, total_mib: u64, kinds: &[Kind]) -> MigGeometry {
    let bytes = total_mib.saturating_mul(MIB);
    let mut profiles = Vec::new();
    for kind in kinds {
        let eighths = u64::from(kind.width) * 8 / u64::from(positions.max(1));
        let gb = mig_name::memory_gb_for_eighths(eighths, bytes);
        let profile = |attribute, max_count| MigProfile {
            name: mig_name::profile_name(u32::from(kind.compute), gb, attribute),
            compute_slices: kind.compute,
            width: kind.width,
            starts: kind.starts.to_vec(),
            max_count,
        };
        profiles.push(profile(None, kind.max));
        profiles.extend(
            kind.variants
                .iter()
                .map(|&(attribute, max)| profile(Some(attribute), max)),
        );
    }
    MigGeometry {
        positions,
        compute_slices,
        profiles,
    }
}

/// The variants of the 1-slice and 2-slice profiles on Ampere and Hopper: one `+me` 1g.
const HOPPER_1G: &[(ProfileAttribute, u8)] = &[(ME, 1)];
const HOPPER_2G: &[(ProfileAttribute, u8)] = &[];
/// On Blackwell also `-me` (placed like the plain profile) and `+me.all` (one per GPU).
const BLACKWELL_1G: &[(ProfileAttribute, u8)] = &[(ME, 1), (NO_ME, 7), (ME_ALL, 1)];
const BLACKWELL_2G: &[(ProfileAttribute, u8)] = &[(NO_ME, 3), (ME_ALL, 1)];

/// The 8-position, 7-slice geometry of A100, H100, H200 and B200: only the memory figures in
/// the names (from `total_mib`) and the attribute variants differ. Shares: 1g 1/8, the
/// double-memory 1g and 2g 2/8, 3g and 4g 4/8, 7g all.
fn seven_slice(
    total_mib: u64,
    variants_1g: &'static [(ProfileAttribute, u8)],
    variants_2g: &'static [(ProfileAttribute, u8)],
) -> MigGeometry {
    geometry(
        8,
        7,
        total_mib,
        &[
            kind(1, 1, &[0, 1, 2, 3, 4, 5, 6], 7, variants_1g),
            kind(1, 2, &[0, 2, 4, 6], 4, &[]),
            kind(2, 2, &[0, 2, 4], 3, variants_2g),
            kind(3, 4, &[0, 4], 2, &[]),
            kind(4, 4, &[0], 1, &[]),
            kind(7, 8, &[0], 1, &[]),
        ],
    )
}

/// A30: one `+me` variant each of 1g and 2g.
const A30_VARIANTS: [&[(ProfileAttribute, u8)]; 3] = [&[(ME, 1)], &[(ME, 1)], &[]];
/// RTX PRO 6000 Blackwell: a `+gfx` variant of every profile, placed like it.
const RTX_PRO_VARIANTS: [&[(ProfileAttribute, u8)]; 3] = [&[(GFX, 4)], &[(GFX, 2)], &[(GFX, 1)]];

/// The 4-position, 4-slice geometry of A30 and RTX PRO 6000 Blackwell: 1g 1/4, 2g 2/4, 4g
/// all, each with its variants (for 1g, 2g and 4g in turn).
fn four_slice(total_mib: u64, variants: [&'static [(ProfileAttribute, u8)]; 3]) -> MigGeometry {
    let [v1, v2, v4] = variants;
    geometry(
        4,
        4,
        total_mib,
        &[
            kind(1, 1, &[0, 1, 2, 3], 4, v1),
            kind(2, 2, &[0, 2], 2, v2),
            kind(4, 4, &[0], 1, v4),
        ],
    )
}

// Total memory per model, MiB as NVML reports it: only its whole GiB (rounded up) and each
// profile's share enter the names. H100-80GB, H100 NVL, H200 and B200 are totals NVML reports
// on those parts; the others are chosen within the GiB the published names imply (e.g. GB200's
// `7g.189gb`: more than 188 and at most 189 GiB).
const A100_40GB_MIB: u64 = 40_960;
/// A100-80GB reports 81920 MiB: the same names as H100-80GB, so the two share a geometry.
const H100_80GB_MIB: u64 = 81_559;
const H100_NVL_MIB: u64 = 95_830;
const H200_MIB: u64 = 143_771;
const A30_MIB: u64 = 24_576;
const GH200_96GB_MIB: u64 = 97_871;
const GH200_144GB_MIB: u64 = 146_944;
const B200_MIB: u64 = 183_359;
const GB200_MIB: u64 = 193_024;
const RTX_PRO_6000_MIB: u64 = 97_887;

static CATALOGUE: LazyLock<Vec<GpuModel>> = LazyLock::new(|| {
    let a100_40 = Arc::new(seven_slice(A100_40GB_MIB, HOPPER_1G, HOPPER_2G));
    let gb80 = Arc::new(seven_slice(H100_80GB_MIB, HOPPER_1G, HOPPER_2G));
    let nvl = Arc::new(seven_slice(H100_NVL_MIB, HOPPER_1G, HOPPER_2G));
    let h200 = Arc::new(seven_slice(H200_MIB, HOPPER_1G, HOPPER_2G));
    let a30 = Arc::new(four_slice(A30_MIB, A30_VARIANTS));
    let gh200_96 = Arc::new(seven_slice(GH200_96GB_MIB, HOPPER_1G, HOPPER_2G));
    let gh200_144 = Arc::new(seven_slice(GH200_144GB_MIB, HOPPER_1G, HOPPER_2G));
    let b200 = Arc::new(seven_slice(B200_MIB, BLACKWELL_1G, BLACKWELL_2G));
    let gb200 = Arc::new(seven_slice(GB200_MIB, BLACKWELL_1G, BLACKWELL_2G));
    let rtx_pro = Arc::new(four_slice(RTX_PRO_6000_MIB, RTX_PRO_VARIANTS));
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
            mig: Some(a30),
        },
        GpuModel {
            name: "GH200-96GB",
            aliases: &["NVIDIA GH200 480GB", "GH200-480GB", "GH200"],
            memory_gib: 96,
            mig: Some(gh200_96),
        },
        GpuModel {
            name: "GH200-144GB",
            aliases: &["NVIDIA GH200 144G HBM3e", "GH200-144G-HBM3e"],
            memory_gib: 144,
            mig: Some(gh200_144),
        },
        GpuModel {
            name: "B200-180GB",
            aliases: &["NVIDIA B200", "B200"],
            memory_gib: 180,
            mig: Some(b200),
        },
        GpuModel {
            name: "GB200-189GB",
            aliases: &["NVIDIA GB200", "GB200"],
            memory_gib: 189,
            mig: Some(gb200),
        },
        GpuModel {
            name: "RTX-PRO-6000-96GB",
            aliases: &[
                "NVIDIA RTX PRO 6000 Blackwell Server Edition",
                "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
                "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
                "RTX-PRO-6000",
            ],
            memory_gib: 96,
            mig: Some(rtx_pro),
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

    fn names(model: &str) -> Vec<String> {
        mig_geometry(model)
            .unwrap()
            .profiles
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// Every model's profile names, in catalogue order, as NVIDIA publishes them: generated by
    /// NVIDIA's rule from the model's total memory, they must come out exactly so.
    #[test]
    fn names_follow_nvidias_rule_on_every_model() {
        let expected = [
            (
                "A100-SXM4-40GB",
                "1g.5gb 1g.5gb+me 1g.10gb 2g.10gb 3g.20gb 4g.20gb 7g.40gb",
            ),
            (
                "A100-80GB",
                "1g.10gb 1g.10gb+me 1g.20gb 2g.20gb 3g.40gb 4g.40gb 7g.80gb",
            ),
            (
                "H100-80GB",
                "1g.10gb 1g.10gb+me 1g.20gb 2g.20gb 3g.40gb 4g.40gb 7g.80gb",
            ),
            (
                "H100-NVL",
                "1g.12gb 1g.12gb+me 1g.24gb 2g.24gb 3g.47gb 4g.47gb 7g.94gb",
            ),
            (
                "H200-141GB",
                "1g.18gb 1g.18gb+me 1g.35gb 2g.35gb 3g.71gb 4g.71gb 7g.141gb",
            ),
            ("A30-24GB", "1g.6gb 1g.6gb+me 2g.12gb 2g.12gb+me 4g.24gb"),
            (
                "GH200-96GB",
                "1g.12gb 1g.12gb+me 1g.24gb 2g.24gb 3g.48gb 4g.48gb 7g.96gb",
            ),
            (
                "GH200-144GB",
                "1g.18gb 1g.18gb+me 1g.36gb 2g.36gb 3g.72gb 4g.72gb 7g.144gb",
            ),
            (
                "B200-180GB",
                "1g.23gb 1g.23gb+me 1g.23gb-me 1g.23gb+me.all 1g.45gb \
                 2g.45gb 2g.45gb-me 2g.45gb+me.all 3g.90gb 4g.90gb 7g.180gb",
            ),
            (
                "GB200-189GB",
                "1g.24gb 1g.24gb+me 1g.24gb-me 1g.24gb+me.all 1g.47gb \
                 2g.47gb 2g.47gb-me 2g.47gb+me.all 3g.95gb 4g.95gb 7g.189gb",
            ),
            (
                "RTX-PRO-6000-96GB",
                "1g.24gb 1g.24gb+gfx 2g.48gb 2g.48gb+gfx 4g.96gb 4g.96gb+gfx",
            ),
        ];
        for (model, want) in expected {
            let want: Vec<&str> = want.split_whitespace().collect();
            assert_eq!(names(model), want, "{model}");
        }
        let mig_models = models().iter().filter(|m| m.mig.is_some()).count();
        assert_eq!(mig_models, expected.len(), "every MIG model is checked");
        // A100-80GB reports 81920 MiB, H100-80GB 81559: both round up to 80 GiB.
        assert_eq!(
            seven_slice(81_920, HOPPER_1G, HOPPER_2G),
            *mig_geometry("A100-80GB").unwrap()
        );
    }

    #[test]
    fn names_parse_back_to_their_slices() {
        for m in models() {
            for p in m.mig.iter().flat_map(|g| &g.profiles) {
                let parsed = ProfileName::parse(&p.name).unwrap();
                assert_eq!(
                    parsed.gi_slices,
                    u32::from(p.compute_slices),
                    "{} {}",
                    m.name,
                    p.name
                );
            }
        }
    }

    #[test]
    fn blackwell_variants_are_placed_like_their_base() {
        for model in ["B200", "GB200"] {
            let g = mig_geometry(model).unwrap();
            let base_1g = &g.profiles[0];
            let base_2g = g.profiles.iter().find(|p| p.compute_slices == 2).unwrap();
            for base in [base_1g, base_2g] {
                let no_me = g.profile(&format!("{}-me", base.name)).unwrap().1;
                assert_eq!(no_me.starts, base.starts, "{model} {}", no_me.name);
                assert_eq!(no_me.width, base.width);
                assert_eq!(no_me.max_count, base.max_count);
                let all = g.profile(&format!("{}+me.all", base.name)).unwrap().1;
                assert_eq!(all.starts, base.starts, "{model} {}", all.name);
                assert_eq!(all.max_count, 1);
            }
            assert_eq!(
                g.profile(&format!("{}+me", base_1g.name))
                    .unwrap()
                    .1
                    .max_count,
                1
            );
        }
        let rtx = mig_geometry("NVIDIA RTX PRO 6000 Blackwell Server Edition").unwrap();
        assert_eq!((rtx.positions, rtx.compute_slices), (4, 4));
        for base in rtx.profiles.iter().filter(|p| !p.name.ends_with("+gfx")) {
            let gfx = rtx.profile(&format!("{}+gfx", base.name)).unwrap().1;
            assert_eq!(
                (&gfx.starts, gfx.width, gfx.max_count, gfx.compute_slices),
                (
                    &base.starts,
                    base.width,
                    base.max_count,
                    base.compute_slices
                )
            );
        }
        let starts = |n: &str| rtx.profile(n).unwrap().1.starts.clone();
        assert_eq!(starts("1g.24gb"), vec![0, 1, 2, 3]);
        assert_eq!(starts("2g.48gb"), vec![0, 2]);
        assert_eq!(starts("4g.96gb"), vec![0]);
    }

    #[test]
    fn both_media_extension_forms_take_the_media_engines() {
        let g = mig_geometry("NVIDIA B200").unwrap();
        let is_me = |n: &str| g.profile(n).unwrap().1.is_media_extension();
        assert!(is_me("1g.23gb+me"));
        assert!(is_me("1g.23gb+me.all"));
        assert!(is_me("2g.45gb+me.all"));
        assert!(!is_me("1g.23gb-me"));
        assert!(!is_me("1g.23gb"));
        let rtx = mig_geometry("RTX-PRO-6000-96GB").unwrap();
        assert!(!rtx.profile("1g.24gb+gfx").unwrap().1.is_media_extension());

        // One media-extension instance per GPU, whichever form it takes.
        let idx = |n: &str| g.profile(n).unwrap().0;
        let mut gpu = crate::mig::MigGpu::new(g.clone());
        gpu.place(idx("1g.23gb+me"), 0).unwrap();
        assert_eq!(
            gpu.place(idx("1g.23gb+me.all"), 1),
            Err(crate::mig::MigError::MediaEngineTaken)
        );
        assert_eq!(
            gpu.place(idx("2g.45gb+me.all"), 2),
            Err(crate::mig::MigError::MediaEngineTaken)
        );
        gpu.place(idx("1g.23gb-me"), 1).unwrap();
        let mut gpu = crate::mig::MigGpu::new(g.clone());
        gpu.place(idx("2g.45gb+me.all"), 0).unwrap();
        assert_eq!(
            gpu.place(idx("1g.23gb+me"), 2),
            Err(crate::mig::MigError::MediaEngineTaken)
        );
    }

    #[test]
    fn memory_is_read_past_any_attribute() {
        let g = mig_geometry("GB200").unwrap();
        let mem = |n: &str| g.profile(n).unwrap().1.memory_mib();
        for name in ["1g.24gb", "1g.24gb+me", "1g.24gb-me", "1g.24gb+me.all"] {
            assert_eq!(mem(name), Some(24 * 1024), "{name}");
        }
        let rtx = mig_geometry("RTX-PRO-6000-96GB").unwrap();
        assert_eq!(
            rtx.profile("2g.48gb+gfx").unwrap().1.memory_mib(),
            Some(48 * 1024)
        );
        assert_eq!(
            g.smallest_holding(1).map(|p| p.name.as_str()),
            Some("1g.24gb"),
            "the plain profile before its variants"
        );
    }

    #[test]
    fn new_models_are_found_by_their_nvml_names() {
        let cases = [
            ("NVIDIA GH200 480GB", "GH200-96GB"),
            ("NVIDIA GH200 144G HBM3e", "GH200-144GB"),
            ("NVIDIA B200", "B200-180GB"),
            ("NVIDIA GB200", "GB200-189GB"),
            (
                "NVIDIA RTX PRO 6000 Blackwell Server Edition",
                "RTX-PRO-6000-96GB",
            ),
            (
                "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
                "RTX-PRO-6000-96GB",
            ),
        ];
        for (alias, name) in cases {
            assert_eq!(model(alias).unwrap().name, name, "{alias}");
        }
        let mut seen = std::collections::HashSet::new();
        for m in models() {
            for n in std::iter::once(&m.name).chain(m.aliases) {
                assert!(seen.insert(n.to_ascii_lowercase()), "{n} names two models");
            }
        }
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

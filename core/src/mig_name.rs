//! NVIDIA's naming rule for MIG GPU-instance profiles (`<g>g.<GB>gb` plus an attribute such as
//! `+me`), the NVML profile indices that carry each attribute, and the Kubernetes resource form
//! of a profile name (`+` becomes `.`). The node agent names what NVML reports with it and the
//! catalogue names its geometries with it, so both agree with NVIDIA's device plugin.
//!
//! The `GB` figure is not the profile's memory rounded up to GiB: NVIDIA takes the profile's
//! share of the GPU's memory, rounds it up to eighths and scales the GPU's total (in whole GiB,
//! rounded up) by it. Everything here is integer arithmetic, equal to NVIDIA's float version for
//! any real memory size.

use std::fmt;

/// Bytes in one MiB.
const MIB: u64 = 1 << 20;
/// Bytes in one GiB.
const GIB: u64 = 1 << 30;
/// Profile memory shares are rounded up to this many parts of the GPU's memory.
const SHARE_PARTS: u128 = 8;

/// Number of NVML GPU instance profile indices (`NVML_GPU_INSTANCE_PROFILE_COUNT`): the indices
/// worth asking a GPU about are `0..GPU_INSTANCE_PROFILE_COUNT`.
pub const GPU_INSTANCE_PROFILE_COUNT: u32 = 17;

/// The variant a profile name's suffix marks: which engines the instance gets beyond the plain
/// profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileAttribute {
    /// `+me`: the instance holds the GPU's one set of media engines (NVDEC, JPEG, OFA).
    MediaExtension,
    /// `+me.all`: the instance holds all of the GPU's media engines.
    MediaExtensionAll,
    /// `-me`: the instance has no media engines at all.
    NoMediaExtension,
    /// `+gfx`: the instance supports graphics.
    Graphics,
}

impl ProfileAttribute {
    /// Every attribute, longest suffix first so that suffix matching never stops early.
    pub const ALL: [ProfileAttribute; 4] = [
        ProfileAttribute::MediaExtensionAll,
        ProfileAttribute::NoMediaExtension,
        ProfileAttribute::MediaExtension,
        ProfileAttribute::Graphics,
    ];

    /// The suffix NVIDIA appends to the profile name, e.g. `+me`.
    pub fn suffix(self) -> &'static str {
        match self {
            ProfileAttribute::MediaExtension => "+me",
            ProfileAttribute::MediaExtensionAll => "+me.all",
            ProfileAttribute::NoMediaExtension => "-me",
            ProfileAttribute::Graphics => "+gfx",
        }
    }

    /// The suffix in a Kubernetes resource name: `+` is not allowed there and becomes `.`
    /// (`.me`, `.me.all`, `.gfx`); `-me` stays as it is.
    pub fn resource_suffix(self) -> &'static str {
        match self {
            ProfileAttribute::MediaExtension => ".me",
            ProfileAttribute::MediaExtensionAll => ".me.all",
            ProfileAttribute::NoMediaExtension => "-me",
            ProfileAttribute::Graphics => ".gfx",
        }
    }

    /// Whether an instance of this variant takes the GPU's media engines, so that at most one
    /// such instance fits on a GPU (`+me` and `+me.all`).
    pub fn takes_media_engines(self) -> bool {
        matches!(
            self,
            ProfileAttribute::MediaExtension | ProfileAttribute::MediaExtensionAll
        )
    }
}

impl fmt::Display for ProfileAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// The attribute of an NVML GPU instance profile index (`NVML_GPU_INSTANCE_PROFILE_*`): the
/// `_REV1` indices are `+me`, `_GFX` `+gfx`, `_NO_ME` `-me` and `_ALL_ME` `+me.all`. `None` for
/// plain profiles (the double-memory `1_SLICE_REV2` among them) and unknown indices.
pub fn profile_attribute(nvml_profile_index: u32) -> Option<ProfileAttribute> {
    match nvml_profile_index {
        7 | 8 => Some(ProfileAttribute::MediaExtension),
        10..=12 => Some(ProfileAttribute::Graphics),
        13 | 14 => Some(ProfileAttribute::NoMediaExtension),
        15 | 16 => Some(ProfileAttribute::MediaExtensionAll),
        _ => None,
    }
}

/// The `GB` figure of a profile's name from its memory (MiB, as NVML reports it) and the GPU's
/// total memory (bytes): the profile's share of the total, rounded up to eighths, times the
/// total in GiB rounded up, rounded to the nearest integer (halves up). 0 for a GPU of no memory.
pub fn profile_memory_gb(profile_memory_mib: u64, device_memory_bytes: u64) -> u64 {
    if device_memory_bytes == 0 {
        return 0;
    }
    // Widened: MiB times 2^23 overflows u64 for absurd inputs but never u128.
    let scaled = u128::from(profile_memory_mib) * u128::from(MIB) * SHARE_PARTS;
    let eighths = scaled.div_ceil(u128::from(device_memory_bytes));
    gb_of_share(eighths, device_memory_bytes)
}

/// The `GB` figure of a profile taking `eighths` eighths of a GPU with `device_memory_bytes`
/// bytes: what [`profile_memory_gb`] gives once the share is rounded up to eighths. The
/// catalogue names its geometries with it.
pub fn memory_gb_for_eighths(eighths: u64, device_memory_bytes: u64) -> u64 {
    gb_of_share(u128::from(eighths), device_memory_bytes)
}

/// `eighths / 8` of the total in whole GiB (rounded up), rounded half away from zero, as
/// `floor((eighths * total + 4) / 8)`. Wide enough that no u64 input overflows; saturates.
fn gb_of_share(eighths: u128, device_memory_bytes: u64) -> u64 {
    let total_gb = u128::from(device_memory_bytes.div_ceil(GIB));
    let gb = eighths
        .saturating_mul(total_gb)
        .saturating_add(SHARE_PARTS / 2)
        / SHARE_PARTS;
    u64::try_from(gb).unwrap_or(u64::MAX)
}

/// The profile name NVIDIA gives a GPU instance profile: `<g>g.<GB>gb` and the attribute's
/// suffix, e.g. `1g.18gb`, `1g.23gb+me.all`, `2g.48gb+gfx`.
pub fn profile_name(gi_slices: u32, memory_gb: u64, attribute: Option<ProfileAttribute>) -> String {
    let suffix = attribute.map_or("", ProfileAttribute::suffix);
    format!("{gi_slices}g.{memory_gb}gb{suffix}")
}

/// Splits a profile name into its base (`1g.10gb`) and attribute: `1g.10gb+me.all` gives
/// `("1g.10gb", Some(MediaExtensionAll))`. A name without a known suffix is all base.
pub fn split_attribute(profile: &str) -> (&str, Option<ProfileAttribute>) {
    ProfileAttribute::ALL
        .iter()
        .find_map(|&a| profile.strip_suffix(a.suffix()).map(|base| (base, Some(a))))
        .unwrap_or((profile, None))
}

/// The parts of a GPU instance profile name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileName {
    /// GPU instance slices (the `<g>g` part).
    pub gi_slices: u32,
    /// The `<GB>gb` part.
    pub memory_gb: u64,
    /// The variant the suffix marks, if any.
    pub attribute: Option<ProfileAttribute>,
}

impl ProfileName {
    /// Reads `<g>g.<GB>gb` with an optional attribute suffix (digits only, no signs); `None` for
    /// any other shape, compute-instance names (`<c>c.<g>g.<GB>gb`) included.
    pub fn parse(profile: &str) -> Option<ProfileName> {
        let (base, attribute) = split_attribute(profile);
        let (slices, memory) = base.split_once("g.")?;
        let memory = memory.strip_suffix("gb")?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(slices) || !digits(memory) {
            return None;
        }
        Some(ProfileName {
            gi_slices: slices.parse().ok()?,
            memory_gb: memory.parse().ok()?,
            attribute,
        })
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&profile_name(
            self.gi_slices,
            self.memory_gb,
            self.attribute,
        ))
    }
}

/// The form of a profile name inside a Kubernetes resource name (after `mig-`): each `+`
/// becomes `.` (`1g.10gb+me` gives `1g.10gb.me`, `1g.23gb+me.all` gives `1g.23gb.me.all`);
/// `-me` is valid there and kept.
pub fn resource_form(profile: &str) -> String {
    profile.replace('+', ".")
}

/// The profile name a resource form stands for, undoing [`resource_form`] for the known
/// attributes: `1g.10gb.me` gives `1g.10gb+me`, `1g.23gb.me.all` gives `1g.23gb+me.all`,
/// `1g.24gb.gfx` gives `1g.24gb+gfx`. Anything else comes back unchanged.
pub fn profile_from_resource_form(resource: &str) -> String {
    ProfileAttribute::ALL
        .iter()
        .find_map(|&a| {
            resource
                .strip_suffix(a.resource_suffix())
                .map(|base| format!("{base}{}", a.suffix()))
        })
        .unwrap_or_else(|| resource.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old, wrong rule: the profile's MiB rounded up to whole GiB.
    fn old_rule(profile_memory_mib: u64) -> u64 {
        profile_memory_mib.div_ceil(1024)
    }

    /// One GPU model: its total memory as NVML reports it (MiB) and its profiles' memory
    /// (MiB) with the `GB` figure NVIDIA names them by.
    struct Model {
        name: &'static str,
        total_mib: u64,
        profiles: &'static [(u64, u64)],
    }

    // Measured (NVML on the real part, names from NVIDIA's plugin): the 1-slice profiles of
    // H200 (16384 MiB on 143771 MiB: 1g.18gb), H100 NVL (11008 MiB: 1g.12gb), B200 (22528 MiB:
    // 1g.23gb) and GB200 (20480 MiB: 1g.24gb). Everything else is derived: totals picked so
    // their rounded-up GiB gives the published 7g figure (GB200's 7g.189gb needs 188 < total
    // GiB <= 189), profile sizes picked within their published share, and the expected
    // figures are NVIDIA's published profile names.
    const MODELS: &[Model] = &[
        Model {
            name: "A100-40GB",
            total_mib: 40960,
            profiles: &[(4864, 5), (9856, 10), (19968, 20), (40192, 40)],
        },
        Model {
            name: "A100-80GB",
            total_mib: 81920,
            profiles: &[(9728, 10), (19968, 20), (40192, 40), (81152, 80)],
        },
        Model {
            name: "H100-80GB",
            total_mib: 81559,
            profiles: &[(9984, 10), (20224, 20), (40192, 40), (81152, 80)],
        },
        Model {
            name: "H100 NVL",
            total_mib: 95830,
            profiles: &[(11008, 12), (22272, 24), (44800, 47), (91904, 94)],
        },
        Model {
            name: "H200",
            total_mib: 143771,
            profiles: &[(16384, 18), (32512, 35), (71680, 71), (143360, 141)],
        },
        Model {
            name: "GH200 96GB",
            total_mib: 97871,
            profiles: &[(11520, 12), (23040, 24), (46592, 48), (96000, 96)],
        },
        Model {
            name: "GH200 144GB",
            total_mib: 146944,
            profiles: &[(16896, 18), (35328, 36), (71680, 72), (145408, 144)],
        },
        Model {
            name: "B200",
            total_mib: 183359,
            profiles: &[(22528, 23), (45568, 45), (91648, 90), (182784, 180)],
        },
        Model {
            name: "GB200",
            total_mib: 193024,
            profiles: &[(20480, 24), (47104, 47), (94208, 95), (192512, 189)],
        },
        Model {
            name: "RTX PRO 6000",
            total_mib: 97887,
            profiles: &[(23808, 24), (48128, 48), (96768, 96)],
        },
        Model {
            name: "A30",
            total_mib: 24576,
            profiles: &[(5888, 6), (12032, 12), (24320, 24)],
        },
    ];

    #[test]
    fn names_follow_nvidias_rule_on_every_model() {
        for m in MODELS {
            for &(mib, gb) in m.profiles {
                assert_eq!(
                    profile_memory_gb(mib, m.total_mib * MIB),
                    gb,
                    "{}: {mib} MiB of {} MiB",
                    m.name,
                    m.total_mib
                );
            }
        }
    }

    #[test]
    fn the_old_rule_is_wrong_where_it_was_measured_wrong() {
        // (model, total MiB, 1-slice profile MiB, old name's GB, right GB)
        let measured = [
            ("H200", 143771, 16384, 16, 18),
            ("H100 NVL", 95830, 11008, 11, 12),
            ("B200", 183359, 22528, 22, 23),
            ("GB200", 193024, 20480, 20, 24),
        ];
        for (name, total, mib, old, right) in measured {
            assert_eq!(old_rule(mib), old, "{name}");
            assert_eq!(profile_memory_gb(mib, total * MIB), right, "{name}");
            assert_ne!(old_rule(mib), profile_memory_gb(mib, total * MIB), "{name}");
        }
        // Where both rules agree, nothing changes.
        assert_eq!(old_rule(9984), profile_memory_gb(9984, 81559 * MIB));
        assert_eq!(old_rule(4864), profile_memory_gb(4864, 40960 * MIB));
    }

    /// NVIDIA's float version, to check the integer one against it.
    fn float_rule(profile_memory_mib: u64, device_memory_bytes: u64) -> u64 {
        let share = (profile_memory_mib as f64 * MIB as f64) / device_memory_bytes as f64;
        let share = (share * 8.0).ceil() / 8.0;
        let total_gb = device_memory_bytes.div_ceil(GIB) as f64;
        (share * total_gb).round() as u64
    }

    #[test]
    fn integer_rule_equals_the_float_rule() {
        for total_mib in [24576, 40960, 81559, 95830, 97871, 143771, 183359, 193024] {
            let total = total_mib * MIB;
            for mib in (0..=total_mib).step_by(97) {
                assert_eq!(
                    profile_memory_gb(mib, total),
                    float_rule(mib, total),
                    "{mib} MiB of {total_mib} MiB"
                );
            }
        }
    }

    #[test]
    fn shares_in_eighths_give_the_same_figures() {
        let h200 = 143771 * MIB;
        let gb: Vec<u64> = [1, 2, 4, 8]
            .iter()
            .map(|&e| memory_gb_for_eighths(e, h200))
            .collect();
        assert_eq!(gb, vec![18, 35, 71, 141]);
        assert_eq!(profile_memory_gb(1, 0), 0, "no memory, no figure");
        assert_eq!(profile_memory_gb(u64::MAX, 1), u64::MAX, "saturates");
    }

    #[test]
    fn nvml_indices_carry_their_attributes() {
        use ProfileAttribute::*;
        let by_index: Vec<Option<ProfileAttribute>> = (0..GPU_INSTANCE_PROFILE_COUNT + 1)
            .map(profile_attribute)
            .collect();
        assert_eq!(
            by_index,
            vec![
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                Some(MediaExtension),
                Some(MediaExtension),
                None,
                Some(Graphics),
                Some(Graphics),
                Some(Graphics),
                Some(NoMediaExtension),
                Some(NoMediaExtension),
                Some(MediaExtensionAll),
                Some(MediaExtensionAll),
                None,
            ]
        );
    }

    #[test]
    fn names_and_their_parts_round_trip() {
        use ProfileAttribute::*;
        let cases = [
            (1, 18, None, "1g.18gb"),
            (1, 10, Some(MediaExtension), "1g.10gb+me"),
            (1, 23, Some(MediaExtensionAll), "1g.23gb+me.all"),
            (2, 45, Some(NoMediaExtension), "2g.45gb-me"),
            (4, 96, Some(Graphics), "4g.96gb+gfx"),
        ];
        for (g, gb, attribute, name) in cases {
            assert_eq!(profile_name(g, gb, attribute), name);
            let parsed = ProfileName::parse(name).unwrap();
            assert_eq!(
                parsed,
                ProfileName {
                    gi_slices: g,
                    memory_gb: gb,
                    attribute
                }
            );
            assert_eq!(parsed.to_string(), name);
        }
        for junk in [
            "",
            "1g",
            "1g.gb",
            "g.10gb",
            "1g.10gb+",
            "1g.10gb+xx",
            "+1g.10gb",
            "1g.+10gb",
            "1c.1g.10gb",
            "1g.10gb.me",
            "huge",
        ] {
            assert_eq!(ProfileName::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn resource_forms_map_both_ways() {
        let pairs = [
            ("1g.10gb", "1g.10gb"),
            ("1g.10gb+me", "1g.10gb.me"),
            ("1g.23gb+me.all", "1g.23gb.me.all"),
            ("1g.23gb-me", "1g.23gb-me"),
            ("1g.24gb+gfx", "1g.24gb.gfx"),
        ];
        for (profile, resource) in pairs {
            assert_eq!(resource_form(profile), resource);
            assert_eq!(profile_from_resource_form(resource), profile);
        }
    }
}

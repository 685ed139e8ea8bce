//! What a pod asks for, in scheduler terms: CPU, memory and one kind of GPU
//! demand (a share, whole GPUs, or MIG slices of one profile), parsed from
//! Kubernetes resource names such as `nvidia.com/mig-3g.40gb`.

use serde::{Deserialize, Serialize};

use crate::mig_name;

/// The resource domain NVIDIA's plugin uses; ours is configurable.
pub const DEFAULT_DOMAIN: &str = "nvidia.com";

/// A pod's GPU demand. A pod asks for one kind only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpuDemand {
    /// No GPU: a CPU-only pod.
    None,
    /// A fraction of one GPU, in thousandths (GPU sharing, as in the Alibaba trace).
    Share {
        /// Milli-GPU wanted on a single GPU.
        milli: u32,
    },
    /// `count` whole GPUs.
    Whole {
        /// Number of whole GPUs.
        count: u32,
    },
    /// `count` MIG slices of one profile, named as in the resource (`1g.10gb`).
    Mig {
        /// MIG profile name, e.g. `1g.10gb`, `1g.10gb+me` or `1g.23gb-me`.
        profile: String,
        /// Number of MIG instances of the profile.
        count: u32,
    },
}

impl GpuDemand {
    /// Whether the pod asks for no GPU at all.
    pub fn is_none(&self) -> bool {
        matches!(self, GpuDemand::None)
    }

    /// Devices handed out for this demand: whole GPUs or MIG slices (none for a share).
    pub fn count(&self) -> u32 {
        match self {
            GpuDemand::Whole { count } | GpuDemand::Mig { count, .. } => *count,
            GpuDemand::None | GpuDemand::Share { .. } => 0,
        }
    }

    /// Thousandths of a GPU this demand takes. A MIG slice counts its memory
    /// positions, read from the first catalogue geometry that has the profile
    /// (0 for a profile no model offers).
    pub fn milli(&self) -> u64 {
        match self {
            GpuDemand::None => 0,
            GpuDemand::Share { milli } => u64::from(*milli),
            GpuDemand::Whole { count } => u64::from(*count) * 1000,
            GpuDemand::Mig { profile, count } => crate::catalogue::models()
                .iter()
                .filter_map(|m| m.mig.as_ref())
                .find_map(|g| {
                    g.profile(profile)
                        .ok()
                        .map(|(_, p)| (u64::from(p.width), u64::from(g.positions)))
                })
                .map_or(0, |(w, positions)| u64::from(*count) * w * 1000 / positions),
        }
    }
}

/// Everything placement needs to know about a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRequest {
    /// CPU the pod requests, in millicores.
    pub cpu_milli: u64,
    /// Memory the pod requests, in MiB.
    pub memory_mib: u64,
    /// The pod's GPU demand (`GpuDemand::None` for a CPU-only pod).
    pub gpu: GpuDemand,
    /// Guaranteed QoS with an integer CPU count: the CPU manager pins it, so
    /// the Topology Manager aligns its CPUs too.
    #[serde(default)]
    pub exclusive_cpus: bool,
    /// Allowed GPU models; empty means any.
    #[serde(default)]
    pub gpu_models: Vec<String>,
}

impl PodRequest {
    /// A request for CPU (millicores) and memory (MiB) only, with no GPU demand.
    pub fn cpu_only(cpu_milli: u64, memory_mib: u64) -> Self {
        PodRequest {
            cpu_milli,
            memory_mib,
            gpu: GpuDemand::None,
            exclusive_cpus: false,
            gpu_models: Vec::new(),
        }
    }

    /// The same request with `gpu` as its GPU demand.
    pub fn with_gpu(mut self, gpu: GpuDemand) -> Self {
        self.gpu = gpu;
        self
    }

    /// Whole CPUs the CPU manager would pin, if any.
    pub fn exclusive_cpu_count(&self) -> Option<u32> {
        (self.exclusive_cpus && self.cpu_milli > 0 && self.cpu_milli.is_multiple_of(1000))
            .then_some((self.cpu_milli / 1000) as u32)
    }

    /// Whether the pod may run on a GPU of `model` (case-insensitive; any model when the pod
    /// names none).
    pub fn allows_model(&self, model: &str) -> bool {
        self.gpu_models.is_empty()
            || self
                .gpu_models
                .iter()
                .any(|m| m.eq_ignore_ascii_case(model))
    }
}

/// Why a pod's GPU resources cannot be turned into a GPU demand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A MIG resource name whose profile part is not of the form `1g.10gb` (or `1g.10gb+me`,
    /// `+me.all`, `-me`, `+gfx`).
    #[error("malformed MIG profile {0:?} (expected e.g. 1g.10gb or 1g.10gb+me)")]
    MalformedProfile(String),
    /// The pod asks for two different GPU resources (both named); only one kind is supported.
    #[error(
        "the pod asks for more than one kind of GPU resource ({0} and {1}); one kind per pod is supported"
    )]
    MixedGpuResources(String, String),
    /// More devices of one resource than can be counted (over 2^32 - 1): no node has them,
    /// and reading the count as any other number would misreport the request.
    #[error("the pod asks for {count} of {resource}, more than any node can have")]
    TooMany {
        /// The resource name.
        resource: String,
        /// The count asked for.
        count: u64,
    },
}

/// One GPU resource kind as named in a pod spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuResource {
    /// Whole GPUs (`<domain>/gpu`).
    Whole,
    /// MIG instances of the named profile (`<domain>/mig-<profile>`), attribute suffixes in
    /// their profile form (`.me` back to `+me`, `.me.all` to `+me.all`, `.gfx` to `+gfx`).
    Mig(String),
}

/// Maps resource names to GPU resources for a configurable domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    /// Resource domain of the GPU resources, e.g. `nvidia.com`.
    pub domain: String,
}

impl Default for ResourceNames {
    fn default() -> Self {
        ResourceNames {
            domain: DEFAULT_DOMAIN.to_string(),
        }
    }
}

impl ResourceNames {
    /// Resource names under `domain`.
    pub fn new(domain: impl Into<String>) -> Self {
        ResourceNames {
            domain: domain.into(),
        }
    }

    /// Resource name for whole GPUs, e.g. `nvidia.com/gpu`.
    pub fn whole_gpu(&self) -> String {
        format!("{}/gpu", self.domain)
    }

    /// Resource name for MIG instances of `profile`. `+` is not allowed in resource names, so
    /// (as NVIDIA's plugin does) it becomes `.`: `1g.10gb+me` is advertised as
    /// `mig-1g.10gb.me`, `1g.23gb+me.all` as `mig-1g.23gb.me.all`, `1g.24gb+gfx` as
    /// `mig-1g.24gb.gfx`; `-me` is valid and kept (`mig-1g.23gb-me`).
    pub fn mig(&self, profile: &str) -> String {
        format!("{}/mig-{}", self.domain, mig_name::resource_form(profile))
    }

    /// The resource name for a demand, if it asks for a GPU.
    pub fn for_demand(&self, demand: &GpuDemand) -> Option<String> {
        match demand {
            GpuDemand::Whole { .. } => Some(self.whole_gpu()),
            GpuDemand::Mig { profile, .. } => Some(self.mig(profile)),
            GpuDemand::None | GpuDemand::Share { .. } => None,
        }
    }

    /// Classifies a resource name: `Ok(None)` for resources that are not ours.
    pub fn classify(&self, name: &str) -> Result<Option<GpuResource>, RequestError> {
        let Some(rest) = name
            .strip_prefix(self.domain.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Ok(None);
        };
        if rest == "gpu" {
            return Ok(Some(GpuResource::Whole));
        }
        match rest.strip_prefix("mig-") {
            Some(name) => {
                let profile = mig_name::profile_from_resource_form(name);
                validate_profile_name(&profile)?;
                Ok(Some(GpuResource::Mig(profile)))
            }
            None => Ok(None),
        }
    }

    /// Builds the GPU demand from a container's (resource name, count) pairs.
    pub fn demand<'a>(
        &self,
        resources: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Result<GpuDemand, RequestError> {
        let mut demand = GpuDemand::None;
        let mut seen: Option<String> = None;
        for (name, count) in resources {
            let Some(kind) = self.classify(name)? else {
                continue;
            };
            if count == 0 {
                continue;
            }
            if let Some(prev) = &seen
                && prev != name
            {
                return Err(RequestError::MixedGpuResources(
                    prev.clone(),
                    name.to_string(),
                ));
            }
            let total = u32::try_from(count)
                .ok()
                .and_then(|n| n.checked_add(demand.count()))
                .ok_or_else(|| RequestError::TooMany {
                    resource: name.to_string(),
                    count: count.saturating_add(u64::from(demand.count())),
                })?;
            demand = match kind {
                GpuResource::Whole => GpuDemand::Whole { count: total },
                GpuResource::Mig(profile) => GpuDemand::Mig {
                    profile,
                    count: total,
                },
            };
            seen = Some(name.to_string());
        }
        Ok(demand)
    }
}

/// Checks the shape `<N>g.<M>gb` (at most four digits each) with an optional attribute suffix:
/// `+me`, `+me.all`, `-me` or `+gfx`.
pub fn validate_profile_name(profile: &str) -> Result<(), RequestError> {
    let bad = || RequestError::MalformedProfile(profile.to_string());
    let (base, _) = mig_name::split_attribute(profile);
    let (compute, memory) = base.split_once("g.").ok_or_else(bad)?;
    let memory = memory.strip_suffix("gb").ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    if digits(compute) && digits(memory) {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_nvidia_mixed_strategy_names() {
        let names = ResourceNames::default();
        assert_eq!(
            names.classify("nvidia.com/gpu"),
            Ok(Some(GpuResource::Whole))
        );
        assert_eq!(
            names.classify("nvidia.com/mig-1g.10gb"),
            Ok(Some(GpuResource::Mig("1g.10gb".into())))
        );
        assert_eq!(
            names.classify("nvidia.com/mig-1g.10gb.me"),
            Ok(Some(GpuResource::Mig("1g.10gb+me".into())))
        );
        assert_eq!(names.mig("1g.10gb+me"), "nvidia.com/mig-1g.10gb.me");
        assert!(
            names
                .mig("1g.10gb+me")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "./-_".contains(c))
        );
        assert_eq!(names.classify("cpu"), Ok(None));
        assert_eq!(names.classify("example.com/gpu"), Ok(None));
        assert!(names.classify("nvidia.com/mig-huge").is_err());
    }

    #[test]
    fn every_attribute_maps_both_ways() {
        let names = ResourceNames::default();
        let pairs = [
            ("1g.10gb+me", "nvidia.com/mig-1g.10gb.me"),
            ("1g.23gb+me.all", "nvidia.com/mig-1g.23gb.me.all"),
            ("2g.45gb+me.all", "nvidia.com/mig-2g.45gb.me.all"),
            ("1g.23gb+gfx", "nvidia.com/mig-1g.23gb.gfx"),
            ("1g.23gb-me", "nvidia.com/mig-1g.23gb-me"),
            ("7g.189gb", "nvidia.com/mig-7g.189gb"),
        ];
        for (profile, resource) in pairs {
            assert_eq!(names.mig(profile), resource);
            assert_eq!(
                names.classify(resource),
                Ok(Some(GpuResource::Mig(profile.into()))),
                "{resource}"
            );
            assert!(
                resource
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "./-_".contains(c)),
                "{resource}"
            );
        }
        assert!(names.classify("nvidia.com/mig-1g.10gb.foo").is_err());
        assert!(names.classify("nvidia.com/mig-1g.10gb.me.none").is_err());
    }

    #[test]
    fn profile_names_with_attributes_are_valid_and_junk_is_not() {
        for good in [
            "1g.10gb",
            "1g.10gb+me",
            "1g.23gb+me.all",
            "1g.23gb-me",
            "4g.96gb+gfx",
            "7g.189gb",
        ] {
            assert_eq!(validate_profile_name(good), Ok(()), "{good}");
        }
        for junk in [
            "",
            "huge",
            "1g.10gb+",
            "1g.10gb+foo",
            "1g.10gb.me",
            "1g.10gb+me+me",
            "1g.10gb-gfx",
            "+me",
            "1c.1g.10gb",
            "12345g.10gb",
            "1g.12345gb",
        ] {
            assert!(validate_profile_name(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn custom_domain() {
        let names = ResourceNames::new("gpu.example.com");
        assert_eq!(names.whole_gpu(), "gpu.example.com/gpu");
        assert_eq!(
            names.classify("gpu.example.com/mig-3g.40gb"),
            Ok(Some(GpuResource::Mig("3g.40gb".into())))
        );
        assert_eq!(names.classify("nvidia.com/gpu"), Ok(None));
    }

    #[test]
    fn demand_sums_one_kind_and_refuses_mixtures() {
        let names = ResourceNames::default();
        let d = names
            .demand([("cpu", 4), ("nvidia.com/mig-1g.10gb", 2)])
            .unwrap();
        assert_eq!(
            d,
            GpuDemand::Mig {
                profile: "1g.10gb".into(),
                count: 2
            }
        );
        let err = names
            .demand([("nvidia.com/gpu", 1), ("nvidia.com/mig-1g.10gb", 1)])
            .unwrap_err();
        assert!(matches!(err, RequestError::MixedGpuResources(..)));
        assert_eq!(
            names.demand([("nvidia.com/gpu", 0)]).unwrap(),
            GpuDemand::None
        );
    }

    #[test]
    fn milli_counts_mig_positions_not_slices() {
        let mig = |p: &str| GpuDemand::Mig {
            profile: p.into(),
            count: 2,
        };
        assert_eq!(mig("1g.5gb").milli(), 250);
        assert_eq!(mig("3g.40gb").milli(), 1000, "a 3g takes 4 of 8 positions");
        assert_eq!(
            mig("4g.24gb").milli(),
            2000,
            "the A30's 4g takes all 4 positions"
        );
        assert_eq!(mig("9g.9gb").milli(), 0);
        assert_eq!(GpuDemand::Whole { count: 3 }.milli(), 3000);
        assert_eq!(GpuDemand::Share { milli: 470 }.milli(), 470);
    }

    #[test]
    fn exclusive_cpus_only_for_integer_counts() {
        let mut r = PodRequest::cpu_only(4000, 0);
        r.exclusive_cpus = true;
        assert_eq!(r.exclusive_cpu_count(), Some(4));
        r.cpu_milli = 1500;
        assert_eq!(r.exclusive_cpu_count(), None);
    }
}

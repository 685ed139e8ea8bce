//! Container Device Interface (CDI) support for Allocate: which device list strategies are on
//! (`strategy`), the Allocate response they make for the devices a container sees (this
//! module), and the agent's own CDI spec file naming the MIG instances it creates on demand,
//! which the NVIDIA toolkit's spec cannot know (`spec`, with the device nodes from `nodes`).

mod nodes;
mod spec;
mod strategy;

pub use nodes::{DEFAULT_DEV_ROOT, DEFAULT_MIG_MINORS, HostDevices, MigNodeIds};
pub use spec::{CdiSpecError, CdiSpecs, ContainerEdits, DeviceNode, SPEC_FILE_NAME};
pub use strategy::{DeviceListStrategy, SUPPORTED_STRATEGIES, StrategyError};

use std::path::PathBuf;

use kubesched_proto::deviceplugin::v1beta1::{CdiDevice, ContainerAllocateResponse};

use super::VISIBLE_DEVICES_ENV;

/// CDI kind of NVIDIA GPUs and MIG devices in the toolkit's spec.
pub const DEFAULT_CDI_KIND: &str = "nvidia.com/gpu";
/// Prefix of the container annotations the runtime reads CDI device names from.
pub const DEFAULT_CDI_ANNOTATION_PREFIX: &str = "cdi.k8s.io/";
/// Where the runtime looks for transient CDI specs (the toolkit writes its spec there too).
pub const DEFAULT_CDI_SPEC_DIR: &str = "/var/run/cdi";
/// Plugin part of the CDI annotation name: `<prefix>kubesched-agent_<resource>`.
pub const CDI_ANNOTATION_PLUGIN: &str = "kubesched-agent";

/// The longest name part of an annotation key Kubernetes accepts.
const MAX_ANNOTATION_NAME: usize = 63;

/// Why a CDI configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdiConfigError {
    /// The kind is not `vendor/class` (e.g. `nvidia.com/gpu`); holds it.
    #[error("CDI kind {0:?} is not of the form vendor.com/class (e.g. nvidia.com/gpu)")]
    Kind(String),
    /// The annotation prefix does not end with `/` (e.g. `cdi.k8s.io/`); holds it.
    #[error("CDI annotation prefix {0:?} must be a non-empty DNS prefix ending with '/'")]
    AnnotationPrefix(String),
}

/// How Allocate names devices to the container runtime, and where the agent's own CDI spec
/// goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdiConfig {
    /// The device list strategies that are on.
    pub strategies: DeviceListStrategy,
    /// CDI kind of the devices, e.g. `nvidia.com/gpu`: CDI names are `<kind>=<uuid>`.
    pub kind: String,
    /// Prefix of the CDI container annotation keys (`cdi-annotations`), e.g. `cdi.k8s.io/`.
    pub annotation_prefix: String,
    /// Folder of the agent's CDI spec file for dynamic MIG instances.
    pub spec_dir: PathBuf,
}

impl Default for CdiConfig {
    fn default() -> Self {
        CdiConfig {
            strategies: DeviceListStrategy::default(),
            kind: DEFAULT_CDI_KIND.to_string(),
            annotation_prefix: DEFAULT_CDI_ANNOTATION_PREFIX.to_string(),
            spec_dir: PathBuf::from(DEFAULT_CDI_SPEC_DIR),
        }
    }
}

/// Whether `part` is alphanumerics with inner `extra` characters only.
fn plain_part(part: &str, extra: &[char]) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
        && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        && part.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl CdiConfig {
    /// Checks the kind and the annotation prefix, so a typo fails at start and not at the
    /// first container.
    pub fn validate(&self) -> Result<(), CdiConfigError> {
        let kind_ok = self.kind.split_once('/').is_some_and(|(vendor, class)| {
            plain_part(vendor, &['.', '-', '_']) && plain_part(class, &['-', '_'])
        });
        if !kind_ok {
            return Err(CdiConfigError::Kind(self.kind.clone()));
        }
        let prefix_ok = self
            .annotation_prefix
            .strip_suffix('/')
            .is_some_and(|domain| plain_part(domain, &['.', '-']));
        if !prefix_ok {
            return Err(CdiConfigError::AnnotationPrefix(
                self.annotation_prefix.clone(),
            ));
        }
        Ok(())
    }

    /// The fully qualified CDI name of a device: `<kind>=<uuid>`.
    pub fn qualified_name(&self, device: &str) -> String {
        format!("{}={device}", self.kind)
    }

    /// Key of the CDI annotation for `resource`'s devices:
    /// `<prefix>kubesched-agent_<resource>`, the resource sanitised to a valid annotation name
    /// (`/` to `_`, other foreign characters to `-`) of at most 63 characters. One key per
    /// resource, so a container holding two resources gets both.
    pub fn annotation_key(&self, resource: &str) -> String {
        let sanitised: String = resource
            .chars()
            .map(|c| match c {
                '/' => '_',
                c if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') => c,
                _ => '-',
            })
            .collect();
        let name = format!("{CDI_ANNOTATION_PLUGIN}_{sanitised}");
        let cut: String = name.chars().take(MAX_ANNOTATION_NAME).collect();
        // A name must end with an alphanumeric; the plugin part always does.
        let name = cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        format!("{}{name}", self.annotation_prefix)
    }

    /// The Allocate response naming `visible` (GPU or MIG UUIDs, in order) to the runtime for
    /// `resource` per the strategies: `NVIDIA_VISIBLE_DEVICES` (`envvar`), the CDI device list
    /// (`cdi-cri`), the CDI annotation (`cdi-annotations`), each only when on.
    pub fn response(&self, resource: &str, visible: &[String]) -> ContainerAllocateResponse {
        let mut response = ContainerAllocateResponse::default();
        if self.strategies.envvar() {
            response
                .envs
                .insert(VISIBLE_DEVICES_ENV.to_string(), visible.join(","));
        }
        let names: Vec<String> = if self.strategies.uses_cdi() {
            visible.iter().map(|d| self.qualified_name(d)).collect()
        } else {
            Vec::new()
        };
        if self.strategies.cdi_annotations() {
            response
                .annotations
                .insert(self.annotation_key(resource), names.join(","));
        }
        if self.strategies.cdi_cri() {
            response.cdi_devices = names.into_iter().map(|name| CdiDevice { name }).collect();
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(strategies: &str) -> CdiConfig {
        CdiConfig {
            strategies: strategies.parse().unwrap(),
            ..CdiConfig::default()
        }
    }

    #[test]
    fn defaults_are_envvar_and_nvidias_kind() {
        let config = CdiConfig::default();
        assert_eq!(config.strategies, DeviceListStrategy::ENVVAR);
        assert_eq!(config.kind, "nvidia.com/gpu");
        assert_eq!(config.annotation_prefix, "cdi.k8s.io/");
        assert_eq!(config.spec_dir, PathBuf::from("/var/run/cdi"));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_kinds_and_prefixes_are_refused() {
        for kind in [
            "gpu",
            "nvidia.com/",
            "/gpu",
            "nvidia.com/g/pu",
            "nvidia.com/gpu.",
        ] {
            let config = CdiConfig {
                kind: kind.into(),
                ..CdiConfig::default()
            };
            assert_eq!(config.validate(), Err(CdiConfigError::Kind(kind.into())));
        }
        for prefix in ["cdi.k8s.io", "/", ""] {
            let config = CdiConfig {
                annotation_prefix: prefix.into(),
                ..CdiConfig::default()
            };
            assert!(config.validate().is_err(), "{prefix}");
        }
    }

    #[test]
    fn annotation_keys_are_valid_names_per_resource() {
        let config = CdiConfig::default();
        assert_eq!(
            config.annotation_key("nvidia.com/mig-1g.10gb"),
            "cdi.k8s.io/kubesched-agent_nvidia.com_mig-1g.10gb"
        );
        assert_eq!(
            config.annotation_key("nvidia.com/mig-1g.10gb+me"),
            "cdi.k8s.io/kubesched-agent_nvidia.com_mig-1g.10gb-me"
        );
        let long = config.annotation_key(&format!("example.com/{}", "x".repeat(80)));
        let name = long.strip_prefix("cdi.k8s.io/").unwrap();
        assert_eq!(name.len(), 63);
        let odd = config.annotation_key(&format!("example.com/gpu{}", "-".repeat(60)));
        assert!(odd.ends_with("_example.com_gpu"), "{odd}");
    }

    #[test]
    fn responses_follow_the_strategies() {
        let visible = vec!["GPU-a".to_string(), "MIG-b".to_string()];
        let envvar = config("envvar").response("nvidia.com/gpu", &visible);
        assert_eq!(envvar.envs[VISIBLE_DEVICES_ENV], "GPU-a,MIG-b");
        assert!(envvar.annotations.is_empty() && envvar.cdi_devices.is_empty());

        let cri = config("cdi-cri").response("nvidia.com/gpu", &visible);
        assert!(cri.envs.is_empty() && cri.annotations.is_empty());
        let names: Vec<&str> = cri.cdi_devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvidia.com/gpu=GPU-a", "nvidia.com/gpu=MIG-b"]);

        let annotated = config("cdi-annotations").response("nvidia.com/gpu", &visible);
        assert_eq!(
            annotated.annotations["cdi.k8s.io/kubesched-agent_nvidia.com_gpu"],
            "nvidia.com/gpu=GPU-a,nvidia.com/gpu=MIG-b"
        );
        assert!(annotated.envs.is_empty() && annotated.cdi_devices.is_empty());
    }
}

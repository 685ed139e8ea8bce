//! `--device-list-strategy`: how Allocate tells the container runtime which devices a container
//! gets. `envvar` sets `NVIDIA_VISIBLE_DEVICES`, `cdi-cri` fills the CRI's CDI device list and
//! `cdi-annotations` names the CDI devices in a container annotation; any of them may be
//! combined. NVIDIA's `volume-mounts` is refused: it needs host files this agent does not make.

use std::fmt;
use std::str::FromStr;

/// The strategies this agent supports, in the order [`DeviceListStrategy`] displays them.
pub const SUPPORTED_STRATEGIES: [&str; 3] = ["envvar", "cdi-cri", "cdi-annotations"];

/// Why a `--device-list-strategy` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// The list names no strategy at all.
    #[error("no device list strategy given; use one or more of envvar, cdi-cri, cdi-annotations")]
    Empty,
    /// NVIDIA's `volume-mounts`, which this agent does not offer.
    #[error(
        "device list strategy volume-mounts is not supported by this agent; use one or more of envvar, cdi-cri, cdi-annotations"
    )]
    VolumeMounts,
    /// A name that is no strategy (held).
    #[error(
        "unknown device list strategy {0:?}; supported: envvar, cdi-cri, cdi-annotations (comma-separated to combine)"
    )]
    Unknown(String),
}

/// A non-empty set of device list strategies (`envvar`, `cdi-cri`, `cdi-annotations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceListStrategy {
    envvar: bool,
    cdi_cri: bool,
    cdi_annotations: bool,
}

impl DeviceListStrategy {
    /// `envvar` alone: only `NVIDIA_VISIBLE_DEVICES`, no CDI (the default).
    pub const ENVVAR: DeviceListStrategy = DeviceListStrategy {
        envvar: true,
        cdi_cri: false,
        cdi_annotations: false,
    };

    /// Whether `NVIDIA_VISIBLE_DEVICES` is set.
    pub fn envvar(&self) -> bool {
        self.envvar
    }

    /// Whether the CRI's CDI device list (`cdi_devices`) is filled.
    pub fn cdi_cri(&self) -> bool {
        self.cdi_cri
    }

    /// Whether a `cdi.k8s.io/...` container annotation names the CDI devices.
    pub fn cdi_annotations(&self) -> bool {
        self.cdi_annotations
    }

    /// Whether any CDI strategy is on: the runtime then resolves devices from CDI specs, so
    /// instances the agent creates need a spec entry of their own.
    pub fn uses_cdi(&self) -> bool {
        self.cdi_cri || self.cdi_annotations
    }
}

impl Default for DeviceListStrategy {
    fn default() -> Self {
        DeviceListStrategy::ENVVAR
    }
}

impl FromStr for DeviceListStrategy {
    type Err = StrategyError;

    fn from_str(text: &str) -> Result<Self, StrategyError> {
        let mut set = DeviceListStrategy {
            envvar: false,
            cdi_cri: false,
            cdi_annotations: false,
        };
        let mut any = false;
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "envvar" => set.envvar = true,
                "cdi-cri" => set.cdi_cri = true,
                "cdi-annotations" => set.cdi_annotations = true,
                "volume-mounts" => return Err(StrategyError::VolumeMounts),
                other => return Err(StrategyError::Unknown(other.to_string())),
            }
            any = true;
        }
        if any {
            Ok(set)
        } else {
            Err(StrategyError::Empty)
        }
    }
}

impl fmt::Display for DeviceListStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = [self.envvar, self.cdi_cri, self.cdi_annotations];
        let names: Vec<&str> = SUPPORTED_STRATEGIES
            .iter()
            .zip(on)
            .filter_map(|(name, on)| on.then_some(*name))
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_combine_and_print_in_one_order() {
        let both: DeviceListStrategy = " cdi-cri , envvar,".parse().unwrap();
        assert!(both.envvar() && both.cdi_cri() && !both.cdi_annotations());
        assert!(both.uses_cdi());
        assert_eq!(both.to_string(), "envvar,cdi-cri");
        let all: DeviceListStrategy = "cdi-annotations,cdi-cri,envvar,envvar".parse().unwrap();
        assert_eq!(all.to_string(), "envvar,cdi-cri,cdi-annotations");
        assert_eq!("envvar".parse(), Ok(DeviceListStrategy::default()));
        assert!(!DeviceListStrategy::default().uses_cdi());
        assert_eq!(
            DeviceListStrategy::default().to_string().parse(),
            Ok(DeviceListStrategy::ENVVAR)
        );
    }

    #[test]
    fn refusals_name_the_supported_strategies() {
        assert_eq!("".parse::<DeviceListStrategy>(), Err(StrategyError::Empty));
        assert_eq!(
            " , ".parse::<DeviceListStrategy>(),
            Err(StrategyError::Empty)
        );
        let mounts = "envvar,volume-mounts"
            .parse::<DeviceListStrategy>()
            .unwrap_err();
        assert_eq!(mounts, StrategyError::VolumeMounts);
        let unknown = "cdi".parse::<DeviceListStrategy>().unwrap_err();
        for error in [StrategyError::Empty, mounts, unknown] {
            let text = error.to_string();
            assert!(
                SUPPORTED_STRATEGIES.iter().all(|s| text.contains(s)),
                "{text}"
            );
        }
    }
}

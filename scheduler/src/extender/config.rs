//! Configuration: a YAML file, then command-line flags on top. Every field
//! has a default so an empty file (or none) runs the extender on localhost
//! as a kube-scheduler sidecar.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kubesched_core::annotation::DEFAULT_PREFIX;
use kubesched_core::fragmentation::{TaskType, Workload};
use kubesched_core::request::DEFAULT_DOMAIN;
use kubesched_core::scoring::{self, Policy, Production, ProductionWeights};
use serde::Deserialize;
use thiserror::Error;

use super::workload::WorkloadMode;

/// Why the extender's configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Path of the configuration file.
        path: PathBuf,
        /// The I/O error from reading it.
        source: std::io::Error,
    },
    /// The configuration file is not valid YAML or does not match [`Config`]
    /// (unknown or mistyped fields).
    #[error("parsing {path}: {source}")]
    Parse {
        /// Path of the configuration file.
        path: PathBuf,
        /// The YAML error, with its position in the file.
        source: serde_yaml::Error,
    },
    /// The file parsed but a value is out of range or inconsistent (the message says which).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The extender's configuration, as read from YAML (camelCase keys).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Address to serve on; a sidecar talks over localhost.
    pub listen: SocketAddr,
    /// Path prefix of the verbs (kube-scheduler's `urlPrefix` path part).
    pub url_prefix: String,
    /// Prefix of our annotation keys (`<prefix>/inventory`, `<prefix>/devices`).
    pub annotation_prefix: String,
    /// Domain of the GPU resource names (`<domain>/gpu`, `<domain>/mig-<profile>`).
    pub resource_domain: String,
    /// Placement policy and its weights (`policy`).
    pub policy: PolicyConfig,
    /// Target workload that fragmentation is measured against (`workload`).
    pub workload: WorkloadConfig,
    /// Largest request body accepted (5000 node names are about 100 KB).
    pub max_body_bytes: usize,
    /// A client gets this long for a request's headers, for its body, and for a TLS
    /// handshake: a stalled sender does not hold a connection open.
    pub request_timeout_seconds: u64,
    /// How long a bind's reservation may wait for the watch to confirm it.
    pub reservation_ttl_seconds: u64,
    /// Export per-GPU capacity series (one per GPU and MIG profile).
    pub per_gpu_metrics: bool,
    /// Serve HTTPS with this certificate and key (PEM); plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    /// Serve `/metrics`, `/healthz`, `/readyz` and `/ui` here instead of on `listen`, so the
    /// verbs can stay on localhost (kube-scheduler shares the pod).
    pub metrics_listen: Option<SocketAddr>,
    /// File holding the key (at least 16 bytes) that signs devices annotations; the node
    /// agents read the same one. Without it annotations are written unsigned.
    pub signing_key_file: Option<PathBuf>,
    /// Prices of GPU capacity, for the cost metrics and report (`pricing`).
    pub pricing: PricingConfig,
}

/// What GPU capacity costs (`pricing`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PricingConfig {
    /// Price of one GPU-hour per GPU model (catalogue name or alias, e.g. `H100-80GB`).
    pub gpu_hourly: std::collections::BTreeMap<String, f64>,
}

impl PricingConfig {
    /// The price table.
    pub fn prices(&self) -> kubesched_core::planning::cost::Prices {
        kubesched_core::planning::cost::Prices::new(
            self.gpu_hourly.iter().map(|(m, p)| (m.as_str(), *p)),
        )
    }
}

/// Certificate and private key for serving HTTPS (`tls`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file holding the server certificate (and any chain), `certFile`.
    pub cert_file: PathBuf,
    /// PEM file holding the certificate's private key, `keyFile`.
    pub key_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8888)),
            url_prefix: "/".into(),
            annotation_prefix: DEFAULT_PREFIX.into(),
            resource_domain: DEFAULT_DOMAIN.into(),
            policy: PolicyConfig::default(),
            workload: WorkloadConfig::default(),
            max_body_bytes: 8 << 20,
            request_timeout_seconds: 10,
            reservation_ttl_seconds: 600,
            per_gpu_metrics: true,
            tls: None,
            metrics_listen: None,
            signing_key_file: None,
            pricing: PricingConfig::default(),
        }
    }
}

/// Which placement policy scores nodes (`policy` in the file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// One of `kubesched` (production), `fgd`, `best-fit`, `random`.
    pub name: String,
    /// Weights of the production policy.
    pub weights: Option<WeightsConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            name: "kubesched".into(),
            weights: None,
        }
    }
}

/// Weights of the production (`kubesched`) policy; all three must be given.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightsConfig {
    /// Score steps per unit of sigmoid(-fragmentation delta / 1000) (FGD uses 100).
    pub fragmentation: f64,
    /// Score steps won by a NUMA-aligned GPU placement.
    pub numa_alignment: f64,
    /// Weight of the packing tie-breaker (below one step when < 1; 0 turns it off).
    pub packing: f64,
}

/// The target workload for fragmentation: `fixed` task types (each a core
/// `PodRequest` and its popularity), or else learned from arrivals.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// Learn the workload from recent GPU pod arrivals (the default when neither is given).
    pub learn: Option<LearnConfig>,
    /// Fixed task types with popularities, normalised to sum to 1 on load.
    pub fixed: Option<Vec<TaskType>>,
}

/// How the target workload is learned from recent GPU pod arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LearnConfig {
    /// Recent GPU pod arrivals remembered.
    pub window: usize,
    /// Share of arrivals the kept task types must cover (0..=1].
    pub coverage: f64,
    /// Re-derive the workload after this many new arrivals.
    pub refresh_every: usize,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            window: 2000,
            coverage: 0.95,
            refresh_every: 200,
        }
    }
}

/// Command-line flags; each one given overrides the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Address to listen on, e.g. 127.0.0.1:8888.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Path prefix of filter/prioritize/bind, e.g. /kubesched.
    #[arg(long)]
    pub url_prefix: Option<String>,
    /// Annotation key prefix.
    #[arg(long)]
    pub annotation_prefix: Option<String>,
    /// Resource name domain.
    #[arg(long)]
    pub resource_domain: Option<String>,
    /// Placement policy name.
    #[arg(long)]
    pub policy: Option<String>,
    /// PEM certificate to serve HTTPS with (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Address for metrics, probes and the GPU map, e.g. 0.0.0.0:9090.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Key file that signs devices annotations (shared with the node agents).
    #[arg(long)]
    pub signing_key_file: Option<PathBuf>,
}

impl Config {
    /// Reads the file (if any), applies the flags and validates the result.
    pub fn load(path: Option<&Path>, flags: &Overrides) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::from_yaml(&text).map_err(|source| ConfigError::Parse {
                    path: p.to_path_buf(),
                    source,
                })?
            }
            None => Config::default(),
        };
        if let Some(v) = flags.listen {
            cfg.listen = v;
        }
        if let Some(v) = &flags.url_prefix {
            cfg.url_prefix = v.clone();
        }
        if let Some(v) = &flags.annotation_prefix {
            cfg.annotation_prefix = v.clone();
        }
        if let Some(v) = &flags.resource_domain {
            cfg.resource_domain = v.clone();
        }
        if let Some(v) = &flags.policy {
            cfg.policy.name = v.clone();
        }
        if let Some(v) = flags.metrics_listen {
            cfg.metrics_listen = Some(v);
        }
        if let Some(v) = &flags.signing_key_file {
            cfg.signing_key_file = Some(v.clone());
        }
        if let (Some(cert_file), Some(key_file)) = (&flags.tls_cert, &flags.tls_key) {
            cfg.tls = Some(TlsConfig {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            });
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a YAML document; an empty one gives the defaults.
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        // An empty document is `null` to YAML: treat it as "all defaults".
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text)
    }

    /// Checks values are in range and consistent; [`ConfigError::Invalid`] says which is not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !self.url_prefix.starts_with('/') {
            return bad(format!("urlPrefix {:?} must start with /", self.url_prefix));
        }
        if self.annotation_prefix.is_empty() || self.resource_domain.is_empty() {
            return bad("annotationPrefix and resourceDomain must not be empty".into());
        }
        if self.max_body_bytes < 1024 {
            return bad("maxBodyBytes must be at least 1024".into());
        }
        if !(1..=300).contains(&self.request_timeout_seconds) {
            return bad("requestTimeoutSeconds must be between 1 and 300".into());
        }
        self.policy()?;
        let w = &self.workload;
        if w.learn.is_some() && w.fixed.is_some() {
            return bad("workload: give either learn or fixed, not both".into());
        }
        if let Some(types) = &w.fixed
            && (types.is_empty()
                || types
                    .iter()
                    .any(|t| !(t.popularity.is_finite() && t.popularity > 0.0)))
        {
            return bad("fixed workload needs task types with positive popularities".into());
        }
        if let Some((model, price)) = self
            .pricing
            .gpu_hourly
            .iter()
            .find(|(_, p)| !(p.is_finite() && **p >= 0.0 && **p <= 1e6))
        {
            return bad(format!(
                "pricing.gpuHourly: {model}: {price} is not a price (0 to 1000000)"
            ));
        }
        let l = w.learn.unwrap_or_default();
        if l.window == 0 || !(l.coverage > 0.0 && l.coverage <= 1.0) {
            return bad("learn: window must be > 0 and coverage in (0, 1]".into());
        }
        Ok(())
    }

    /// The per-request timeout (`requestTimeoutSeconds`) as a [`std::time::Duration`].
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_timeout_seconds)
    }

    /// The configured placement policy.
    pub fn policy(&self) -> Result<Box<dyn Policy>, ConfigError> {
        let name = self.policy.name.as_str();
        match (self.policy.weights, name) {
            (Some(w), "kubesched" | "production") => Ok(Box::new(Production {
                weights: ProductionWeights {
                    fragmentation: w.fragmentation,
                    numa_alignment: w.numa_alignment,
                    packing: w.packing,
                },
            })),
            (Some(_), _) => Err(ConfigError::Invalid(format!(
                "policy {name} takes no weights (only kubesched does)"
            ))),
            (None, _) => scoring::lookup(name).map_err(|e| ConfigError::Invalid(e.to_string())),
        }
    }

    /// The target workload mode: the fixed task types, normalised so popularities
    /// sum to 1, or else learning with the `learn` settings (defaults if absent).
    pub fn workload_mode(&self) -> WorkloadMode {
        match &self.workload.fixed {
            Some(types) => {
                let total: f64 = types.iter().map(|t| t.popularity).sum();
                WorkloadMode::Fixed(Workload {
                    types: types
                        .iter()
                        .map(|t| TaskType {
                            request: t.request.clone(),
                            popularity: t.popularity / total,
                        })
                        .collect(),
                })
            }
            None => {
                let l = self.workload.learn.unwrap_or_default();
                WorkloadMode::Learn {
                    window: l.window,
                    coverage: l.coverage,
                    refresh_every: l.refresh_every,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults_and_flags_override() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        let dir = std::env::temp_dir().join(format!("kubesched-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            "urlPrefix: /kubesched\npolicy:\n  name: kubesched\n  weights: {fragmentation: 2, numaAlignment: 10, packing: 0}\n",
        )
        .unwrap();
        let flags = Overrides {
            resource_domain: Some("gpu.example.com".into()),
            ..Default::default()
        };
        let cfg = Config::load(Some(&path), &flags).unwrap();
        assert_eq!(cfg.url_prefix, "/kubesched");
        assert_eq!(cfg.resource_domain, "gpu.example.com");
        assert_eq!(cfg.policy().unwrap().name(), "kubesched");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn fixed_workload_is_normalised() {
        let cfg = Config::from_yaml(
            "workload:\n  fixed:\n    - request: {cpu_milli: 1000, memory_mib: 0, gpu: {kind: mig, profile: 1g.10gb, count: 1}}\n      popularity: 3\n    - request: {cpu_milli: 1000, memory_mib: 0, gpu: {kind: whole, count: 1}}\n      popularity: 1\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        let WorkloadMode::Fixed(w) = cfg.workload_mode() else {
            panic!("fixed expected")
        };
        assert_eq!(w.types[0].popularity, 0.75);
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(Config::from_yaml("listen: nowhere").is_err());
        assert!(Config::from_yaml("typo: 1").is_err());
        let policy = |name: &str, weights| Config {
            policy: PolicyConfig {
                name: name.into(),
                weights,
            },
            ..Config::default()
        };
        let err = policy("magic", None).validate().unwrap_err();
        assert!(err.to_string().contains("magic"));
        let weights = WeightsConfig {
            fragmentation: 1.0,
            numa_alignment: 0.0,
            packing: 0.0,
        };
        assert!(policy("fgd", Some(weights)).validate().is_err());
        let relative = Config {
            url_prefix: "kubesched".into(),
            ..Config::default()
        };
        assert!(relative.validate().is_err());
        let both = Config::from_yaml("workload: {learn: {window: 10}, fixed: []}").unwrap();
        assert!(both.validate().is_err());
    }
}

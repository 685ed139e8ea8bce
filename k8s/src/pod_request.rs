//! From a Kubernetes Pod to the core's `PodRequest`: the pod's effective
//! requests as kube-scheduler computes them (containers summed, init
//! containers as a maximum, sidecars and overhead added), its GPU demand by
//! resource name, and whether the CPU manager would pin its CPUs.
//!
//! The one reading of a pod's GPU request: the extender schedules by it and the
//! agent hands out devices by it. A GPU quantity must be a whole number in each
//! container, as the API server requires of extended resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use kubesched_core::request::{PodRequest, RequestError, ResourceNames};
use thiserror::Error;

use crate::quantity::{Quantity, QuantityError};

/// Pod annotation suffix listing allowed GPU models, comma-separated.
pub const GPU_MODELS_ANNOTATION: &str = "gpu-models";

/// Why a pod's requests cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PodRequestError {
    /// A quantity that does not parse.
    #[error("container {container}: resource {resource}: {source}")]
    Quantity {
        /// The container (or `pod overhead`).
        container: String,
        /// The resource name.
        resource: String,
        /// Why the quantity does not parse.
        source: QuantityError,
    },
    /// A GPU count with a fractional part (`500m`).
    #[error("container {container}: resource {resource} must be a whole number, got {value:?}")]
    NotWhole {
        /// The container (or `pod overhead`, or `pod` for the total).
        container: String,
        /// The resource name.
        resource: String,
        /// The quantity as written.
        value: String,
    },
    /// GPU resources the pod cannot ask for together, or an unknown one.
    #[error(transparent)]
    Request(#[from] RequestError),
}

type Totals = BTreeMap<String, Quantity>;

/// Reads pods for one resource domain and annotation prefix.
#[derive(Debug, Clone)]
pub struct PodRequestReader {
    /// The GPU resource names of the domain.
    pub names: ResourceNames,
    models_key: String,
}

impl PodRequestReader {
    /// A reader of `names`' resources and the `<annotation_prefix>/gpu-models` annotation.
    pub fn new(names: ResourceNames, annotation_prefix: &str) -> Self {
        PodRequestReader {
            names,
            models_key: format!("{annotation_prefix}/{GPU_MODELS_ANNOTATION}"),
        }
    }

    /// The pod's effective request; an error for a quantity that does not parse, a GPU count
    /// that is not whole, or GPU resources that cannot be asked for together.
    pub fn read(&self, pod: &Pod) -> Result<PodRequest, PodRequestError> {
        let Some(spec) = &pod.spec else {
            return Ok(PodRequest::cpu_only(0, 0));
        };
        let mut sum = Totals::new();
        let mut guaranteed = true;
        let mut integer_cpus = true;
        for c in &spec.containers {
            let r = self.container_requests(c)?;
            guaranteed &= is_guaranteed(c)?;
            integer_cpus &= r
                .get("cpu")
                .is_some_and(|q| q.milli_ceil().is_multiple_of(1000));
            add(&mut sum, &r);
        }
        // Sidecars (restartable init containers) run beside everything
        // started after them; plain init containers run one at a time.
        let mut sidecars = Totals::new();
        let mut init_peak = Totals::new();
        for c in spec.init_containers.iter().flatten() {
            let r = self.container_requests(c)?;
            guaranteed &= is_guaranteed(c)?;
            if c.restart_policy.as_deref() == Some("Always") {
                add(&mut sidecars, &r);
            } else {
                let mut during = sidecars.clone();
                add(&mut during, &r);
                max_into(&mut init_peak, &during);
            }
        }
        add(&mut sum, &sidecars);
        max_into(&mut sum, &init_peak);
        if let Some(overhead) = &spec.overhead {
            let parsed = parse_map("pod overhead", overhead)?;
            self.check_whole("pod overhead", overhead, &parsed)?;
            add(&mut sum, &parsed);
        }
        let mut counts = Vec::new();
        for (name, q) in &sum {
            if self.names.classify(name)?.is_some() {
                let n = q.whole().ok_or_else(|| PodRequestError::NotWhole {
                    container: "pod".into(),
                    resource: name.clone(),
                    value: q.to_string(),
                })?;
                counts.push((name.as_str(), n));
            }
        }
        let gpu = self.names.demand(counts)?;
        let cpu_milli = sum.get("cpu").map_or(0, |q| q.milli_ceil());
        let gpu_models = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&self.models_key))
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(PodRequest {
            cpu_milli,
            memory_mib: sum.get("memory").map_or(0, |q| q.mebi_ceil()),
            gpu,
            exclusive_cpus: guaranteed && integer_cpus && cpu_milli > 0,
            gpu_models,
        })
    }
}

fn parse_map(
    container: &str,
    map: &BTreeMap<String, K8sQuantity>,
) -> Result<Totals, PodRequestError> {
    map.iter()
        .map(|(k, v)| {
            Quantity::parse(&v.0)
                .map(|q| (k.clone(), q))
                .map_err(|source| PodRequestError::Quantity {
                    container: container.to_string(),
                    resource: k.clone(),
                    source,
                })
        })
        .collect()
}

impl PodRequestReader {
    /// A container's effective requests: a resource with only a limit is
    /// requested at its limit (the API server defaults it so). Its GPU counts
    /// must be whole.
    fn container_requests(&self, c: &Container) -> Result<Totals, PodRequestError> {
        let Some(res) = &c.resources else {
            return Ok(Totals::new());
        };
        let mut out = Totals::new();
        for map in [&res.limits, &res.requests].into_iter().flatten() {
            let parsed = parse_map(&c.name, map)?;
            self.check_whole(&c.name, map, &parsed)?;
            out.extend(parsed);
        }
        Ok(out)
    }

    /// GPU counts in `parsed` (read from `written`) must be whole.
    fn check_whole(
        &self,
        container: &str,
        written: &BTreeMap<String, K8sQuantity>,
        parsed: &Totals,
    ) -> Result<(), PodRequestError> {
        for (name, q) in parsed {
            if self.names.classify(name)?.is_some() && q.whole().is_none() {
                return Err(PodRequestError::NotWhole {
                    container: container.to_string(),
                    resource: name.clone(),
                    value: written
                        .get(name)
                        .map_or_else(|| q.to_string(), |w| w.0.clone()),
                });
            }
        }
        Ok(())
    }
}

/// Guaranteed QoS for one container: CPU and memory limits set, and any
/// requests equal to them.
fn is_guaranteed(c: &Container) -> Result<bool, PodRequestError> {
    let Some(res) = &c.resources else {
        return Ok(false);
    };
    let limits = match &res.limits {
        Some(l) => parse_map(&c.name, l)?,
        None => return Ok(false),
    };
    let requests = match &res.requests {
        Some(r) => parse_map(&c.name, r)?,
        None => Totals::new(),
    };
    Ok(["cpu", "memory"].iter().all(|r| match limits.get(*r) {
        Some(l) => requests.get(*r).is_none_or(|q| q == l),
        None => false,
    }))
}

fn add(into: &mut Totals, from: &Totals) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_default();
        *e = e.saturating_add(*v);
    }
}

fn max_into(into: &mut Totals, from: &Totals) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_default();
        *e = (*e).max(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesched_core::request::GpuDemand;

    fn reader() -> PodRequestReader {
        PodRequestReader::new(ResourceNames::default(), "kubesched.ai")
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn sums_containers_and_takes_the_init_peak() {
        let p = pod(serde_json::json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi", "nvidia.com/mig-1g.10gb": "1"}}},
                {"name": "b", "resources": {"limits": {"cpu": "1", "nvidia.com/mig-1g.10gb": "1"}}}
            ],
            "initContainers": [
                {"name": "setup", "resources": {"requests": {"cpu": "4", "memory": "512Mi"}}}
            ],
            "overhead": {"memory": "10Mi"}
        }}));
        let r = reader().read(&p).unwrap();
        assert_eq!(r.cpu_milli, 4000, "init peak beats the 1.5 CPU sum");
        assert_eq!(r.memory_mib, 1034);
        assert_eq!(
            r.gpu,
            GpuDemand::Mig {
                profile: "1g.10gb".into(),
                count: 2
            }
        );
        assert!(!r.exclusive_cpus);
    }

    #[test]
    fn sidecars_add_to_the_sum() {
        let p = pod(serde_json::json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [
                {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "250m"}}},
                {"name": "once", "resources": {"requests": {"cpu": "1"}}}
            ]
        }}));
        assert_eq!(reader().read(&p).unwrap().cpu_milli, 1250);
    }

    #[test]
    fn guaranteed_integer_cpu_is_exclusive() {
        let res =
            serde_json::json!({"limits": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "2"}});
        let p = pod(serde_json::json!({"spec": {"containers": [{"name": "a", "resources": res}]}}));
        let r = reader().read(&p).unwrap();
        assert!(r.exclusive_cpus);
        assert_eq!(r.exclusive_cpu_count(), Some(8));
        assert_eq!(r.gpu, GpuDemand::Whole { count: 2 });

        let burst =
            serde_json::json!({"requests": {"cpu": "4"}, "limits": {"cpu": "8", "memory": "16Gi"}});
        let p =
            pod(serde_json::json!({"spec": {"containers": [{"name": "a", "resources": burst}]}}));
        assert!(!reader().read(&p).unwrap().exclusive_cpus);

        let frac = serde_json::json!({"limits": {"cpu": "1500m", "memory": "1Gi"}});
        let p =
            pod(serde_json::json!({"spec": {"containers": [{"name": "a", "resources": frac}]}}));
        assert!(!reader().read(&p).unwrap().exclusive_cpus);
    }

    #[test]
    fn models_annotation_and_no_spec() {
        let p = pod(serde_json::json!({
            "metadata": {"annotations": {"kubesched.ai/gpu-models": "H100-80GB, A100-80GB"}},
            "spec": {"containers": [{"name": "a"}]}
        }));
        assert_eq!(
            reader().read(&p).unwrap().gpu_models,
            vec!["H100-80GB", "A100-80GB"]
        );
        let r = reader().read(&Pod::default()).unwrap();
        assert_eq!(r, PodRequest::cpu_only(0, 0));
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let bad = |res: serde_json::Value| {
            let p =
                pod(serde_json::json!({"spec": {"containers": [{"name": "c", "resources": res}]}}));
            reader().read(&p).unwrap_err()
        };
        assert!(matches!(
            bad(serde_json::json!({"requests": {"cpu": "lots"}})),
            PodRequestError::Quantity { .. }
        ));
        assert!(matches!(
            bad(serde_json::json!({"requests": {"nvidia.com/gpu": "500m"}})),
            PodRequestError::NotWhole { .. }
        ));
        assert!(matches!(
            bad(serde_json::json!({"requests": {"nvidia.com/mig-huge": "1"}})),
            PodRequestError::Request(RequestError::MalformedProfile(_))
        ));
        assert!(matches!(
            bad(
                serde_json::json!({"requests": {"nvidia.com/gpu": "1", "nvidia.com/mig-1g.10gb": "1"}})
            ),
            PodRequestError::Request(RequestError::MixedGpuResources(..))
        ));
    }
}

//! The extender itself, without HTTP: configuration, the cluster state
//! behind a lock, the policy and workload, the binder, metrics and
//! readiness. The verbs are implemented in `filter`, `prioritize` and `bind`.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use k8s_openapi::api::core::v1::Pod;
use kubesched_core::annotation::{self, DEVICES_ANNOTATION, DevicesAnnotation};
use kubesched_core::inventory::INVENTORY_ANNOTATION;
use kubesched_core::request::{GpuDemand, PodRequest, ResourceNames};
use kubesched_core::scoring::Policy;
use kubesched_core::signing::{SigningKey, read_trusted};
use thiserror::Error;

use kubesched_k8s::{PodRequestError, PodRequestReader, pod_label};

use super::api_client::Binder;
use super::cluster_state::{ClusterState, EvalContext, PodRecord};
use super::config::{Config, ConfigError};
use super::metrics::Metrics;
use super::workload::WorkloadSource;

/// Why a filter or prioritize request is refused (HTTP 400).
#[derive(Debug, Error)]
pub enum VerbError {
    /// The call has no `NodeNames`: kube-scheduler is not configured with
    /// `nodeCacheCapable: true`.
    #[error("request has no NodeNames: configure the extender with nodeCacheCapable: true")]
    MissingNodeNames,
    /// The pod's resource requests cannot be read (bad quantity, conflicting GPU resources, ...).
    #[error("pod {pod}: {source}")]
    PodRequest {
        /// The pod, as `namespace/name`.
        pod: String,
        /// Why its requests cannot be read.
        source: PodRequestError,
    },
    /// The pod asks for a MIG profile that no catalogue GPU model or known node offers.
    #[error("pod {pod}: no GPU model known to the extender offers MIG profile {profile}")]
    UnknownProfile {
        /// The pod, as `namespace/name`.
        pod: String,
        /// The MIG profile it asks for, e.g. `1g.10gb`.
        profile: String,
    },
}

/// The extender behind the HTTP verbs: configuration, cluster state, policy, target workload,
/// binder, metrics and readiness, shared by every request.
pub struct Extender {
    config: Config,
    state: RwLock<ClusterState>,
    workload: WorkloadSource,
    policy: Box<dyn Policy>,
    reader: PodRequestReader,
    binder: Arc<dyn Binder>,
    metrics: Metrics,
    ready: AtomicBool,
    /// Signs the devices annotations bind writes; `None` writes them unsigned.
    signer: Option<SigningKey>,
    devices_key: String,
    inventory_key: String,
}

impl Extender {
    /// Builds an extender from `config` (validated here), with an empty cluster state, not
    /// ready and signing nothing; `Err` if the configuration or its policy is invalid.
    pub fn new(config: Config, binder: Arc<dyn Binder>) -> Result<Self, ConfigError> {
        config.validate()?;
        let policy = config.policy()?;
        let workload = WorkloadSource::new(config.workload_mode());
        let reader = PodRequestReader::new(
            ResourceNames::new(config.resource_domain.clone()),
            &config.annotation_prefix,
        );
        Ok(Extender {
            devices_key: annotation::key(&config.annotation_prefix, DEVICES_ANNOTATION),
            inventory_key: annotation::key(&config.annotation_prefix, INVENTORY_ANNOTATION),
            config,
            state: RwLock::new(ClusterState::new(policy.uses_node_identity())),
            workload,
            policy,
            reader,
            binder,
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
            signer: None,
        })
    }

    /// Signs the devices annotations this extender writes, and trusts only annotations
    /// signed with the same key.
    pub fn with_signing_key(mut self, key: SigningKey) -> Self {
        self.signer = Some(key);
        self
    }

    /// The key that signs and checks devices annotations, if one was given.
    pub fn signer(&self) -> Option<&SigningKey> {
        self.signer.as_ref()
    }

    /// A pod's devices annotation as the state keeps it: parsed, and, with a key, only when
    /// this extender signed it for the pod with UID `uid`.
    pub fn read_devices(&self, text: &str, uid: &str) -> Result<DevicesAnnotation, String> {
        read_trusted(text, uid, self.signer.as_ref()).map_err(|e| e.to_string())
    }

    /// The configuration the extender was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The Prometheus metrics this extender records.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The target workload (fixed or learned) that fragmentation is measured against.
    pub fn workload(&self) -> &WorkloadSource {
        &self.workload
    }

    /// The placement policy that scores nodes for filter, prioritize and bind.
    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    /// Reads pods' CPU, memory and GPU requests under the configured resource domain.
    pub fn reader(&self) -> &PodRequestReader {
        &self.reader
    }

    /// Makes the API calls bind needs (read the pod, create the annotated Binding).
    pub fn binder(&self) -> &dyn Binder {
        self.binder.as_ref()
    }

    /// `<prefix>/devices`.
    pub fn devices_key(&self) -> &str {
        &self.devices_key
    }

    /// `<prefix>/inventory`.
    pub fn inventory_key(&self) -> &str {
        &self.inventory_key
    }

    /// Read access to the cluster state (a poisoned lock is still usable:
    /// every mutation leaves the state consistent before it can panic).
    pub fn state(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the cluster state (a poisoned lock is still usable, as for
    /// [`Extender::state`]).
    pub fn state_mut(&self) -> RwLockWriteGuard<'_, ClusterState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the picture of the pods (a relist, or a snapshot). The pods
    /// already there count as arrivals a learning target workload has seen,
    /// so a restarted extender does not start from an empty workload.
    pub fn load_pods(&self, pods: Vec<(String, PodRecord)>) {
        for (uid, pod) in &pods {
            self.workload.observe(uid, &pod.request);
        }
        self.state_mut().reset_pods(pods);
    }

    /// Marks the extender ready (`/readyz` answers 200) or not, as the Node and Pod
    /// watches gain or lose their full lists.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the Node and Pod caches have their first full list (`/readyz` answers 200).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// What evaluating `request` (of the pod with UID `uid`) on a node depends on: the
    /// policy, the current target workload, and the pod's own seed.
    pub(crate) fn eval_context<'a>(
        &'a self,
        request: &'a PodRequest,
        uid: &str,
    ) -> EvalContext<'a> {
        let (workload, workload_gen) = self.workload.current();
        EvalContext {
            policy: self.policy(),
            workload,
            workload_gen,
            request,
            request_key: super::shapes::request_key(request),
            seed: pod_seed(uid),
        }
    }

    /// Reads a pod's request, refusing profiles no known GPU offers.
    pub(crate) fn pod_request(&self, pod: &Pod) -> Result<PodRequest, VerbError> {
        let label = pod_label(pod);
        let req = self
            .reader
            .read(pod)
            .map_err(|source| VerbError::PodRequest {
                pod: label.clone(),
                source,
            })?;
        if let GpuDemand::Mig { profile, .. } = &req.gpu
            && !self.state().knows_profile(profile)
        {
            return Err(VerbError::UnknownProfile {
                pod: label,
                profile: profile.clone(),
            });
        }
        Ok(req)
    }
}

/// A per-pod seed for policies that draw at random.
fn pod_seed(uid: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    h.finish()
}

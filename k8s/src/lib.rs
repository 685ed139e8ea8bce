//! kubesched-k8s: the Kubernetes rules both binaries apply, written once. The extender and
//! the node agent must read a pod the same way (how many GPUs of which profile it asks for,
//! whether it has finished, what to call it in a message); two copies of such a rule drift
//! apart, and a pod one binary reads differently from the other is a device handed out twice. `kubesched-core` stays free of Kubernetes types.
//!
//! - `quantity`: resource quantities, parsed as the API server does
//! - `pod_request`: a Pod's effective requests and GPU demand, as kube-scheduler computes them
//! - `pod_ref`: naming a pod (`namespace/name` and its UID)
//! - `phase`: terminal pod phases, in code and as a field selector
//! - `retry`: how fast a broken API watch is retried

mod phase;
mod pod_ref;
pub mod pod_request;
pub mod quantity;
pub mod retry;

pub use phase::{NOT_TERMINAL_SELECTOR, is_terminal};
pub use pod_ref::{PodRef, pod_key, pod_label};
pub use pod_request::{GPU_MODELS_ANNOTATION, PodRequestError, PodRequestReader};

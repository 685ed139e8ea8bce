//! What became of a node in `filter` and of a pod in `bind`, as metric labels. The reasons a
//! node does not fit are `core`'s causes, so a new cause is a new label without a table here.

use kubesched_core::placement::Cause;

/// How `filter` judged one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterOutcome {
    /// The pod asks for no GPU: not ours to judge, the node passes.
    NoGpuRequest,
    /// The node publishes no inventory.
    NoInventory,
    /// The node's inventory cannot be used (invalid, or from a newer agent).
    InvalidInventory,
    /// The node's agent is draining (shutting down, or not yet registered with the kubelet).
    AgentDraining,
    /// The node cannot host the pod, for this cause.
    Unfit(Cause),
    /// The node can host the pod.
    Fits,
    /// The pod itself cannot be served (unreadable request, unknown MIG profile): every
    /// node is refused for it.
    Unservable,
}

impl FilterOutcome {
    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            FilterOutcome::NoGpuRequest => "no_gpu_request",
            FilterOutcome::NoInventory => "no_inventory",
            FilterOutcome::InvalidInventory => "invalid_inventory",
            FilterOutcome::AgentDraining => "agent_draining",
            FilterOutcome::Unfit(cause) => cause.as_str(),
            FilterOutcome::Fits => "fits",
            FilterOutcome::Unservable => "unservable_pod",
        }
    }
}

/// How one `bind` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindOutcome {
    /// Annotated (or already annotated) and bound.
    Bound,
    /// Someone else changed the pod, or another bind of it is under way.
    Conflict,
    /// The node cannot host the pod (any more).
    NoFit,
    /// The pod cannot be read from the API server.
    UnknownPod,
    /// An API call failed.
    ApiError,
}

impl BindOutcome {
    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            BindOutcome::Bound => "bound",
            BindOutcome::Conflict => "conflict",
            BindOutcome::NoFit => "no_fit",
            BindOutcome::UnknownPod => "unknown_pod",
            BindOutcome::ApiError => "api_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_own_label() {
        let mut labels: Vec<&str> = Cause::ALL
            .iter()
            .map(|c| FilterOutcome::Unfit(*c).label())
            .chain(
                [
                    FilterOutcome::NoGpuRequest,
                    FilterOutcome::NoInventory,
                    FilterOutcome::InvalidInventory,
                    FilterOutcome::AgentDraining,
                    FilterOutcome::Fits,
                ]
                .map(FilterOutcome::label),
            )
            .collect();
        let n = labels.len();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), n, "labels are distinct: {labels:?}");
        assert_eq!(FilterOutcome::Unfit(Cause::Numa).label(), "numa");
    }
}

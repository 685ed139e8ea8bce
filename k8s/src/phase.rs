//! Terminal pod phases: a pod that `Succeeded` or `Failed` holds no devices any more, in the
//! extender's picture of the cluster as in the agent's.

use k8s_openapi::api::core::v1::Pod;

/// A field selector term that leaves out finished pods, to append after a comma.
pub const NOT_TERMINAL_SELECTOR: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Whether the pod has finished (`Succeeded` or `Failed`): it holds nothing.
pub fn is_terminal(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_phase(phase: Option<&str>) -> Pod {
        Pod {
            status: phase.map(|p| k8s_openapi::api::core::v1::PodStatus {
                phase: Some(p.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_succeeded_and_failed_are_terminal() {
        assert!(is_terminal(&in_phase(Some("Succeeded"))));
        assert!(is_terminal(&in_phase(Some("Failed"))));
        for phase in [None, Some("Pending"), Some("Running"), Some("Unknown")] {
            assert!(!is_terminal(&in_phase(phase)), "{phase:?}");
        }
        for term in NOT_TERMINAL_SELECTOR.split(',') {
            let phase = term.trim_start_matches("status.phase!=");
            assert!(is_terminal(&in_phase(Some(phase))), "{term}");
        }
    }
}

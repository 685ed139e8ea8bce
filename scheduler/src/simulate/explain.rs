//! Shows a newcomer what a policy does: the first placements of a replay,
//! each with the node, GPU and MIG position chosen and the policy's reason.

use kubesched_core::fragmentation::task_label;
use kubesched_core::node::{GpuSlots, NodeState};
use kubesched_core::placement::DeviceChoice;
use kubesched_core::replay::{self, Outcome, Replay, ReplayConfig};
use kubesched_core::scoring::Policy;

use super::Scenario;

/// The devices of a choice, named as a person reads them.
fn devices(node: &NodeState, choice: &DeviceChoice) -> String {
    let gpu = |i: usize| {
        node.gpus
            .get(i)
            .map_or_else(|| format!("#{i}"), |g| format!("GPU{}", g.index))
    };
    match choice {
        DeviceChoice::None => "no GPU".to_string(),
        DeviceChoice::Share { gpu: g, milli } => format!("{} ({milli}m)", gpu(*g)),
        DeviceChoice::Gpus(gs) => gs.iter().map(|&g| gpu(g)).collect::<Vec<_>>().join("+"),
        DeviceChoice::Mig(picks) => picks
            .iter()
            .map(|p| {
                let profile = node.gpus.get(p.gpu).and_then(|g| match &g.slots {
                    GpuSlots::Mig(m) => m
                        .gpu
                        .geometry()
                        .profiles
                        .get(p.profile)
                        .map(|x| x.name.clone()),
                    GpuSlots::Plain { .. } => None,
                });
                format!("{} {}@{}", gpu(p.gpu), profile.unwrap_or_default(), p.start)
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// One line per pod for the first `n` pods of the arrival stream.
pub fn first_placements(
    scenario: &Scenario,
    policy: &dyn Policy,
    cfg: &ReplayConfig,
    n: usize,
) -> Vec<String> {
    let stream = replay::tune_and_shuffle(&scenario.pods, scenario.capacity_milli(), cfg);
    let mut r = Replay::new(scenario.nodes.clone(), policy, &scenario.workload, cfg);
    stream
        .iter()
        .take(n)
        .enumerate()
        .map(|(k, pod)| {
            // Name the devices on the node as it was before this pod.
            let before = r.nodes().to_vec();
            let what = format!("pod {:>3} {:<16}", k + 1, task_label(pod));
            match r.step(pod) {
                Outcome::Placed {
                    node,
                    candidate,
                    reason,
                } => {
                    let n = &before[node];
                    format!(
                        "{what} -> {} {}: {reason}",
                        n.name,
                        devices(n, &candidate.choice)
                    )
                }
                Outcome::Failed => format!("{what} -> no node fits"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesched_core::inventory::MigMode;
    use kubesched_core::scoring;

    #[test]
    fn explains_node_gpu_position_and_reason() {
        let scenario = super::super::builtin::scenario(MigMode::Dynamic, 50);
        let policy = scoring::by_name("kubesched").unwrap();
        let lines = first_placements(&scenario, policy.as_ref(), &ReplayConfig::default(), 5);
        assert_eq!(lines.len(), 5);
        for l in &lines {
            assert!(l.contains(" -> "), "{l}");
            // Every placement of the production policy names its fragmentation change.
            assert!(
                l.contains("fragmentation") || l.contains("no node fits"),
                "{l}"
            );
        }
        assert!(
            lines.iter().any(|l| l.contains('@')),
            "some MIG slice with its start position: {lines:?}"
        );
    }
}

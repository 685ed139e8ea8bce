//! The MIG track's scenario: the trace's cluster with every GPU turned into
//! an H100-80GB in MIG mode, and its fractional requests mapped to MIG
//! profiles (the trace has no MIG requests). Two declared mappings of a
//! share s (in thousandths) to 7 compute slices:
//!
//! - `round`: round(s·7/1000), then up to the next profile size in {1,2,3,4,7};
//! - `ceil`: ⌈s·7/1000⌉, then up to the next profile size.
//!
//! Whole-GPU requests become `7g.80gb` slices, one per GPU.

use clap::ValueEnum;
use kubesched_core::inventory::MigMode;
use kubesched_core::node::NodeState;
use kubesched_core::request::{GpuDemand, PodRequest};

use super::{Scenario, builtin};

const MODEL: &str = "H100-80GB";

/// How a fractional GPU share is mapped to an H100-80GB MIG profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigMapping {
    /// round(s·7/1000) compute slices, then up to the next profile size.
    Round,
    /// ⌈s·7/1000⌉ compute slices, then up to the next profile size.
    Ceil,
}

/// The H100-80GB profile with `slices` compute slices, rounded up to a size that exists.
fn profile_for(slices: u32) -> &'static str {
    match slices {
        0 | 1 => "1g.10gb",
        2 => "2g.20gb",
        3 => "3g.40gb",
        4 => "4g.40gb",
        _ => "7g.80gb",
    }
}

/// The MIG demand for a trace demand: a share becomes one slice of the mapped profile, each
/// whole GPU a `7g.80gb`; other demands are returned unchanged.
pub fn map_demand(d: &GpuDemand, mapping: MigMapping) -> GpuDemand {
    match d {
        GpuDemand::Share { milli } => {
            let exact = f64::from(*milli) * 7.0 / 1000.0;
            let slices = match mapping {
                MigMapping::Round => exact.round(),
                MigMapping::Ceil => exact.ceil(),
            } as u32;
            GpuDemand::Mig {
                profile: profile_for(slices).to_string(),
                count: 1,
            }
        }
        GpuDemand::Whole { count } => GpuDemand::Mig {
            profile: profile_for(7).to_string(),
            count: *count,
        },
        other => other.clone(),
    }
}

/// The MIG version of a trace scenario.
pub fn to_mig(scenario: &Scenario, mapping: MigMapping, mode: MigMode, coverage: f64) -> Scenario {
    let nodes = scenario
        .nodes
        .iter()
        .map(|n| {
            let mut m = NodeState::new(n.name.clone(), n.cpu_free_milli, n.memory_free_mib);
            m.gpus = n
                .gpus
                .iter()
                .map(|g| builtin::gpu(g.index, &g.uuid, MODEL, g.numa, Some(mode)))
                .collect();
            m
        })
        .collect();
    let pods = scenario
        .pods
        .iter()
        .map(|p| PodRequest {
            gpu: map_demand(&p.gpu, mapping),
            gpu_models: Vec::new(),
            ..p.clone()
        })
        .collect();
    let mode_name = match mode {
        MigMode::Static => "static",
        MigMode::Dynamic => "dynamic",
    };
    Scenario::from_trace(
        format!("{} as {mode_name} MIG ({mapping:?} mapping)", scenario.name),
        nodes,
        pods,
        coverage,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(milli: u32, m: MigMapping) -> String {
        match map_demand(&GpuDemand::Share { milli }, m) {
            GpuDemand::Mig { profile, .. } => profile,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn mappings_follow_the_declared_rules() {
        // The trace's most common shares.
        assert_eq!(slices(810, MigMapping::Round), "7g.80gb");
        assert_eq!(slices(470, MigMapping::Round), "3g.40gb");
        assert_eq!(slices(470, MigMapping::Ceil), "4g.40gb");
        assert_eq!(slices(320, MigMapping::Round), "2g.20gb");
        assert_eq!(slices(320, MigMapping::Ceil), "3g.40gb");
        assert_eq!(slices(650, MigMapping::Round), "7g.80gb");
        assert_eq!(slices(50, MigMapping::Round), "1g.10gb");
        let whole = map_demand(&GpuDemand::Whole { count: 2 }, MigMapping::Round);
        assert_eq!(
            whole,
            GpuDemand::Mig {
                profile: "7g.80gb".into(),
                count: 2
            }
        );
    }
}

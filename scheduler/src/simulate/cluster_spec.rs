//! A simulated cluster written as a short spec: comma-separated terms
//! `<nodes>x<gpus>x<model>`, e.g. `2x4xH100-80GB,3x8xL40S` for two nodes of four
//! H100-80GB GPUs and three of eight L40S.
//!
//! Every node is the built-in scenario's node (224 CPUs and two NUMA nodes, the GPUs
//! split between them) under the single-numa-node Topology Manager policy. GPUs of a
//! MIG-capable model are in dynamic MIG mode, with no instance yet; others are whole
//! GPUs. Nodes are named after their model's catalogue name and counted per model
//! across the spec: `h100-80gb-00`, `h100-80gb-01`, `l40s-00`.

use std::collections::HashMap;

use kubesched_core::catalogue::{self, CatalogueError, GpuModel};
use kubesched_core::inventory::MigMode;
use kubesched_core::node::NodeState;
use kubesched_core::numa::TopologyPolicy;
use kubesched_core::text::quote;

use super::builtin;

/// Most nodes one spec may ask for, all terms together.
pub const MAX_NODES: u64 = 10_000;
/// Most GPUs one node may have.
pub const MAX_GPUS_PER_NODE: u64 = 16;

/// Longest model name a term may give (catalogue aliases are under 30 characters).
const MAX_MODEL_NAME: usize = 64;

/// Why a cluster spec could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSpecError {
    /// The spec has no term at all.
    #[error("empty cluster spec (expected e.g. 2x4xH100-80GB,3x8xL40S)")]
    Empty,
    /// A term is not `<nodes>x<gpus>x<model>` with decimal counts.
    #[error(
        "malformed cluster spec term {} (expected <nodes>x<gpus>x<model>, e.g. 2x4xH100-80GB)",
        quote(.term)
    )]
    Malformed {
        /// The term as written.
        term: String,
    },
    /// A term asks for no nodes or for nodes without GPUs.
    #[error("cluster spec term {}: the number of {what} must be at least 1", quote(.term))]
    Zero {
        /// The term as written.
        term: String,
        /// `nodes` or `GPUs per node`.
        what: &'static str,
    },
    /// A term asks for more than [`MAX_GPUS_PER_NODE`] GPUs on a node.
    #[error(
        "cluster spec term {}: {gpus} GPUs per node (at most {MAX_GPUS_PER_NODE})",
        quote(.term)
    )]
    TooManyGpus {
        /// The term as written.
        term: String,
        /// GPUs per node asked for.
        gpus: u64,
    },
    /// The terms together ask for more than [`MAX_NODES`] nodes.
    #[error("cluster spec asks for {nodes} nodes (at most {MAX_NODES})")]
    TooManyNodes {
        /// Nodes asked for up to and including the term that went over.
        nodes: u64,
    },
    /// A term names a model the catalogue does not know.
    #[error("cluster spec term {}: {source} (known models: {known})", quote(.term))]
    UnknownModel {
        /// The term as written.
        term: String,
        /// The catalogue's models, comma-separated.
        known: String,
        /// The catalogue's error.
        #[source]
        source: CatalogueError,
    },
}

/// One term, read and checked.
struct Term {
    nodes: u64,
    gpus: u32,
    model: &'static GpuModel,
}

/// The nodes of a cluster spec such as `2x4xH100-80GB,3x8xL40S`, empty, in the
/// spec's order. Models are looked up in the catalogue by name or alias, ignoring
/// case; an unknown model is an error listing the known ones.
pub fn parse_node_spec(spec: &str) -> Result<Vec<NodeState>, NodeSpecError> {
    if spec.trim().is_empty() {
        return Err(NodeSpecError::Empty);
    }
    // Every term is checked before any node is built.
    let mut terms = Vec::new();
    let mut total = 0u64;
    for raw in spec.split(',') {
        let term = parse_term(raw.trim())?;
        total = total.saturating_add(term.nodes);
        if total > MAX_NODES {
            return Err(NodeSpecError::TooManyNodes { nodes: total });
        }
        terms.push(term);
    }
    let mut nodes = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut counts: HashMap<String, u64> = HashMap::new();
    for term in terms {
        let prefix = name_prefix(term.model.name);
        let mig = term.model.mig.is_some().then_some(MigMode::Dynamic);
        let count = counts.entry(prefix.clone()).or_insert(0);
        for _ in 0..term.nodes {
            nodes.push(builtin::node(
                format!("{prefix}-{:02}", *count),
                term.model.name,
                term.gpus,
                TopologyPolicy::SingleNumaNode,
                mig,
            ));
            *count += 1;
        }
    }
    Ok(nodes)
}

/// Reads one term `<nodes>x<gpus>x<model>`.
fn parse_term(term: &str) -> Result<Term, NodeSpecError> {
    let malformed = || NodeSpecError::Malformed {
        term: term.to_string(),
    };
    let mut parts = term.splitn(3, 'x').map(str::trim);
    let (Some(nodes), Some(gpus), Some(model)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let (Some(nodes), Some(gpus)) = (count(nodes), count(gpus)) else {
        return Err(malformed());
    };
    if model.is_empty() || model.len() > MAX_MODEL_NAME {
        return Err(malformed());
    }
    let zero = |what| NodeSpecError::Zero {
        term: term.to_string(),
        what,
    };
    if nodes == 0 {
        return Err(zero("nodes"));
    }
    if gpus == 0 {
        return Err(zero("GPUs per node"));
    }
    if gpus > MAX_GPUS_PER_NODE {
        return Err(NodeSpecError::TooManyGpus {
            term: term.to_string(),
            gpus,
        });
    }
    if nodes > MAX_NODES {
        return Err(NodeSpecError::TooManyNodes { nodes });
    }
    let model = catalogue::model(model).map_err(|source| NodeSpecError::UnknownModel {
        term: term.to_string(),
        known: catalogue::models()
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", "),
        source,
    })?;
    Ok(Term {
        nodes,
        // At most MAX_GPUS_PER_NODE, checked above.
        gpus: u32::try_from(gpus).unwrap_or(u32::MAX),
        model,
    })
}

/// A decimal count; one too large for a `u64` reads as `u64::MAX` (over every limit).
fn count(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// `H100-80GB` -> `h100-80gb`: lower case, anything but letters and digits a dash.
fn name_prefix(model: &str) -> String {
    model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesched_core::node::GpuSlots;

    fn names(nodes: &[NodeState]) -> Vec<&str> {
        nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn one_term_of_mig_gpus() {
        let nodes = parse_node_spec("2x4xH100-80GB").unwrap();
        assert_eq!(names(&nodes), ["h100-80gb-00", "h100-80gb-01"]);
        for n in &nodes {
            assert_eq!(n.gpus.len(), 4);
            assert_eq!(n.policy, TopologyPolicy::SingleNumaNode);
            assert_eq!(n.numa.len(), 2);
            for g in &n.gpus {
                assert_eq!(&*g.model, "H100-80GB");
                let GpuSlots::Mig(m) = &g.slots else {
                    panic!("MIG expected")
                };
                assert_eq!(m.mode, MigMode::Dynamic);
                assert!(m.gpu.slots().is_empty(), "no instance yet");
            }
        }
    }

    #[test]
    fn several_terms_plain_and_mig_with_aliases_and_spaces() {
        let nodes =
            parse_node_spec(" 2x4xH100-80GB , 3x8xL40S,1x2xnvidia a30, 1x1xh100-80gb").unwrap();
        assert_eq!(
            names(&nodes),
            [
                "h100-80gb-00",
                "h100-80gb-01",
                "l40s-00",
                "l40s-01",
                "l40s-02",
                "a30-24gb-00",
                "h100-80gb-02",
            ]
        );
        assert_eq!(nodes[2].gpus.len(), 8);
        assert!(matches!(nodes[2].gpus[0].slots, GpuSlots::Plain { .. }));
        assert_eq!(&*nodes[5].gpus[0].model, "A30-24GB");
        assert!(matches!(nodes[5].gpus[1].slots, GpuSlots::Mig(_)));
        assert_eq!(nodes[6].gpus.len(), 1);
    }

    #[test]
    fn malformed_terms_are_refused() {
        assert_eq!(parse_node_spec(""), Err(NodeSpecError::Empty));
        assert_eq!(parse_node_spec("  "), Err(NodeSpecError::Empty));
        for (spec, term) in [
            ("2x4", "2x4"),
            ("2x4x", "2x4x"),
            ("ax4xT4", "ax4xT4"),
            ("-1x4xT4", "-1x4xT4"),
            ("2X4XT4", "2X4XT4"),
            ("1x1xT4,", ""),
            ("1x1xT4,,1x1xT4", ""),
        ] {
            assert_eq!(
                parse_node_spec(spec),
                Err(NodeSpecError::Malformed { term: term.into() }),
                "{spec}"
            );
        }
        let err = parse_node_spec("2x4").unwrap_err().to_string();
        assert_eq!(
            err,
            "malformed cluster spec term \"2x4\" (expected <nodes>x<gpus>x<model>, e.g. 2x4xH100-80GB)"
        );
    }

    #[test]
    fn zero_and_too_many_are_refused() {
        assert_eq!(
            parse_node_spec("0x4xT4").unwrap_err().to_string(),
            "cluster spec term \"0x4xT4\": the number of nodes must be at least 1"
        );
        assert_eq!(
            parse_node_spec("2x0xT4").unwrap_err().to_string(),
            "cluster spec term \"2x0xT4\": the number of GPUs per node must be at least 1"
        );
        assert_eq!(
            parse_node_spec("1x17xT4").unwrap_err().to_string(),
            "cluster spec term \"1x17xT4\": 17 GPUs per node (at most 16)"
        );
        assert_eq!(parse_node_spec("1x16xT4").unwrap()[0].gpus.len(), 16);
        assert_eq!(
            parse_node_spec("10001x1xT4"),
            Err(NodeSpecError::TooManyNodes { nodes: 10_001 })
        );
        assert_eq!(
            parse_node_spec("5000x1xT4,5001x1xL4"),
            Err(NodeSpecError::TooManyNodes { nodes: 10_001 })
        );
        assert_eq!(
            parse_node_spec("99999999999999999999999x1xT4"),
            Err(NodeSpecError::TooManyNodes { nodes: u64::MAX })
        );
    }

    #[test]
    fn unknown_models_are_refused_with_the_known_ones() {
        let err = parse_node_spec("1x1xT4,1x8xGTX-480").unwrap_err();
        assert!(matches!(
            &err,
            NodeSpecError::UnknownModel { term, source: CatalogueError::UnknownModel(m), .. }
                if term == "1x8xGTX-480" && m == "GTX-480"
        ));
        let text = err.to_string();
        assert!(
            text.starts_with("cluster spec term \"1x8xGTX-480\": unknown GPU model \"GTX-480\""),
            "{text}"
        );
        assert!(text.contains("H100-80GB, "), "{text}");
    }
}

//! The node types a fleet is built from: a YAML file (`nodeTypes:`), each type a GPU model,
//! GPUs per node, MIG mode, CPUs, memory, an hourly price and the most nodes to consider.
//! Without a file, three example types with example prices, to be replaced by your own.

use std::path::Path;

use kubesched_core::catalogue;
use kubesched_core::inventory::MigMode;
use kubesched_core::node::NodeState;
use kubesched_core::numa::TopologyPolicy;
use kubesched_core::planning::PricedType;
use kubesched_core::planning::mig_layouts;
use kubesched_core::text::quote;
use serde::Deserialize;

use crate::simulate::builtin;

/// Largest node-type file read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most node types one search may combine: each more multiplies the fleets to look at.
pub const MAX_TYPES: usize = 4;
/// Most nodes of one type a search may consider.
pub const MAX_NODES_PER_TYPE: u32 = 1000;

/// Why the node types could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeTypeError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// Not YAML of the expected shape.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with the line.
        #[source]
        source: serde_yaml::Error,
    },
    /// A value is out of range or unknown.
    #[error("node type {}: {reason}", quote(.name))]
    Invalid {
        /// The type's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// No types, too many, or two with one name.
    #[error("{0}")]
    List(String),
}

/// MIG mode of a node type's GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MigSetting {
    /// Whole GPUs.
    #[default]
    None,
    /// MIG mode, instances created per pod (MIG-capable models only).
    Dynamic,
    /// MIG mode with a fixed layout on every GPU (`migLayout`), as mig-parted configures it.
    Static,
}

/// One node type as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeType {
    /// Name, unique in the file.
    pub name: String,
    /// GPU model, as the catalogue names it (`H100-80GB`, `L40S`, ...).
    pub model: String,
    /// GPUs per node.
    pub gpus: u32,
    /// `none` (whole GPUs), `dynamic` (MIG, instances made per pod) or `static` (MIG cut as
    /// `migLayout` on every GPU).
    #[serde(default)]
    pub mig: MigSetting,
    /// With `mig: static`: instances per profile on each GPU, e.g. `{"3g.40gb": 1, "1g.10gb": 4}`.
    #[serde(default)]
    pub mig_layout: std::collections::BTreeMap<String, u32>,
    /// CPUs per node.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Memory per node, GiB.
    #[serde(default = "default_memory_gib", rename = "memoryGiB")]
    pub memory_gib: u32,
    /// The kubelet's Topology Manager policy on these nodes (`none`, `best-effort`,
    /// `restricted`, `single-numa-node`, the default).
    #[serde(default = "default_topology")]
    pub topology_policy: TopologyPolicy,
    /// Price of one node per hour.
    pub price_per_hour: f64,
    /// Most nodes of this type a fleet may have.
    pub max_nodes: u32,
}

fn default_topology() -> TopologyPolicy {
    TopologyPolicy::SingleNumaNode
}

fn default_cpus() -> u32 {
    224
}

fn default_memory_gib() -> u32 {
    2048
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    node_types: Vec<NodeType>,
}

impl NodeType {
    fn validate(&self) -> Result<(), NodeTypeError> {
        let invalid = |reason: String| NodeTypeError::Invalid {
            name: self.name.clone(),
            reason,
        };
        if self.name.is_empty() || self.name.len() > 63 {
            return Err(invalid("the name must have 1 to 63 characters".into()));
        }
        let model = catalogue::model(&self.model).map_err(|e| invalid(e.to_string()))?;
        if self.mig != MigSetting::None && model.mig.is_none() {
            return Err(invalid(format!("{} has no MIG mode", self.model)));
        }
        match (self.mig, self.mig_layout.is_empty()) {
            (MigSetting::Static, true) => {
                return Err(invalid("mig: static needs a migLayout".into()));
            }
            (MigSetting::Static, false) => {
                self.placements().map_err(invalid)?;
            }
            (_, false) => return Err(invalid("migLayout is for mig: static".into())),
            (_, true) => {}
        }
        if !(1..=16).contains(&self.gpus) {
            return Err(invalid("gpus must be 1 to 16".into()));
        }
        if !(2..=4096).contains(&self.cpus) || !(1..=65536).contains(&self.memory_gib) {
            return Err(invalid(
                "cpus must be 2 to 4096 and memoryGiB 1 to 65536".into(),
            ));
        }
        if !(self.price_per_hour.is_finite() && self.price_per_hour > 0.0) {
            return Err(invalid("pricePerHour must be above 0".into()));
        }
        if self.max_nodes > MAX_NODES_PER_TYPE {
            return Err(invalid(format!(
                "maxNodes must be at most {MAX_NODES_PER_TYPE}"
            )));
        }
        Ok(())
    }

    /// Where `migLayout`'s instances start on a GPU, or why they cannot all be there.
    fn placements(&self) -> Result<Vec<(usize, u8)>, String> {
        let geometry = catalogue::mig_geometry(&self.model).map_err(|e| e.to_string())?;
        let mut counts = vec![0u32; geometry.profiles.len()];
        for (profile, &n) in &self.mig_layout {
            let (idx, _) = geometry.profile(profile).map_err(|e| e.to_string())?;
            counts[idx] += n;
        }
        mig_layouts::place(&geometry, &counts).ok_or_else(|| {
            format!(
                "migLayout {:?} does not fit one {}",
                self.mig_layout, self.model
            )
        })
    }

    /// The node, empty, named `<type>-<index>`.
    pub fn node(&self, index: u32) -> NodeState {
        let mut node = builtin::sized_node(
            format!("{}-{index:03}", self.name),
            &self.model,
            self.gpus,
            (self.cpus, u64::from(self.memory_gib) << 10),
            self.topology_policy,
            (self.mig != MigSetting::None).then_some(MigMode::Dynamic),
        );
        if self.mig == MigSetting::Static {
            // Checked when the file was read.
            let placements = self.placements().unwrap_or_default();
            for gpu in &mut node.gpus {
                builtin::cut_static(gpu, &placements);
            }
        }
        node
    }

    /// The type as the search sees it.
    pub fn priced(&self) -> PricedType {
        PricedType {
            name: self.name.clone(),
            price_per_hour: self.price_per_hour,
            max_nodes: self.max_nodes,
        }
    }
}

/// Reads and checks a node-type file.
pub fn read(path: &Path) -> Result<Vec<NodeType>, NodeTypeError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| NodeTypeError::Read {
        path: shown.clone(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(NodeTypeError::TooLarge { path: shown });
    }
    let text = std::fs::read_to_string(path).map_err(|source| NodeTypeError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        NodeTypeError::Parse { source, .. } => NodeTypeError::Parse {
            path: shown,
            source,
        },
        other => other,
    })
}

/// Parses and checks node types from YAML text.
pub fn parse(text: &str) -> Result<Vec<NodeType>, NodeTypeError> {
    let file: File = serde_yaml::from_str(text).map_err(|source| NodeTypeError::Parse {
        path: "node types".into(),
        source,
    })?;
    check(file.node_types)
}

fn check(types: Vec<NodeType>) -> Result<Vec<NodeType>, NodeTypeError> {
    if types.is_empty() || types.len() > MAX_TYPES {
        return Err(NodeTypeError::List(format!(
            "give 1 to {MAX_TYPES} node types, not {}",
            types.len()
        )));
    }
    for (i, t) in types.iter().enumerate() {
        t.validate()?;
        if types[..i].iter().any(|u| u.name == t.name) {
            return Err(NodeTypeError::List(format!(
                "two node types are named {}",
                quote(&t.name)
            )));
        }
    }
    Ok(types)
}

/// The example types used without a file: an H100 node in MIG mode and an L40S node for
/// whole-GPU work. Their prices are placeholders of the right order, not quotes.
pub fn examples() -> Vec<NodeType> {
    let t = |name: &str, model: &str, mig, price| NodeType {
        name: name.into(),
        model: model.into(),
        gpus: 8,
        mig,
        mig_layout: Default::default(),
        cpus: default_cpus(),
        memory_gib: default_memory_gib(),
        topology_policy: default_topology(),
        price_per_hour: price,
        max_nodes: 40,
    };
    vec![
        t("h100x8-mig", "H100-80GB", MigSetting::Dynamic, 98.0),
        t("l40sx8", "L40S", MigSetting::None, 30.0),
    ]
}

/// The fleet of `counts` nodes of each of `types`.
pub fn fleet(types: &[NodeType], counts: &[u32]) -> Vec<NodeState> {
    types
        .iter()
        .zip(counts)
        .flat_map(|(t, &n)| (0..n).map(move |i| t.node(i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_and_checked() {
        let types = parse(
            "nodeTypes:\n- {name: a, model: H100-80GB, gpus: 8, mig: dynamic, pricePerHour: 98, maxNodes: 4}\n\
             - {name: b, model: L40S, gpus: 4, cpus: 64, memoryGiB: 512, topologyPolicy: none, pricePerHour: 12.5, maxNodes: 3}\n\
             - {name: c, model: A100-80GB, gpus: 2, mig: static, migLayout: {3g.40gb: 1, 1g.10gb: 3}, pricePerHour: 20, maxNodes: 2}\n",
        )
        .unwrap();
        assert_eq!(types.len(), 3);
        let c = types[2].node(0);
        assert_eq!(c.gpus.len(), 2);
        for g in &c.gpus {
            let kubesched_core::node::GpuSlots::Mig(m) = &g.slots else {
                panic!("not MIG")
            };
            assert_eq!(m.mode, MigMode::Static);
            assert_eq!(m.gpu.slots().len(), 4);
        }
        assert_eq!(types[1].cpus, 64);
        let nodes = fleet(&types, &[1, 2]);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].gpus.len(), 8);
        assert!(nodes[0].gpus[0].is_mig());
        assert_eq!(nodes[2].name, "b-001");
        assert_eq!(nodes[2].cpu_allocatable_milli, 64_000);
        assert_eq!(nodes[2].memory_allocatable_mib, 512 << 10);
        assert_eq!(nodes[0].policy, TopologyPolicy::SingleNumaNode);
        assert_eq!(nodes[2].policy, TopologyPolicy::None);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (text, says) in [
            ("nodeTypes: []", "give 1 to 4"),
            (
                "nodeTypes:\n- {name: a, model: Nope, gpus: 8, pricePerHour: 1, maxNodes: 1}",
                "Nope",
            ),
            (
                "nodeTypes:\n- {name: a, model: L40S, gpus: 8, mig: dynamic, pricePerHour: 1, maxNodes: 1}",
                "no MIG",
            ),
            (
                "nodeTypes:\n- {name: a, model: L40S, gpus: 8, pricePerHour: 0, maxNodes: 1}",
                "above 0",
            ),
            (
                "nodeTypes:\n- {name: a, model: L40S, gpus: 8, pricePerHour: 1, maxNodes: 1, colour: red}",
                "colour",
            ),
            (
                "nodeTypes:\n- {name: a, model: L40S, gpus: 8, pricePerHour: 1, maxNodes: 1}\n- {name: a, model: L40S, gpus: 4, pricePerHour: 1, maxNodes: 1}",
                "two node types",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}

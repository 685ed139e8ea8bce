//! kubesched-core: the pure model shared by the scheduler extender, the node
//! agent and the simulator. Plain data, no I/O, no async, no Kubernetes types.
//!
//! - `catalogue`: GPU models and their MIG geometry
//! - `mig`: one GPU's MIG occupancy map and slot allocator
//! - `mig_name`: NVIDIA's MIG profile naming rule and the resource form of profile names
//! - `request`: what a pod asks for, from resource names
//! - `numa`: NUMA state and the Topology Manager admission rule
//! - `inventory`: the versioned node inventory document
//! - `annotation`: the pod devices annotation the extender writes at bind
//! - `versioned`: reading versioned JSON documents
//! - `node`: a node's live occupancy
//! - `placement`: feasibility with reasons, candidates, apply/release
//! - `fragmentation`: the FGD measure, its MIG form, cluster aggregates
//! - `scoring`: placement policies behind one trait
//! - `replay`: trace replay for the simulator (one policy, one seed)
//! - `timed`: timed replay with departures (churn), its metrics and built-in workloads
//! - `planning`: the cheapest fleet for a target, MIG layouts for a demand mix
//! - `stats`: means and confidence intervals over seeds
//! - `rng`: a small seedable random generator
//! - `signing`: the extender's signature on a devices annotation
//! - `text`: quoting outside text in messages, cut short

pub mod annotation;
pub mod catalogue;
pub mod fragmentation;
pub mod inventory;
pub mod mig;
pub mod mig_name;
pub mod node;
pub mod numa;
pub mod placement;
pub mod planning;
pub mod replay;
pub mod request;
pub mod rng;
pub mod scoring;
pub mod signing;
pub mod stats;
pub mod text;
pub mod timed;
pub mod versioned;

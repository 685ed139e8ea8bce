//! The scheduler extender: kube-scheduler's HTTP extender protocol over the
//! core placement model, with the cluster state kept from API watches.
//!
//! - `protocol`: the extender wire types
//! - `quantity`, `pod_request`: Kubernetes Pod -> core `PodRequest`
//! - `config`: YAML file and flags
//! - `workload`: the fragmentation target workload (fixed or learned)
//! - `reservations`, `cluster_state`: occupancy and memoised evaluations
//! - `service`: the extender object; `filter`, `prioritize`, `bind`: the verbs
//! - `reflectors`: Node and Pod watches feeding the state
//! - `metrics`, `server`, `tls`: Prometheus metrics and the HTTP(S) server

pub mod bind;
pub mod cluster_state;
pub mod config;
mod connections;
pub mod filter;
pub mod metrics;
pub mod pod_request;
pub mod prioritize;
pub mod protocol;
pub mod reflectors;
pub mod reservations;
pub mod server;
pub mod service;
pub mod tls;
pub mod workload;

pub use service::Extender;

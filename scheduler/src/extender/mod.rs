//! The scheduler extender: kube-scheduler's HTTP extender protocol over the
//! core placement model, with the cluster state kept from API watches.
//!
//! - `protocol`: the extender wire types
//! - `config`: YAML file and flags
//! - `workload`: the fragmentation target workload (fixed or learned)
//! - `reservations`, `cluster_state`: occupancy and memoised evaluations
//! - `reservation_check`: reservations the watch leaves unconfirmed, settled at the API server
//! - `service`: the extender object; `filter`, `prioritize`, `preempt`, `bind`: the verbs
//! - `outcome`: what each verb decided, as metric labels
//! - `api_client`: the API calls bind makes, behind a trait
//! - `reflectors`: Node and Pod watches feeding the state
//! - `metrics`, `cost_metrics`, `server`, `connections`, `tls`: Prometheus metrics (the cost
//!   series apart) and the HTTP(S) server
//!
//! A pod's request is read by `kubesched_k8s::PodRequestReader`, the rule the node agent
//! follows too.

pub mod api_client;
mod bind;
pub mod cluster_state;
pub mod config;
mod connections;
pub mod cost_metrics;
pub mod filter;
pub mod metrics;
pub mod outcome;
mod parallel;
mod preempt;
mod prioritize;
pub mod protocol;
pub mod reflectors;
pub mod reservation_check;
pub mod reservations;
pub mod server;
pub mod service;
mod shapes;
pub mod tls;
pub mod workload;

pub use service::Extender;

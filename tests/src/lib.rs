//! End-to-end harness for kubesched-ai: finds (or brings up) a real cluster, installs the
//! chart's RBAC from `deploy/manifests`, and runs our binaries from the cargo target folder
//! under the chart's service accounts (never as cluster admin).
//!
//! Which cluster:
//! - `KUBESCHED_E2E_KUBECONFIG=FILE`: an existing cluster (admin credentials; it must have a
//!   node whose kubelet's device-plugin folder is on this machine for the agent tests).
//! - `KUBESCHED_E2E=1`: `scripts/cluster.sh build` + `up` (root; Debian packages only), and
//!   `down` at the end unless `KUBESCHED_E2E_KEEP=1`. A cluster already up is reused and left up.
//! - neither: no cluster; the tests are `#[ignore]`d, and asked for with `--ignored` they fail.
//!
//! See `tests/README.md` for the variables and how to run against kind or k3s.
// A test or bench states what it expects with unwrap/expect: a panic here is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod cluster;
pub mod deploy;
pub mod extender;
pub mod fake_node;
pub mod http;
pub mod pod_resources;
pub mod pods;
pub mod process;
pub mod rbac;
pub mod wait;

pub use cluster::Cluster;
pub use process::{Proc, binary};
pub use wait::poll;

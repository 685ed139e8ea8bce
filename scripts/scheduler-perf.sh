#!/usr/bin/env bash
# scheduler_perf-style benchmark (tests/benches/scheduler_perf.rs): kube-scheduler alone vs
# with our extender, on fake GPU nodes through the real API server. Every phase brings up a
# fresh cluster with scripts/cluster.sh (root, Debian bookworm), and the cluster is down
# again at the end. Arguments go to the benchmark, e.g. `--nodes 500,5000,10000`; `--help`
# lists them. The table is printed and kept in target/scheduler-perf.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
# The binaries under test, optimised as users run them; the bench finds them beside itself.
cargo build --release --locked -p kubesched-scheduler --bin kubesched-extender \
  -p kubesched-device-plugin --bin kubesched-agent
KUBESCHED_E2E=1 cargo bench --locked -p kubesched-e2e --bench scheduler_perf -- "$@" \
  | tee target/scheduler-perf.txt

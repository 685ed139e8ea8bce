#!/usr/bin/env bash
# Runs every check CI runs, installing what the tests need first (Debian or
# Ubuntu): formatting, the chart against its rendered manifests, clippy with
# warnings as errors, and all tests. Tests
# that need something from outside are #[ignore]d and run here by name with
# --ignored, where a missing input fails instead of passing: the GPU map page
# in headless Chromium (always), the trace reproduction gate (when the Alibaba
# trace is on this machine), and, under CI (CI=true) or with KUBESCHED_E2E=1,
# the end-to-end tests against a real one-node cluster (scripts/cluster.sh;
# root, Debian bookworm), which is always taken down again, also when a test
# fails.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
pkg-config --exists hwloc 2>/dev/null || need_pkgs+=(libhwloc-dev)
pkg-config --exists libudev 2>/dev/null || need_pkgs+=(libudev-dev)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
# The GPU map page is tested in a real headless browser.
command -v chromium >/dev/null || need_pkgs+=(chromium)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing ${need_pkgs[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

e2e=0
if [ "${CI:-}" = true ] || [ "${KUBESCHED_E2E:-}" = 1 ]; then e2e=1; fi

# A clean CI machine builds everything once: incremental caches would only
# double what the build leaves on its disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

t0=$SECONDS
cargo fmt --all -- --check
# The committed plain manifests are what the chart renders (deploy/README.md).
bash scripts/render-manifests.sh --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# By name, with --workspace as above: one feature set, so nothing is built twice.
cargo test --workspace --locked --test ui_browser -- --ignored
# The trace is research data kept beside the project, never in it: the gate runs
# wherever the trace is, and says so loudly where it is not.
trace_dir="${KUBESCHED_TRACE_DIR:-$PWD/../shared/data/alibaba-gpu-v2023/csv}"
if [ -f "$trace_dir/openb_pod_list_default.csv" ]; then
  KUBESCHED_TRACE_DIR="$trace_dir" \
    cargo test --workspace --locked --test trace_gate -- --ignored
else
  echo "test.sh: NOT RUN: trace reproduction gate (no Alibaba trace at $trace_dir;" \
    "set KUBESCHED_TRACE_DIR)"
fi
echo "test.sh: checks and tests in $((SECONDS - t0)) s"
[ $e2e -eq 1 ] || exit 0

t1=$SECONDS
# The end-to-end tests start our binaries. `cargo test --workspace` above built
# them already (with the dev-dependencies' features); a plain `cargo build
# --bins` would resolve features differently and rebuild every dependency.
cargo test --workspace --locked --no-run
if ! bash scripts/cluster.sh status >/dev/null 2>&1; then
  # Ours to take down, whatever happens from here on.
  trap 'bash scripts/cluster.sh down || true' EXIT
fi
bash scripts/cluster.sh build
echo "test.sh: binaries and cluster build in $((SECONDS - t1)) s"
t2=$SECONDS
# A failure's cause is printed last, where a CI log's tail shows it: the scenarios run
# and the error chain (backtraces off: they would push it out of the tail).
e2e_log=target/e2e.log
if ! RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 KUBESCHED_E2E=1 \
  cargo test --workspace --locked --test e2e -- --ignored --nocapture 2>&1 | tee "$e2e_log"; then
  echo "test.sh: end-to-end tests FAILED (full output in $e2e_log). Scenarios:"
  grep -E '^\[e2e\] === ' "$e2e_log" | tail -12 || true
  echo "test.sh: the error:"
  sed -n '/^Error: /,/^test result/p' "$e2e_log" | grep -v '^\[cluster' | head -30 || true
  exit 1
fi
echo "test.sh: end-to-end tests in $((SECONDS - t2)) s (total $((SECONDS - t0)) s)"

#!/usr/bin/env bash
# Runs every check CI runs, installing what the tests need first (Debian or
# Ubuntu): formatting, clippy with warnings as errors, and all tests
# (the GPU map page's in headless Chromium).
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

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Demand the browser test rather than let it skip for want of Chromium.
KUBESCHED_UI_TEST=1 cargo test --workspace --locked

#!/usr/bin/env bash
# Builds the extender and agent images from this repository without Docker or a registry:
# the binaries cargo built, the shared libraries they link (from this Debian machine), CA
# certificates and a passwd file, as one-layer docker-archive tars (`ctr -n k8s.io images
# import`, `docker load`, `podman load`). The layout is the Dockerfiles' in deploy/docker:
# /usr/local/bin/kubesched-{agent,extender} as the entrypoint, the extender as user 65532.
#
#   images.sh [--profile release|debug | --bin-dir DIR] [--tag TAG[,TAG...]] [--registry PREFIX]
#             [--out DIR]
#
# Defaults: release, the chart's appVersion, no registry prefix, target/images. The release
# binaries are built first when missing. Binaries are stripped (debug info is not shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=release
BIN_DIR=""
TAGS=""
REGISTRY=""
OUT=target/images
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=$2; shift 2 ;;
    --bin-dir) BIN_DIR=$2; shift 2 ;;
    --tag) TAGS=$2; shift 2 ;;
    --registry) REGISTRY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--profile P | --bin-dir DIR] [--tag TAG[,TAG]] [--registry PREFIX] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -n "$TAGS" ] || TAGS=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/chart/kubesched/Chart.yaml)
[ -n "$BIN_DIR" ] || BIN_DIR="${CARGO_TARGET_DIR:-target}/$PROFILE"

names() { # REPO: every tag of it, comma-separated
  local repo=$1 t out=""
  for t in ${TAGS//,/ }; do out="$out,${REGISTRY:+${REGISTRY%/}/}$repo:$t"; done
  echo "${out#,}"
}

# rootfs BINARY DIR: the binary, its libraries at the paths the loader looks them up, and
# the few files a program expects in /etc.
rootfs() {
  local bin=$1 r=$2 lib
  mkdir -p "$r/usr/local/bin" "$r/etc/ssl/certs" "$r/tmp"
  chmod 1777 "$r/tmp"
  cp "$bin" "$r/usr/local/bin/"
  strip "$r/usr/local/bin/$(basename "$bin")"
  for lib in $(ldd "$bin" | grep -oE '/[^ ]+' | sort -u); do
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$r/etc/group"
  [ ! -f /etc/ssl/certs/ca-certificates.crt ] || cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
}

if [ ! -x "$BIN_DIR/kubesched-agent" ] || [ ! -x "$BIN_DIR/kubesched-extender" ]; then
  [ "$BIN_DIR" = "${CARGO_TARGET_DIR:-target}/release" ] \
    || { echo "no $BIN_DIR/kubesched-agent and -extender: build them first" >&2; exit 1; }
  cargo build --release --locked -p kubesched-device-plugin --bin kubesched-agent \
    -p kubesched-scheduler --bin kubesched-extender
fi
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs "$BIN_DIR/kubesched-agent" "$work/agent"
python3 scripts/mkimage.py "$work/agent" "$(names kubesched/agent)" "$OUT/agent.tar" \
  -- /usr/local/bin/kubesched-agent
rootfs "$BIN_DIR/kubesched-extender" "$work/extender"
python3 scripts/mkimage.py "$work/extender" "$(names kubesched/extender)" "$OUT/extender.tar" \
  --user 65532:65532 -- /usr/local/bin/kubesched-extender
for i in agent extender; do
  echo "$OUT/$i.tar: $(names "kubesched/$i"): $(du -m --apparent-size "$OUT/$i.tar" | cut -f1) MB," \
    "$(gzip -c "$OUT/$i.tar" | wc -c | awk '{printf "%.1f", $1 / 1048576}') MB gzipped"
done

#!/usr/bin/env bash
# Renders deploy/chart/kubesched into the plain manifests in deploy/manifests/ (release
# `kubesched`, namespace `kubesched-system`, default values). Run it after every chart change
# and commit the result; `--check` renders into a scratch folder and fails on any difference
# from the committed files (CI runs it).
#
# No Helm binary is packaged in the registries this project installs from, so the chart is
# rendered by scripts/chart-render: Helm's engine (Go text/template with the sprig functions
# and Helm's include/tpl/toYaml/required/lookup) and `helm template --show-only` output,
# built from Debian's Go packages. `helm template` with the same arguments gives the same
# objects.
#
#   render-manifests.sh [--check]
#   render-manifests.sh --out DIR [--set KEY=VALUE | -f VALUES.yaml]...   (other values)
set -euo pipefail
cd "$(dirname "$0")/.."
CHART=deploy/chart/kubesched
OUT=deploy/manifests
NS=kubesched-system
CHECK=0
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --check) CHECK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --set | -f) EXTRA+=("$1" "$2"); shift 2 ;;
    *) echo "usage: $0 [--check] [--out DIR] [--set K=V | -f FILE]..." >&2; exit 2 ;;
  esac
done

RENDER_BIN="${CARGO_TARGET_DIR:-target}/chart-render"
build_renderer() {
  local pkgs=(golang-go golang-github-masterminds-sprig-dev golang-github-ghodss-yaml-dev)
  local p missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "install ${missing[*]} (Debian) to render the chart" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  fi
  mkdir -p "$(dirname "$RENDER_BIN")"
  # Debian's Go libraries live in a GOPATH: build in GOPATH mode, offline.
  (cd scripts/chart-render && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
    go build -o "$OLDPWD/$RENDER_BIN" .)
}
build_renderer

DEST=$OUT
if [ $CHECK -eq 1 ]; then
  DEST=$(mktemp -d)
  trap 'rm -rf "$DEST"' EXIT
fi
mkdir -p "$DEST"

render() { # OUTFILE TEMPLATES... [-- more args]
  local out=$1 args=() shows=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do shows+=(--show-only "templates/$1"); shift; done
  [ $# -gt 0 ] && shift && args=("$@")
  {
    echo "# Rendered from $CHART (release kubesched, namespace $NS) by scripts/render-manifests.sh."
    echo "# Do not edit: change the chart and render again."
    # A fixed cluster version, so the rendered kube-scheduler tag does not depend on the
    # machine (a Helm install takes the cluster's own version).
    "$RENDER_BIN" "$CHART" --release kubesched --namespace "$NS" --kube-version v1.31.0 \
      "${shows[@]}" ${EXTRA[@]+"${EXTRA[@]}"} ${args[@]+"${args[@]}"}
  } >"$DEST/$out"
}
cat >"$DEST/namespace.yaml" <<YAML
# The namespace the manifests install into (Helm users pass --namespace/--create-namespace).
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
YAML
render rbac.yaml serviceaccounts.yaml rbac.yaml
render scheduler-rbac.yaml scheduler-rbac.yaml
render scheduler.yaml scheduler-configmap.yaml scheduler-deployment.yaml
render scheduler-config-v1beta1.yaml scheduler-configmap.yaml -- --set scheduler.configApiVersion=v1beta1
render agent.yaml agent-daemonset.yaml
render metrics.yaml metrics-service.yaml networkpolicy.yaml
render servicemonitor.yaml servicemonitor.yaml -- --set metrics.serviceMonitor.enabled=true
render admission-policy.yaml admission-policy.yaml -- --set admissionPolicy.enabled=true

if [ $CHECK -eq 1 ]; then
  if ! diff -ru "$OUT" "$DEST" >&2; then
    echo "deploy/manifests differ from what the chart renders (above): run scripts/render-manifests.sh and commit" >&2
    exit 1
  fi
  echo "deploy/manifests match the chart"
fi

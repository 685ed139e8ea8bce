#!/usr/bin/env bash
# Renders deploy/chart/kubesched into the plain manifests in deploy/manifests/ (release
# `kubesched`, namespace `kubesched-system`, default values). Needs `helm` (v3) on PATH; run it
# after every chart change and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v helm >/dev/null || { echo "helm (v3) is needed to render the manifests" >&2; exit 1; }
CHART=deploy/chart/kubesched
OUT=deploy/manifests
NS=kubesched-system
render() { # OUTFILE TEMPLATES... [-- helm args]
  local out=$1 args=() shows=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do shows+=(--show-only "templates/$1"); shift; done
  [ $# -gt 0 ] && shift && args=("$@")
  {
    echo "# Rendered from $CHART (release kubesched, namespace $NS) by scripts/render-manifests.sh."
    echo "# Do not edit: change the chart and render again."
    # A fixed cluster version, so the rendered kube-scheduler tag does not depend on the
    # Helm binary (a real install takes the cluster's own version).
    helm template kubesched "$CHART" --namespace "$NS" --kube-version v1.31.0 "${shows[@]}" "${args[@]}"
  } >"$OUT/$out"
}
mkdir -p "$OUT"
cat >"$OUT/namespace.yaml" <<YAML
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

#!/usr/bin/env bash
# The placement suite: every scenario the production policy is judged on,
# each printed as one table (policy x metric, mean ± 95% CI over seeds).
#
#   scripts/suite.sh [OUT_DIR] [SEEDS]
#
# Needs the Alibaba GPU trace (cluster-trace-gpu-v2023/csv) for the trace
# scenarios: KUBESCHED_TRACE_DIR, or the default beside the project; without
# it those scenarios are skipped and say so. Each table goes to
# OUT_DIR/<scenario>.txt as well as to the terminal. Long: about an hour on
# two cores with 10 seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/suite}"
seeds="${2:-10}"
mkdir -p "$out"
[ -n "${KUBESCHED_BIN:-}" ] || cargo build --release --locked -p kubesched-scheduler --bin kubesched
bin="${KUBESCHED_BIN:-target/release/kubesched}"
trace="${KUBESCHED_TRACE_DIR:-$PWD/../shared/data/alibaba-gpu-v2023/csv}"
timed_policies=kubesched,fgd,mig-best-fit,first-fit,hami,hami-legacy,nvidia-dra

run() {
  local name=$1
  shift
  echo "== $name: kubesched simulate $*"
  "$bin" simulate --seeds "$seeds" "$@" 2>/dev/null | tee "$out/$name.txt"
}

# Churn on the built-in cluster (dynamic MIG unless said), one arrival model each.
for model in poisson bursts skewed adversarial saturated; do
  run "timed-$model" --generate "$model" --generate-jobs 6000 --mean-runtime-s 600 \
    --warmup 0.25 --policies "$timed_policies"
done
run timed-saturated-static --mig-mode static --generate saturated --generate-jobs 6000 \
  --mean-runtime-s 600 --warmup 0.25 --policies "$timed_policies"
# Saturated MIG churn under each arrival model: an all-MIG cluster offered 130% of its
# compute (the saturated model prefills it and offers 1.5x).
for model in poisson bursts skewed adversarial saturated; do
  run "timed-mig-$model-130" --cluster-nodes 24x8xH100-80GB --generate "$model" --load 1.3 \
    --generate-jobs 6000 --mean-runtime-s 600 --warmup 0.25 --policies "$timed_policies"
done
# The FGD protocol on the built-in scenario.
for mode in dynamic static; do
  run "fill-builtin-$mode" --replay fill --mig-mode "$mode" --explain 0 \
    --policies "$timed_policies,best-fit"
done
if [ ! -f "$trace/openb_pod_list_default.csv" ]; then
  echo "suite.sh: NOT RUN: the trace scenarios (no Alibaba trace at $trace)"
  exit 0
fi
# The MIG track: every trace GPU an H100 in MIG mode.
for mode in dynamic static; do
  for mapping in round ceil; do
    run "mig-$mode-$mapping" --trace-dir "$trace" --mig --mig-mode "$mode" \
      --mig-mapping "$mapping" --explain 0 --policies "$timed_policies"
  done
done
# The trace with its own clock: on its node list, and on 64 GPUs (about its peak demand).
run timed-alibaba --trace-dir "$trace" --replay timed --policies kubesched,fgd,best-fit,first-fit
run timed-alibaba-64gpus --trace-dir "$trace" --replay timed --cluster-nodes 8x8xL40S \
  --policies kubesched,fgd,best-fit,first-fit
# The FGD protocol on the trace (plain GPUs): the published comparison.
for pods in default cpu050 cpu072 cpu100 cpu200 cpu235 cpu250 multigpu20 multigpu30 multigpu40 multigpu50; do
  run "fill-$pods" --trace-dir "$trace" --pods "$pods" --explain 0 --policies kubesched,fgd,best-fit
done

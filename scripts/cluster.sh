#!/usr/bin/env bash
# A one-node Kubernetes 1.20.2 cluster with a real kubelet, for kubesched's end-to-end tests,
# built from Debian bookworm packages only:
#   - etcd 3.4 from `etcd-server`;
#   - kube-apiserver, kube-controller-manager, kube-scheduler and kubelet compiled from Debian's
#     `kubernetes` source package (the full upstream v1.20.2 tree, vendor/ included) with
#     Debian's Go, offline;
#   - containerd + runc + containernetworking-plugins;
#   - pause, busybox and kube-scheduler images assembled locally (no image registry is used).
#
# Usage (as root; everything listens on 127.0.0.1 only, pods on a host-only bridge):
#   cluster.sh build            install packages, build and cache binaries and images
#   cluster.sh up               etcd, kube-apiserver (RBAC), kube-controller-manager,
#                               kube-scheduler, containerd, kubelet;
#                               returns when the Node is Ready; writes the admin kubeconfig
#   cluster.sh down             stop everything `up` started; no processes, mounts or listeners left
#   cluster.sh status           what runs, where the kubeconfig and the plugin folder are
#   cluster.sh kubeconfig       print the admin kubeconfig path
#   cluster.sh scheduler [CFG]  (re)start the dedicated kube-scheduler (our extender) with CFG
#   cluster.sh restart-kubelet  kill and restart the kubelet (device-plugin re-registration)
#   cluster.sh restart-apiserver  kill and restart kube-apiserver only (etcd keeps the objects)
#   cluster.sh stop-scheduler   stop the dedicated kube-scheduler (e.g. before deploying the chart's)
#   cluster.sh load-image TAR   import a docker-archive image into the node's containerd
#
# Two kube-schedulers run. The default one (schedulerName `default-scheduler`) schedules
# ordinary pods. The dedicated one (schedulerName $KUBESCHED_SCHEDULER_NAME, default
# `kubesched-scheduler`) calls our extender; it starts with `up` when either
#   KUBESCHED_SCHEDULER_CONFIG=FILE   a complete KubeSchedulerConfiguration (used verbatim), or
#   KUBESCHED_EXTENDER_URL=URL        generate one (v1beta1, nodeCacheCapable, bind verb)
# is set, or later with `cluster.sh scheduler [FILE]`.
#
# The kubelet runs with Topology Manager `single-numa-node` and CPU manager `static` (CPU 0
# reserved). Its device-plugin folder is fixed by kubelet 1.20 at
# /var/lib/kubelet/device-plugins, so one such cluster can run per machine.
#
# kube-controller-manager runs the controllers for Deployments, ReplicaSets, DaemonSets,
# service accounts and their token secrets, namespace deletion and garbage collection, not
# node lifecycle (fake nodes have no kubelet). Pods reach the API server as in any cluster,
# at the `kubernetes` Service (10.0.0.1:443; one DNAT rule stands in for kube-proxy). Images
# are loaded with `cluster.sh load-image TAR` (docker-archive, e.g. from scripts/images.sh).
#
# Environment (defaults in brackets):
#   XDG_CACHE_HOME / KUBESCHED_CLUSTER_CACHE  cache of sources, binaries, images
#                                             [${XDG_CACHE_HOME:-$HOME/.cache}/kubesched-cluster]
#   KUBESCHED_CLUSTER_RUN       per-run state, logs, pki, kubeconfig [$CACHE/run]
#   KUBESCHED_API_PORT [6443]   KUBESCHED_ETCD_PORT [2379]   KUBESCHED_ETCD_PEER_PORT [2380]
#   KUBESCHED_NODE [localhost]  node name; must resolve to 127.0.0.1
#   KUBESCHED_MANAGED_RESOURCES extender managedResources when generating its config
#                               (comma list) [nvidia.com/gpu and the common nvidia.com/mig-*]
#   KUBESCHED_KUBELET_EXTRA_CONFIG  extra KubeletConfiguration YAML lines
set -euo pipefail

SCRIPTS="$(cd "$(dirname "$0")" && pwd)"
CACHE="${KUBESCHED_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesched-cluster}"
RUN="${KUBESCHED_CLUSTER_RUN:-$CACHE/run}"
API_PORT="${KUBESCHED_API_PORT:-6443}"
ETCD_PORT="${KUBESCHED_ETCD_PORT:-2379}"
PEER_PORT="${KUBESCHED_ETCD_PEER_PORT:-2380}"
SCHED_PORT=10259           # default scheduler: secure port
SCHED_HEALTH=10251         # default scheduler: healthz/metrics (plain http)
XSCHED_PORT=10269          # dedicated scheduler: secure port
XSCHED_HEALTH=10261        # dedicated scheduler: healthz/metrics (plain http)
NODE="${KUBESCHED_NODE:-localhost}"
SCHED_NAME="${KUBESCHED_SCHEDULER_NAME:-kubesched-scheduler}"
DEFAULT_RESOURCES="nvidia.com/gpu"
for p in 1g.5gb 1g.10gb 1g.20gb 2g.10gb 2g.20gb 3g.20gb 3g.40gb 4g.20gb 4g.40gb 7g.40gb 7g.80gb \
  1g.6gb 2g.12gb 4g.24gb 1g.12gb 1g.24gb 2g.24gb 3g.47gb 4g.47gb 7g.94gb \
  1g.18gb 1g.35gb 2g.35gb 3g.71gb 4g.71gb 7g.141gb; do
  DEFAULT_RESOURCES="$DEFAULT_RESOURCES,nvidia.com/mig-$p"
done
RESOURCES="${KUBESCHED_MANAGED_RESOURCES:-$DEFAULT_RESOURCES}"
TOKEN_FILE_NAME=admin.token
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
SRCVER="1.20.5+really1.20.2"
KVER="1.20.2"
BIN="$CACHE/bin"
CTRD="$RUN/containerd"
CTRD_SOCK="$CTRD/containerd.sock"
KUBELET_ROOT=/var/lib/kubelet
PLUGIN_DIR="$KUBELET_ROOT/device-plugins"
BRIDGE=kubesched0
POD_SUBNET=10.244.0.0/24
BRIDGE_IP=10.244.0.1          # the pods' gateway: this machine
SERVICE_RANGE=10.0.0.0/24
API_SERVICE_IP=10.0.0.1       # ClusterIP of the `kubernetes` Service (first of SERVICE_RANGE)
KCM_PORT=10257
# kube-proxy's one job here: the `kubernetes` Service to the API server on loopback.
API_DNAT=(PREROUTING -i "$BRIDGE" -d "$API_SERVICE_IP" -p tcp --dport 443 -j DNAT
  --to-destination "127.0.0.1:$API_PORT")
PAUSE_IMAGE="localhost/pause:local"
BUSYBOX_IMAGE="localhost/busybox:local"
KUBE_SCHEDULER_IMAGE="localhost/kube-scheduler:v$KVER"
PKGS=(golang-go rsync make etcd-server openssl curl dpkg-dev ca-certificates
  containerd runc containernetworking-plugins busybox-static gcc libc6-dev python3
  iproute2 iptables)

log() { echo "[cluster $(date +%T)] $*" >&2; }
die() { log "$*"; exit 1; }
kc() { kubectl --kubeconfig "$RUN/admin.kubeconfig" "$@"; }
ctrk() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (kubelet, containerd, mounts)"; }

# ------------------------------------------------------------------------------------ build

# mkimage ROOTFS NAME OUT [ENTRYPOINT...]: a one-layer docker-archive tar for `ctr images import`.
mkimage() {
  local rootfs=$1 name=$2 out=$3
  shift 3
  python3 "$SCRIPTS/mkimage.py" "$rootfs" "$name" "$out" -- "$@"
}

install_packages() {
  local missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  command -v kubectl >/dev/null || missing+=(kubernetes-client)   # kubectl 1.20
  local have_src=1 b
  for b in "${KUBE_BINS[@]}"; do [ -x "$BIN/$b" ] || have_src=0; done
  if [ ${#missing[@]} -eq 0 ] && [ $have_src -eq 1 ]; then return 0; fi
  export DEBIAN_FRONTEND=noninteractive
  if [ $have_src -eq 0 ] && ! apt-cache showsrc kubernetes 2>/dev/null | grep -q "^Version: ${SRCVER}"; then
    # Source packages: reuse the machine's own Debian entries with Types: deb-src.
    local f=/etc/apt/sources.list.d/kubesched-src.sources
    if [ ! -f "$f" ]; then
      if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$f"
      elif [ -f /etc/apt/sources.list ]; then
        grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >/etc/apt/sources.list.d/kubesched-src.list
      fi
    fi
  fi
  log "apt-get install ${missing[*]:-(source only)}"
  apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build_kubernetes() {
  local want=() b
  for b in "${KUBE_BINS[@]}"; do [ -x "$BIN/$b" ] || want+=("$b"); done
  [ ${#want[@]} -eq 0 ] && [ -x "$BIN/pause" ] && return 0
  mkdir -p "$CACHE/src" "$BIN"
  cd "$CACHE/src"
  if [ ! -f "kubernetes_${SRCVER}.orig.tar.gz" ]; then
    apt-get source --download-only "kubernetes=${SRCVER}-1.1+deb12u1" >/dev/null 2>&1 \
      || apt-get source --download-only kubernetes >/dev/null
  fi
  rm -rf "kubernetes-$KVER"
  tar xzf "kubernetes_${SRCVER}.orig.tar.gz"
  cd "kubernetes-$KVER"
  # Only what the cache lacks (a cache from before kube-controller-manager builds just that).
  local what=""
  for b in "${want[@]}"; do what="$what cmd/$b"; done
  log "building${what:- nothing} (about 3 min a binary on 2 cores; log: $CACHE/build.log)"
  if [ -n "$what" ]; then
    GOPROXY=off GOFLAGS=-mod=vendor GOTOOLCHAIN=local GOLDFLAGS="-s -w" \
      nice make WHAT="${what# }" >"$CACHE/build.log" 2>&1 \
      || { tail -30 "$CACHE/build.log" >&2; exit 1; }
    for b in "${want[@]}"; do cp "_output/bin/$b" "$BIN/"; done
  fi
  gcc -Os -static -DVERSION=v3.4.1-kubesched -o "$BIN/pause" build/pause/linux/pause.c
  cd "$CACHE/src"
  rm -rf "kubernetes-$KVER"   # about 2.6 GB of build output
}

build_images() {
  if [ -f "$BIN/busybox.tar" ] && [ -f "$BIN/pause.tar" ] && [ -f "$BIN/kube-scheduler.tar" ]; then return 0; fi
  local r
  r=$(mktemp -d)
  mkdir -p "$r/pause" "$r/bb/bin" "$r/bb/etc" "$r/bb/tmp" "$r/ks/usr/local/bin"
  # The chart's scheduler pod runs `kube-scheduler` from this image (a static Go binary).
  cp "$BIN/kube-scheduler" "$r/ks/usr/local/bin/"
  mkimage "$r/ks" "$KUBE_SCHEDULER_IMAGE" "$BIN/kube-scheduler.tar"
  cp "$BIN/pause" "$r/pause/pause"
  mkimage "$r/pause" "$PAUSE_IMAGE" "$BIN/pause.tar" /pause
  cp /bin/busybox "$r/bb/bin/busybox"   # busybox-static
  for a in sh env sleep cat ls echo ps id hostname grep wc nproc head tail true false; do
    ln -s busybox "$r/bb/bin/$a"
  done
  echo 'root:x:0:0:root:/:/bin/sh' >"$r/bb/etc/passwd"
  echo 'root:x:0:' >"$r/bb/etc/group"
  mkimage "$r/bb" "$BUSYBOX_IMAGE" "$BIN/busybox.tar"
  rm -rf "$r"
}

build() {
  need_root
  install_packages
  build_kubernetes
  build_images
  log "ready: $("$BIN/kubelet" --version), images $PAUSE_IMAGE $BUSYBOX_IMAGE $KUBE_SCHEDULER_IMAGE, cache $CACHE"
}

# --------------------------------------------------------------------------------------- up

wait_for() { # URL SECONDS [curl args...]
  local url=$1 secs=$2
  shift 2
  for _ in $(seq 1 $((secs * 4))); do
    curl -sf "$@" "$url" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  return 1
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# start NAME CMD...: run CMD in the background, log to $RUN/logs/NAME.log, record its pid.
start() {
  local name=$1
  shift
  "$@" >>"$RUN/logs/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

pki() {
  local P="$RUN/pki"
  mkdir -p "$P"
  chmod 700 "$P"
  # Pods reach the API server at the `kubernetes` Service's address: the cert must name it.
  [ -f "$P/sa.key" ] && openssl x509 -in "$P/apiserver.crt" -noout -text 2>/dev/null \
    | grep -q "IP Address:$API_SERVICE_IP" && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$P/ca.key" -out "$P/ca.crt" -days 3650 \
    -subj /CN=kubesched-e2e-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$P/apiserver.key" -out "$P/apiserver.csr" \
    -subj /CN=kube-apiserver 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' \
    "$API_SERVICE_IP" >"$P/ext.cnf"
  openssl x509 -req -in "$P/apiserver.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial \
    -out "$P/apiserver.crt" -days 3650 -extfile "$P/ext.cnf" 2>/dev/null
  openssl genrsa -out "$P/sa.key" 2048 2>/dev/null
  openssl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$P/$TOKEN_FILE_NAME"
  echo "$(cat "$P/$TOKEN_FILE_NAME"),admin,admin-uid,system:masters" >"$P/tokens.csv"
}

write_admin_kubeconfig() {
  local P="$RUN/pki"
  (
    umask 077
    cat >"$RUN/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubesched-e2e
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$P/ca.crt"}
users:
- name: admin
  user: {token: "$(cat "$P/$TOKEN_FILE_NAME")"}
contexts:
- name: kubesched-e2e
  context: {cluster: kubesched-e2e, user: admin}
current-context: kubesched-e2e
EOF
  )
}

start_apiserver() {
  local P="$RUN/pki"
  # TaintNodesByCondition is off: the node lifecycle controller does not run (it would taint
  # and evict the fake nodes, which have no kubelet), so nothing would remove the not-ready
  # taint. Service-account tokens: the token controller's secrets (ServiceAccount admission
  # mounts them) and the TokenRequest API (issuer + signing key below).
  start apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" --insecure-port=0 \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
    --token-auth-file="$P/tokens.csv" --authorization-mode=RBAC \
    --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --api-audiences=https://kubernetes.default.svc \
    --service-cluster-ip-range="$SERVICE_RANGE" --endpoint-reconciler-type=none \
    --disable-admission-plugins=TaintNodesByCondition \
    --kubelet-preferred-address-types=Hostname
  wait_for "https://127.0.0.1:$API_PORT/readyz" 90 --cacert "$P/ca.crt" \
    -H "Authorization: Bearer $(cat "$P/$TOKEN_FILE_NAME")" \
    || { tail "$RUN/logs/apiserver.log" >&2; die "kube-apiserver failed"; }
  log "kube-apiserver ready on 127.0.0.1:$API_PORT"
}

start_control_plane() {
  local P="$RUN/pki"
  start etcd /usr/bin/etcd --name kubesched-e2e --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "kubesched-e2e=http://127.0.0.1:$PEER_PORT"
  wait_for "http://127.0.0.1:$ETCD_PORT/health" 30 || { tail "$RUN/logs/etcd.log" >&2; die "etcd failed"; }
  start_apiserver
  start_controller_manager

  cat >"$RUN/default-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1beta1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: "$RUN/admin.kubeconfig"}
leaderElection: {leaderElect: false}
# With --config, --port=0 is ignored and these would default to 0.0.0.0.
healthzBindAddress: "127.0.0.1:$SCHED_HEALTH"
metricsBindAddress: "127.0.0.1:$SCHED_HEALTH"
EOF
  start default-scheduler "$BIN/kube-scheduler" --config="$RUN/default-scheduler.yaml" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --port=0
  wait_for "https://127.0.0.1:$SCHED_PORT/healthz" 30 -k || { tail "$RUN/logs/default-scheduler.log" >&2; die "kube-scheduler failed"; }
}

# The controllers a platform team's objects need: Deployments, ReplicaSets and DaemonSets
# create pods, service accounts get their token secrets, deleted namespaces are emptied and
# owned objects garbage-collected. Not the node lifecycle controller: the fake nodes have no
# kubelet, and it would taint them unreachable and evict their pods.
start_controller_manager() {
  local P="$RUN/pki"
  start controller-manager "$BIN/kube-controller-manager" --kubeconfig="$RUN/admin.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --port=0 \
    --controllers=serviceaccount-token,serviceaccount,namespace,garbagecollector,deployment,replicaset,daemonset \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt"
  wait_for "https://127.0.0.1:$KCM_PORT/healthz" 60 -k \
    || { tail "$RUN/logs/controller-manager.log" >&2; die "kube-controller-manager failed"; }
  # Pods are admitted only once their namespace's service account has its token.
  local ok=0
  for _ in $(seq 1 120); do
    if kc -n default get secrets -o name 2>/dev/null | grep -q '^secret/default-token-'; then ok=1; break; fi
    sleep 0.25
  done
  [ $ok -eq 1 ] || { tail "$RUN/logs/controller-manager.log" >&2; die "no token for the default service account"; }
  log "kube-controller-manager ready"
}

generate_scheduler_config() { # URL OUT
  {
    cat <<EOF
apiVersion: kubescheduler.config.k8s.io/v1beta1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: "$RUN/admin.kubeconfig"}
leaderElection: {leaderElect: false}
healthzBindAddress: "127.0.0.1:$XSCHED_HEALTH"
metricsBindAddress: "127.0.0.1:$XSCHED_HEALTH"
profiles:
- schedulerName: $SCHED_NAME
extenders:
- urlPrefix: "$1"
  filterVerb: filter
  prioritizeVerb: prioritize
  bindVerb: bind
  weight: 1
  enableHTTPS: false
  nodeCacheCapable: true
  ignorable: false
  managedResources:
EOF
    for r in ${RESOURCES//,/ }; do echo "  - {name: $r, ignoredByScheduler: false}"; done
  } >"$2"
}

# (re)start the dedicated scheduler. With no argument: $KUBESCHED_SCHEDULER_CONFIG, else a
# config generated for $KUBESCHED_EXTENDER_URL, else nothing. A given config is completed with
# what running outside a pod needs, when it does not say: clientConnection (the admin
# kubeconfig) and, for v1beta1, loopback healthz/metrics addresses.
start_dedicated_scheduler() {
  local src="${1:-${KUBESCHED_SCHEDULER_CONFIG:-}}" cfg="$RUN/kubesched-scheduler.yaml"
  if [ -z "$src" ]; then
    [ -n "${KUBESCHED_EXTENDER_URL:-}" ] || return 0
    generate_scheduler_config "$KUBESCHED_EXTENDER_URL" "$cfg"
  else
    [ -f "$src" ] || die "scheduler config $src not found"
    {
      cat "$src"
      echo
      grep -q '^clientConnection:' "$src" || echo "clientConnection: {kubeconfig: \"$RUN/admin.kubeconfig\"}"
      if grep -q 'kubescheduler.config.k8s.io/v1beta1' "$src"; then
        grep -q '^healthzBindAddress:' "$src" || echo "healthzBindAddress: \"127.0.0.1:$XSCHED_HEALTH\""
        grep -q '^metricsBindAddress:' "$src" || echo "metricsBindAddress: \"127.0.0.1:$XSCHED_HEALTH\""
      fi
    } >"$cfg"
  fi
  stop_pid kubesched-scheduler
  start kubesched-scheduler "$BIN/kube-scheduler" --config="$cfg" \
    --bind-address=127.0.0.1 --secure-port="$XSCHED_PORT" --port=0
  wait_for "https://127.0.0.1:$XSCHED_PORT/healthz" 30 -k \
    || { tail "$RUN/logs/kubesched-scheduler.log" >&2; die "dedicated kube-scheduler failed ($cfg)"; }
  log "dedicated kube-scheduler up (config $cfg)"
}

# Pod network: a host-only bridge whose address ($BRIDGE_IP) is the pods' gateway; no NAT and
# no forwarding, so nothing leaves this machine. In place of kube-proxy, one DNAT rule takes
# the `kubernetes` Service ($API_SERVICE_IP:443, what in-cluster clients dial) to the API
# server on 127.0.0.1 (route_localnet lets the bridge's packets reach a loopback address).
pod_network_up() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr replace "$BRIDGE_IP/${POD_SUBNET#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  echo 1 >"/proc/sys/net/ipv4/conf/$BRIDGE/route_localnet"
  iptables -t nat -C "${API_DNAT[@]}" 2>/dev/null || iptables -t nat -A "${API_DNAT[@]}"
}

pod_network_down() {
  iptables -t nat -D "${API_DNAT[@]}" 2>/dev/null || true
  ip link delete "$BRIDGE" 2>/dev/null || true
}

start_containerd() {
  rm -rf "$CTRD/cni"
  mkdir -p "$CTRD/cni"
  pod_network_up
  cat >"$CTRD/cni/10-kubesched.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "kubesched", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isDefaultGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "dataDir": "$CTRD/cni-ipam"}}]}
EOF
  cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # Where root lacks CAP_SYS_RESOURCE (sandboxed CI machines), the pod sandbox's request for
  # oom_score_adj -998 makes runc fail with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      container_annotations = ["nvidia.com/*", "kubesched.ai/*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CTRD/cni"
EOF
  start containerd containerd --config "$CTRD/config.toml"
  local ok=0
  for _ in $(seq 1 80); do
    if ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.25
  done
  [ $ok -eq 1 ] || { tail "$RUN/logs/containerd.log" >&2; die "containerd failed"; }
  ctrk images import "$BIN/pause.tar" >/dev/null
  ctrk images import "$BIN/busybox.tar" >/dev/null
  ctrk images import "$BIN/kube-scheduler.tar" >/dev/null
}

start_kubelet() {
  mkdir -p "$KUBELET_ROOT" "$PLUGIN_DIR"
  local cpu_manager='cpuManagerPolicy: static
reservedSystemCPUs: "0"'
  if [ "$(nproc)" -lt 2 ]; then
    log "one CPU only: CPU manager policy none (static needs a CPU besides the reserved one)"
    cpu_manager='cpuManagerPolicy: none'
  fi
  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 5s
$cpu_manager
topologyManagerPolicy: single-numa-node
${KUBESCHED_KUBELET_EXTRA_CONFIG:-}
EOF
  start kubelet "$BIN/kubelet" --config="$RUN/kubelet.yaml" --kubeconfig="$RUN/admin.kubeconfig" \
    --hostname-override="$NODE" \
    --container-runtime=remote --container-runtime-endpoint="unix://$CTRD_SOCK" \
    --pod-infra-container-image="$PAUSE_IMAGE" --root-dir="$KUBELET_ROOT" --v=2
  wait_for http://127.0.0.1:10248/healthz 60 || { tail -20 "$RUN/logs/kubelet.log" >&2; die "kubelet failed"; }
  local ready=""
  for _ in $(seq 1 120); do
    ready=$(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    [ "$ready" = True ] && break
    sleep 0.5
  done
  [ "$ready" = True ] || { tail -20 "$RUN/logs/kubelet.log" >&2; die "node $NODE not Ready"; }
}

up() {
  need_root
  if ! { [ -x "$BIN/kubelet" ] && [ -f "$BIN/busybox.tar" ]; }; then die "not built: run '$0 build' first"; fi
  if alive apiserver || alive kubelet; then die "already up (run '$0 down' first)"; fi
  local t0=$SECONDS
  # A fresh cluster each time: etcd data, node state and kubelet checkpoints from a previous
  # run would refer to pods that no longer exist (the pki is kept).
  unmount_leftovers
  rm -rf "$RUN/etcd" "$RUN/logs" "$CTRD"
  rm -f "$KUBELET_ROOT/cpu_manager_state" "$KUBELET_ROOT/memory_manager_state" \
    "$PLUGIN_DIR/kubelet_internal_checkpoint"
  mkdir -p "$RUN/logs"
  pki
  write_admin_kubeconfig
  start_control_plane
  start_dedicated_scheduler
  start_containerd
  start_kubelet
  log "up in $((SECONDS - t0)) s: node $NODE Ready; KUBECONFIG=$RUN/admin.kubeconfig"
}

# The API server alone crashes (SIGKILL) and comes back; etcd (with all objects) and every
# other component keep running, and must reconnect by themselves. Killed rather than stopped:
# a TERM'd kube-apiserver 1.20 here takes over 10 s to drain its watches, which alone is the
# renewDeadline of the chart's leader-electing kube-scheduler.
restart_apiserver() {
  need_root
  alive apiserver || die "kube-apiserver is not running"
  local p
  p=$(cat "$RUN/apiserver.pid")
  kill -KILL "$p"
  while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
  rm -f "$RUN/apiserver.pid"
  start_apiserver
}

restart_kubelet() {
  need_root
  stop_pid kubelet
  start_kubelet
  log "kubelet restarted (pid $(cat "$RUN/kubelet.pid"))"
}

# ------------------------------------------------------------------------------------- down

# containerd leaves sandbox shm and overlay mounts, the kubelet bind-mounts its root dir
unmount_leftovers() {
  awk '{print $2}' /proc/mounts | { grep -E "^($CTRD|$KUBELET_ROOT)(/|$)" || true; } | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

stop_pid() { # NAME: TERM, wait up to 10 s, then KILL
  local f="$RUN/$1.pid"
  [ -f "$f" ] || return 0
  local p
  p=$(cat "$f")
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.25
  done
  kill -KILL "$p" 2>/dev/null || true
  rm -f "$f"
}

down() {
  need_root
  # First, so that no controller recreates the pods deleted below.
  stop_pid controller-manager
  if alive kubelet && alive apiserver; then
    # Only the pods of the real node have containers to stop (fake nodes may hold thousands).
    kc delete pods --all --all-namespaces --field-selector "spec.nodeName=$NODE" \
      --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 1 40); do
      [ -z "$(ctrk tasks ls -q 2>/dev/null)" ] && break
      sleep 0.25
    done
  fi
  stop_pid kubelet
  stop_pid kubesched-scheduler
  stop_pid default-scheduler
  if alive containerd && [ -S "$CTRD_SOCK" ]; then
    # pods outlive the kubelet (their shims keep running): kill tasks, drop containers
    local t c
    for t in $(ctrk tasks ls -q 2>/dev/null); do ctrk tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    sleep 0.5
    for t in $(ctrk tasks ls -q 2>/dev/null); do ctrk tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for c in $(ctrk containers ls -q 2>/dev/null); do ctrk containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  stop_pid containerd
  # shims whose containerd is gone (they were started with our socket's address)
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" 2>/dev/null || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  stop_pid apiserver
  stop_pid etcd
  pod_network_down
  rm -rf "$CTRD/cni-ipam"
  unmount_leftovers
  rm -f "$PLUGIN_DIR"/*.sock "$KUBELET_ROOT/pod-resources/kubelet.sock" 2>/dev/null || true
  log "down"
}

# Exit status 0 only when every component runs and the node is Ready.
status() {
  local c rc=0
  for c in etcd apiserver controller-manager default-scheduler kubesched-scheduler containerd kubelet; do
    if alive "$c"; then
      echo "$c: running (pid $(cat "$RUN/$c.pid"))"
    else
      echo "$c: stopped"
      [ "$c" = kubesched-scheduler ] || rc=3
    fi
  done
  echo "kubeconfig: $RUN/admin.kubeconfig"
  echo "device-plugins: $PLUGIN_DIR"
  echo "pod-resources: $KUBELET_ROOT/pod-resources/kubelet.sock"
  echo "logs: $RUN/logs"
  if alive apiserver; then
    local ready
    ready=$(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    echo "node $NODE Ready: ${ready:-unknown}"
    [ "$ready" = True ] || rc=3
  fi
  return $rc
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  status) status ;;
  kubeconfig) echo "$RUN/admin.kubeconfig" ;;
  scheduler) need_root; start_dedicated_scheduler "${2:-}" ;;
  restart-kubelet) restart_kubelet ;;
  restart-apiserver) restart_apiserver ;;
  stop-scheduler) need_root; stop_pid kubesched-scheduler ;;
  load-image)
    need_root
    [ -f "${2:-}" ] || die "load-image: no image tar '${2:-}'"
    ctrk images import "$2" >/dev/null
    ;;
  *)
    echo "usage: $0 build|up|down|status|kubeconfig|scheduler [CONFIG]|restart-kubelet|restart-apiserver|stop-scheduler|load-image TAR" >&2
    exit 2
    ;;
esac

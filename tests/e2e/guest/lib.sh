# shellcheck shell=sh
# Shared helpers of the guest's /init and the scenarios (busybox ash). Sourced, never run.
#
# Topology (made by /init):
#   root netns = the Kubernetes node (initiator): br0 10.99.0.1/24
#   netns storA, storB = two storage nodes: eth0 10.99.0.11/24, 10.99.0.12/24 (veth into br0)
#   the VIP (E2E_VIP, default 10.99.0.10) starts on storA
# configfs is mounted at /sys/kernel/config AND /cfg: `ip netns exec` remounts /sys, which hides the
# first, so everything uses /cfg.

PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

# Busybox ash runs its own applets before $PATH (Debian's busybox-static), so the real tools need
# wrappers. Inside `ip netns exec NS cmd` the command is found through $PATH, i.e. the real one.
ip() { /usr/bin/ip "$@"; }
dd() { /usr/bin/dd "$@"; }
arping() { /usr/bin/arping "$@"; }
ss() { /usr/bin/ss "$@"; }
mount_ul() { /usr/bin/mount "$@"; }
umount_ul() { /usr/bin/umount "$@"; }

CFG=/cfg
TARGET_CFG=$CFG/target
E2E_BR_IP=${E2E_BR_IP:-10.99.0.1}
E2E_STOR_A_IP=${E2E_STOR_A_IP:-10.99.0.11}
E2E_STOR_B_IP=${E2E_STOR_B_IP:-10.99.0.12}
E2E_VIP=${E2E_VIP:-10.99.0.10}
E2E_PREFIX=24
E2E_REASON_FILE=${E2E_REASON_FILE:-/run/e2e/reason}

# --- time ------------------------------------------------------------------------------------
# now_cs: sets NOW_CS to the guest uptime in centiseconds (no fork).
now_cs() {
  read -r _up _ </proc/uptime
  NOW_CS=$((${_up%.*} * 100 + 1${_up#*.} - 100))
}
# cs_fmt CS: prints CS centiseconds as seconds, e.g. 245 -> 2.45
cs_fmt() {
  _s=$(($1 / 100))
  _c=$(($1 % 100))
  [ "$_c" -lt 10 ] && _c=0$_c
  printf '%s.%s' "$_s" "$_c"
}
uptime_s() {
  now_cs
  cs_fmt "$NOW_CS"
}

# --- output ----------------------------------------------------------------------------------
log() { printf '[%8s] %s\n' "$(uptime_s)" "$*"; }
# Facts the lead wants from the log: one grep-able line each.
fact() { printf 'E2E FACT %s\n' "$*"; }
# step_begin NAME / step_end NAME: prints "E2E STEP NAME 1.23s".
step_begin() {
  now_cs
  E2E_STEP_NAME=$1
  E2E_STEP_T0=$NOW_CS
  log "step $1"
}
step_end() {
  now_cs
  printf 'E2E STEP %s %ss\n' "$E2E_STEP_NAME" "$(cs_fmt $((NOW_CS - E2E_STEP_T0)))"
}
# fail REASON: ends the scenario; /init prints "E2E SCENARIO name FAIL REASON".
fail() {
  log "FAIL: $*"
  mkdir -p "$(dirname "$E2E_REASON_FILE")"
  printf '%s\n' "$*" >"$E2E_REASON_FILE"
  exit 1
}
# check NAME: one passed check, in the form run.sh counts.
check() { printf 'E2E CHECK %s PASS\n' "$1"; }
# fail_with_logs DIR REASON: the two-node scenarios' failure: the tails of the agents' logs
# (DIR/a/agent.log, DIR/b/agent.log) and of DIR/sim.log, then fail.
fail_with_logs() {
  _dir=$1
  shift
  for _n in a b; do
    log "---- node-$_n agent log (tail) ----"
    tail -n 30 "$_dir/$_n/agent.log" 2>/dev/null | sed "s/^/  $_n| /"
  done
  log "---- sim log (tail) ----"
  tail -n 20 "$_dir/sim.log" 2>/dev/null | sed 's/^/  sim| /'
  fail "$*"
}
# metric_on PORT NAME_WITH_LABELS: the value of one metric of the agent whose metrics are on PORT.
metric_on() {
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}
# run CMD...: logs and runs a command; fails the scenario if it fails.
run() {
  log "+ $*"
  "$@" || fail "command failed (rc=$?): $*"
}

# wait_until TIMEOUT_S CMD...: polls CMD every 0.1 s; returns 1 on timeout.
wait_until() {
  _limit=$(($1 * 100))
  shift
  now_cs
  _t0=$NOW_CS
  while ! "$@" >/dev/null 2>&1; do
    now_cs
    [ $((NOW_CS - _t0)) -ge "$_limit" ] && return 1
    sleep 0.1
  done
  return 0
}

# --- datera-sim and the agents --------------------------------------------------------------
# These call the scenario's own die() on failure.

# start_lio_sim DIR PORT IP_POOL: datera-sim on 127.0.0.1:PORT with the lio backend (storage nodes
# storA and storB), its volume files on a tmpfs at DIR/vols (unless the scenario mounted something
# there already), state in DIR/sim, log DIR/sim.log, user admin with the password in
# DIR/password; sets SIM_PID once it listens.
start_lio_sim() {
  mkdir -p "$1/sim" "$1/vols" /run/lock
  grep -q " $1/vols " /proc/mounts || mount -t tmpfs -o size=1200m vols "$1/vols" ||
    die "tmpfs for the volumes"
  printf 'e2e-password' >"$1/password"
  datera-sim --listen "127.0.0.1:$2" --state "$1/sim/state.json" --backend lio --file-dir "$1/vols" \
    --lio-configfs "$TARGET_CFG" --lio-node node-1=storA:eth0 --lio-node node-2=storB:eth0 \
    --ip-pool "$3" --user admin --password e2e-password >"$1/sim.log" 2>&1 &
  # shellcheck disable=SC2034 # read by the scenario that sourced this file (to stop it)
  SIM_PID=$!
  wait_until 10 grep -q "listening on" "$1/sim.log" || die "datera-sim did not start"
}

# The two-node scenarios: node-N's agent lives in DIR/N (config, log, state, plugins, kubelet).
# node_iface IFACE IQN: an open-iscsi iface logging in as IQN, so two "nodes" share one kernel.
node_iface() {
  iscsiadm -m iface -I "$1" -o new >/dev/null || die "iface $1"
  iscsiadm -m iface -I "$1" -o update -n iface.initiatorname -v "$2" >/dev/null ||
    die "initiator name of iface $1"
}
# node_config DIR N SOCKET SIM_PORT IFACE IQN METRICS_PORT TTL [EXTRA_YAML]: writes DIR/N/agent.yaml
# for node-N: open-iscsi through IFACE as IQN with 15 s replacement and 2 s NOP timers, multipath
# off (one dm map name per volume per kernel), lease TTL seconds; EXTRA_YAML is appended.
node_config() {
  cat >"$1/$2/agent.yaml" <<YAML
node_name: node-$2
socket_path: $3
plugin_dir: $1/$2/plugins
kubelet_root: $1/$2/kubelet
state_dir: $1/$2/state
metrics: {listen: "127.0.0.1:$7"}
backend: {server: "127.0.0.1:$4", username: admin, password_file: $1/password}
initiator:
  kind: open-iscsi
  iqn: $6
  iface: $5
  iscsiadm: /usr/sbin/iscsiadm
  replacement_timeout: 15
  noop_out_interval: 2
  noop_out_timeout: 2
  session_poll_interval: 250ms
  multipath: "off"
handoff: {lease_ttl: ${8}s}
${9:-}
YAML
}
# start_node_agent DIR N METRICS_PORT: starts node-N's agent, sets PID_N, waits for its /readyz.
start_node_agent() {
  datera-agent --config "$1/$2/agent.yaml" >>"$1/$2/agent.log" 2>&1 &
  eval "PID_$2=\$!"
  wait_until 30 curl -sf "http://127.0.0.1:$3/readyz" || die "node-$2's agent did not become ready"
}

# The one-node scenarios (50-outage, 60-reboot): the agent lives in DIR (config, log, state,
# plugins, kubelet, socket DIR/agent.sock), open-iscsi with a dm-multipath map per volume.
# single_config DIR SIM_PORT METRICS_PORT [EXTRA_INITIATOR_YAML [EXTRA_TOP_YAML]]: writes
# DIR/agent.yaml; the extras are lines added under `initiator:` (indented) and at the top level.
single_config() {
  cat >"$1/agent.yaml" <<YAML
node_name: e2e-node
socket_path: $1/agent.sock
plugin_dir: $1/plugins
kubelet_root: $1/kubelet
state_dir: $1/state
metrics: {listen: "127.0.0.1:$3"}
backend: {server: "127.0.0.1:$2", username: admin, password_file: $1/password}
${5:-}
initiator:
  kind: open-iscsi
  iscsiadm: /usr/sbin/iscsiadm
  session_poll_interval: 250ms
  multipath: "on"
${4:-}
YAML
}
# start_single_agent DIR METRICS_PORT: starts the agent of DIR, sets AGENT_PID, waits for /readyz.
start_single_agent() {
  datera-agent --config "$1/agent.yaml" >>"$1/agent.log" 2>&1 &
  # shellcheck disable=SC2034 # read by the scenario that sourced this file (to kill it)
  AGENT_PID=$!
  wait_until 30 curl -sf "http://127.0.0.1:$2/readyz" || die "the agent did not become ready"
}
# shim_ok WHAT OP ARGS...: runs the installed driver ($SHIM) as kubelet would and dies, naming
# WHAT, unless it answers Success. The reply is left in $out.
shim_ok() {
  _what=$1
  shift
  out=$("$SHIM" "$@" 2>&1) || die "$_what failed: $out"
  case $out in *'"Success"'*) ;; *) die "$_what answered: $out" ;; esac
}
# single_volume_state DIR: the session state /v1/volumes reports for DIR's agent's (one) volume.
single_volume_state() {
  curl -s --unix-socket "$1/agent.sock" http://agent/v1/volumes |
    sed -n 's/.*"session":{[^}]*"state":"\([a-z_]*\)".*/\1/p' | head -n 1
}

# --- iSCSI -----------------------------------------------------------------------------------
initiator_name() { sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi; }

# session_where ATTR VALUE: prints the sessionN whose iscsi_session attribute ATTR is VALUE.
session_where() {
  for _s in /sys/class/iscsi_session/session*; do
    [ -e "$_s/$1" ] || continue
    [ "$(cat "$_s/$1")" = "$2" ] && { basename "$_s"; return 0; }
  done
  return 1
}
# session_of_target IQN / session_of_iface IFACE: the session to that target / through that iface.
session_of_target() { session_where targetname "$1"; }
session_of_iface() { session_where ifacename "$1"; }
# blockdev_of_session sessionN [LUN]: prints sdX of that session's LUN (default 0).
blockdev_of_session() {
  for _b in /sys/class/iscsi_session/"$1"/device/target*/*:0:0:"${2:-0}"/block/*; do
    [ -e "$_b" ] && { basename "$_b"; return 0; }
  done
  return 1
}
session_state() { cat "/sys/class/iscsi_session/$1/state" 2>/dev/null; }
session_logged_in() { [ "$(session_state "$1")" = LOGGED_IN ]; }

# --- LIO (configfs) --------------------------------------------------------------------------
# lio_teardown: removes every iSCSI target and every backstore, in the order configfs requires.
lio_teardown() {
  [ -d "$TARGET_CFG/iscsi" ] || return 0
  for _tpg in "$TARGET_CFG"/iscsi/iqn.*/tpgt_* "$TARGET_CFG"/iscsi/naa.*/tpgt_*; do
    [ -d "$_tpg" ] || continue
    echo 0 >"$_tpg/enable" 2>/dev/null || true
    for _ml in "$_tpg"/acls/*/lun_*; do
      [ -d "$_ml" ] || continue
      find "$_ml" -maxdepth 1 -type l -exec rm -f {} \;
      rmdir "$_ml" 2>/dev/null || true
    done
    for _a in "$_tpg"/acls/*; do [ -d "$_a" ] && rmdir "$_a" 2>/dev/null; done
    for _l in "$_tpg"/lun/lun_*; do
      [ -d "$_l" ] || continue
      find "$_l" -maxdepth 1 -type l -exec rm -f {} \;
      rmdir "$_l" 2>/dev/null || true
    done
    for _np in "$_tpg"/np/*; do [ -d "$_np" ] && rmdir "$_np" 2>/dev/null; done
    rmdir "$_tpg" 2>/dev/null || true
  done
  for _t in "$TARGET_CFG"/iscsi/iqn.* "$TARGET_CFG"/iscsi/naa.*; do
    [ -d "$_t" ] && rmdir "$_t" 2>/dev/null
  done
  for _hba in "$TARGET_CFG"/core/*_*; do
    [ -d "$_hba" ] || continue
    for _dev in "$_hba"/*; do
      [ -d "$_dev" ] && [ -e "$_dev/enable" ] && rmdir "$_dev" 2>/dev/null
    done
    rmdir "$_hba" 2>/dev/null || true
  done
  return 0
}

# vip_owner: prints the netns holding E2E_VIP (storA, storB or nothing).
vip_owner() {
  for _ns in storA storB; do
    ip -n "$_ns" -o addr show dev eth0 2>/dev/null | grep -q " $E2E_VIP/" && { echo "$_ns"; return 0; }
  done
  return 1
}
# vip_move FROM TO: moves the VIP and sends a gratuitous ARP from the new owner (as keepalived does).
vip_move() {
  ip -n "$1" addr del "$E2E_VIP/$E2E_PREFIX" dev eth0 || return 1
  ip -n "$2" addr add "$E2E_VIP/$E2E_PREFIX" dev eth0 || return 1
  ip netns exec "$2" arping -q -U -c 1 -I eth0 -s "$E2E_VIP" "$E2E_VIP" || true
}

# e2e_reset: best effort return to the boot state after a scenario (used by /init).
# Every step that could block on a wedged session has a time limit.
e2e_reset() {
  timeout 60 /usr/sbin/iscsiadm -m node -u >/dev/null 2>&1 || true
  timeout 20 /usr/sbin/iscsiadm -m node -o delete >/dev/null 2>&1 || true
  rm -rf /etc/iscsi/nodes/* /etc/iscsi/send_targets/*
  awk '$2 ~ "^/mnt/" { print $2 }' /proc/mounts | sort -r | while read -r _m; do
    umount_ul -l "$_m" 2>/dev/null || true
  done
  lio_teardown
  _o=$(vip_owner || true)
  if [ -n "$_o" ] && [ "$_o" != storA ]; then vip_move "$_o" storA; fi
  [ -z "$_o" ] && ip -n storA addr add "$E2E_VIP/$E2E_PREFIX" dev eth0 2>/dev/null
  return 0
}

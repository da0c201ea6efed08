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

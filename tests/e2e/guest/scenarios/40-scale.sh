#!/bin/sh
# e2e-timeout: 480
#
# Issue #15 on a real kernel: the agent with many volumes at once (E2E_SCALE, kernel command line
# e2e.scale=N), each its own LIO target and LUN (datera-sim --backend lio) and its own open-iscsi
# session, all through the installed shim. Parts:
#  mount     one volume alone (the single-mount time), then the rest by 8 concurrent callers (the
#            mount storm): every call answers Success; every volume has its session, a disk whose
#            serial is its uuid, its staging mount and its pod mount, and the pod sees its own volume
#  idle      20 s with nothing to do: CPU % of one core of the agent, iscsid and datera-sim, the
#            agent's RSS, fds and threads; the keeper's poll cost if the agent measures it
#  restart   kill -9 of the agent, start again: time to /readyz 200 (start-up reconcile), every
#            session and every mount kept, each pod still on its own volume; then idle again
#  unmount   every volume unmounted by 8 concurrent callers: every call answers Success; no session,
#            node record, dm map, mount or LIO ACL entry left
# CPU numbers are facts, not checks: the guest is emulated (TCG) and shares the host.
# N defaults to 16: under TCG on 2 cores a mount costs ~6 s (mkfs.xfs likely most of it) and 8
# callers barely overlap, so 64 volumes took 419 s for the mount storm alone (docs/benchmarks.md);
# 16 keeps the scenario near 160 s. E2E_APPEND="e2e.scale=64" runs 64 (raise e2e-timeout first).
#
# Memory: each volume is 1 GiB (the smallest EDF size), and mkfs writes tens of MB of zeros into it
# (mkfs.xfs 6.1 zeroes its 64 MB log: ~65 MB per volume). On the tmpfs the other scenarios use that
# is 4 GB for 64 volumes in a 1 GB guest; here the backing files live on ext4 on a zram disk, where
# a page of zeros is stored as a flag (zram's same-filled pages) and costs no RAM.
# The access IPs come from their own /24 (10.99.1.0/24, two per volume, br0 gets .254): the other
# scenarios' /26 holds 31 volumes.
set -eu
# shellcheck source=SCRIPTDIR/../lib.sh
. /e2e/lib.sh

N=${E2E_SCALE:-16}
MP=${E2E_SCALE_MP:-on}
LANES=8
IDLE_S=20
W=/tmp/e2e-scale
SHIM=$W/plugins/datera~iscsi/iscsi
SIM=http://127.0.0.1:7717
METRICS_PORT=9808
POOL=10.99.1.0/24
POOL_GW=10.99.1.254/24
AGENT_PID=
SIM_PID=

dump_logs() {
  log "---- agent log (tail) ----"
  tail -n 40 $W/agent.log 2>/dev/null | sed 's/^/  agent| /'
  log "---- sim log (tail) ----"
  tail -n 20 $W/sim.log 2>/dev/null | sed 's/^/  sim| /'
  for f in $W/mount.failures $W/unmount.failures; do
    [ -s "$f" ] && { log "---- $f ----"; head -n 10 "$f"; }
  done
  return 0
}
die() {
  dump_logs
  fail "$*"
}

# pod_of I: sets P to volume I's pod dir (no fork).
pod_of() { P=$W/kubelet/pods/uid-s$1/volumes/datera~iscsi/pv-s$1; }
opts_of() {
  printf '{"volumeID":"vol-s%s","size":"1","replica":"2","kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-s%s"}' "$1" "$1"
}

# shim_call OP I LOG: one kubelet call for volume I; appends "I CENTISECONDS ok|fail" to LOG and the
# full reply of a failure to $W/OP.failures. After a mounted volume, writes its name into the pod.
shim_call() {
  pod_of "$2"
  now_cs
  _t0=$NOW_CS
  if [ "$1" = mount ]; then
    _out=$("$SHIM" mount "$P" "$(opts_of "$2")" 2>&1) || true
  else
    _out=$("$SHIM" unmount "$P" 2>&1) || true
  fi
  now_cs
  case $_out in
    *'"Success"'*)
      echo "$2 $((NOW_CS - _t0)) ok" >>"$3"
      [ "$1" = mount ] && echo "vol-s$2" >"$P/id"
      ;;
    *)
      echo "$2 $((NOW_CS - _t0)) fail" >>"$3"
      echo "vol-s$2: $_out" >>"$W/$1.failures"
      ;;
  esac
  return 0
}

# storm OP FIRST LAST: OP for volumes FIRST..LAST by LANES concurrent callers (lane j takes every
# LANES-th volume), as kubelet's operation executor runs one goroutine per volume. Sets STORM_CS
# (wall time) and checks that every call answered Success.
storm() {
  rm -f "$W/$1".lane-* "$W/$1.failures"
  now_cs
  _s0=$NOW_CS
  _pids=
  _j=0
  while [ "$_j" -lt "$LANES" ]; do
    (
      _i=$(($2 + _j))
      while [ "$_i" -le "$3" ]; do
        shim_call "$1" "$_i" "$W/$1.lane-$_j"
        _i=$((_i + LANES))
      done
    ) &
    _pids="$_pids $!"
    _j=$((_j + 1))
  done
  for _p in $_pids; do wait "$_p" || true; done
  now_cs
  STORM_CS=$((NOW_CS - _s0))
  cat "$W/$1".lane-* >"$W/$1.calls" 2>/dev/null || true
  _n=$(wc -l <"$W/$1.calls")
  _bad=$(awk '$3 != "ok"' "$W/$1.calls" | wc -l)
  [ "$_n" -eq $(($3 - $2 + 1)) ] || die "$1 storm: $_n of $(($3 - $2 + 1)) calls recorded"
  [ "$_bad" -eq 0 ] || die "$1 storm: $_bad of $_n calls did not answer Success (first: $(head -n 1 "$W/$1.failures"))"
  # per-call latency: p50, p90, max
  CALLS=$(awk '{print $2}' "$W/$1.calls" | sort -n | awk '{ v[NR] = $1 } END {
    p50 = v[int((NR + 1) / 2)]; p90 = v[int((NR * 9 + 9) / 10)]; if (p90 == "") p90 = v[NR]
    printf "p50=%d.%02d p90=%d.%02d max=%d.%02d", p50 / 100, p50 % 100, p90 / 100, p90 % 100, v[NR] / 100, v[NR] % 100 }')
}

# ticks PID...: utime+stime of those processes, in clock ticks (CLK_TCK is 100 on x86-64 Linux,
# so a tick is a centisecond, the unit of now_cs).
ticks() {
  _f=
  for _p in "$@"; do _f="$_f /proc/$_p/stat"; done
  # shellcheck disable=SC2086
  awk '{ s += $14 + $15 } END { print s + 0 }' $_f
}
# pct TICKS CS: TICKS over CS centiseconds as a percentage of one core, two decimals.
pct() { cs_fmt $(($1 * 10000 / $2)); }
guest_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
status_of() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# idle LABEL: IDLE_S seconds with nothing to do; prints the cost facts.
idle() {
  ISCSID_PIDS=$(pidof iscsid) || die "no iscsid"
  _a0=$(ticks "$AGENT_PID")
  # shellcheck disable=SC2086
  _i0=$(ticks $ISCSID_PIDS)
  _m0=$(ticks "$SIM_PID")
  _g0=$(guest_busy)
  now_cs
  _t0=$NOW_CS
  sleep "$IDLE_S"
  _a1=$(ticks "$AGENT_PID")
  # shellcheck disable=SC2086
  _i1=$(ticks $ISCSID_PIDS)
  _m1=$(ticks "$SIM_PID")
  _g1=$(guest_busy)
  now_cs
  _dt=$((NOW_CS - _t0))
  AGENT_CPU=$(pct $((_a1 - _a0)) $_dt)
  fact "scale-$1 volumes=$N window_s=$(cs_fmt $_dt) agent_cpu_pct=$AGENT_CPU iscsid_cpu_pct=$(pct $((_i1 - _i0)) $_dt) sim_cpu_pct=$(pct $((_m1 - _m0)) $_dt) guest_busy_pct_of_one_core=$(pct $((_g1 - _g0)) $_dt) (CLK_TCK=100)"
  _fds=$(ls "/proc/$AGENT_PID/fd" | wc -l)
  fact "scale-$1 agent_rss_kb=$(status_of "$AGENT_PID" VmRSS) agent_hwm_kb=$(status_of "$AGENT_PID" VmHWM) agent_threads=$(status_of "$AGENT_PID" Threads) agent_fds=$_fds sim_rss_kb=$(status_of "$SIM_PID" VmRSS)"
  _poll=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '
    $1 ~ /^datera_agent_session_poll_seconds_sum/ { s += $2; seen = 1 }
    $1 ~ /^datera_agent_session_poll_seconds_count/ { c += $2 }
    END { if (!seen) print "absent"; else if (c == 0) print "count=0";
          else printf "count=%d sum_s=%.4f avg_ms=%.3f", c, s, s / c * 1000 }')
  case $_poll in
    absent) fact "scale-$1 session_poll_seconds absent (the agent has no datera_agent_session_poll_seconds histogram)" ;;
    *) fact "scale-$1 session_poll_seconds $_poll (since the agent started)" ;;
  esac
}

# verify LABEL: every volume has its session (logged in), a disk whose serial is its uuid, its
# staging mount (on its dm map over that disk, with multipath) and its pod mount, and the pod sees
# its own volume. Linear in N: one look at the exports, the sessions and the mount table.
verify() {
  curl -s "$SIM/_sim/exports" | tr '{' '\n' |
    sed -n 's/.*"app_instance":"\([^"]*\)".*"iqn":"\([^"]*\)".*"uuid":"\([0-9a-f-]*\)".*/\1 \2 \3/p' >$W/exports.txt
  [ -s $W/exports.txt ] || die "no exports parsed: $(curl -s "$SIM/_sim/exports" | head -c 300)"
  for _s in /sys/class/iscsi_session/session*; do
    [ -e "$_s/targetname" ] || continue
    read -r _tn <"$_s/targetname"
    eval "SESS_${_tn##*:}=${_s##*/}"
  done
  _mounts=$(cat /proc/mounts)
  _ok=0
  _i=0
  while [ "$_i" -lt "$N" ]; do
    _line=$(grep "^vol-s$_i " $W/exports.txt) || die "$1: vol-s$_i is not exported"
    # shellcheck disable=SC2086
    set -- "$1" $_line
    _iqn=$3
    _uuid=$4
    eval "_sid=\${SESS_${_iqn##*:}:-}"
    [ -n "$_sid" ] || die "$1: vol-s$_i has no session to $_iqn"
    session_logged_in "$_sid" || die "$1: vol-s$_i's $_sid is $(session_state "$_sid")"
    _sd=$(blockdev_of_session "$_sid") || die "$1: vol-s$_i: no disk for $_sid"
    _serial=$(dd if="/sys/block/$_sd/device/vpd_pg80" bs=1 skip=4 2>/dev/null | tr -d '\000')
    [ "$_serial" = "$_uuid" ] || die "$1: vol-s$_i: /dev/$_sd's serial '$_serial' is not its uuid $_uuid"
    pod_of "$_i"
    case $_mounts in *" $P "*) ;; *) die "$1: vol-s$_i's pod dir is not mounted" ;; esac
    case $_mounts in *" $W/state/staging/vol-s$_i "*) ;; *) die "$1: vol-s$_i is not staged" ;; esac
    if [ "$MP" = on ]; then
      _held=
      for _h in /sys/block/"$_sd"/holders/dm-*; do [ -e "$_h" ] && _held=${_h##*/}; done
      [ -n "$_held" ] || die "$1: vol-s$_i: no dm map over /dev/$_sd"
      case $_mounts in *"/dev/$_held $W/state/staging/vol-s$_i "*) ;; *) die "$1: vol-s$_i is not staged on /dev/$_held" ;; esac
    fi
    read -r _id <"$P/id" || die "$1: vol-s$_i: no id file in the pod"
    [ "$_id" = "vol-s$_i" ] || die "$1: the pod of vol-s$_i sees '$_id'"
    _ok=$((_ok + 1))
    _i=$((_i + 1))
  done
  _ns=$(ls /sys/class/iscsi_session | wc -l)
  [ "$_ns" -eq "$N" ] || die "$1: $_ns sessions for $N volumes"
  fact "scale-$1 verified volumes=$_ok sessions=$_ns (serial = uuid, staged, pod mount, own data)"
}

start_agent() {
  datera-agent --config $W/agent.yaml >>$W/agent.log 2>&1 &
  AGENT_PID=$!
  wait_until 120 curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" || die "the agent did not become ready"
}

# --- setup -------------------------------------------------------------------------------------
step_begin setup
log "volumes=$N multipath=$MP callers=$LANES"
mkdir -p $W/sim $W/vols /run/lock
[ -e /sys/block/zram0/disksize ] || die "no zram0 (zram module not loaded)"
# Backing space: ~65 MB written per volume (all of it zeros but a few KiB), sparse beyond that.
echo "$((N * 80 + 256))M" >/sys/block/zram0/disksize || die "zram0 disksize"
out=$(/usr/sbin/mke2fs -q -t ext4 -O ^has_journal -E nodiscard,lazy_itable_init=1 /dev/zram0 2>&1) || die "mkfs on zram0: $out"
mount -t ext4 -o noinit_itable /dev/zram0 $W/vols || die "mount zram0"
ip addr add "$POOL_GW" dev br0 || die "br0 address in $POOL"
start_lio_sim $W 7717 "$POOL"  # its volume files on the zram disk mounted above
# Product defaults for the keeper (2 s poll), the array poll (1 m), NOP timers (5/5) and leases
# (30 s TTL, renewed every 10 s): the idle cost is the one a node would see.
cat >$W/agent.yaml <<YAML
node_name: e2e-node
socket_path: /run/datera-agent/agent.sock
plugin_dir: $W/plugins
kubelet_root: $W/kubelet
state_dir: $W/state
metrics: {listen: "127.0.0.1:$METRICS_PORT"}
backend: {server: "127.0.0.1:7717", username: admin, password_file: $W/password}
initiator:
  kind: open-iscsi
  iscsiadm: /usr/sbin/iscsiadm
  multipath: "$MP"
YAML
start_agent
wait_until 10 test -x "$SHIM" || die "the driver was not installed at $SHIM"
_i=0
while [ "$_i" -lt "$N" ]; do
  pod_of "$_i"
  mkdir -p "$P"
  _i=$((_i + 1))
done
step_end

# --- mount -------------------------------------------------------------------------------------
step_begin mount-single
storm mount 0 0
step_end
fact "scale-mount single_s=$(cs_fmt "$STORM_CS") (vol-s0 alone: create, ACL, login, serial, map, mkfs.xfs, mount)"
step_begin mount-storm
storm mount 1 $((N - 1))
step_end
fact "scale-mount storm volumes=$((N - 1)) callers=$LANES wall_s=$(cs_fmt "$STORM_CS") per_call_s $CALLS"
verify mount
fact "scale-mount $(awk '/^MemAvailable/ { printf "guest_mem_available_kb=%d", $2 }' /proc/meminfo) zram_mm_stat='$(cat /sys/block/zram0/mm_stat)' backing_used_kb=$(df -k $W/vols | awk 'NR == 2 { print $3 }')"
check scale-mount

# --- idle --------------------------------------------------------------------------------------
step_begin idle
idle idle
step_end
check scale-idle

# --- restart -----------------------------------------------------------------------------------
step_begin restart
sessions_before=$(ls /sys/class/iscsi_session | tr '\n' ' ')
kill -9 "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null || true
now_cs
r0=$NOW_CS
start_agent
now_cs
ready_cs=$((NOW_CS - r0))
step_end
rec=$(grep "reconciled: " $W/agent.log | tail -n 1 | sed 's/.*\(reconciled: .*\)/\1/')
fact "scale-restart volumes=$N restart_to_ready_s=$(cs_fmt $ready_cs) ('$rec')"
case $rec in "reconciled: $N volume(s) in use"*) ;; *) die "the restarted agent did not reconcile $N volumes: '$rec'" ;; esac
[ "$(ls /sys/class/iscsi_session | tr '\n' ' ')" = "$sessions_before" ] || die "the sessions changed across the restart"
verify restart
check scale-restart
step_begin idle-after-restart
idle idle-after-restart
step_end
check scale-idle-after-restart

# --- unmount -----------------------------------------------------------------------------------
step_begin unmount
storm unmount 0 $((N - 1))
step_end
fact "scale-unmount volumes=$N callers=$LANES wall_s=$(cs_fmt "$STORM_CS") per_call_s $CALLS"
left=$(grep "$W/" /proc/mounts | grep -v " $W/vols " || true)
[ -z "$left" ] || die "mounts left: $(echo "$left" | head -n 3)"
ls -d /sys/class/iscsi_session/session* >/dev/null 2>&1 && die "sessions left: $(ls /sys/class/iscsi_session | head -n 5)"
case $(dmsetup ls 2>&1) in *datera-*) die "maps left: $(dmsetup ls | head -n 3)" ;; esac
[ -z "$(ls /etc/iscsi/nodes 2>/dev/null)" ] || die "node records left: $(ls /etc/iscsi/nodes | head -n 3)"
for a in "$TARGET_CFG"/iscsi/iqn.2013-05.com.daterainc:*/tpgt_1/acls/*; do
  [ -e "$a" ] && die "the node is still in a LIO ACL: $a"
done
check scale-unmount

# --- cleanup -----------------------------------------------------------------------------------
kill "$AGENT_PID" 2>/dev/null || true
kill "$SIM_PID" 2>/dev/null || true
wait "$AGENT_PID" 2>/dev/null || true
wait "$SIM_PID" 2>/dev/null || true
lio_teardown
umount $W/vols 2>/dev/null || true
echo 1 >/sys/block/zram0/reset 2>/dev/null || true
ip addr del "$POOL_GW" dev br0 2>/dev/null || true
for ns in storA storB; do ip -n "$ns" addr flush dev eth0 to "$POOL" 2>/dev/null || true; done

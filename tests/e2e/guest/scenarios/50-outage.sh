#!/bin/sh
# e2e-timeout: 300
#
# An array outage longer than the session's replacement timeout, on a real kernel (open-iscsi,
# LIO, the agent's dm-multipath map, xfs), as issue #16 describes it:
#  outage    the storage node's link goes down for longer than replacement_timeout while the pod
#            writes: its writes fail (expected), the disk goes offline, the kernel fails the map's
#            path, and xfs shuts down on its failed log write
#  return    the link comes back: the session logs in again, the agent reinstates the map's path
#            within seconds (dmsetup status shows it active), and reports the volume fs_failed
#            with the kernel's line, never healthy or recovered, across an agent restart too
#  remount   the pod restarts (shim unmount, shim mount): the volume comes back clean and
#            writable, with the data synced before the outage, and is healthy again; no recovery
#            is counted for the episode
set -eu
# shellcheck source=SCRIPTDIR/../lib.sh
. /e2e/lib.sh

W=/tmp/e2e-outage
POD=$W/kubelet/pods/uid-1/volumes/datera~iscsi/pv-outage
POD2=$W/kubelet/pods/uid-2/volumes/datera~iscsi/pv-outage
SHIM=$W/plugins/datera~iscsi/iscsi
OPTS='{"volumeID":"vol-outage","size":"1","kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-outage"}'
REPLACEMENT=15
OUTAGE=${E2E_OUTAGE:-35}
AGENT_PID=
SIM_PID=
CUT=

dump_logs() {
  log "---- agent log (tail) ----"
  grep -v "lease\|renew" $W/agent.log 2>/dev/null | tail -n 60 | sed 's/^/  agent| /'
  log "---- kernel (tail) ----"
  dmesg | tail -n 25 | sed 's/^/  kernel| /'
}
die() {
  [ -n "$CUT" ] && ip -n "$CUT" link set eth0 up 2>/dev/null
  dump_logs
  fail "$*"
}
metric() { metric_on 9810 "$1"; }
volume_json() { curl -s --unix-socket $W/agent.sock http://agent/v1/volumes; }
volume_state() { single_volume_state $W; }
state_is() { [ "$(volume_state)" = "$1" ]; }
start_agent() { start_single_agent $W 9810; }

# --- setup -------------------------------------------------------------------------------------
step_begin setup
mkdir -p $W
start_lio_sim $W 7719 10.99.0.64/26
single_config $W 7719 9810 "  replacement_timeout: $REPLACEMENT
  noop_out_interval: 5
  noop_out_timeout: 5
  array_poll_interval: 30s" "log_level: debug"
start_agent
wait_until 10 test -x "$SHIM" || die "the driver was not installed at $SHIM"
mkdir -p "$POD"
out=$("$SHIM" mount "$POD" "$OPTS" 2>&1) || die "shim mount failed: $out"
case $out in *'"Success"'*) ;; *) die "shim mount answered: $out" ;; esac
dd if=/dev/urandom of="$POD/data.bin" bs=1M count=8 2>/dev/null || die "writing data.bin"
sync
sum=$(sha256sum "$POD/data.bin" | cut -d' ' -f1)
SID=$(ls /sys/class/iscsi_session)
portal=$(cat /sys/class/iscsi_connection/connection${SID#session}:0/persistent_address)
for ns in storA storB; do
  ip -n $ns addr show dev eth0 | grep -q "inet $portal/" && CUT=$ns
done
[ -n "$CUT" ] || die "no storage node holds the portal $portal"
MAP=$(dmsetup ls | awk '/^datera-/ {print $1}')
[ -n "$MAP" ] || die "no map"
# The map's one path ("8:0"): in `dmsetup status` it is followed by A (active) or F (failed).
PATH_DEV=$(dmsetup table "$MAP" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+:[0-9]+$/) p = $i } END { print p }')
[ -n "$PATH_DEV" ] || die "no path in the map's table: $(dmsetup table "$MAP")"
path_is() { dmsetup status "$MAP" | grep -q " $PATH_DEV $1 "; }
wait_until 10 state_is healthy || die "the volume is not healthy before the outage: $(volume_json)"
step_end
check setup

# --- outage ------------------------------------------------------------------------------------
step_begin outage
ip -n "$CUT" link set eth0 down || die "cutting $CUT"
now_cs
t_cut=$NOW_CS
# The pod goes on writing data, and changes metadata (so xfs must write its log).
(
  i=0
  while [ ! -e $W/stop ]; do
    dd if=/dev/zero of="$POD/stream.bin" bs=64k count=1 seek=$((i % 64)) oflag=direct conv=notrunc 2>/dev/null &&
      echo ok >>$W/writes.log || echo err >>$W/writes.log
    touch "$POD/meta-$i" 2>/dev/null || true
    i=$((i + 1))
    sleep 0.5
  done
) &
WRITER=$!
# xfs writes its log on its own within 30 s of a change; sync asks now, in the background (it
# blocks until the I/O fails).
(sleep 2 && sync) &
wait_until $((OUTAGE + 10)) state_is fs_failed || die "no fs_failed during the outage: $(volume_json)"
now_cs
fact "outage fs_failed_after_s=$(cs_fmt $((NOW_CS - t_cut)))"
while [ $((NOW_CS - t_cut)) -lt $((OUTAGE * 100)) ]; do
  sleep 1
  now_cs
done
table=$(dmsetup status "$MAP")
log "map during the outage: $table"
ip -n "$CUT" link set eth0 up || die "restoring $CUT"
CUT=
touch $W/stop
wait $WRITER || true
step_end
errors=$(grep -c err $W/writes.log || true)
fact "outage seconds=$OUTAGE replacement_timeout=$REPLACEMENT write_errors=$errors"
[ "$errors" -gt 0 ] || die "no write failed during an outage longer than replacement_timeout"
case $table in *" $PATH_DEV F "*) ;; *) die "the kernel did not fail the map's path: $table" ;; esac
dmesg | grep -q "XFS (dm-[0-9]*): Please unmount the filesystem" || die "xfs did not shut down"
check outage

# --- return ------------------------------------------------------------------------------------
step_begin return
now_cs
t_up=$NOW_CS
wait_until 60 session_logged_in "$SID" || die "$SID did not log in again: $(session_state "$SID")"
now_cs
t_login=$NOW_CS
wait_until 15 path_is A || die "the map's path was not reinstated: $(dmsetup status "$MAP")"
now_cs
fact "return login_s=$(cs_fmt $((t_login - t_up))) reinstated_after_login_s=$(cs_fmt $((NOW_CS - t_login)))"
wait_until 5 grep -q "reinstated the failed path" $W/agent.log || die "the agent did not log the reinstatement"
[ "$(metric 'datera_agent_multipath_operations_total{op="reinstate",result="ok"}')" -ge 1 ] ||
  die "the reinstatement is not counted"
sleep 2
state_is fs_failed || die "the volume is reported $(volume_state) with its filesystem shut down: $(volume_json)"
volume_json | grep -q '"fs_failure":"XFS (dm-' || die "/v1/volumes lacks the kernel's line: $(volume_json)"
[ "$(metric 'datera_agent_sessions{state="fs_failed"}')" = 1 ] || die "datera_agent_sessions{state=fs_failed} is not 1"
grep -q "DEGRADED: its filesystem on dm-" $W/agent.log || die "no DEGRADED log line"
grep -q "session recovered after" $W/agent.log && die "the agent logged a recovery of a volume whose filesystem failed"
[ "$(metric datera_agent_session_recoveries_total)" = 0 ] || die "a recovery was counted"
kill -9 "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null || true
start_agent
wait_until 10 state_is fs_failed || die "after a restart the volume is $(volume_state)"
step_end
check return

# --- remount -----------------------------------------------------------------------------------
step_begin remount
out=$("$SHIM" unmount "$POD" 2>&1) || die "shim unmount of the failed filesystem: $out"
case $out in *'"Success"'*) ;; *) die "shim unmount answered: $out" ;; esac
mkdir -p "$POD2"
out=$("$SHIM" mount "$POD2" "$OPTS" 2>&1) || die "shim mount after the outage: $out"
case $out in *'"Success"'*) ;; *) die "shim mount answered: $out" ;; esac
step_end
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$POD2/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "the data synced before the outage changed"
echo after >"$POD2/after.txt" && sync || die "the volume is not writable after the remount"
wait_until 10 state_is healthy || die "the volume is $(volume_state) after a fresh mount"
[ "$(metric datera_agent_session_recoveries_total)" = 0 ] || die "the episode was counted as a recovery"
out=$("$SHIM" unmount "$POD2" 2>&1)
case $out in *'"Success"'*) ;; *) die "final unmount answered: $out" ;; esac
check remount

kill "$AGENT_PID" 2>/dev/null || true
kill "$SIM_PID" 2>/dev/null || true
wait 2>/dev/null || true

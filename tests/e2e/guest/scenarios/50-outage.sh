#!/bin/sh
# e2e-timeout: 480
#
# Array outages on a real kernel (open-iscsi, LIO, the agent's dm-multipath map, xfs), as issue
# #16 describes them; replacement_timeout 15 s, noop 5/5, initiator.io_hold $E2E_HOLD (20 s):
#  short     a 25 s outage (E2E_SHORT) under continuous O_DIRECT writes: 0 errors (the disk may go
#            offline at ~25 s; then the map holds the I/O until its path is reinstated), the same
#            session, and the keeper's recovery duration within 1 s of the pod's longest write
#  outage    a 55 s outage (E2E_OUTAGE), longer than detection + replacement_timeout + io_hold,
#            while the pod writes: the map holds I/O for io_hold, then the keeper fails it, once:
#            the writes fail only from then (never a hang), and xfs shuts down
#  return    the link comes back: the session logs in again, the agent reinstates the map's path
#            within seconds and the map queues again; the volume is reported fs_failed with the
#            kernel's line, never healthy or recovered, across an agent restart too
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
SHORT=${E2E_SHORT:-25}
OUTAGE=${E2E_OUTAGE:-55}
HOLD=${E2E_HOLD:-20}
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
volume_field() { volume_json | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | head -n 1; }

# Continuous 64 KiB O_DIRECT writes into the pod dir, and a metadata change each (so xfs writes
# its log); each line of $1: "<start cs> <end cs> <rc>". A failed write waits 0.2 s.
start_writer() {
  rm -f $W/stop
  (
    i=0
    while [ ! -e $W/stop ]; do
      now_cs
      t0=$NOW_CS
      if dd if=/dev/zero of="$POD/stream.bin" bs=64k count=1 seek=$((i % 64)) oflag=direct conv=notrunc 2>/dev/null; then rc=0; else rc=1; fi
      touch "$POD/meta-$((i % 64))" 2>/dev/null || true
      now_cs
      echo "$t0 $NOW_CS $rc" >>"$1"
      [ $rc = 0 ] || sleep 0.2
      i=$((i + 1))
    done
  ) &
  WRITER=$!
}
stop_writer() {
  touch $W/stop
  wait $WRITER || true
}

# --- setup -------------------------------------------------------------------------------------
step_begin setup
mkdir -p $W
start_lio_sim $W 7719 10.99.0.64/26
single_config $W 7719 9810 "  replacement_timeout: $REPLACEMENT
  noop_out_interval: 5
  noop_out_timeout: 5
  io_hold: ${HOLD}s
  array_poll_interval: 30s" "log_level: debug"
start_agent
wait_until 10 test -x "$SHIM" || die "the driver was not installed at $SHIM"
mkdir -p "$POD"
shim_ok "shim mount" mount "$POD" "$OPTS"
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

# --- short -------------------------------------------------------------------------------------
step_begin short
start_writer $W/short.log
sleep 2
ip -n "$CUT" link set eth0 down || die "cutting $CUT"
now_cs
t_cut=$NOW_CS
sleep "$SHORT"
ip -n "$CUT" link set eth0 up || die "restoring $CUT"
now_cs
t_up=$NOW_CS
# Healthy again, or (without a hold) failed: either way the facts are measured before judging.
settled() { case $(volume_state) in healthy | fs_failed) return 0 ;; esac; return 1; }
wait_until 60 settled || die "the volume did not settle after a ${SHORT} s outage: $(volume_json)"
sleep 2
stop_writer
step_end
errors=$(awk '$3 != 0' $W/short.log | wc -l)
total=$(wc -l <$W/short.log)
pod_cs=$(awk '{ d = $2 - $1; if (d > m) m = d } END { printf "%d", m }' $W/short.log)
keeper_s=$(volume_field last_recovery_seconds)
keeper_cs=$(awk -v s="$keeper_s" 'BEGIN { printf "%d", s * 100 + 0.5 }')
offline=no
volume_json | grep -q '"to":"device_offline"' && offline=yes
fact "short outage_s=$SHORT hold_s=$HOLD writes=$total errors=$errors pod_stall_s=$(cs_fmt "$pod_cs") keeper_stall_s=$(cs_fmt "${keeper_cs:-0}") disk_went_offline=$offline state=$(volume_state) back_after_link_s=$(cs_fmt $((NOW_CS - t_up)))"
[ "$errors" -eq 0 ] || die "$errors of $total writes failed in a ${SHORT} s outage"
state_is healthy || die "the volume is $(volume_state) after a ${SHORT} s outage: $(volume_json)"
[ "$(metric datera_agent_session_recoveries_total)" = 1 ] || die "the keeper did not count one recovery"
diff=$((keeper_cs - pod_cs))
[ ${diff#-} -le 100 ] || die "the keeper's stall ($(cs_fmt "$keeper_cs") s) is not within 1 s of the pod's ($(cs_fmt "$pod_cs") s)"
[ $((pod_cs * 100)) -ge $((SHORT * 100 * 90)) ] || die "the pod's longest write ($(cs_fmt "$pod_cs") s) is shorter than the outage: was it cut?"
session_logged_in "$SID" || die "$SID is $(session_state "$SID") after the short outage"
path_is A || die "the map's path is not active after the short outage: $(dmsetup status "$MAP")"
check short

# --- outage ------------------------------------------------------------------------------------
step_begin outage
recovered_before=$(grep -c "session recovered after" $W/agent.log || true)
start_writer $W/writes.log
sleep 1
ip -n "$CUT" link set eth0 down || die "cutting $CUT"
now_cs
t_cut=$NOW_CS
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
stop_writer
step_end
errors=$(awk '$3 != 0' $W/writes.log | wc -l)
first_err=$(awk -v c="$t_cut" '$3 != 0 { printf "%d", $2 - c; exit }' $W/writes.log)
expired=$(metric datera_agent_io_hold_expired_total)
fact "outage seconds=$OUTAGE replacement_timeout=$REPLACEMENT hold_s=$HOLD write_errors=$errors first_error_after_s=$(cs_fmt "${first_err:-0}") hold_expired=$expired"
[ "$errors" -gt 0 ] || die "no write failed during an outage longer than the hold"
if [ "$HOLD" -gt 0 ]; then
  [ "$expired" = 1 ] || die "datera_agent_io_hold_expired_total is '$expired', not 1"
  # detection (10 s) + replacement_timeout + io_hold, less the timers' slack
  [ "$first_err" -ge $(((10 + REPLACEMENT + HOLD - 3) * 100)) ] ||
    die "the first write failed $(cs_fmt "$first_err") s after the cut: before the hold expired"
  grep -q "failing the I/O its map holds" $W/agent.log || die "no log line for the expired hold"
fi
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
[ "$(grep -c "session recovered after" $W/agent.log || true)" = "$recovered_before" ] ||
  die "the agent logged a recovery of a volume whose filesystem failed"
[ "$(metric datera_agent_session_recoveries_total)" = 1 ] || die "a recovery was counted for it"
if [ "$HOLD" -gt 0 ]; then
  wait_until 5 sh -c "dmsetup table $MAP | grep -q queue_if_no_path" ||
    die "the map does not hold I/O again after its path came back: $(dmsetup table "$MAP")"
fi
kill -9 "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null || true
start_agent
wait_until 10 state_is fs_failed || die "after a restart the volume is $(volume_state)"
step_end
check return

# --- remount -----------------------------------------------------------------------------------
step_begin remount
shim_ok "shim unmount of the failed filesystem" unmount "$POD"
mkdir -p "$POD2"
shim_ok "shim mount after the outage" mount "$POD2" "$OPTS"
step_end
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$POD2/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "the data synced before the outage changed"
echo after >"$POD2/after.txt" && sync || die "the volume is not writable after the remount"
wait_until 10 state_is healthy || die "the volume is $(volume_state) after a fresh mount"
[ "$(metric datera_agent_session_recoveries_total)" = 0 ] || die "the episode was counted as a recovery (after a restart the count starts at 0)"
shim_ok "final unmount" unmount "$POD2"
check remount

kill "$AGENT_PID" 2>/dev/null || true
kill "$SIM_PID" 2>/dev/null || true
wait 2>/dev/null || true

#!/bin/sh
# e2e-timeout: 400
#
# The agent on a real kernel, through the real shim, against datera-sim's lio backend (real LIO
# targets, node ACLs and portals in the storage nodes' network namespaces) with the real open-iscsi
# initiator. Parts, each with its own checks (issue #5's scenarios 1, 2, 3, 5 and 4):
#  mount     shim mount: the volume is created, the node added to the ACL, logged in, the disk's
#            serial verified against the volume uuid, a dm-multipath map made over it, mkfs.xfs on
#            the map, mounted into a pod dir; checksummed data written
#  failover  the simulator moves the VIPs storA -> storB (portal re-created there, gratuitous ARP)
#            during continuous O_DIRECT writes: zero I/O errors, the same session, stall <= 5 s,
#            data intact, and the agent's session keeper counted one recovery with its duration
#  rebalance the simulator moves the volume to another access IP (the old one vanishes, as in an
#            EDF rebalance) during continuous O_DIRECT writes: the agent logs in on the new portal,
#            verifies the serial, holds I/O in the map, logs out of the old portal and swaps the
#            map: zero I/O errors, one session (on the new portal), data intact
#  kill9     kill -9 of the agent while mounted: session and mounts survive; the restarted agent
#            reconciles and serves; data intact
#  release   datera-agentctl release refuses while the pod mounts the volume; once the pod's bind
#            is gone behind kubelet's back, datera-agentctl drain gives it up: no session, map,
#            node record or LIO ACL entry left; a shim mount brings it back with the data intact
#  unmount   shim unmount: no session, node record, device, mount or LIO ACL entry left
set -eu
# shellcheck source=SCRIPTDIR/../lib.sh
. /e2e/lib.sh

W=/tmp/e2e
VOL=vol-e2e
POD=$W/kubelet/pods/uid-e2e/volumes/datera~iscsi/pv-e2e
SHIM=$W/plugins/datera~iscsi/iscsi
SIM=http://127.0.0.1:7717
METRICS=http://127.0.0.1:9808/metrics
OPTS='{"volumeID":"vol-e2e","size":"1","replica":"2","kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-e2e"}'
AGENT_PID=
SIM_PID=

dump_logs() {
  log "---- agent log (tail) ----"
  tail -n 40 $W/agent.log 2>/dev/null | sed 's/^/  agent| /'
  log "---- sim log (tail) ----"
  tail -n 25 $W/sim.log 2>/dev/null | sed 's/^/  sim| /'
}
die() {
  dump_logs
  fail "$*"
}

metric() { metric_on 9808 "$1"; } # metric NAME_WITH_LABELS: prints its value or nothing

# Continuous 64 KiB O_DIRECT writes into the pod dir; each line of $1: "<start cs> <end cs> <rc>".
start_writer() {
  rm -f $W/stop-writer
  (
    i=0
    while [ ! -e $W/stop-writer ]; do
      now_cs
      t0=$NOW_CS
      if dd if=/dev/zero of="$POD/stream.bin" bs=64k count=1 seek=$((i % 256)) oflag=direct conv=notrunc 2>/dev/null; then rc=0; else rc=1; fi
      now_cs
      echo "$t0 $NOW_CS $rc" >>"$1"
      i=$((i + 1))
    done
  ) &
  WRITER=$!
}
stop_writer() {
  touch $W/stop-writer
  wait $WRITER || true
}

# write_stats LOG: sets errors, total and stall (the longest write, in centiseconds) from a
# start_writer log.
write_stats() {
  errors=$(awk '$3 != 0' "$1" | wc -l)
  total=$(wc -l <"$1")
  stall=$(awk '{ d = $2 - $1; if (d > m) m = d } END { printf "%d", m }' "$1")
}

start_agent() {
  datera-agent --config $W/agent.yaml >>$W/agent.log 2>&1 &
  AGENT_PID=$!
  wait_until 30 curl -sf http://127.0.0.1:9808/readyz || die "the agent did not become ready"
}

# --- setup -------------------------------------------------------------------------------------
step_begin setup
start_lio_sim $W 7717 10.99.0.64/26
cat >$W/agent.yaml <<YAML
node_name: e2e-node
socket_path: /run/datera-agent/agent.sock
plugin_dir: $W/plugins
kubelet_root: $W/kubelet
state_dir: $W/state
metrics: {listen: "127.0.0.1:9808"}
backend: {server: "127.0.0.1:7717", username: admin, password_file: $W/password}
initiator:
  kind: open-iscsi
  iscsiadm: /usr/sbin/iscsiadm
  replacement_timeout: 120
  noop_out_interval: ${E2E_NOOP%/*}
  noop_out_timeout: ${E2E_NOOP#*/}
  session_poll_interval: 250ms
  multipath: "on"
  array_poll_interval: 30s
YAML
start_agent
wait_until 10 test -x "$SHIM" || die "the driver was not installed at $SHIM"
step_end

# --- mount -------------------------------------------------------------------------------------
step_begin mount
mkdir -p "$POD"
out=$("$SHIM" mount "$POD" "$OPTS" 2>&1) || die "shim mount failed: $out"
case $out in *'"Success"'*) ;; *) die "shim mount answered: $out" ;; esac
step_end
grep -qs " $POD " /proc/mounts || die "the pod dir is not a mount point"
uuid=$(curl -s "$SIM/_sim/exports" | sed -n 's/.*"uuid":"\([0-9a-f-]*\)".*/\1/p' | head -n 1)
[ -n "$uuid" ] || die "no volume uuid from the simulator"
SID=$(session_of_target "$(curl -s "$SIM/_sim/exports" | sed -n 's/.*"iqn":"\([^"]*\)".*/\1/p' | head -n 1)") ||
  die "no iSCSI session for the volume's target"
SD=$(blockdev_of_session "$SID") || die "no disk for $SID"
serial=$(dd if=/sys/block/$SD/device/vpd_pg80 bs=1 skip=4 2>/dev/null | tr -d '\000')
fact "agent-volume session=$SID disk=$SD serial=$serial uuid=$uuid portal=$(cat /sys/class/iscsi_connection/connection${SID#session}:0/persistent_address 2>/dev/null)"
[ "$serial" = "$uuid" ] || die "the disk's serial '$serial' is not the volume uuid '$uuid'"
staged=$(awk -v t="$W/state/staging/$VOL" '$2 == t { print $1, $3 }' /proc/mounts)
case $staged in /dev/dm-*" xfs") ;; *) die "staging is '$staged', not xfs on a dm map" ;; esac
DM=${staged%% *}
table=$(dmsetup table "datera-$uuid") || die "no map datera-$uuid"
fact "agent-volume map=$DM table='$table'"
case $table in *" multipath "*" $(cat /sys/block/$SD/dev) "*) ;; *) die "the map is not over /dev/$SD: $table" ;; esac
n_sd=$(ls -d /sys/class/iscsi_session/session* 2>/dev/null | wc -l)
fact "sessions=$n_sd (one per volume)"
dd if=/dev/urandom of="$POD/data.bin" bs=1M count=16 2>/dev/null || die "write into the pod dir"
sync
sum=$(sha256sum "$POD/data.bin" | cut -d' ' -f1)
check mount

# --- failover ----------------------------------------------------------------------------------
step_begin failover
start_writer $W/writes.log
sleep 2
out=$(curl -s -X POST -H 'Content-Type: application/json' -d "{\"app_instance\":\"$VOL\",\"to_node\":\"node-2\"}" "$SIM/_sim/failover")
log "failover: $out"
case $out in *node-2*) ;; *) die "the simulator did not fail over: $out" ;; esac
# Wait for the keeper to see the stall end (or give up after 30 s).
wait_until 30 sh -c "[ \"\$(curl -s $METRICS | awk '\$1 == \"datera_agent_session_recoveries_total\" {print \$2}')\" = 1 ]" ||
  log "the keeper did not count a recovery within 30 s"
sleep 2
stop_writer
step_end
write_stats $W/writes.log
fact "failover noop=$E2E_NOOP writes=$total errors=$errors longest_write_s=$(cs_fmt "$stall")"
[ "$errors" -eq 0 ] || die "$errors of $total writes failed during failover"
[ "$stall" -le 500 ] || die "the longest write stalled $(cs_fmt "$stall") s (more than 5 s)"
[ "$(session_of_target "$(cat /sys/class/iscsi_session/$SID/targetname)")" = "$SID" ] || die "the session changed"
session_logged_in "$SID" || die "$SID is $(session_state "$SID") after failover"
ip netns exec storB ss -Htn state established "sport = :3260" | grep -q . || die "no connection to storB"
rec=$(metric datera_agent_session_recoveries_total)
dur=$(metric datera_agent_session_recovery_duration_seconds_sum)
fact "keeper recoveries=$rec recovery_seconds=$dur"
[ "$rec" = 1 ] || die "the keeper counted '$rec' recoveries, not 1"
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$POD/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "data changed across failover"
curl -s --unix-socket /run/datera-agent/agent.sock http://agent/v1/volumes | grep -q '"recoveries":1' ||
  die "/v1/volumes does not show the recovery"
check failover

# --- rebalance ---------------------------------------------------------------------------------
step_begin rebalance
NEW_IP=10.99.0.70
old_portal=$(cat /sys/class/iscsi_connection/connection${SID#session}:0/persistent_address)
start_writer $W/rebalance.log
sleep 2
out=$(curl -s -X POST -H 'Content-Type: application/json' -d "{\"app_instance\":\"$VOL\",\"ips\":[\"$NEW_IP\"]}" "$SIM/_sim/rebalance")
log "rebalance: $out"
case $out in *"$NEW_IP"*) ;; *) die "the simulator did not rebalance: $out" ;; esac
moved_once() { [ "$(metric 'datera_agent_portal_changes_total{result="moved"}')" = 1 ]; }
wait_until 60 moved_once || die "the agent did not move the volume to $NEW_IP within 60 s"
sleep 2
stop_writer
step_end
write_stats $W/rebalance.log
took=$(metric datera_agent_portal_change_duration_seconds_sum)
why=$(grep -o "access moved on the array ([^)]*)" $W/agent.log | tail -n 1)
fact "rebalance noop=$E2E_NOOP $old_portal -> $NEW_IP writes=$total errors=$errors longest_write_s=$(cs_fmt "$stall") move_s=$took trigger='$why'"
[ "$errors" -eq 0 ] || die "$errors of $total writes failed during the portal change"
n=$(ls -d /sys/class/iscsi_session/session* | wc -l)
[ "$n" = 1 ] || die "$n sessions after the move, not 1: $(ls /sys/class/iscsi_session)"
NEW_SID=$(ls /sys/class/iscsi_session)
[ "$NEW_SID" != "$SID" ] || die "still on $SID"
[ "$(cat /sys/class/iscsi_connection/connection${NEW_SID#session}:0/persistent_address)" = "$NEW_IP" ] ||
  die "$NEW_SID is not on $NEW_IP"
session_logged_in "$NEW_SID" || die "$NEW_SID is $(session_state "$NEW_SID")"
SID=$NEW_SID
SD=$(blockdev_of_session "$SID") || die "no disk for $SID"
serial=$(dd if=/sys/block/$SD/device/vpd_pg80 bs=1 skip=4 2>/dev/null | tr -d '\000')
[ "$serial" = "$uuid" ] || die "the new disk's serial '$serial' is not the volume uuid '$uuid'"
table=$(dmsetup table "datera-$uuid")
case $table in *" $(cat /sys/block/$SD/dev) "*) ;; *) die "the map is not over the new disk /dev/$SD: $table" ;; esac
# Back in the maps' standing mode after the swap: queue_if_no_path (initiator.io_hold, 30 s by
# default), which the keeper bounds.
case $table in *queue_if_no_path*) ;; *) die "the map does not hold I/O after the swap: $table" ;; esac
[ "$(awk -v t="$W/state/staging/$VOL" '$2 == t { print $1 }' /proc/mounts)" = "$DM" ] || die "the staging mount changed device"
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$POD/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "data changed across the portal change"
curl -s --unix-socket /run/datera-agent/agent.sock http://agent/v1/volumes | grep -q "\"portal\":\"$NEW_IP:3260\"" ||
  die "/v1/volumes does not show the new portal"
[ -z "$(ls /etc/iscsi/nodes/*/$old_portal,* 2>/dev/null)" ] || die "the old portal's node record is left"
check rebalance

# --- kill9 -------------------------------------------------------------------------------------
step_begin kill9
kill -9 "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null || true
session_logged_in "$SID" || die "the session did not survive the agent"
grep -qs " $POD " /proc/mounts || die "the pod mount did not survive the agent"
start_agent
grep -q "reconciled: 1 volume(s) in use" $W/agent.log || die "the restarted agent did not reconcile the volume"
[ "$(sha256sum "$POD/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "data changed across the restart"
out=$("$SHIM" mount "$POD" "$OPTS" 2>&1)
case $out in *'"Success"'*) ;; *) die "a repeated mount after restart answered: $out" ;; esac
[ "$(ls -d /sys/class/iscsi_session/session* | wc -l)" = "$n_sd" ] || die "the restart added sessions"
step_end
check kill9

# --- release -----------------------------------------------------------------------------------
step_begin release
if out=$(datera-agentctl release $VOL 2>&1); then die "release of a volume a pod uses succeeded: $out"; fi
case $out in *in_use*uid-e2e*) ;; *) die "release did not name the pod using the volume: $out" ;; esac
session_logged_in "$SID" || die "a refused release touched the session"
umount_ul "$POD" || die "unmount of the pod's bind by hand"
now_cs
t0=$NOW_CS
out=$(datera-agentctl -o json drain 2>&1) || die "drain failed: $out"
now_cs
fact "release drain_s=$(cs_fmt $((NOW_CS - t0))) (logout, map removal, staging unmount, ACL, lease)"
case $out in *'"result": "released"'*) ;; *) die "drain did not release $VOL: $out" ;; esac
step_end
log "drain: $(echo "$out" | tr -d '\n')"
ls -d /sys/class/iscsi_session/session* >/dev/null 2>&1 && die "sessions left after drain: $(ls /sys/class/iscsi_session)"
case $(dmsetup ls 2>&1) in *datera-*) die "maps left after drain: $(dmsetup ls)" ;; esac
grep -qs " $W/state/staging/$VOL " /proc/mounts && die "staging left mounted after drain"
[ -z "$(ls /etc/iscsi/nodes 2>/dev/null)" ] || die "node records left after drain: $(ls /etc/iscsi/nodes)"
acls=$(ls "$TARGET_CFG"/iscsi/iqn.2013-05.com.daterainc:*/tpgt_1/acls 2>/dev/null | tr '\n' ' ')
[ -z "$acls" ] || die "the node is still in the LIO ACL after drain: $acls"
[ "$(metric 'datera_agent_volume_releases_total{result="released"}')" = 1 ] || die "release not counted"
out=$("$SHIM" mount "$POD" "$OPTS" 2>&1)
case $out in *'"Success"'*) ;; *) die "mount after drain answered: $out" ;; esac
SID=$(ls /sys/class/iscsi_session)
SD=$(blockdev_of_session "$SID") || die "no disk for $SID"
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$POD/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "data changed across release and mount"
check release

# --- unmount -----------------------------------------------------------------------------------
step_begin unmount
out=$("$SHIM" unmount "$POD" 2>&1) || die "shim unmount failed: $out"
case $out in *'"Success"'*) ;; *) die "shim unmount answered: $out" ;; esac
step_end
left=$(grep "$W/" /proc/mounts | grep -v " $W/vols " || true)
[ -z "$left" ] || die "mounts left: $left"
ls -d /sys/class/iscsi_session/session* >/dev/null 2>&1 && die "sessions left: $(ls /sys/class/iscsi_session)"
[ -e "/sys/block/$SD" ] && die "/dev/$SD is still there"
maps=$(dmsetup ls 2>&1)
case $maps in *datera-*) die "maps left: $maps" ;; esac
[ -z "$(ls /etc/iscsi/nodes 2>/dev/null)" ] || die "node records left: $(ls /etc/iscsi/nodes)"
acls=$(ls "$TARGET_CFG"/iscsi/iqn.2013-05.com.daterainc:*/tpgt_1/acls 2>/dev/null | tr '\n' ' ')
[ -z "$acls" ] || die "the node is still in the LIO ACL: $acls"
check unmount

kill "$AGENT_PID" 2>/dev/null || true
kill "$SIM_PID" 2>/dev/null || true
wait 2>/dev/null || true

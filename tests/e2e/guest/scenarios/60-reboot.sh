#!/bin/sh
# e2e-timeout: 200
#
# A node reboot, as issue #16 (item 7) describes it: the node's sessions, maps and mounts are
# gone, its iscsid starts afresh, and the agent's journal still says the volume was attached.
#  reboot    kill -9 of the agent; the pod and staging mounts, the map and the session go, as
#            a reboot takes them; iscsid restarts. Its node records must not log in by themselves
#            (node.startup manual), or a rebooted node would hold sessions nobody asked for
#  remount   the agent starts on the stale journal; kubelet's mount of the pod succeeds on its
#            first call: one session, one map, the data written before the reboot, healthy; no
#            leaked map or session
set -eu
# shellcheck source=SCRIPTDIR/../lib.sh
. /e2e/lib.sh

W=/tmp/e2e-reboot
POD=$W/kubelet/pods/uid-1/volumes/datera~iscsi/pv-reboot
SHIM=$W/plugins/datera~iscsi/iscsi
OPTS='{"volumeID":"vol-reboot","size":"1","kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-reboot"}'
AGENT_PID=
SIM_PID=

die() {
  log "---- agent log (tail) ----"
  tail -n 40 $W/agent.log 2>/dev/null | sed 's/^/  agent| /'
  fail "$*"
}
volume_state() { single_volume_state $W; }
state_is() { [ "$(volume_state)" = "$1" ]; }
start_agent() { start_single_agent $W 9811; }
session_count() { ls -d /sys/class/iscsi_session/session* 2>/dev/null | wc -l; }
map_count() { dmsetup ls | grep -c '^datera-' || true; }

# --- setup -------------------------------------------------------------------------------------
step_begin setup
mkdir -p $W
start_lio_sim $W 7720 10.99.0.64/26
single_config $W 7720 9811
start_agent
wait_until 10 test -x "$SHIM" || die "the driver was not installed at $SHIM"
mkdir -p "$POD"
shim_ok "shim mount" mount "$POD" "$OPTS"
dd if=/dev/urandom of="$POD/data.bin" bs=1M count=4 2>/dev/null || die "writing data.bin"
sync
sum=$(sha256sum "$POD/data.bin" | cut -d' ' -f1)
startup=$(iscsiadm -m node -o show 2>/dev/null | sed -n 's/^node.startup = //p' | sort -u)
[ "$startup" = manual ] || die "node records start '$startup', not manual"
step_end
check setup

# --- reboot ------------------------------------------------------------------------------------
step_begin reboot
kill -9 "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null || true
umount_ul "$POD" || die "unmounting the pod's bind"
umount_ul "$W/state/staging/vol-reboot" || die "unmounting the staging mount"
for m in $(dmsetup ls | awk '/^datera-/ {print $1}'); do dmsetup remove "$m" || die "removing $m"; done
iscsiadm -m session -u >/dev/null 2>&1 || die "logging out"
[ "$(session_count)" = 0 ] || die "sessions left after the 'reboot'"
# iscsid starts afresh at boot and logs in to every node record set to automatic startup.
iscsiadm -m node --loginall=automatic >/dev/null 2>&1 || true
[ "$(session_count)" = 0 ] || die "a node record logged in by itself at boot"
start_agent
step_end
check reboot

# --- remount -----------------------------------------------------------------------------------
step_begin remount
shim_ok "kubelet's first mount after the reboot" mount "$POD" "$OPTS"
step_end
grep -qs " $POD " /proc/mounts || die "the pod dir is not a mount point"
[ "$(sha256sum "$POD/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "the data changed across the reboot"
[ "$(session_count)" = 1 ] || die "$(session_count) sessions, not 1"
[ "$(map_count)" = 1 ] || die "$(map_count) maps, not 1: $(dmsetup ls)"
wait_until 10 state_is healthy || die "the volume is $(volume_state) after the remount"
shim_ok "unmount" unmount "$POD"
[ "$(session_count)" = 0 ] || die "sessions left after the unmount"
[ "$(map_count)" = 0 ] || die "maps left after the unmount: $(dmsetup ls)"
[ -z "$(ls /etc/iscsi/nodes 2>/dev/null)" ] || die "node records left: $(ls /etc/iscsi/nodes)"
check remount

kill "$AGENT_PID" 2>/dev/null || true
kill "$SIM_PID" 2>/dev/null || true
wait 2>/dev/null || true

#!/bin/sh
# e2e-timeout: 360
#
# The CSI front end (driver agent.iscsi.datera.io) on a real kernel: two agents, node-a and node-b,
# each logging in through its own open-iscsi iface with its own initiator name, against
# datera-sim's lio backend (real LIO node ACLs and portals). node-a's agent also serves the
# Controller service (as the controller Deployment's agent would). Every call is a gRPC call to an
# agent's CSI socket, made by the test tier's Python client (/e2e/py/csi.py, one call each).
#  identity  GetPluginInfo names the driver on both sockets, Probe is ready
#  grant     CreateVolume; before ControllerPublishVolume node-a's NodeStageVolume is refused and
#            logs nothing in; ControllerPublishVolume to node-a: the LIO ACL holds node-a alone;
#            a publish to node-b meanwhile is FAILED_PRECONDITION
#  stage     NodeStageVolume (login, serial check, mkfs, staging mount) and NodePublishVolume (the
#            bind at the pod's target) on node-a; checksummed data written
#  failover  the simulator moves the VIPs storA -> storB during continuous O_DIRECT writes into
#            the pod's target: zero I/O errors, the same session, stall <= 5 s, node-a's keeper
#            counts one recovery, data intact
#  force     ControllerUnpublishVolume from node-a without its unstage, ControllerPublishVolume to
#            node-b (Kubernetes' force-detach): LIO lets only node-b in; node-b stages, publishes
#            and reads node-a's data; node-a's agent tears its target, staging mount and session
#            down by itself and counts a self-fence
#  release   node-b's NodeUnpublish and NodeUnstage, ControllerUnpublish, DeleteVolume: no
#            session, mount or LIO ACL entry left, the app instance gone
#  migrate   a volume mounted through node-a's FlexVolume shim (agent mode), written, unmounted;
#            `datera-agentctl migrate` writes its CSI PV; node-b stages and publishes it through
#            CSI: no mkfs, the same data, the LIO ACL node-b's alone
# ext4 and multipath off, as in 30-controller: both nodes share this kernel.
set -eu
# shellcheck source=SCRIPTDIR/../lib.sh
. /e2e/lib.sh

W=/tmp/e2e-csi
TTL=6
VOL=pvc-csi
DRIVER=agent.iscsi.datera.io
SIM=http://127.0.0.1:7747
PID_a=
PID_b=

if [ -f /e2e/py/MISSING ]; then
  mkdir -p "$(dirname "$E2E_REASON_FILE")"
  echo "no Python CSI client in the guest: $(cat /e2e/py/MISSING)" >"$E2E_REASON_FILE"
  exit 77
fi

die() { fail_with_logs $W "$@"; }
iqn_of() { echo "iqn.1993-08.org.debian:01:e2e-csi-$1"; }
port_of() { case $1 in a) echo 9831 ;; *) echo 9832 ;; esac; }
metric_of() { metric_on "$(port_of "$1")" "$2"; } # NODE NAME_WITH_LABELS
sock_of() { echo "$W/$1/csi/csi.sock"; }
# kubelet's paths for the volume on node N: the staging dir (made, as kubelet makes it) and the
# pod's target (only its parent made: the plugin makes the target)
staging_of() {
  echo "$W/$1/kubelet/plugins/kubernetes.io/csi/$DRIVER/$(printf '%s' "$VOL" | sha256sum | cut -d' ' -f1)/globalmount"
}
target_of() { echo "$W/$1/kubelet/pods/uid-$1/volumes/kubernetes.io~csi/$VOL/mount"; }
# csi NODE METHOD ARGS...: one CSI call to NODE's socket; prints the reply (JSON, or "ERROR CODE:
# details") and fails unless the call succeeded.
csi() {
  _n=$1
  shift
  /usr/bin/python3 /e2e/py/csi.py "$(sock_of "$_n")" "$@"
}
# csi_code NODE METHOD ARGS...: the call's gRPC status name (OK when it succeeded).
csi_code() {
  _out=$(csi "$@" 2>&1) && { echo OK; return 0; }
  printf '%s' "$_out" | sed -n 's/^ERROR \([A-Z_]*\):.*/\1/p' | head -n 1
}
CTX="c.fsType=ext4 c.replica=2"
lio_acls() { ls "$TARGET_CFG"/iscsi/iqn.2013-05.com.daterainc:*/tpgt_1/acls 2>/dev/null | tr '\n' ' '; }
mounted() { grep -qs " $1 " /proc/mounts; }

# Continuous 64 KiB O_DIRECT writes into $1; each line of $2: "<start cs> <end cs> <rc>".
start_writer() {
  rm -f $W/stop-writer
  (
    i=0
    while [ ! -e $W/stop-writer ]; do
      now_cs
      t0=$NOW_CS
      if dd if=/dev/zero of="$1/stream.bin" bs=64k count=1 seek=$((i % 256)) oflag=direct conv=notrunc 2>/dev/null; then rc=0; else rc=1; fi
      now_cs
      echo "$t0 $NOW_CS $rc" >>"$2"
      i=$((i + 1))
    done
  ) &
  WRITER=$!
}
stop_writer() {
  touch $W/stop-writer
  wait $WRITER || true
}

# --- setup -------------------------------------------------------------------------------------
step_begin setup
start_lio_sim $W 7747 10.99.0.192/26
for n in a b; do
  mkdir -p $W/$n "$(staging_of $n)" "$(dirname "$(target_of $n)")"
  node_iface csi-$n "$(iqn_of $n)"
  ctl=false
  [ $n = a ] && ctl=true
  node_config $W $n /run/datera-csi-$n/agent.sock 7747 csi-$n "$(iqn_of $n)" "$(port_of $n)" $TTL \
    "csi: {enabled: true, endpoint: $(sock_of $n), driver_name: $DRIVER, controller: $ctl, node: true, max_volumes_per_node: 0}"
  start_node_agent $W $n "$(port_of $n)"
  wait_until 10 test -S "$(sock_of $n)" || die "node-$n serves no CSI socket at $(sock_of $n)"
done
step_end

# --- identity ----------------------------------------------------------------------------------
step_begin identity
for n in a b; do
  now_cs
  t0=$NOW_CS
  out=$(csi $n info) || die "GetPluginInfo on node-$n: $out"
  now_cs
  fact "csi GetPluginInfo through python in the guest: $(cs_fmt $((NOW_CS - t0))) s (process start included)"
  case $out in *"\"name\":\"$DRIVER\""*) ;; *) die "GetPluginInfo on node-$n: $out" ;; esac
  out=$(csi $n probe) || die "Probe on node-$n: $out"
  case $out in *'"ready":true'*) ;; *) die "node-$n's Probe is not ready: $out" ;; esac
  out=$(csi $n node-info) || die "NodeGetInfo on node-$n: $out"
  case $out in *"\"node_id\":\"node-$n\""*) ;; *) die "NodeGetInfo on node-$n: $out" ;; esac
done
step_end
check identity

# --- grant -------------------------------------------------------------------------------------
step_begin grant
out=$(csi a create vol=$VOL gib=1 fs=ext4 p.replica=2) || die "CreateVolume: $out"
case $out in *"\"volume_id\":\"$VOL\""*) ;; *) die "CreateVolume answered: $out" ;; esac
code=$(csi_code b stage vol=$VOL fs=ext4 staging="$(staging_of b)" $CTX timeout=30)
[ "$code" = OK ] && die "node-b staged a volume published to no node"
session_of_iface csi-b >/dev/null && die "node-b logged in to a volume published to no node"
fact "csi NodeStageVolume before any ControllerPublishVolume: $code"
# The agents register their initiators at start-up; publish retries as the external-attacher would.
wait_until 20 csi a publish vol=$VOL node=node-a fs=ext4 $CTX ||
  die "ControllerPublishVolume to node-a: $(csi a publish vol=$VOL node=node-a fs=ext4 $CTX)"
[ "$(lio_acls)" = "$(iqn_of a) " ] || die "the LIO ACL is '$(lio_acls)', not node-a alone"
md=$(curl -s "$SIM/_sim/state")
case $md in *'"datera-agent.owner":"node-a"'*) ;; *) die "the ownership record does not name node-a" ;; esac
code=$(csi_code a publish vol=$VOL node=node-b fs=ext4 $CTX)
[ "$code" = FAILED_PRECONDITION ] || die "a publish to node-b while node-a holds it answered $code"
[ "$(lio_acls)" = "$(iqn_of a) " ] || die "a refused publish changed the LIO ACL: '$(lio_acls)'"
step_end
check grant

# --- stage -------------------------------------------------------------------------------------
step_begin stage
SA=$(staging_of a)
TA=$(target_of a)
out=$(csi a stage vol=$VOL fs=ext4 staging="$SA" $CTX) || die "NodeStageVolume on node-a: $out"
out=$(csi a node-publish vol=$VOL fs=ext4 staging="$SA" target="$TA" $CTX) ||
  die "NodePublishVolume on node-a: $out"
step_end
staged=$(awk -v t="$SA" '$2 == t { print $1, $3 }' /proc/mounts)
case $staged in /dev/sd*" ext4") ;; *) die "the staging mount is '$staged', not ext4 on an iSCSI disk" ;; esac
mounted "$TA" || die "the pod's target $TA is not a mount point"
SID=$(session_of_iface csi-a) || die "no session through iface csi-a"
SD=$(blockdev_of_session "$SID") || die "no disk for $SID"
[ "/dev/$SD" = "${staged%% *}" ] || die "staged from ${staged%% *}, the session's disk is /dev/$SD"
uuid=$(curl -s "$SIM/_sim/exports" | sed -n 's/.*"uuid":"\([0-9a-f-]*\)".*/\1/p' | head -n 1)
serial=$(dd if=/sys/block/$SD/device/vpd_pg80 bs=1 skip=4 2>/dev/null | tr -d '\000')
[ "$serial" = "$uuid" ] || die "the disk's serial '$serial' is not the volume uuid '$uuid'"
fact "csi node-a session=$SID disk=$SD serial=$serial"
dd if=/dev/urandom of="$TA/data.bin" bs=1M count=8 2>/dev/null || die "write into the pod's target"
sync
sum=$(sha256sum "$TA/data.bin" | cut -d' ' -f1)
out=$(csi a stats vol=$VOL target="$TA") || die "NodeGetVolumeStats: $out"
fact "csi NodeGetVolumeStats $out"
# One JSON line, keys sorted: the BYTES entry's "used" follows its "unit" (a zero is left out).
case $out in *'"abnormal":true'*) die "NodeGetVolumeStats: the volume is abnormal: $out" ;; esac
case $out in *'"unit":"BYTES","used":"'[1-9]*) ;; *) die "NodeGetVolumeStats shows no bytes used: $out" ;; esac
check stage

# --- failover ----------------------------------------------------------------------------------
step_begin failover
start_writer "$TA" $W/writes.log
sleep 2
out=$(curl -s -X POST -H 'Content-Type: application/json' -d "{\"app_instance\":\"$VOL\",\"to_node\":\"node-2\"}" "$SIM/_sim/failover")
log "failover: $out"
case $out in *node-2*) ;; *) stop_writer; die "the simulator did not fail over: $out" ;; esac
wait_until 30 sh -c "[ \"\$(curl -s http://127.0.0.1:$(port_of a)/metrics | awk '\$1 == \"datera_agent_session_recoveries_total\" {print \$2}')\" = 1 ]" ||
  log "node-a's keeper did not count a recovery within 30 s"
sleep 2
stop_writer
step_end
errors=$(awk '$3 != 0' $W/writes.log | wc -l)
total=$(wc -l <$W/writes.log)
stall=$(awk '{ d = $2 - $1; if (d > m) m = d } END { printf "%d", m }' $W/writes.log)
fact "csi failover writes=$total errors=$errors longest_write_s=$(cs_fmt "$stall")"
[ "$errors" -eq 0 ] || die "$errors of $total writes failed during failover"
[ "$total" -gt 10 ] || die "only $total writes during failover"
[ "$stall" -le 500 ] || die "the longest write stalled $(cs_fmt "$stall") s (more than 5 s)"
[ "$(session_of_iface csi-a)" = "$SID" ] || die "the session changed"
session_logged_in "$SID" || die "$SID is $(session_state "$SID") after failover"
ip netns exec storB ss -Htn state established "sport = :3260" | grep -q . || die "no connection to storB"
rec=$(metric_of a datera_agent_session_recoveries_total)
[ "$rec" = 1 ] || die "node-a's keeper counted '$rec' recoveries, not 1"
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$TA/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "data changed across failover"
check failover

# --- force -------------------------------------------------------------------------------------
step_begin force
SB=$(staging_of b)
TB=$(target_of b)
now_cs
t0=$NOW_CS
out=$(csi a unpublish vol=$VOL node=node-a) || die "ControllerUnpublishVolume from node-a: $out"
out=$(csi a publish vol=$VOL node=node-b fs=ext4 $CTX) || die "ControllerPublishVolume to node-b: $out"
[ "$(lio_acls)" = "$(iqn_of b) " ] || die "the LIO ACL is '$(lio_acls)', not node-b alone"
out=$(csi b stage vol=$VOL fs=ext4 staging="$SB" $CTX) || die "NodeStageVolume on node-b: $out"
out=$(csi b node-publish vol=$VOL fs=ext4 staging="$SB" target="$TB" $CTX) ||
  die "NodePublishVolume on node-b: $out"
now_cs
fact "csi force-detach to node-b's published target: $(cs_fmt $((NOW_CS - t0))) s"
mounted "$TB" || die "node-b's target is not mounted"
# node-a's agent sees the grant gone at its next check; its unmount waits for the I/O the fence
# left stuck, which fails at node-a's replacement_timeout (15 s).
gone() { ! mounted "$TA" && ! mounted "$SA" && ! session_of_iface csi-a >/dev/null; }
wait_until 45 gone || die "node-a did not tear down the volume it lost: $(grep " $W/a/" /proc/mounts | tr '\n' ' ')"
now_cs
step_end
fact "csi node-a torn down $(cs_fmt $((NOW_CS - t0))) s after the force-detach (grant checks every $((TTL / 3)) s, replacement_timeout 15 s)"
[ "$(metric_of a 'datera_agent_fencing_actions_total{kind="self_fenced"}')" = 1 ] || die "node-a's metrics show no self-fencing"
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$TB/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "node-b does not read node-a's data"
check force

# --- release -----------------------------------------------------------------------------------
step_begin release
out=$(csi b node-unpublish vol=$VOL target="$TB") || die "NodeUnpublishVolume on node-b: $out"
out=$(csi b unstage vol=$VOL staging="$SB") || die "NodeUnstageVolume on node-b: $out"
out=$(csi a unpublish vol=$VOL node=node-b) || die "ControllerUnpublishVolume from node-b: $out"
out=$(csi a delete vol=$VOL) || die "DeleteVolume: $out"
step_end
session_of_iface csi-b >/dev/null && die "node-b's session is left"
left=$(grep " $W/" /proc/mounts | grep -v " $W/vols " || true)
[ -z "$left" ] || die "mounts left: $left"
[ -z "$(lio_acls)" ] || die "ACL entries left: $(lio_acls)"
case $(curl -s "$SIM/_sim/exports") in *"\"app_instance\":\"$VOL\""*) die "the app instance is still on the array" ;; esac
check release

# --- migrate -----------------------------------------------------------------------------------
step_begin migrate
MIG=vol-mig
POD=$W/a/kubelet/pods/uid-flex/volumes/datera~iscsi/pv-mig
mkdir -p "$POD"
out=$("$W/a/plugins/datera~iscsi/iscsi" mount "$POD" \
  "{\"volumeID\":\"$MIG\",\"size\":\"1\",\"replica\":\"2\",\"kubernetes.io/fsType\":\"ext4\",\"kubernetes.io/readwrite\":\"rw\",\"kubernetes.io/pvOrVolumeName\":\"pv-mig\"}" 2>&1) ||
  die "FlexVolume mount on node-a: $out"
case $out in *'"Success"'*) ;; *) die "FlexVolume mount on node-a: $out" ;; esac
dd if=/dev/urandom of="$POD/flex.bin" bs=1M count=4 2>/dev/null || die "write through FlexVolume"
sync
msum=$(sha256sum "$POD/flex.bin" | cut -d' ' -f1)
out=$("$W/a/plugins/datera~iscsi/iscsi" unmount "$POD" 2>&1) || die "FlexVolume unmount: $out"
session_of_iface csi-a >/dev/null && die "node-a's FlexVolume session is left after its unmount"
cat >$W/pvs.json <<JSON
{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"PersistentVolume",
 "metadata":{"name":"pv-mig"},
 "spec":{"capacity":{"storage":"1Gi"},"accessModes":["ReadWriteOnce"],"persistentVolumeReclaimPolicy":"Retain",
  "claimRef":{"kind":"PersistentVolumeClaim","namespace":"default","name":"data-mig"},
  "flexVolume":{"driver":"datera/iscsi","fsType":"ext4","options":{"volumeID":"$MIG","replica":"2"}}},
 "status":{"phase":"Bound"}}]}
JSON
datera-agentctl migrate --pvs $W/pvs.json --manifests $W/csi-pvs.json --driver $DRIVER >$W/plan.txt ||
  die "datera-agentctl migrate: $(cat $W/plan.txt)"
grep -q "\"volumeHandle\": *\"$MIG\"" $W/csi-pvs.json || die "the CSI PV does not name $MIG: $(cat $W/csi-pvs.json)"
SMB=$W/b/kubelet/plugins/kubernetes.io/csi/$DRIVER/mig/globalmount
TMB=$W/b/kubelet/pods/uid-mig/volumes/kubernetes.io~csi/pv-mig/mount
mkdir -p "$SMB" "$(dirname "$TMB")"
out=$(csi a publish vol=$MIG node=node-b fs=ext4 $CTX) || die "ControllerPublishVolume of $MIG to node-b: $out"
[ "$(lio_acls)" = "$(iqn_of b) " ] || die "the LIO ACL is '$(lio_acls)', not node-b alone"
out=$(csi b stage vol=$MIG fs=ext4 staging="$SMB" $CTX) || die "NodeStageVolume of $MIG on node-b: $out"
out=$(csi b node-publish vol=$MIG fs=ext4 staging="$SMB" target="$TMB" $CTX) ||
  die "NodePublishVolume of $MIG on node-b: $out"
step_end
grep -q "volume $MIG: .* is blank" $W/b/agent.log && die "node-b made a filesystem on the migrated volume"
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$TMB/flex.bin" | cut -d' ' -f1)" = "$msum" ] || die "the CSI volume does not hold FlexVolume's data"
csi b node-unpublish vol=$MIG target="$TMB" >/dev/null || die "NodeUnpublishVolume of $MIG"
csi b unstage vol=$MIG staging="$SMB" >/dev/null || die "NodeUnstageVolume of $MIG"
csi a unpublish vol=$MIG node=node-b >/dev/null || die "ControllerUnpublishVolume of $MIG"
csi a delete vol=$MIG >/dev/null || die "DeleteVolume of $MIG"
check migrate

# --- snapshot ----------------------------------------------------------------------------------
# A snapshot of a volume node-a writes through open-iscsi and LIO: node-a freezes its ext4 around
# the array's copy (the request and answer go through the app instance's metadata), and the
# volume restored from it on node-b holds the data synced before the call.
step_begin snapshot
SNV=vol-snap
SSA=$W/a/kubelet/plugins/kubernetes.io/csi/$DRIVER/snap/globalmount
TSA=$W/a/kubelet/pods/uid-snap/volumes/kubernetes.io~csi/pv-snap/mount
SRB=$W/b/kubelet/plugins/kubernetes.io/csi/$DRIVER/rest/globalmount
TRB=$W/b/kubelet/pods/uid-rest/volumes/kubernetes.io~csi/pv-rest/mount
mkdir -p "$SSA" "$(dirname "$TSA")" "$SRB" "$(dirname "$TRB")"
out=$(csi a create vol=$SNV gib=1 fs=ext4 p.replica=2) || die "CreateVolume of $SNV: $out"
out=$(csi a publish vol=$SNV node=node-a fs=ext4 $CTX) || die "ControllerPublishVolume of $SNV: $out"
out=$(csi a stage vol=$SNV fs=ext4 staging="$SSA" $CTX) || die "NodeStageVolume of $SNV: $out"
out=$(csi a node-publish vol=$SNV fs=ext4 staging="$SSA" target="$TSA" $CTX) ||
  die "NodePublishVolume of $SNV: $out"
dd if=/dev/urandom of="$TSA/synced.bin" bs=1M count=4 2>/dev/null || die "write into $SNV"
sync
ssum=$(sha256sum "$TSA/synced.bin" | cut -d' ' -f1)
start_writer "$TSA" $W/snap-writes.txt
sleep 1
out=$(csi a snapshot vol=$SNV name=snapshot-e2e) || die "CreateSnapshot of $SNV: $out"
stop_writer
SNAP=$(printf '%s' "$out" | sed -n 's/.*"snapshot_id":"\([^"]*\)".*/\1/p')
[ -n "$SNAP" ] || die "CreateSnapshot answered no snapshot id: $out"
fact "csi snapshot $out"
out=$(csi a create vol=vol-rest gib=1 fs=ext4 p.replica=2 snapshot="$SNAP") ||
  die "CreateVolume from $SNAP: $out"
out=$(csi a publish vol=vol-rest node=node-b fs=ext4 $CTX) || die "ControllerPublishVolume of vol-rest: $out"
out=$(csi b stage vol=vol-rest fs=ext4 staging="$SRB" $CTX) || die "NodeStageVolume of vol-rest: $out"
out=$(csi b node-publish vol=vol-rest fs=ext4 staging="$SRB" target="$TRB" $CTX) ||
  die "NodePublishVolume of vol-rest: $out"
step_end
frozen=$(metric_of a 'datera_agent_filesystem_freezes_total{result="frozen"}')
fact "csi snapshot: node-a froze ${frozen:-0} time(s); writes $(wc -l <$W/snap-writes.txt), failed $(awk '$3 != 0' $W/snap-writes.txt | wc -l)"
[ "${frozen%.*}" -ge 1 ] 2>/dev/null || die "node-a never froze its filesystem for the snapshot"
awk '$3 != 0 { bad = 1 } END { exit bad }' $W/snap-writes.txt || die "writes failed around the snapshot"
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$TRB/synced.bin" | cut -d' ' -f1)" = "$ssum" ] || die "the restored volume does not hold the synced data"
csi b node-unpublish vol=vol-rest target="$TRB" >/dev/null || die "NodeUnpublishVolume of vol-rest"
csi b unstage vol=vol-rest staging="$SRB" >/dev/null || die "NodeUnstageVolume of vol-rest"
csi a unpublish vol=vol-rest node=node-b >/dev/null || die "ControllerUnpublishVolume of vol-rest"
csi a delete vol=vol-rest >/dev/null || die "DeleteVolume of vol-rest"
csi a node-unpublish vol=$SNV target="$TSA" >/dev/null || die "NodeUnpublishVolume of $SNV"
csi a unstage vol=$SNV staging="$SSA" >/dev/null || die "NodeUnstageVolume of $SNV"
csi a unpublish vol=$SNV node=node-a >/dev/null || die "ControllerUnpublishVolume of $SNV"
[ "$(csi_code a delete vol=$SNV)" = FAILED_PRECONDITION ] || die "DeleteVolume of $SNV with a snapshot was not refused"
csi a delete-snapshot snapshot="$SNAP" >/dev/null || die "DeleteSnapshot $SNAP"
csi a delete vol=$SNV >/dev/null || die "DeleteVolume of $SNV"
check snapshot

kill "$PID_a" "$PID_b" "$SIM_PID" 2>/dev/null || true
wait 2>/dev/null || true

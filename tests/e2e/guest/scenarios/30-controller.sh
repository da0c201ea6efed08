#!/bin/sh
# e2e-timeout: 240
#
# Controller mode (attach: true) on a real kernel (issue #6): two agents, node-a and node-b, each
# logging in through its own open-iscsi iface with its own initiator name, against datera-sim's lio
# backend (real LIO node ACLs). node-a's agent also plays the control plane: the calls
# kube-controller-manager makes (attach, isattached, detach) go through node-a's installed shim.
#  grant     before attach no node may log in; attach node-a; node-a runs kubelet's
#            waitforattach, mountdevice and mount and writes checksummed data; node-b is refused
#  force     Kubernetes force-detaches node-a (detach without node-a's unmount) and attaches
#            node-b: LIO lets only node-b in, node-a's agent sees the grant gone and tears down its
#            pod mount, device mount and session; node-b stages and reads node-a's data intact
#  release   node-b's unmount and unmountdevice, then detach: no session, mount or ACL entry left
# ext4 and multipath off, as in 20-handoff: both nodes share this kernel.
set -eu
# shellcheck source=SCRIPTDIR/../lib.sh
. /e2e/lib.sh

W=/tmp/e2e-c
TTL=6
OPTS='{"volumeID":"vol-ctl","size":"1","replica":"2","kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-c"}'
PID_a=
PID_b=

die() { fail_with_logs $W "$@"; }
iqn_of() { echo "iqn.1993-08.org.debian:01:e2e-ctl-$1"; }
pod_of() { echo "$W/$1/kubelet/pods/uid-$1/volumes/datera~iscsi/pv-c"; }
dev_mount_of() { echo "$W/$1/kubelet/plugins/kubernetes.io/flexvolume/datera/iscsi/mounts/pv-c"; }
shim_of() { echo "$W/$1/plugins/datera~iscsi/iscsi"; }
port_of() { case $1 in a) echo 9821 ;; *) echo 9822 ;; esac; }
metric_of() { metric_on "$(port_of "$1")" "$2"; } # NODE NAME_WITH_LABELS
call() { # NODE ARGS...: one FlexVolume call through NODE's shim; fails unless it says Success
  n=$1
  shift
  out=$("$(shim_of "$n")" "$@" 2>&1) || return 1
  case $out in *'"Success"'*) printf '%s' "$out" ;; *) return 1 ;; esac
}
lio_acls() { ls "$TARGET_CFG"/iscsi/iqn.2013-05.com.daterainc:*/tpgt_1/acls 2>/dev/null | tr '\n' ' '; }

# --- setup -------------------------------------------------------------------------------------
step_begin setup
start_lio_sim $W 7737 10.99.0.128/26
for n in a b; do
  mkdir -p $W/$n "$(pod_of $n)" "$(dev_mount_of $n)"
  node_iface ctl-$n "$(iqn_of $n)"
  node_config $W $n /run/datera-ctl-$n/agent.sock 7737 ctl-$n "$(iqn_of $n)" "$(port_of $n)" $TTL \
    "attach: true"
  start_node_agent $W $n "$(port_of $n)"
  wait_until 10 test -x "$(shim_of $n)" || die "node-$n's driver was not installed"
done
case $("$(shim_of a)" init) in *'"attach":true'*) ;; *) die "init does not advertise attach" ;; esac
step_end

# --- grant -------------------------------------------------------------------------------------
step_begin grant
call a waitforattach "" "$OPTS" >/dev/null && die "node-a logged in before any attach"
# The agents register their initiators at start-up; attach retries as the controller would.
wait_until 20 call a attach "$OPTS" node-a >/dev/null || die "attach to node-a failed: $("$(shim_of a)" attach "$OPTS" node-a 2>&1)"
case $(call a isattached "$OPTS" node-a) in *'"attached":true'*) ;; *) die "isattached node-a is not true" ;; esac
[ "$(lio_acls)" = "$(iqn_of a) " ] || die "the LIO ACL is '$(lio_acls)', not node-a alone"
out=$(call a waitforattach "" "$OPTS") || die "node-a waitforattach: $("$(shim_of a)" waitforattach "" "$OPTS" 2>&1)"
dev=$(printf '%s' "$out" | sed -n 's/.*"device":"\([^"]*\)".*/\1/p')
[ -b "$dev" ] || die "waitforattach answered no block device: $out"
call a mountdevice "$(dev_mount_of a)" "$dev" "$OPTS" >/dev/null || die "node-a mountdevice: $("$(shim_of a)" mountdevice "$(dev_mount_of a)" "$dev" "$OPTS" 2>&1)"
call a mount "$(pod_of a)" "$OPTS" >/dev/null || die "node-a mount failed"
dd if=/dev/urandom of="$(pod_of a)/data.bin" bs=1M count=8 2>/dev/null || die "write on node-a"
sync
sum=$(sha256sum "$(pod_of a)/data.bin" | cut -d' ' -f1)
SID_A=$(session_of_iface ctl-a) || die "no session through iface ctl-a"
call b waitforattach "" "$OPTS" >/dev/null && die "node-b logged in to a volume attached to node-a"
session_of_iface ctl-b >/dev/null && die "node-b has a session although refused"
step_end
fact "controller node-a device $dev session $SID_A"
check grant

# --- force -------------------------------------------------------------------------------------
step_begin force
now_cs
t0=$NOW_CS
call a detach pv-c node-a >/dev/null || die "detach of node-a failed"
call a attach "$OPTS" node-b >/dev/null || die "attach to node-b failed"
[ "$(lio_acls)" = "$(iqn_of b) " ] || die "the LIO ACL is '$(lio_acls)', not node-b alone"
out=$(call b waitforattach "" "$OPTS") || die "node-b waitforattach: $("$(shim_of b)" waitforattach "" "$OPTS" 2>&1)"
dev=$(printf '%s' "$out" | sed -n 's/.*"device":"\([^"]*\)".*/\1/p')
call b mountdevice "$(dev_mount_of b)" "$dev" "$OPTS" >/dev/null || die "node-b mountdevice failed"
call b mount "$(pod_of b)" "$OPTS" >/dev/null || die "node-b mount failed"
now_cs
fact "controller force-detach to node-b's pod mount: $(cs_fmt $((NOW_CS - t0))) s"
# node-a's agent sees the grant gone at its next check; its unmount has to wait for the I/O the
# fence left stuck, which fails at node-a's replacement_timeout (15 s).
gone() { ! grep -qs " $(pod_of a) " /proc/mounts && ! grep -qs " $(dev_mount_of a) " /proc/mounts &&
  ! session_of_iface ctl-a >/dev/null; }
wait_until 45 gone || die "node-a did not tear down the volume the controller took: $(grep " $W/a/" /proc/mounts | tr '\n' ' ')"
now_cs
step_end
fact "controller node-a torn down $(cs_fmt $((NOW_CS - t0))) s after the force-detach (grant checks every $((TTL / 3)) s, replacement_timeout 15 s)"
[ "$(metric_of a 'datera_agent_fencing_actions_total{kind="self_fenced"}')" = 1 ] || die "node-a's metrics show no self-fencing"
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$(pod_of b)/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "node-b does not read node-a's data"
check force

# --- release -----------------------------------------------------------------------------------
step_begin release
call b unmount "$(pod_of b)" >/dev/null || die "node-b unmount failed"
call b unmountdevice "$(dev_mount_of b)" >/dev/null || die "node-b unmountdevice failed"
call a detach pv-c node-b >/dev/null || die "detach of node-b failed"
step_end
session_of_iface ctl-b >/dev/null && die "node-b's session is left"
left=$(grep " $W/" /proc/mounts | grep -v " $W/vols " || true)
[ -z "$left" ] || die "mounts left: $left"
[ -z "$(lio_acls)" ] || die "ACL entries left: $(lio_acls)"
case $(call a isattached "$OPTS" node-b) in *'"attached":false'*) ;; *) die "isattached node-b is not false after detach" ;; esac
check release

kill "$PID_a" "$PID_b" "$SIM_PID" 2>/dev/null || true
wait 2>/dev/null || true

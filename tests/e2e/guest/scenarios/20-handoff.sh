#!/bin/sh
# e2e-timeout: 300
#
# Handoff between two "nodes" on a real kernel (issue #6): two agents in one guest, node-a and
# node-b, each logging in through its own open-iscsi iface with its own initiator name, against
# datera-sim's lio backend (real LIO node ACLs). Parts:
#  refuse    node-a mounts and writes checksummed data; node-b's mount is refused naming node-a
#  takeover  node-a's agent is killed (its session and mount stay, as on a node cut off from the
#            cluster); node-b's mount waits out the lease, removes node-a from the LIO ACL, claims
#            and mounts: LIO really ends node-a's session, node-a's writes fail, node-b reads
#            node-a's data intact
#  selffence node-a's agent comes back, finds its lease superseded and tears down its own mount
#            and session
#  release   node-b unmounts: no session, ACL entry or mount left of node-b
# Both nodes share this kernel, so the volume is ext4 (xfs refuses a second mount of one
# filesystem on one kernel) and multipath is off (one dm map name per volume per kernel).
set -eu
# shellcheck source=SCRIPTDIR/../lib.sh
. /e2e/lib.sh

W=/tmp/e2e-h
TTL=6
OPTS='{"volumeID":"vol-handoff","size":"1","replica":"2","kubernetes.io/fsType":"ext4","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-h"}'
PID_a=
PID_b=

die() { fail_with_logs $W "$@"; }
iqn_of() { echo "iqn.1993-08.org.debian:01:e2e-node-$1"; }
pod_of() { echo "$W/$1/kubelet/pods/uid-$1/volumes/datera~iscsi/pv-h"; }
shim_of() { echo "$W/$1/plugins/datera~iscsi/iscsi"; }
port_of() { case $1 in a) echo 9811 ;; *) echo 9812 ;; esac; }
metric_of() { metric_on "$(port_of "$1")" "$2"; } # NODE NAME_WITH_LABELS
start_agent() { start_node_agent $W "$1" "$(port_of "$1")"; }

# --- setup -------------------------------------------------------------------------------------
step_begin setup
start_lio_sim $W 7727 10.99.0.128/26
for n in a b; do
  mkdir -p $W/$n "$(pod_of $n)"
  node_iface node-$n "$(iqn_of $n)"
  node_config $W $n /run/datera-$n/agent.sock 7727 node-$n "$(iqn_of $n)" "$(port_of $n)" $TTL
  start_agent $n
  wait_until 10 test -x "$(shim_of $n)" || die "node-$n's driver was not installed"
done
step_end

# --- refuse ------------------------------------------------------------------------------------
step_begin refuse
out=$("$(shim_of a)" mount "$(pod_of a)" "$OPTS" 2>&1) || die "node-a mount failed: $out"
case $out in *'"Success"'*) ;; *) die "node-a mount answered: $out" ;; esac
dd if=/dev/urandom of="$(pod_of a)/data.bin" bs=1M count=8 2>/dev/null || die "write on node-a"
sync
sum=$(sha256sum "$(pod_of a)/data.bin" | cut -d' ' -f1)
SID_A=$(session_of_iface node-a) || die "no session through iface node-a"
out=$("$(shim_of b)" mount "$(pod_of b)" "$OPTS" 2>&1) && die "node-b's mount succeeded while node-a uses the volume: $out"
case $out in *"in use on node node-a"*) ;; *) die "node-b was not told node-a holds it: $out" ;; esac
step_end
session_of_iface node-b >/dev/null && die "node-b logged in although refused"
check refuse

# --- takeover ----------------------------------------------------------------------------------
step_begin takeover
kill -9 "$PID_a"
wait "$PID_a" 2>/dev/null || true
now_cs
t0=$NOW_CS
out=$("$(shim_of b)" mount "$(pod_of b)" "$OPTS" 2>&1) || die "node-b's takeover mount failed: $out"
now_cs
took=$((NOW_CS - t0))
case $out in *'"Success"'*) ;; *) die "node-b's takeover mount answered: $out" ;; esac
step_end
fact "handoff takeover_s=$(cs_fmt $took) ttl_s=$TTL"
[ "$took" -ge $(((TTL - 1) * 100)) ] || die "node-b took over after $(cs_fmt $took) s, before node-a's lease could expire"
[ "$took" -le $(((TTL + 10) * 100)) ] || die "takeover took $(cs_fmt $took) s (goal: TTL + 10 s)"
acls=$(ls "$TARGET_CFG"/iscsi/iqn.2013-05.com.daterainc:*/tpgt_1/acls 2>/dev/null | tr '\n' ' ')
[ "$acls" = "$(iqn_of b) " ] || die "the LIO ACL is '$acls', not node-b alone"
# LIO ended node-a's session: it fails and can never log in again.
wait_until 15 sh -c "[ \"\$(cat /sys/class/iscsi_session/$SID_A/state 2>/dev/null)\" != LOGGED_IN ]" ||
  die "node-a's session $SID_A is still logged in after the fence"
fact "handoff node-a session $SID_A is $(cat /sys/class/iscsi_session/$SID_A/state 2>/dev/null || echo gone) after the fence"
now_cs
t0=$NOW_CS
if err=$(timeout 60 dd if=/dev/zero of="$(pod_of a)/late.bin" bs=64k count=1 oflag=direct conv=fsync 2>&1); then
  die "node-a could still write after it was fenced"
fi
now_cs
fact "handoff node-a's write after the fence failed after $(cs_fmt $((NOW_CS - t0))) s: $(printf '%s' "$err" | tail -n 1)"
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum "$(pod_of b)/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "node-b does not read node-a's data"
[ "$(metric_of b 'datera_agent_handoffs_total{result="taken_over"}')" = 1 ] || die "node-b's metrics show no takeover"
check takeover

# --- selffence ---------------------------------------------------------------------------------
step_begin selffence
start_agent a
gone() { ! grep -qs " $(pod_of a) " /proc/mounts && ! session_of_iface node-a >/dev/null; }
wait_until 60 gone || die "node-a did not tear down the volume it lost: $(grep " $W/a/" /proc/mounts | tr '\n' ' ') $(session_of_iface node-a || true)"
step_end
[ "$(metric_of a 'datera_agent_fencing_actions_total{kind="self_fenced"}')" = 1 ] || die "node-a's metrics show no self-fencing"
[ "$(sha256sum "$(pod_of b)/data.bin" | cut -d' ' -f1)" = "$sum" ] || die "node-b's data changed"
check selffence

# --- release -----------------------------------------------------------------------------------
step_begin release
out=$("$(shim_of b)" unmount "$(pod_of b)" 2>&1) || die "node-b unmount failed: $out"
case $out in *'"Success"'*) ;; *) die "node-b unmount answered: $out" ;; esac
step_end
session_of_iface node-b >/dev/null && die "node-b's session is left"
left=$(grep " $W/" /proc/mounts | grep -v " $W/vols " || true)
[ -z "$left" ] || die "mounts left: $left"
acls=$(ls "$TARGET_CFG"/iscsi/iqn.2013-05.com.daterainc:*/tpgt_1/acls 2>/dev/null | tr '\n' ' ')
[ -z "$acls" ] || die "ACL entries left: $acls"
check release

kill "$PID_a" "$PID_b" "$SIM_PID" 2>/dev/null || true
wait 2>/dev/null || true

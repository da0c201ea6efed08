#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine (root): build, start datera-sim (the EDF simulator,
# `file` backend) and datera-agent (loop initiator), and drive the real installed FlexVolume driver
# through a pod's life exactly as kubelet would: mount a new volume into a pod dir under a temporary
# kubelet root, write data, unmount, mount again in another pod, read the same data back, unmount.
# Prints what happened on the array, on the host and in the metrics. Leaves nothing behind.
#
# The loop initiator stands in for iSCSI because these machines' kernel has no SCSI; real open-iscsi
# and LIO run in the kernel test tier (tests/e2e, issue #5).
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run as root (it mounts filesystems)" >&2; exit 2; }
tools/setup.sh >/dev/null
BUILD=${BUILD_DIR:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" --target datera-agent datera-flexvolume datera-sim -j"$(nproc)" >/dev/null

WORK=$(mktemp -d /tmp/datera-demo.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port)
METRICS_PORT=$(free_port)
AGENT_PID="" SIM_PID=""
cleanup() {
  [[ -n "$AGENT_PID" ]] && kill -KILL "$AGENT_PID" 2>/dev/null || true
  [[ -n "$SIM_PID" ]] && kill -TERM "$SIM_PID" 2>/dev/null || true
  # Whatever a failed run left: mounts under the work dir, then loop devices on its files.
  findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | xargs -r -n1 umount 2>/dev/null || true
  losetup -l -n -O NAME,BACK-FILE | awk -v w="$WORK/" 'index($2, w) == 1 {print $1}' |
    xargs -r -n1 losetup -d 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
metric() { curl -sS "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E "$1" || true; }

say "starting datera-sim: EDF API on 127.0.0.1:$SIM_PORT, volumes as sparse files in $WORK/array"
echo "demo-password" >"$WORK/array-password"
chmod 600 "$WORK/array-password"
"$BUILD/bin/datera-sim" --listen "127.0.0.1:$SIM_PORT" --state "$WORK/array/state.json" \
  --backend file --file-dir "$WORK/array/volumes" --user admin --password demo-password \
  >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/sim.log" && break; sleep 0.05; done
sed 's/^/  sim| /' "$WORK/sim.log"

IQN="iqn.1993-08.org.debian:01:demo-node"
cat >"$WORK/config.yaml" <<YAML
node_name: demo-node
socket_path: $WORK/run/agent.sock
plugin_dir: $WORK/plugins
kubelet_root: $WORK/kubelet
state_dir: $WORK/state
metrics: {listen: "127.0.0.1:$METRICS_PORT"}
backend: {server: "127.0.0.1:$SIM_PORT", username: admin, password_file: $WORK/array-password}
initiator: {kind: loop, iqn: "$IQN"}
YAML

say "starting datera-agent ($("$BUILD/bin/datera-agent" --version))"
"$BUILD/bin/datera-agent" --config "$WORK/config.yaml" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sS "http://127.0.0.1:$METRICS_PORT/readyz"; echo
sed 's/^/  agent| /' "$WORK/agent.log"

SHIM="$WORK/plugins/datera~iscsi/iscsi"
OPTS='{"volumeID":"demo-vol","size":"2","replica":"3","kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-demo","kubernetes.io/pod.name":"writer"}'
POD1="$WORK/kubelet/pods/1111-writer/volumes/datera~iscsi/pv-demo"
POD2="$WORK/kubelet/pods/2222-reader/volumes/datera~iscsi/pv-demo"
mkdir -p "$POD1" "$POD2"   # kubelet makes the pod dir before it calls mount

say "kubelet: iscsi init"
"$SHIM" init; echo

say "kubelet: iscsi mount $POD1 '<options>'   (a new volume: created on the array, ACL, login, mkfs, mount)"
time "$SHIM" mount "$POD1" "$OPTS"; echo
findmnt -rn -o TARGET,SOURCE,FSTYPE,OPTIONS | grep "$WORK" | sed "s|$WORK|<work>|g; s/^/  mount| /"
curl -sS "http://127.0.0.1:$SIM_PORT/_sim/exports" |
  python3 -c 'import json,sys; [print("  array| %s uuid=%s online=%s acl=%s" % (e["app_instance"], e["uuid"], e["online"], e["acl"])) for e in json.load(sys.stdin)["exports"]]'

say "the pod writes data"
date -u +"written at %FT%TZ by pod writer" | tee "$POD1/hello.txt"
dd if=/dev/urandom of="$POD1/blob" bs=1M count=8 status=none
sha256sum "$POD1/blob" | awk '{print "  sha256 " $1}' | tee "$WORK/blob.sha"
sync

say "kubelet: iscsi unmount $POD1   (no options: the agent's journal knows the volume)"
"$SHIM" unmount "$POD1"; echo
echo "  mounts left: $(findmnt -rn -o TARGET | grep -c "$WORK" || true)   loop devices left: $(losetup -l -n -O BACK-FILE | grep -c "$WORK" || true)"

say "the pod moves: iscsi mount $POD2 '<options>'  (existing volume: no mkfs)"
"$SHIM" mount "$POD2" "${OPTS/writer/reader}"; echo
cat "$POD2/hello.txt"
sha256sum "$POD2/blob" | awk '{print "  sha256 " $1}' >"$WORK/blob2.sha"
if cmp -s "$WORK/blob.sha" "$WORK/blob2.sha"; then echo "  data intact: same sha256"; else echo "  DATA MISMATCH"; exit 1; fi

say "agent view:  curl --unix-socket <work>/run/agent.sock http://agent/v1/volumes"
curl -sS --unix-socket "$WORK/run/agent.sock" http://agent/v1/volumes | python3 -m json.tool | sed "s|$WORK|<work>|g"

say "kubelet: iscsi unmount $POD2"
"$SHIM" unmount "$POD2"; echo

say "the array's ACL change log (GET /_sim/acl_log)"
curl -sS "http://127.0.0.1:$SIM_PORT/_sim/acl_log" |
  python3 -c 'import json,sys; [print("  acl| %-6s %s %s" % (e["op"], e["app_instance"], e["initiator"])) for e in json.load(sys.stdin)["entries"]]'

say "metrics that moved (curl http://127.0.0.1:$METRICS_PORT/metrics)"
metric '^datera_agent_(volume_operations_total|volumes\{|volume_pods|flexvolume_requests_total\{command="(mount|unmount)")'
metric '^datera_agent_volume_step_duration_seconds_(sum|count)\{operation="mount"'
metric '^datera_agent_backend_requests_total' | head -12

say "what the agent logged"
grep -E "\[(volume|initiator|edf)\]" "$WORK/agent.log" | sed "s|$WORK|<work>|g; s/^/  agent| /"

say "SIGTERM: drain and exit 0"
kill -TERM "$AGENT_PID"
set +e
wait "$AGENT_PID"
rc=$?
set -e
AGENT_PID=""
echo "  agent exit=$rc"
echo "  mounts left: $(findmnt -rn -o TARGET | grep -c "$WORK" || true)   loop devices left: $(losetup -l -n -O BACK-FILE | grep -c "$WORK" || true)"
exit "$rc"

#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as far as the agent goes today: build, start the
# agent with a local configuration in a temp tree, watch it install the FlexVolume driver into a
# local plugin dir, call the installed driver as kubelet would, read the API and the metrics, and
# stop it with SIGTERM. Volume attach/mount arrives with the volume manager (issue #4).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

tools/setup.sh >/dev/null
BUILD=${BUILD_DIR:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" --target datera-agent datera-flexvolume -j"$(nproc)" >/dev/null

WORK=$(mktemp -d /tmp/datera-demo.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AGENT_PID=""
cleanup() {
  [[ -n "$AGENT_PID" ]] && kill -KILL "$AGENT_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/config.yaml" <<YAML
node_name: demo-node
socket_path: $WORK/run/agent.sock
plugin_dir: $WORK/plugins
kubelet_root: $WORK/kubelet
state_dir: $WORK/state
metrics: {listen: "127.0.0.1:$PORT"}
YAML

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting datera-agent ($("$BUILD/bin/datera-agent" --version))"
"$BUILD/bin/datera-agent" --config "$WORK/config.yaml" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sS "http://127.0.0.1:$PORT/readyz"; echo
sed 's/^/  agent| /' "$WORK/agent.log"

SHIM="$WORK/plugins/datera~iscsi/iscsi"
say "driver installed where kubelet looks for it"
ls -la "$WORK/plugins/datera~iscsi"
cat "$WORK/plugins/datera~iscsi/.datera-agent.json"

say "kubelet's probe:  iscsi init   (answered locally, never needs the agent)"
"$SHIM" init; echo "  exit=$?"

say "a call through the agent's socket:  iscsi getvolumename"
"$SHIM" getvolumename '{"kubernetes.io/pvOrVolumeName":"pv-demo","volumeID":"vol-demo"}'; echo "  exit=$?"

say "mount: the volume manager is not in this version, so the answer is an honest Failure"
set +e
"$SHIM" mount "$WORK/kubelet/pods/uid-1/volumes/datera~iscsi/pv-demo" '{"volumeID":"vol-demo","kubernetes.io/fsType":"xfs"}'
echo "  exit=$?"
set -e

say "agent status over the Unix socket:  curl --unix-socket $WORK/run/agent.sock http://agent/v1/status"
curl -sS --unix-socket "$WORK/run/agent.sock" http://agent/v1/status | python3 -m json.tool

say "metrics scrape (selected):  curl http://127.0.0.1:$PORT/metrics"
curl -sS "http://127.0.0.1:$PORT/metrics" |
  grep -E '^datera_agent_(build_info|flexvolume_requests_total|driver_(ready|install_total|self_test_total)|http_requests_total|process_(resident_memory_bytes|open_fds))' || true

say "SIGTERM: drain, exit 0, leave the driver in place"
kill -TERM "$AGENT_PID"
set +e
wait "$AGENT_PID"
rc=$?
set -e
AGENT_PID=""
echo "  agent exit=$rc"
tail -n 3 "$WORK/agent.log" | sed 's/^/  agent| /'
ls "$WORK/plugins/datera~iscsi/iscsi" >/dev/null && echo "  driver still installed: $SHIM"
exit "$rc"

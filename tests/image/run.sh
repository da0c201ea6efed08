#!/usr/bin/env bash
# The image tier: builds the runtime image from BUILD_DIR/bin on a cached mmdebstrap base, checks
# the image, then runs the agent in it the way kubelet runs daemonset/daemonset.yaml's pod and
# drives the installed FlexVolume driver on the host as kubelet would (tests/image/README.md).
#
#   tests/image/run.sh BUILD_DIR
#
# BUILD_DIR/bin must hold datera-agent, datera-flexvolume, datera-agentctl and datera-sim.
# Environment:
#   DATERA_IMAGE_MANIFESTS  dir with daemonset.yaml and configmap.yaml (default: the repo's
#                           daemonset/; a mutated copy shows that the test catches a defect)
#   DATERA_IMAGE_CACHE      base tarballs and podman's config (default /var/cache/datera-image)
#   DATERA_IMAGE_KEEP=1     keep the scratch root and the logs on failure (mounts are undone)
#
# Exit status: 0 = every check passed; 77 (after a loud SKIP line) = podman cannot run here;
# 1 = a check failed (the FAIL line names it).
# Runs on the host, as root. The kubelet side is emulated under a private scratch root in /tmp:
# the host's /var/lib/kubelet, plugin dir, /etc/iscsi are never touched; /dev and /sys are the
# host's (the agent attaches loop devices). Ports 9808 and 9809 (the manifest's) must be free.
set -eu -o pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD_DIR=$(cd "$1" && pwd)
BIN=$BUILD_DIR/bin
MANIFESTS=${DATERA_IMAGE_MANIFESTS:-$REPO/daemonset}
# shellcheck disable=SC2034 # read by lib.sh
IMG_TAG="image-tier"
# shellcheck source=SCRIPTDIR/../../tools/image/lib.sh
. "$REPO/tools/image/lib.sh"

# kubelet's own defaults, not the manifest's: the driver must appear where kubelet looks.
KUBELET_ROOT=/var/lib/kubelet
KUBELET_PLUGIN_DIR=/usr/libexec/kubernetes/kubelet-plugins/volume/exec
NODE="image-test-node"
IQN=iqn.1993-08.org.debian:01:image-test-node

say() { printf '== image: %s\n' "$*"; }
ok() { printf 'ok   %s\n' "$*"; }
fail() {
  printf 'FAIL %s\n' "$*" >&2
  exit 1
}
skip() {
  echo "SKIP image tier: $*" >&2
  exit 77
}
T0=$(ms)
declare -A T

[ "$(id -u)" = 0 ] || fail "run as root (podman as root, mounts, loop devices)"
for b in datera-agent datera-flexvolume datera-agentctl datera-sim; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b is missing (build it first)"
done
for f in daemonset.yaml configmap.yaml; do
  [ -f "$MANIFESTS/$f" ] || fail "$MANIFESTS/$f is missing"
done

# --- 1. tools; podman must run a container, else a loud skip ----------------------------------
say "tools"
t=$(ms)
if ! img_need_podman; then
  case " ${IMG_MISSING[*]} " in
    *" podman "* | *" runc "* | *" conmon "*)
      skip "podman cannot be installed (missing: ${IMG_MISSING[*]})" ;;
  esac
  fail "cannot install ${IMG_MISSING[*]}"
fi
img_need /usr/lib/python3/dist-packages/yaml/__init__.py:python3-yaml /usr/bin/curl:curl \
  /usr/bin/strip:binutils /usr/bin/findmnt:util-linux /usr/sbin/losetup:mount \
  /usr/bin/ss:iproute2 || fail "cannot install ${IMG_MISSING[*]}"
img_podman_conf
if ! info=$(podman info --format '{{.Store.GraphDriverName}} {{.Host.CgroupsVersion}}' 2>&1); then
  skip "podman info fails: $info"
fi
T[tools]=$(($(ms) - t))

say "base image (tools/image/base.sh slim)"
t=$(ms)
BASE=$("$REPO/tools/image/base.sh" slim) || fail "tools/image/base.sh failed"
T[base]=$(($(ms) - t))
if ! out=$(podman run --rm --network none "$BASE" true 2>&1); then
  skip "podman cannot run a container ($info) with runc: $out"
fi

# A run killed before its trap (ctest's timeout) leaves its pod running on the manifest's ports.
for c in $(podman ps -a --format '{{.Names}}' --filter name='^datera-image-test-'); do
  pid=${c#datera-image-test-}
  pid=${pid%%-*}
  if ! kill -0 "$pid" 2>/dev/null; then
    say "removing $c, left by run $pid"
    podman rm -f -t 0 "$c" >/dev/null || fail "cannot remove the stale container $c"
  fi
done

# --- scratch root, and cleanup of everything this run makes -----------------------------------
ROOT=$(mktemp -d /tmp/datera-image-test.XXXXXX)
W=$ROOT/work
mkdir -p "$W"
CTRS=()
SIM_PID=""
SHIM_LOOP_PID=""
TEST_IMAGES=()
cleanup() {
  local rc=$?
  set +e
  [ -n "$SHIM_LOOP_PID" ] && kill "$SHIM_LOOP_PID" 2>/dev/null
  for c in "${CTRS[@]}"; do
    if [ "$rc" != 0 ] && podman container exists "$c" 2>/dev/null; then
      echo "--- podman logs $c (last 40 lines)" >&2
      podman logs --tail 40 "$c" >&2 2>&1
    fi
    podman rm -f -t 0 "$c" >/dev/null 2>&1
  done
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  # Mounts under the scratch root, deepest first (the shared binds of step 3 included).
  local m
  for _ in 1 2 3; do
    findmnt -rn -o TARGET | awk -v r="$ROOT/" 'index($0, r) == 1' | sort -r |
      while IFS= read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  done
  losetup -l -n -O NAME,BACK-FILE | awk -v r="$ROOT/" 'index($2, r) == 1 {print $1}' |
    while IFS= read -r m; do losetup -d "$m"; done
  for i in "${TEST_IMAGES[@]}"; do podman rmi -f "$i" >/dev/null 2>&1; done
  if [ "$rc" != 0 ] && [ "${DATERA_IMAGE_KEEP:-0}" = 1 ]; then
    echo "image: kept $ROOT" >&2
  elif grep -q "^$ROOT/" <<<"$(findmnt -rn -o TARGET)"; then
    echo "image: mounts left under $ROOT; not removing it" >&2
  else
    rm -rf "$ROOT"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 2. the runtime image and its checks ------------------------------------------------------
say "runtime image (tools/image/build-runtime.sh $BIN)"
t=$(ms)
IMAGE=$("$REPO/tools/image/build-runtime.sh" "$BIN") || fail "tools/image/build-runtime.sh failed"
T[image]=$(($(ms) - t))
VLINE=$("$BIN/datera-agent" --version)
read -r _ VERSION _ <<<"$VLINE"
label() { podman image inspect --format "{{index .Config.Labels \"$2\"}}" "$1"; }

[ "$(podman run --rm --network none "$IMAGE" --version)" = "$VLINE" ] ||
  fail "the image's datera-agent --version is not the build's '$VLINE'"
ok "image runs: $VLINE"
for k in title version revision source licenses created; do
  [ -n "$(label "$IMAGE" "org.opencontainers.image.$k")" ] || fail "label org.opencontainers.image.$k is empty"
done
[ "$(label "$IMAGE" org.opencontainers.image.title)" = datera-agent ] || fail "label title is not datera-agent"
[ "$(label "$IMAGE" org.opencontainers.image.version)" = "$VERSION" ] ||
  fail "label version '$(label "$IMAGE" org.opencontainers.image.version)' is not the binary's $VERSION"
commit=${VLINE#*(}
commit=${commit%%,*}
case "$(label "$IMAGE" org.opencontainers.image.revision)" in
  "$commit"*) ;;
  *) fail "label revision '$(label "$IMAGE" org.opencontainers.image.revision)' is not the binary's $commit" ;;
esac
ok "OCI labels: title, version $VERSION, revision $commit..., source, licenses, created"
[ "$(podman image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")" = '["/usr/local/bin/datera-agent"]' ] ||
  fail "ENTRYPOINT is not the agent (the DaemonSet's args replace CMD only)"
[ "$(podman image inspect --format '{{.Config.User}}{{json .Config.Volumes}}{{json .Config.ExposedPorts}}' "$IMAGE")" = 'nullnull' ] ||
  fail "the image declares a USER, VOLUMEs or EXPOSEd ports the DaemonSet does not use"
ok "ENTRYPOINT datera-agent; no USER, VOLUME or EXPOSE"
# The manifest's image: is this build (same name resolution as podman run).
[ "$(podman image inspect --format '{{.Id}}' "$(sed -n 's/^ *image: *//p' "$MANIFESTS/daemonset.yaml")")" = \
  "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ] ||
  fail "daemonset.yaml's image: does not name $IMAGE (version $VERSION)"
ok "daemonset.yaml's image names this build"

mnt=$(podman image mount "$IMAGE") || fail "podman image mount $IMAGE failed"
for b in datera-agent datera-flexvolume datera-agentctl; do
  sections=$(readelf -S --wide "$mnt/usr/local/bin/$b") || fail "readelf -S $b failed"
  if grep -qE '\.(symtab|debug_info)' <<<"$sections"; then
    podman image unmount "$IMAGE" >/dev/null
    fail "/usr/local/bin/$b in the image is not stripped"
  fi
done
dynamic=$(readelf -d "$mnt/usr/local/bin/datera-flexvolume") || fail "readelf -d datera-flexvolume failed"
grep -q NEEDED <<<"$dynamic" &&
  { podman image unmount "$IMAGE" >/dev/null; fail "datera-flexvolume is not static (kubelet runs it on the host)"; }
lists=$(find "$mnt/var/lib/apt/lists" -type f ! -name lock | wc -l)
debs=$(find "$mnt/var/cache/apt" -name '*.deb' -o -name '*.bin' | wc -l)
podman image unmount "$IMAGE" >/dev/null
if [ "$lists" != 0 ] || [ "$debs" != 0 ]; then fail "apt lists ($lists) or caches ($debs) left in the image"; fi
ok "binaries stripped, the shim static, no apt lists or caches"

# Every tool the agent runs is there and its libraries resolve; no build tools came along.
podman run --rm --network none --entrypoint /bin/sh "$IMAGE" -ec '
  for t in iscsiadm dmsetup mkfs.xfs xfs_repair mkfs.ext4 fsck.ext4 e2fsck blkid mount umount findmnt modprobe; do
    command -v "$t" >/dev/null || { echo "missing tool: $t"; exit 1; }
  done
  for b in /usr/local/bin/datera-agent /usr/local/bin/datera-agentctl; do
    if ldd "$b" | grep "not found"; then echo "unresolved libraries of $b"; exit 1; fi
  done
  for t in gcc cc g++ make cmake git ssh; do
    if command -v "$t" >/dev/null; then echo "build tool in the runtime image: $t"; exit 1; fi
  done' || fail "runtime tools/libraries check in the image (see the line above)"
ok "iscsiadm dmsetup mkfs.xfs xfs_repair mkfs.ext4 fsck.ext4 blkid mount modprobe present; ldd clean; no compilers"
# The two recipes install the same runtime packages.
pkgs() { sed -n '/^FROM debian:12-slim\|^FROM \${BASE}/,$p' "$1" | sed -n '/apt-get install/,/&& rm/p' |
  tr -s ' \134' '\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install|rm|y)$' | sort; }
[ "$(pkgs "$REPO/daemonset/Containerfile.runtime")" = "$(pkgs "$REPO/daemonset/Dockerfile")" ] ||
  fail "daemonset/Dockerfile and Containerfile.runtime install different runtime packages: $(diff <(pkgs "$REPO/daemonset/Containerfile.runtime") <(pkgs "$REPO/daemonset/Dockerfile") | tr '\n' ' ')"
ok "Dockerfile and Containerfile.runtime: the same $(pkgs "$REPO/daemonset/Dockerfile" | wc -l) runtime packages"
T[checks]=$(($(ms) - t - T[image]))

# --- 3. the node: kubelet's dirs, datera-sim, hostPaths from the manifest -----------------------
say "node: scratch root $ROOT"
t=$(ms)
SCN=$(ms)
mkdir -p "$ROOT$KUBELET_ROOT" "$ROOT$KUBELET_PLUGIN_DIR"   # kubelet made both at its start
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port)
SIM_PASSWORD="image-test-password"
mkdir -p "$ROOT/array/volumes"
"$BIN/datera-sim" --listen "127.0.0.1:$SIM_PORT" --state "$ROOT/array/state.json" --backend file \
  --file-dir "$ROOT/array/volumes" --user admin --password "$SIM_PASSWORD" >"$W/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$W/sim.log" && break; sleep 0.05; done
grep -q "listening on" "$W/sim.log" || fail "datera-sim did not start: $(tail -n 5 "$W/sim.log")"

/usr/bin/python3 "$HERE/manifest.py" "$MANIFESTS/daemonset.yaml" "$MANIFESTS/configmap.yaml" "$ROOT" \
  "$NODE" "127.0.0.1:$SIM_PORT" sim-password "$IQN" "$W/pod.sh" ||
  fail "tests/image/manifest.py could not map the manifests (see above)"
# shellcheck source=/dev/null
. "$W/pod.sh"
printf '%s\n' "$SIM_PASSWORD" >"$CONFIG_HOST_DIR/sim-password"
chmod 600 "$CONFIG_HOST_DIR/sim-password"

# kubelet's hostPath types: Directory must exist, DirectoryOrCreate is made (0755).
for row in "${MOUNT_ROWS[@]}"; do
  IFS='|' read -r name kind host ctr rw mode type <<<"$row"
  case "$type" in
    Directory) [ -d "$host" ] || { [ "$kind" = kernel ] && mkdir -p "$host"; } ||
      fail "hostPath $host of volume $name (type Directory) does not exist on the node" ;;
    DirectoryOrCreate) mkdir -p "$host" && chmod 0755 "$host" ;;
  esac
done
# Bidirectional needs a shared mount on the host (systemd makes / shared; here / is private).
for d in "${SHARED_DIRS[@]}"; do
  mount --bind "$d" "$d" || fail "cannot bind-mount $d on itself"
  mount --make-shared "$d" || fail "cannot make $d a shared mount"
done
# The loop initiator opens the array's volume files: the test's stand-in for the iSCSI target
# is mounted at its own path (the one mount not from the manifest).
EXTRA=(-v "$ROOT/array:$ROOT/array:rprivate")
for port in "$METRICS_PORT" "${LIVENESS_URL##*:}" "${READINESS_URL##*:}"; do
  port=${port%%/*}
  if [ -n "$(ss -ltnH "sport = :$port")" ]; then
    fail "port $port (daemonset.yaml's) is in use on this host: $(ss -ltnpH "sport = :$port" | head -n 1)"
  fi
done
SHIM=$ROOT$KUBELET_PLUGIN_DIR/datera~iscsi/iscsi
INFO=$ROOT$KUBELET_PLUGIN_DIR/datera~iscsi/.datera-agent.json
SOCK=$CFG_SOCKET_PATH
T[node]=$(($(ms) - t))

# Starts the pod's container from image $2 as container $1; waits for the readiness probe.
start_pod() {
  local name=$1 image=$2 i code
  CTRS+=("$name")
  podman run -d --name "$name" "${PODMAN_ARGS[@]}" "${EXTRA[@]}" "$image" "${ENTRY_ARGS[@]}" >/dev/null ||
    fail "podman run of $image as the DaemonSet's pod failed"
  for i in $(seq 1 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$READINESS_URL" || true)
    [ "$code" = 200 ] && return 0
    [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] ||
      fail "$name exited before it was ready (exit $(podman inspect --format '{{.State.ExitCode}}' "$name"))"
    sleep 0.1
  done
  fail "$name not ready after 30 s: readiness probe $READINESS_URL answers $code"
}
flex() { # kubelet's call: the installed driver, a bare environment, JSON on stdout
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$SHIM" "$@"
}
flex_ok() { # $1 = what, rest = args
  local what=$1 out
  shift
  out=$(flex "$@") || true
  [ "$(printf '%s' "$out" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin).get("status"))' 2>/dev/null)" = Success ] ||
    fail "kubelet's '$what' through the installed driver: $out"
}
status_field() { # $1 = python expression on the /v1/status JSON `s`
  curl -sS --unix-socket "$SOCK" http://agent/v1/status |
    /usr/bin/python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"
}

# --- 4. the pod ------------------------------------------------------------------------------
say "pod A: ${PODMAN_ARGS[*]} ${EXTRA[*]} $IMAGE ${ENTRY_ARGS[*]}"
t=$(ms)
A=datera-image-test-$$-a
start_pod "$A" "$IMAGE"
T[start_a]=$(($(ms) - t))
ok "readiness probe $READINESS_URL: 200 after $(secs "${T[start_a]}")s"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$LIVENESS_URL")" = 200 ] || fail "liveness probe $LIVENESS_URL is not 200"
ok "liveness probe $LIVENESS_URL: 200"
metrics=$(curl -fsS "$METRICS_URL") || fail "metrics port: GET $METRICS_URL failed"
grep -q '^datera_agent_build_info' <<<"$metrics" || fail "no datera_agent_build_info at $METRICS_URL"
ok "metrics port $METRICS_PORT (container port 'metrics') serves /metrics"
[ "$(status_field 's["node"]')" = "$NODE" ] || fail "the agent's node is not NODE_NAME=$NODE ($(status_field 's["node"]'))"
ok "NODE_NAME from the pod's env: node $NODE"
# hostNetwork, hostPID, privileged: the container's namespaces and capabilities.
ns_same() { [ "$(podman exec "$A" readlink "/proc/self/ns/$1")" = "$(readlink "/proc/self/ns/$1")" ]; }
if [ "$HOST_NETWORK" = 1 ]; then ns_same net || fail "hostNetwork: the container is not in the host's network namespace"; fi
if [ "$HOST_PID" = 1 ]; then ns_same pid || fail "hostPID: the container is not in the host's PID namespace"; fi
if [ "$PRIVILEGED" = 1 ]; then
  [ "$(podman exec "$A" awk '/^CapEff/ {print $2}' /proc/self/status)" = "$(awk '/^CapEff/ {print $2}' /proc/self/status)" ] ||
    fail "privileged: the container's effective capabilities are not the host root's"
fi
ok "host network $HOST_NETWORK, host PID $HOST_PID, privileged $PRIVILEGED (namespaces and CapEff as the host's)"

# Every volume of the manifest, as mounted in the running container.
for row in "${MOUNT_ROWS[@]}"; do
  IFS='|' read -r name kind host ctr rw mode type <<<"$row"
  what="volume $name ($host -> $ctr, $rw, $mode)"
  # The same directory on both sides (device and inode).
  [ "$(podman exec "$A" stat -c '%d %i' "$ctr")" = "$(stat -c '%d %i' "$host")" ] ||
    fail "$what: the container's $ctr is not the host's $host"
  opts=$(podman exec "$A" findmnt -n -o OPTIONS,PROPAGATION --mountpoint "$ctr") ||
    fail "$what: $ctr is not a mount point in the container"
  case "$rw,$opts" in
    ro,ro,* | ro,*,ro,* | rw,rw,* | rw,*,rw,*) ;;
    *) fail "$what: mounted '$opts'" ;;
  esac
  if [ "$rw" = ro ]; then
    if podman exec "$A" touch "$ctr/.image-test-write" 2>/dev/null; then fail "$what: writable in the container"; fi
    ok "$what: same dir, read-only"
    continue
  fi
  if [ "$kind" = kernel ]; then
    ok "$what: same dir, $(echo "$opts" | awk '{print $2}') (the host's own: no mount is tried here)"
    continue
  fi
  # Propagation, both ways: a mount made in the container reaches the host iff Bidirectional.
  probe=$ctr/.image-test-mnt
  podman exec "$A" sh -ec "mkdir -p '$probe' && mount -t tmpfs image-test '$probe'" ||
    fail "$what: cannot mount in the container"
  seen=no
  findmnt -rn --mountpoint "$host/.image-test-mnt" >/dev/null && seen=yes
  podman exec "$A" sh -ec "umount '$probe' && rmdir '$probe'" || fail "$what: cannot unmount in the container"
  case "$mode,$seen" in
    Bidirectional,yes) ;;
    Bidirectional,no) fail "$what: a mount made in the container does not reach the host" ;;
    *,yes) fail "$what: a mount made in the container reaches the host (mode $mode)" ;;
  esac
  if findmnt -rn --mountpoint "$host/.image-test-mnt" >/dev/null; then fail "$what: the container's umount did not reach the host"; fi
  ok "$what: same dir, read-write, a container mount $([ "$seen" = yes ] && echo reaches || echo "stays off") the host"
done
cmp -s <(podman exec "$A" cat "$CONFIG_CTR_FILE") "$CONFIG_HOST_DIR/${CONFIG_CTR_FILE##*/}" ||
  fail "the container's $CONFIG_CTR_FILE is not the ConfigMap's file"
ok "config from the mounted ConfigMap file $CONFIG_CTR_FILE"

# --- 5. kubelet on the host ------------------------------------------------------------------
say "kubelet: the driver at the host's plugin dir; init, mount"
t=$(ms)
if [ ! -x "$SHIM" ] || [ ! -f "$INFO" ]; then
  fail "the driver did not appear at the host's $ROOT$KUBELET_PLUGIN_DIR/datera~iscsi"
fi
[ -S "$SOCK" ] || fail "the agent's socket $SOCK is not on the host"
info_version() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent_version"])' "$INFO"; }
[ "$(info_version)" = "$VERSION" ] || fail "installed driver says agent_version $(info_version), not $VERSION"
ok "driver installed on the host: $SHIM (agent_version $VERSION)"
flex_ok init init
ok "init through the installed driver"
POD1=$ROOT$KUBELET_ROOT/pods/1111-aaaa/volumes/datera~iscsi/pv-image
mkdir -p "$POD1"
OPTS='{"volumeID":"image-vol","size":"1","replica":"1","kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-image","kubernetes.io/pod.name":"writer","kubernetes.io/pod.namespace":"default","kubernetes.io/pod.uid":"1111-aaaa"}'
flex_ok "mount $POD1" mount "$POD1" "$OPTS"
src=$(findmnt -rn -o SOURCE,FSTYPE --mountpoint "$POD1") ||
  fail "the pod's mount $POD1 is not visible on the host (mount propagation of volume kubelet)"
ok "mount through the installed driver; the host sees $POD1 ($src)"
staging=$(grep -c "^$CFG_STATE_DIR/" <<<"$(findmnt -rn -o TARGET)" || true)
[ "$staging" -ge 1 ] || fail "no staging mount of the agent under $CFG_STATE_DIR reached the host"
ok "the staging mount under the state dir reached the host ($staging)"
date -u +"written at %FT%TZ through the host" >"$POD1/hello.txt"
dd if=/dev/urandom of="$POD1/blob" bs=1M count=4 status=none
sync
SUM=$(sha256sum <"$POD1/blob")
T[mount]=$(($(ms) - t))

# --- 6. SIGTERM --------------------------------------------------------------------------------
say "podman stop -t $GRACE (SIGTERM, the pod's grace period)"
t=$(ms)
shim_inode=$(stat -c %i "$SHIM")
podman stop -t "$GRACE" "$A" >/dev/null || fail "podman stop $A failed"
[ "$(podman inspect --format '{{.State.ExitCode}}' "$A")" = 0 ] ||
  fail "the agent exited $(podman inspect --format '{{.State.ExitCode}}' "$A") on SIGTERM, not 0"
T[stop]=$(($(ms) - t))
ok "agent exited 0 in $(secs "${T[stop]}")s"
if [ ! -x "$SHIM" ] || [ "$(stat -c %i "$SHIM")" != "$shim_inode" ]; then fail "the driver did not stay after SIGTERM"; fi
findmnt -rn --mountpoint "$POD1" >/dev/null || fail "the pod's mount $POD1 went with the container"
[ "$(sha256sum <"$POD1/blob")" = "$SUM" ] || fail "the pod's data changed after SIGTERM"
ok "driver, the pod's mount and its data stay after the container is gone"
out=$(flex mount "$ROOT$KUBELET_ROOT/pods/2222/volumes/datera~iscsi/pv-x" "$OPTS" || true)
case "$out" in
  *'"status":"Failure"'*) ;;
  *) fail "with no agent, the driver answered: $out" ;;
esac
case "$out" in
  *"$SOCK"*) ok "with no agent, the driver answers Failure naming $SOCK (kubelet retries)" ;;
  *) fail "with no agent, the driver answered: $out" ;;
esac
podman rm "$A" >/dev/null

# --- 7. the new version takes over ------------------------------------------------------------
say "image v2: a different version string"
t=$(ms)
# Same-length version in the binaries' read-only data (the image a new release would be); the
# binaries are otherwise these.
V2=$(printf '%s' "$VERSION" | sed 's/[0-9]$//')$(((${VERSION: -1} + 1) % 10))
mkdir -p "$W/bin2"
strip --strip-unneeded -o "$W/bin2/datera-agentctl" "$BIN/datera-agentctl"  # has no version string
for b in datera-agent datera-flexvolume; do
  strip --strip-unneeded -o "$W/bin2/$b" "$BIN/$b"
  /usr/bin/python3 - "$W/bin2/$b" "$VERSION" "$V2" <<'PY' || fail "cannot set version $V2 in $b"
import sys
path, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
data = open(path, "rb").read()
n = data.count(b"\0" + old + b"\0")
if n != 1 or len(old) != len(new):
    sys.exit(f"{path}: {n} NUL-delimited '{old.decode()}' (need exactly one)")
open(path, "wb").write(data.replace(b"\0" + old + b"\0", b"\0" + new + b"\0"))
PY
done
case "$("$W/bin2/datera-agent" --version)" in
  "datera-agent $V2 "*) ;;
  *) fail "the v2 binary says '$("$W/bin2/datera-agent" --version)'" ;;
esac
IMAGE2=localhost/datera-agent-imagetest:$V2
TEST_IMAGES+=("$IMAGE2")
"$REPO/tools/image/build-runtime.sh" "$W/bin2" "$IMAGE2" >/dev/null || fail "build of $IMAGE2 failed"
[ "$(label "$IMAGE2" org.opencontainers.image.version)" = "$V2" ] || fail "$IMAGE2 is not labelled $V2"
T[image2]=$(($(ms) - t))
new_sum=$(sha256sum <"$W/bin2/datera-flexvolume")
old_sum=$(sha256sum <"$SHIM")
[ "$new_sum" != "$old_sum" ] || fail "the v2 shim is the v1 shim"

say "pod B from $IMAGE2 (kubelet runs the driver all along)"
t=$(ms)
# kubelet keeps calling the driver while the pod is replaced: every call must run a whole
# driver, old or new (a partial file would fail to exec or print no JSON).
(
  n=0
  while :; do
    o=$(flex init 2>&1) || true
    case "$o" in *'"Success"'*) ;; *) echo "$o" >"$W/shim-loop.bad" ;; esac
    n=$((n + 1))
    echo "$n" >"$W/shim-loop.count"
  done
) &
SHIM_LOOP_PID=$!
B=datera-image-test-$$-b
start_pod "$B" "$IMAGE2"
sleep 1
kill "$SHIM_LOOP_PID"
wait "$SHIM_LOOP_PID" 2>/dev/null || true
SHIM_LOOP_PID=""
T[start_b]=$(($(ms) - t))
[ ! -e "$W/shim-loop.bad" ] || fail "a driver call during the takeover failed: $(cat "$W/shim-loop.bad")"
ok "$(cat "$W/shim-loop.count") driver init calls during the takeover all succeeded"
[ "$(info_version)" = "$V2" ] || fail "the installed driver's agent_version is $(info_version), not $V2"
[ "$(sha256sum <"$SHIM")" = "$new_sum" ] || fail "the installed shim is not the v2 shim"
[ "$(stat -c %i "$SHIM")" != "$shim_inode" ] || fail "the shim was rewritten in place, not replaced by rename"
leftover=$(find "$ROOT$KUBELET_PLUGIN_DIR" -name '.*tmp*' -o -name '*.new-*' | head -n 1)
[ -z "$leftover" ] || fail "staging file left in the plugin dir: $leftover"
ok "driver replaced by rename: agent_version $VERSION -> $V2, new inode, no staging files left"
curl -sS --unix-socket "$SOCK" http://agent/v1/volumes >"$W/volumes.json"
/usr/bin/python3 - "$W/volumes.json" "$POD1" <<'PY' || fail "agent B did not reconcile the volume: $(cat "$W/volumes.json")"
import json, sys
body = json.load(open(sys.argv[1]))
text = json.dumps(body)
sys.exit(0 if "image-vol" in text and sys.argv[2] in text else 1)
PY
ok "agent B reconciled: /v1/volumes lists image-vol mounted at $POD1"
[ "$(sha256sum <"$POD1/blob")" = "$SUM" ] || fail "the pod's data changed across the takeover"

say "kubelet: unmount through the new driver"
flex_ok "unmount $POD1" unmount "$POD1"
if findmnt -rn --mountpoint "$POD1" >/dev/null; then fail "$POD1 is still mounted on the host after unmount"; fi
if grep -q "^$CFG_STATE_DIR/" <<<"$(findmnt -rn -o TARGET)"; then fail "a staging mount stayed on the host after unmount"; fi
if grep -q "^$ROOT/array/" <<<"$(losetup -l -n -O BACK-FILE)"; then fail "a loop device stayed attached after unmount"; fi
ok "unmounted: no pod mount, staging mount or loop device left on the host"

# --- 8. uninstall ----------------------------------------------------------------------------
say "podman stop; uninstall-driver (the image's entrypoint)"
podman stop -t "$GRACE" "$B" >/dev/null || fail "podman stop $B failed"
[ "$(podman inspect --format '{{.State.ExitCode}}' "$B")" = 0 ] || fail "agent B did not exit 0 on SIGTERM"
[ -x "$SHIM" ] || fail "the driver went with pod B"
out=$(podman run --rm "${PODMAN_ARGS[@]}" "${EXTRA[@]}" "$IMAGE2" uninstall-driver "${ENTRY_ARGS[@]}") ||
  fail "uninstall-driver failed: $out"
[ ! -e "$ROOT$KUBELET_PLUGIN_DIR/datera~iscsi" ] || fail "uninstall-driver left $ROOT$KUBELET_PLUGIN_DIR/datera~iscsi"
ok "uninstall-driver: $out"
T[scenario]=$(($(ms) - SCN))

echo
printf 'image timings: tools %ss, base %ss, image %ss, image checks %ss, node %ss, pod A ready %ss, mount %ss, stop %ss, image v2 %ss, pod B ready %ss, scenario %ss, total %ss\n' \
  "$(secs "${T[tools]}")" "$(secs "${T[base]}")" "$(secs "${T[image]}")" "$(secs "${T[checks]}")" \
  "$(secs "${T[node]}")" "$(secs "${T[start_a]}")" "$(secs "${T[mount]}")" "$(secs "${T[stop]}")" \
  "$(secs "${T[image2]}")" "$(secs "${T[start_b]}")" "$(secs "${T[scenario]}")" "$(secs $(($(ms) - T0)))"
echo "image: $IMAGE $(($(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000 / 1000)) MB"
echo "IMAGE RESULT: PASS"

#!/usr/bin/env bash
# Builds daemonset/Dockerfile (multi-stage: tools/setup.sh and a full Release build inside the
# build stage, then the runtime stage) with podman, on mmdebstrap bases (tools/image/base.sh), and
# checks that the result runs and says the version its labels say. Long: one full setup and build
# on this machine's cores (docs/benchmarks.md, "The image").
#
#   tools/image/build-full.sh [TAG]     (default localhost/datera-agent-full:<project version>)
#
# Prints timings and the size; the tag on stdout.
set -eu -o pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck disable=SC2034 # read by lib.sh
IMG_TAG=image-full
# shellcheck source=SCRIPTDIR/lib.sh
. "$HERE/lib.sh"

img_podman_conf
t0=$(ms)
"$HERE/base.sh" full >/dev/null
"$HERE/base.sh" slim >/dev/null
t_base=$(($(ms) - t0))

version=$(sed -n 's/^project(datera-agent VERSION \([0-9.]*\).*/\1/p' "$REPO/CMakeLists.txt")
[ -n "$version" ] || img_die "no project version in $REPO/CMakeLists.txt"
revision=$(git -C "$REPO" rev-parse HEAD)
if [ -n "$(git -C "$REPO" status --porcelain)" ]; then
  img_log "note: the work tree has uncommitted changes; revision $revision does not cover them"
fi
source_url=${IMAGE_SOURCE:-$(git -C "$REPO" config --get remote.origin.url 2>/dev/null || echo NOASSERTION)}
# Its own name: the image tier's localhost/datera-agent:<version> (from build/bin) stays.
tag=${1:-localhost/datera-agent-full:$version}

old_id=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
t=$(ms)
log=$IMAGE_CACHE/build-full.log
# FROM debian:12 / debian:12-slim resolve to the local docker.io/library/debian tags base.sh
# made; nothing is pulled.
img_build "$REPO/daemonset/Dockerfile" "$REPO" "$tag" "$log" "$version" "$revision" \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$source_url"
t_build=$(($(ms) - t))

got=$(podman run --rm --network none "$tag" --version) || img_die "$tag --version failed"
label=$(podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$tag")
case "$got" in
  "datera-agent $version (${revision:0:12}, protocol "*) ;;
  *) img_die "$tag says '$got'; expected version $version, commit ${revision:0:12}" ;;
esac
[ "$label" = "$version" ] || img_die "$tag: label version '$label', binary '$got'"
# The build stage (3.4 GB: the whole dev package set and the build tree) stays as a dangling
# image; it is only reused for an identical source tree. Its base's label names it.
key=$(podman image inspect --format '{{index .Config.Labels "org.datera.base-key"}}' localhost/debian:12)
for id in $(podman images --quiet --filter dangling=true --filter "label=org.datera.base-key=$key"); do
  podman rmi "$id" >/dev/null 2>&1 || img_log "kept dangling build stage $id (in use)"
done
# The image this tag named before, once nothing names it.
if [ -n "$old_id" ] && [ "$old_id" != "$(podman image inspect --format '{{.Id}}' "$tag")" ] &&
  [ -z "$(podman image inspect --format '{{join .RepoTags " "}}' "$old_id" 2>/dev/null)" ]; then
  podman rmi "$old_id" >/dev/null 2>&1 || img_log "kept the previous $tag ($old_id): in use"
fi
size=$(podman image inspect --format '{{.Size}}' "$tag")
img_log "$tag: $got"
img_log "times: bases $(secs "$t_base")s, podman build $(secs "$t_build")s; size $((size / 1000 / 1000)) MB ($size bytes)"
printf '%s\n' "$tag"

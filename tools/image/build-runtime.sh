#!/usr/bin/env bash
# Builds the runtime image (daemonset/Containerfile.runtime) from already-built binaries.
#
#   tools/image/build-runtime.sh BIN_DIR [TAG]
#
# BIN_DIR holds datera-agent, datera-flexvolume and datera-agentctl (BUILD_DIR/bin). They are
# stripped into a private build context. The version and revision labels come from
# `BIN_DIR/datera-agent --version`; TAG defaults to localhost/datera-agent:<version>.
# The base is localhost/debian:12-slim (tools/image/base.sh, run first when missing).
#   IMAGE_SOURCE / IMAGE_LICENSES  org.opencontainers.image.source / .licenses (default: the git
#                                  remote's URL if any, else NOASSERTION; NOASSERTION)
# Prints the tag on stdout.
set -eu -o pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck disable=SC2034 # read by lib.sh
IMG_TAG=image-runtime
# shellcheck source=SCRIPTDIR/lib.sh
. "$HERE/lib.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 BIN_DIR [TAG]" >&2
  exit 2
fi
BIN=$(cd "$1" && pwd)
for b in datera-agent datera-flexvolume datera-agentctl; do
  [ -x "$BIN/$b" ] || img_die "$BIN/$b is missing or not executable"
done
img_need /usr/bin/strip:binutils || img_die "cannot install binutils (strip)"
img_podman_conf
"$HERE/base.sh" slim >/dev/null

# "datera-agent 0.1.0 (cede9fad16b3, protocol 1)"
vline=$("$BIN/datera-agent" --version) || img_die "$BIN/datera-agent --version failed"
read -r _ version rest <<<"$vline"
commit=${rest#(}
commit=${commit%%,*}
if [ -z "$version" ] || [ -z "$commit" ]; then img_die "cannot parse '$vline'"; fi
# The full hash when this checkout has the commit the binaries were built from.
revision=$(git -C "$REPO" rev-parse --verify --quiet "$commit^{commit}" 2>/dev/null || echo "$commit")
source_url=${IMAGE_SOURCE:-$(git -C "$REPO" config --get remote.origin.url 2>/dev/null || echo NOASSERTION)}
tag=${2:-localhost/datera-agent:$version}

ctx=$(mktemp -d /tmp/datera-image-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
for b in datera-agent datera-flexvolume datera-agentctl; do
  strip --strip-unneeded -o "$ctx/$b" "$BIN/$b" || img_die "strip $BIN/$b failed"
done
# created: when the binaries were built, so the same binaries give the same image (all layers
# cached, no new image ID).
created=$(date -u -r "$BIN/datera-agent" +%Y-%m-%dT%H:%M:%SZ)
old_id=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
t=$(ms)
img_build "$REPO/daemonset/Containerfile.runtime" "$ctx" "$tag" "$IMAGE_CACHE/build-runtime.log" \
  "$version" "$revision" "$created" "$source_url"
# The image this tag named before, once nothing names it (another build's layers stay).
if [ -n "$old_id" ] && [ "$old_id" != "$(podman image inspect --format '{{.Id}}' "$tag")" ] &&
  [ -z "$(podman image inspect --format '{{join .RepoTags " "}}' "$old_id" 2>/dev/null)" ]; then
  podman rmi "$old_id" >/dev/null 2>&1 || img_log "kept the previous $tag ($old_id): in use"
fi
size=$(podman image inspect --format '{{.Size}}' "$tag")
img_log "built $tag ($vline) in $(secs $(($(ms) - t)))s, $((size / 1000 / 1000)) MB"
printf '%s\n' "$tag"

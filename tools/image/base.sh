#!/usr/bin/env bash
# A Debian 12 base image made with mmdebstrap from the Debian mirrors apt uses here, imported into
# podman. Cached: the tarball is kept in $DATERA_IMAGE_CACHE, named by a key over everything that
# goes into it (flavor, variant, package list, options, mirrors), and imported again only when
# podman's copy is missing or was made from another tarball.
#
#   tools/image/base.sh [slim|full]
#
#   slim (default): minbase without recommends, man pages, docs (but copyrights) and locales, with
#         apt's docker-clean; tagged localhost/debian:12-slim and docker.io/library/debian:12-slim
#         (what `FROM debian:12-slim` resolves to with --pull=never).
#   full: plain minbase; tagged localhost/debian:12 and docker.io/library/debian:12 (the build
#         stage of daemonset/Dockerfile).
#   DATERA_IMAGE_REFRESH=1  make the tarball again (new point release, security updates).
#
# Prints the image's tag on stdout. Needs root, podman and mmdebstrap (tools/image/lib.sh).
set -eu -o pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC2034 # read by lib.sh
IMG_TAG=image-base
# shellcheck source=SCRIPTDIR/lib.sh
. "$HERE/lib.sh"

flavor=${1:-slim}
# merged-usr: /usr is merged by mmdebstrap's own hook (usr-is-merged), not by the usrmerge
# package, which would pull perl (46 MB) into the image.
opts=(--variant=minbase --format=tar --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
case "$flavor" in
  slim)
    tags=(localhost/debian:12-slim docker.io/library/debian:12-slim)
    # shellcheck disable=SC2016 # the hooks' $1 is mmdebstrap's, expanded in its shell
    opts+=(--aptopt='APT::Install-Recommends "false"'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
      --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*'
      --dpkgopt='path-include=/usr/share/doc/*/copyright'
      # apt in the image keeps no package caches (what Docker's debian images do), and the
      # pkgcache mmdebstrap's own apt runs left (74 MB) goes before the tarball is written.
      --customize-hook='printf "%s\n" "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" "Dir::Cache::pkgcache \"\";" "Dir::Cache::srcpkgcache \"\";" >"$1/etc/apt/apt.conf.d/docker-clean"'
      --customize-hook='rm -f "$1"/var/cache/apt/*.bin; rm -rf "$1"/var/lib/apt/lists/*')
    ;;
  full)
    tags=(localhost/debian:12 docker.io/library/debian:12)
    ;;
  *)
    echo "usage: $0 [slim|full]" >&2
    exit 2
    ;;
esac

img_need_podman || img_die "cannot install ${IMG_MISSING[*]}"
img_podman_conf
mapfile -t mirrors < <(img_mirrors)
[ "${#mirrors[@]}" -gt 0 ] || img_die "apt knows no bookworm mirror here (apt-get indextargets)"

# The key covers the recipe, not the archive's state: DATERA_IMAGE_REFRESH=1 picks up updates.
key=$( { printf '%s\n' "recipe 1" "$flavor" "${opts[@]}" "${mirrors[@]}"; } | sha256sum | cut -c1-16)
tarball=$IMAGE_CACHE/debian-12-$flavor-$key.tar
mkdir -p "$IMAGE_CACHE"
if [ -s "$tarball" ] && [ "${DATERA_IMAGE_REFRESH:-0}" != 1 ]; then
  img_log "cached: $tarball"
else
  img_log "mmdebstrap $flavor from: ${mirrors[*]}"
  t=$(ms)
  rm -f "$tarball.new"
  # stdin would be read as a sources.list when it is not a tty: the mirrors are given instead.
  if ! nice -n 10 mmdebstrap "${opts[@]}" bookworm "$tarball.new" "${mirrors[@]}" </dev/null \
    >"$IMAGE_CACHE/mmdebstrap-$flavor.log" 2>&1; then
    tail -n 20 "$IMAGE_CACHE/mmdebstrap-$flavor.log" >&2
    rm -f "$tarball.new"
    img_die "mmdebstrap failed (log: $IMAGE_CACHE/mmdebstrap-$flavor.log)"
  fi
  # Older tarballs of this flavor are replaced.
  find "$IMAGE_CACHE" -maxdepth 1 -name "debian-12-$flavor-*.tar" ! -name "${tarball##*/}.new" -delete
  mv "$tarball.new" "$tarball"
  img_log "made $tarball ($(du -m "$tarball" | cut -f1) MB) in $(secs $(($(ms) - t)))s"
fi

# podman's copy carries the key as a label: another key (or no image) means import again.
have=$(podman image inspect --format '{{index .Config.Labels "org.datera.base-key"}}' "${tags[0]}" \
  2>/dev/null || true)
if [ "$have" != "$key" ]; then
  t=$(ms)
  old_id=$(podman image inspect --format '{{.Id}}' "${tags[0]}" 2>/dev/null || true)
  id=$(podman import --quiet --change "LABEL org.datera.base-key=$key" \
    --change 'CMD ["/bin/bash"]' "$tarball" "${tags[0]}") ||
    img_die "podman import $tarball failed"
  id=${id#sha256:}
  img_log "imported $tarball as ${tags[0]} (${id:0:12}) in $(secs $(($(ms) - t)))s"
  for t in "${tags[@]:1}"; do
    podman tag "${tags[0]}" "$t" || img_die "podman tag ${tags[0]} $t failed"
  done
  # The image this one replaced, once no tag names it (images built on it keep it).
  if [ -n "$old_id" ] && [ "$old_id" != "$id" ] &&
    [ -z "$(podman image inspect --format '{{join .RepoTags " "}}' "$old_id" 2>/dev/null)" ]; then
    podman rmi "$old_id" >/dev/null 2>&1 || img_log "kept the old base $old_id (in use)"
  fi
else
  img_log "${tags[0]} is current (key $key)"
fi
for t in "${tags[@]:1}"; do
  podman tag "${tags[0]}" "$t" || img_die "podman tag ${tags[0]} $t failed"
done
printf '%s\n' "${tags[0]}"

# shellcheck shell=bash
# Shared by tools/image/*.sh and tests/image/run.sh (sourced): the cache dir, podman's
# configuration for these machines, and the one-time package install.
#
#   DATERA_IMAGE_CACHE  base image tarballs and podman's config (default /var/cache/datera-image)
#
# podman is configured through CONTAINERS_CONF, so /etc/containers is never changed:
# - runtime runc: crun refuses a cgroup v1 hybrid layout ("cgroups in hybrid mode not supported");
# - explicit default_ulimits at or below this shell's hard limits: podman as root asks for
#   nofile=1048576, which fails without CAP_SYS_RESOURCE ("setrlimit RLIMIT_NOFILE");
# - events to a file: there is no systemd journal on every machine.
# `podman build` does not take the runtime from there: its callers pass --runtime runc.
# (shared/reference/containers.md has the measurements behind each line.)

IMAGE_CACHE=${DATERA_IMAGE_CACHE:-/var/cache/datera-image}
export DEBIAN_FRONTEND=noninteractive

img_log() { printf '%s: %s\n' "${IMG_TAG:-image}" "$*" >&2; }
img_die() {
  img_log "FAILED: $*"
  exit 1
}

# Installs what is missing, with one `apt-get update` at most. $@ = "file:package" pairs; the
# file proves the package is there. Returns non-zero (with apt's tail on stderr) if any is still
# missing afterwards, and leaves the decision to the caller.
img_apt_updated=0
img_need() {
  local pair missing=() p
  for pair in "$@"; do
    [ -e "${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  mkdir -p "$IMAGE_CACHE"
  img_log "installing: ${missing[*]}"
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$IMAGE_CACHE/apt.log" 2>&1; then
    if [ "$img_apt_updated" = 0 ]; then
      img_apt_updated=1
      img_log "apt-get update"
      apt-get update -qq >>"$IMAGE_CACHE/apt.log" 2>&1 || img_log "apt-get update failed"
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$IMAGE_CACHE/apt.log" 2>&1 || true
  fi
  local still=()
  for pair in "$@"; do
    [ -e "${pair%%:*}" ] || still+=("${pair#*:}")
  done
  if [ "${#still[@]}" -gt 0 ]; then
    tail -n 15 "$IMAGE_CACHE/apt.log" >&2
    img_log "still missing after apt-get install: ${still[*]} (log: $IMAGE_CACHE/apt.log)"
    for p in "${still[@]}"; do IMG_MISSING+=("$p"); done
    return 1
  fi
}
IMG_MISSING=()

# podman, its OCI runtime and conmon; mmdebstrap for the base. Debian's podman recommends crun,
# which cannot run here, so runc is named explicitly (it is not pulled in).
img_need_podman() {
  img_need /usr/bin/podman:podman /usr/sbin/runc:runc /usr/bin/conmon:conmon \
    /usr/bin/newuidmap:uidmap /usr/bin/mmdebstrap:mmdebstrap \
    /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring
}

img_podman_conf() {
  mkdir -p "$IMAGE_CACHE"
  local nofile nproc=4096
  # nofile: this shell's hard limit (20000 here), which runc may set. nproc: 4096 as measured in
  # containers.md; 65536 failed here even under a hard limit of 96362 ("error setting rlimit type
  # 6"). The agent's container is privileged (CAP_SYS_ADMIN), and the kernel does not apply
  # RLIMIT_NPROC to such processes.
  nofile=$(ulimit -Hn)
  if [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; then nofile=1048576; fi
  cat >"$IMAGE_CACHE/containers.conf.new" <<CONF
# Written by tools/image/lib.sh; used through CONTAINERS_CONF only.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  mv "$IMAGE_CACHE/containers.conf.new" "$IMAGE_CACHE/containers.conf"
  export CONTAINERS_CONF=$IMAGE_CACHE/containers.conf
}

# The Debian mirrors apt uses here (sources.list or deb822 .sources alike), as one-line
# sources.list entries for mmdebstrap: "deb SITE SUITE main" for bookworm, -updates, -security.
img_mirrors() {
  # shellcheck disable=SC2016 # apt's own $(FIELD) syntax
  apt-get indextargets --format '$(TARGET_OF) $(SITE) $(RELEASE) $(COMPONENT) $(IDENTIFIER)' |
    awk '$1 == "deb" && $3 ~ /^bookworm(-updates|-security)?$/ && $4 == "main" && $5 == "Packages" {
           print "deb " $2 " " $3 " main" }' | sort -u
}

ms() { date +%s%3N; }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# img_build CONTAINERFILE CONTEXT TAG LOG VERSION REVISION CREATED SOURCE: podman build with the
# image's OCI labels (licenses from IMAGE_LICENSES), nothing pulled (the bases are local), output
# to LOG; dies with its tail on failure.
img_build() {
  if ! nice -n 10 podman build --runtime runc --pull=never --layers -f "$1" \
    --build-arg VERSION="$5" --build-arg REVISION="$6" --build-arg CREATED="$7" \
    --build-arg SOURCE="$8" --build-arg LICENSES="${IMAGE_LICENSES:-NOASSERTION}" \
    -t "$3" "$2" >"$4" 2>&1; then
    tail -n 40 "$4" >&2
    img_die "podman build -f $1 failed (log: $4)"
  fi
}

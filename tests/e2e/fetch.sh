#!/usr/bin/env bash
# Kernel e2e tier, step 1: host tools and the guest payload.
#
# Idempotent. Installs the host packages the tier needs (QEMU, busybox, cpio, zstd, kmod, iproute2,
# arping), downloads the guest payload (Debian's kernel and open-iscsi/xfsprogs) into a cache dir and
# extracts it with `dpkg-deb -x` into a staging dir. Nothing is ever extracted into /.
#
#   DATERA_E2E_CACHE  cache dir (default /var/cache/datera-e2e)
#
# Layout: $CACHE/debs/*.deb, $CACHE/stage/ (extracted tree), $CACHE/kernel-version,
#         $CACHE/stage.stamp (the deb set the stage was built from).
# Exit status: 0 = ready; 77 = QEMU cannot be installed (the caller skips the tier); other = error.
set -eu

CACHE=${DATERA_E2E_CACHE:-/var/cache/datera-e2e}
DEBS=$CACHE/debs
STAGE=$CACHE/stage
export DEBIAN_FRONTEND=noninteractive

log() { printf 'e2e-fetch: %s\n' "$*" >&2; }

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >&2 || log "apt-get update failed (continuing with the current lists)"
    apt_updated=1
  fi
}

# --- host packages ---------------------------------------------------------------------------
# command that proves the package is present -> package
host_missing=()
need_host() { # $1 = file that must exist, $2 = package
  [ -e "$1" ] || host_missing+=("$2")
}
need_host /usr/bin/qemu-system-x86_64 qemu-system-x86
need_host /bin/busybox busybox-static
need_host /usr/bin/cpio cpio
need_host /usr/bin/zstd zstd
need_host /sbin/depmod kmod
need_host /sbin/ip iproute2
need_host /usr/bin/arping iputils-arping

mkdir -p "$CACHE"
if [ "${#host_missing[@]}" -gt 0 ]; then
  log "installing host packages: ${host_missing[*]}"
  if ! apt-get install -y -qq --no-install-recommends "${host_missing[@]}" >"$CACHE/apt.log" 2>&1; then
    apt_update_once
    apt-get install -y -qq --no-install-recommends "${host_missing[@]}" >"$CACHE/apt.log" 2>&1 ||
      { tail -n 20 "$CACHE/apt.log" >&2; log "apt-get install failed (log: $CACHE/apt.log)"; }
  fi
fi
if [ ! -x /usr/bin/qemu-system-x86_64 ]; then
  log "qemu-system-x86_64 is not installed and could not be installed"
  exit 77
fi
for f in /bin/busybox /usr/bin/cpio /usr/bin/zstd /sbin/depmod /sbin/modprobe /sbin/ip /usr/bin/arping; do
  [ -x "$f" ] || { log "missing host tool $f"; exit 1; }
done

# --- guest payload ---------------------------------------------------------------------------
mkdir -p "$DEBS"

kernel_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
KPKG=$(kernel_pkg || true)
if [ -z "$KPKG" ]; then
  apt_update_once
  KPKG=$(kernel_pkg || true)
fi
if [ -z "$KPKG" ] && [ -s "$CACHE/kernel-version" ]; then
  KPKG=linux-image-$(cat "$CACHE/kernel-version")
  log "apt-cache cannot resolve linux-image-amd64; using the cached $KPKG"
fi
[ -n "$KPKG" ] || { log "cannot resolve the kernel package from linux-image-amd64"; exit 1; }

pkgs=("$KPKG" open-iscsi libopeniscsiusr libisns0 xfsprogs libinih1 liburcu8 multipath-tools)
# Shared-library dependencies of open-iscsi, xfsprogs and multipath-tools that the host does not have (the rest of
# the guest's libraries are copied from the host, which is the same Debian release).
for dep in $(apt-cache depends --no-recommends --no-suggests open-iscsi xfsprogs multipath-tools 2>/dev/null |
               awk '$1 == "Depends:" && $2 ~ /^lib/ { print $2 }' | sort -u); do
  case " ${pkgs[*]} " in *" $dep "*) continue ;; esac
  if ! dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'install ok installed'; then
    pkgs+=("$dep")
  fi
done

have_deb() { # $1 = package name
  compgen -G "$DEBS/${1}_*.deb" >/dev/null
}
to_get=()
for p in "${pkgs[@]}"; do
  have_deb "$p" || to_get+=("$p")
done
if [ "${#to_get[@]}" -gt 0 ]; then
  log "downloading: ${to_get[*]}"
  if ! (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "${to_get[@]}" >&2); then
    apt_update_once
    (cd "$DEBS" && apt-get download -qq -o APT::Sandbox::User=root "${to_get[@]}" >&2)
  fi
fi

# The stage is rebuilt only when the deb set changes.
newest_deb() { # $1 = package name; prints the newest cached .deb's file name
  local f last=
  for f in "$DEBS/${1}"_*.deb; do last=${f##*/}; done
  printf '%s\n' "$last"
}
debset=$(for p in "${pkgs[@]}"; do newest_deb "$p"; done)
if [ -d "$STAGE" ] && [ -f "$CACHE/stage.stamp" ] && [ "$(cat "$CACHE/stage.stamp")" = "$debset" ]; then
  log "stage is up to date ($STAGE)"
else
  log "extracting $(printf '%s\n' "$debset" | wc -l) debs into $STAGE"
  rm -rf "$STAGE.new"
  mkdir -p "$STAGE.new"
  printf '%s\n' "$debset" | while IFS= read -r deb; do
    dpkg-deb -x "$DEBS/$deb" "$STAGE.new"
  done
  rm -rf "$STAGE"
  mv "$STAGE.new" "$STAGE"
  printf '%s\n' "$debset" >"$CACHE/stage.stamp"
fi
printf '%s\n' "${KPKG#linux-image-}" >"$CACHE/kernel-version"
log "ready: kernel $(cat "$CACHE/kernel-version"), stage $STAGE"

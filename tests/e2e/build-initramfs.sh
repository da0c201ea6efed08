#!/usr/bin/env bash
# Kernel e2e tier, step 2: the guest's initramfs.
#
#   build-initramfs.sh BUILD_DIR OUT_DIR
#
# Writes OUT_DIR/vmlinuz (Debian's kernel from the stage) and OUT_DIR/initramfs.zst: busybox with its
# applet links, iproute2/coreutils/iputils/util-linux tools from the host, iscsid/iscsiadm and
# xfsprogs from the stage, the project's binaries from BUILD_DIR/bin, the shared libraries of all of
# them (ldd closure), the kernel modules the tier needs (depmod/modprobe closure, decompressed, in
# load order) and tests/e2e/guest/ (init, lib.sh, scenarios).
#
#   DATERA_E2E_CACHE  where fetch.sh put the stage (default /var/cache/datera-e2e)
#
# The guest is merged-/usr: /bin, /sbin, /lib, /lib64 are links into /usr.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR OUT_DIR" >&2
  exit 2
fi
BUILD_DIR=$(cd "$1" && pwd)
OUT_DIR=$2
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${DATERA_E2E_CACHE:-/var/cache/datera-e2e}
STAGE=$CACHE/stage
KVER=$(cat "$CACHE/kernel-version")
ROOT=$OUT_DIR/root
TRIPLET=x86_64-linux-gnu

log() { printf 'e2e-initramfs: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ -d "$STAGE/lib/modules/$KVER" ] || die "no stage for kernel $KVER in $STAGE (run fetch.sh)"
for b in datera-agent datera-flexvolume datera-sim datera-agentctl; do
  [ -x "$BUILD_DIR/bin/$b" ] || die "missing $BUILD_DIR/bin/$b (build it first)"
done

mkdir -p "$OUT_DIR"
rm -rf "$ROOT"
mkdir -p "$ROOT"/usr/{bin,sbin,lib/$TRIPLET,lib64,local/bin} \
  "$ROOT"/{dev,proc,sys,run,tmp,cfg,mnt,etc/iscsi,var/lib,var/lock,e2e}
ln -s usr/bin "$ROOT/bin"
ln -s usr/sbin "$ROOT/sbin"
ln -s usr/lib "$ROOT/lib"
ln -s usr/lib64 "$ROOT/lib64"
ln -s ../run "$ROOT/var/run"
chmod 1777 "$ROOT/tmp"
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true # non-root: /init reopens it
mknod -m 666 "$ROOT/dev/null" c 1 3 2>/dev/null || true

# --- busybox and its applet links ------------------------------------------------------------
cp /bin/busybox "$ROOT/usr/bin/busybox"
/bin/busybox --list-full | while IFS= read -r applet; do
  name=${applet##*/}
  case $applet in
    sbin/* | usr/sbin/*) dir=usr/sbin ;;
    *) dir=usr/bin ;;
  esac
  [ -e "$ROOT/$dir/$name" ] || [ -L "$ROOT/$dir/$name" ] || ln -s /usr/bin/busybox "$ROOT/$dir/$name"
done

# --- binaries and their libraries ------------------------------------------------------------
LIBPATH=$STAGE/lib/$TRIPLET:$STAGE/usr/lib/$TRIPLET:$STAGE/lib
declare -A seen_lib=()

# Copies one shared object (host or stage path) to its place in the guest, following symlinks.
copy_lib() {
  local src=$1 dst
  [ -n "${seen_lib[$src]:-}" ] && return 0
  seen_lib[$src]=1
  dst=${src#"$STAGE"}
  mkdir -p "$ROOT$(dirname "$dst")"
  cp -L "$src" "$ROOT$dst"
}

# Copies the ldd closure of a binary.
copy_libs_of() {
  local bin=$1 out line path
  out=$(LD_LIBRARY_PATH=$LIBPATH ldd "$bin" 2>&1) || {
    case $out in *"not a dynamic executable"*) return 0 ;; esac
    die "ldd $bin failed: $out"
  }
  if printf '%s\n' "$out" | grep -q 'not found'; then
    die "unresolved libraries for $bin: $(printf '%s\n' "$out" | grep 'not found' | tr '\n' ' ')"
  fi
  while IFS= read -r line; do
    case $line in
      *"=> /"*) path=${line#*=> }; path=${path%% (*}; copy_lib "$path" ;;
      /*) path=${line%% (*}; path=${path#"${path%%[! ]*}"}; copy_lib "$path" ;;
      *) ;;
    esac
  done <<<"$(printf '%s\n' "$out" | sed 's/^[[:space:]]*//')"
}

# copy_bin SRC DEST_IN_GUEST: the binary (replacing a busybox link) and its libraries.
copy_bin() {
  local src=$1 dst=$2
  [ -e "$src" ] || die "missing $src"
  mkdir -p "$ROOT$(dirname "$dst")"
  rm -f "$ROOT$dst"
  cp -L "$src" "$ROOT$dst"
  copy_libs_of "$src"
}

# Real tools whose busybox applets behave differently (the recipe's `ip`/`dd` trap). Scripts still
# reach them by absolute path or through lib.sh's wrappers, because busybox ash prefers applets.
copy_bin /bin/ip /usr/bin/ip
ln -sf ../bin/ip "$ROOT/usr/sbin/ip"
copy_bin /bin/dd /usr/bin/dd
copy_bin /usr/bin/ss /usr/bin/ss
copy_bin /usr/bin/arping /usr/bin/arping
ln -sf ../bin/arping "$ROOT/usr/sbin/arping"
copy_bin /usr/bin/sha256sum /usr/bin/sha256sum
for t in blkid losetup blockdev wipefs dmsetup mke2fs; do
  copy_bin "/sbin/$t" "/usr/sbin/$t"
done
for t in findmnt lsblk mount umount; do
  copy_bin "/bin/$t" "/usr/bin/$t"
done
if [ -x /usr/bin/curl ]; then
  copy_bin /usr/bin/curl /usr/bin/curl
fi

# open-iscsi and xfsprogs from the stage (the versions a Debian 12 node runs).
for t in iscsid iscsiadm iscsi-iname mkfs.xfs xfs_repair; do
  copy_bin "$STAGE/sbin/$t" "/usr/sbin/$t"
done
for t in xfs_growfs xfs_io xfs_db; do
  copy_bin "$STAGE/usr/sbin/$t" "/usr/sbin/$t"
done
ln -sf mke2fs "$ROOT/usr/sbin/mkfs.ext4"
copy_bin /sbin/e2fsck /usr/sbin/e2fsck # the agent runs fsck.ext4 -p before an ext4 mount
ln -sf e2fsck "$ROOT/usr/sbin/fsck.ext4"
# multipath-tools from the stage, for the multipathd-on scenario: multipathd, multipath and the
# checker/prioritizer plugins it dlopens from /lib/multipath.
for t in multipathd multipath; do
  copy_bin "$STAGE/sbin/$t" "/usr/sbin/$t"
done
mkdir -p "$ROOT/usr/lib/multipath"
for so in "$STAGE"/lib/multipath/*.so; do
  cp -L "$so" "$ROOT/usr/lib/multipath/"
  copy_libs_of "$so"
done
# udevd for the same scenario only: multipath-tools see only disks udev initialized (ID_SERIAL from
# scsi_id), and libdevmapper then waits for udev's completion of every dm change (55-dm and
# 95-dm-notify do it). Other scenarios run without it, as before.
copy_bin /bin/udevadm /usr/bin/udevadm
mkdir -p "$ROOT/usr/lib/systemd" "$ROOT/usr/lib/udev/rules.d"
ln -sf ../../bin/udevadm "$ROOT/usr/lib/systemd/systemd-udevd"
copy_bin /lib/udev/scsi_id /usr/lib/udev/scsi_id
for r in 50-udev-default 55-dm 60-persistent-storage 95-dm-notify; do
  cp "/lib/udev/rules.d/$r.rules" "$ROOT/usr/lib/udev/rules.d/"
done
cp "$STAGE"/lib/udev/rules.d/56-dm-mpath.rules "$STAGE"/lib/udev/rules.d/60-multipath.rules \
  "$ROOT/usr/lib/udev/rules.d/"
cp /etc/mke2fs.conf "$ROOT/etc/mke2fs.conf"
mkdir -p "$ROOT/etc/iscsi/nodes" "$ROOT/etc/iscsi/send_targets" "$ROOT/etc/iscsi/ifaces"
cp "$STAGE/etc/iscsi/iscsid.conf" "$ROOT/etc/iscsi/iscsid.conf"

# The project's binaries, without their debug info (RelWithDebInfo makes them 10x larger, and the
# guest holds the initramfs in RAM). BUILD_DIR keeps the unstripped files for symbolising.
for b in datera-agent datera-flexvolume datera-sim datera-agentctl; do
  copy_bin "$BUILD_DIR/bin/$b" "/usr/local/bin/$b"
  strip --strip-debug "$ROOT/usr/local/bin/$b"
done

# --- Python and the CSI test client (80-csi) -------------------------------------------------
# The CSI scenario drives the agent's gRPC socket with the test tier's Python client
# (tests/csi/csi_client.py, the stubs the build generated into BUILD_DIR/tests/csi/py) through
# guest/csi.py. Not all of Debian's python3: the interpreter, grpc and google.protobuf whole, and
# of the standard library only the modules the client loads (the closure of sys.modules after one
# call, as measured on this host), with their byte code; about 20 MB unpacked. Without the stubs
# or the host's python3-grpcio the scenario says SKIP and why (/e2e/py/MISSING).
CSI_PY=$BUILD_DIR/tests/csi/py
mkdir -p "$ROOT/e2e/py"
if [ ! -f "$CSI_PY/csi_pb2.py" ] || [ ! -f "$HERE/../csi/csi_client.py" ]; then
  echo "no CSI Python stubs in $CSI_PY (build target csi_python_stubs)" >"$ROOT/e2e/py/MISSING"
elif ! /usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null; then
  echo "the host's /usr/bin/python3 has no grpc or protobuf (python3-grpcio, python3-protobuf)" \
    >"$ROOT/e2e/py/MISSING"
else
  cp "$CSI_PY/csi_pb2.py" "$CSI_PY/csi_pb2_grpc.py" "$HERE/../csi/csi_client.py" \
    "$HERE/guest/csi.py" "$ROOT/e2e/py/"
  pybin=$(readlink -f /usr/bin/python3)
  copy_bin "$pybin" "/usr/bin/$(basename "$pybin")"
  ln -sf "$(basename "$pybin")" "$ROOT/usr/bin/python3"
  # Every module file the client loaded (a call to a socket that is not there exercises the call
  # path), and the packages loaded lazily in parts, whole.
  pyfiles=$(PYTHONPATH=$ROOT/e2e/py /usr/bin/python3 - "$ROOT/e2e/py" <<'PY'
import os, sys
sys.argv = ["csi.py", "/nonexistent/csi.sock", "probe", "timeout=0.2"]
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    import csi
    csi.main(sys.argv)
import google.protobuf, grpc, encodings
files = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if f and os.path.isfile(f) and \
            not os.path.realpath(f).startswith(os.path.realpath(os.environ["PYTHONPATH"])):
        files.add(os.path.realpath(f))
for pkg in (grpc, google.protobuf, encodings):
    d = os.path.dirname(os.path.realpath(pkg.__file__))
    for dirpath, _, names in os.walk(d):
        if "__pycache__" in dirpath:
            continue
        for n in names:
            if n.endswith((".py", ".so")):
                files.add(os.path.join(dirpath, n))
for f in sorted(files):
    print(f)
PY
  ) || die "listing the CSI client's Python modules failed"
  while IFS= read -r f; do
    mkdir -p "$ROOT$(dirname "$f")"
    cp -p "$f" "$ROOT$f"
    case $f in
      *.so) copy_libs_of "$f" ;;
      *.py) # the host's byte code, valid since cp -p kept the source's mtime
        for pyc in "$(dirname "$f")/__pycache__/$(basename "${f%.py}")".cpython-*.pyc; do
          [ -f "$pyc" ] && mkdir -p "$ROOT$(dirname "$pyc")" && cp -p "$pyc" "$ROOT$pyc"
        done
        ;;
    esac
  done <<<"$pyfiles"
  # The interpreter finds its prefix by os.py and its exec prefix by lib-dynload.
  mkdir -p "$ROOT/usr/lib/$(basename "$pybin")/lib-dynload"
  log "python for the CSI client: $(printf '%s\n' "$pyfiles" | wc -l) module files"
fi

# --- kernel modules --------------------------------------------------------------------------
# Wanted modules; the closure (symbol deps and softdeps) comes from modprobe --show-depends.
# crc32c_generic comes first: libcrc32c (xfs) asks the crypto API for "crc32c", and without
# /sbin/modprobe in the guest the kernel cannot load it on demand. zram holds 40-scale's LIO backing
# files: the zeros mkfs writes cost it no RAM, where tmpfs would need ~65 MB per volume.
WANT="crc32c_generic crct10dif_generic configfs bridge veth loop sd_mod sg scsi_transport_iscsi
      libiscsi libiscsi_tcp iscsi_tcp target_core_mod target_core_file target_core_iblock
      iscsi_target_mod xfs dm_mod dm_multipath dm_round_robin ext4 zram"
MODDIR=$STAGE/lib/modules/$KVER
if [ ! -f "$MODDIR/modules.dep" ] || [ "$MODDIR/modules.order" -nt "$MODDIR/modules.dep" ]; then
  log "depmod -b $STAGE $KVER"
  depmod -b "$STAGE" "$KVER"
fi
: >"$ROOT/e2e/modules.load"
declare -A seen_mod=()
nmods=0
# Shipped but not loaded at boot: what multipathd's maps use (70-multipathd), loaded on demand by
# the kernel or modprobe through the guest's modules.dep, so no other scenario's disks change.
ON_DEMAND="scsi_dh_alua dm_service_time"
for m in $WANT $ON_DEMAND; do
  load=yes
  case " $ON_DEMAND " in *" $m "*) load=no ;; esac
  deps=$(modprobe -d "$STAGE" -S "$KVER" --show-depends "$m") || die "modprobe --show-depends $m"
  while read -r kind path _; do
    [ "$kind" = insmod ] || continue # "builtin X" needs nothing
    [ -n "${seen_mod[$path]:-}" ] && continue
    seen_mod[$path]=1
    rel=${path#"$STAGE"}
    case $rel in
      *.ko.xz) out=${rel%.xz}; mkdir -p "$ROOT$(dirname "$out")"; xz -dc "$path" >"$ROOT$out" ;;
      *.ko.zst) out=${rel%.zst}; mkdir -p "$ROOT$(dirname "$out")"; zstd -qdc "$path" >"$ROOT$out" ;;
      *.ko) out=$rel; mkdir -p "$ROOT$(dirname "$out")"; cp "$path" "$ROOT$out" ;;
      *) die "unexpected module path $path" ;;
    esac
    [ $load = yes ] && printf '%s\n' "$out" >>"$ROOT/e2e/modules.load"
    nmods=$((nmods + 1))
  done <<<"$deps"
done
log "$nmods modules"
# modules.dep for the guest's own subset: the agent's `modprobe` (busybox's) reads it.
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [ -f "$MODDIR/$f" ] && cp "$MODDIR/$f" "$ROOT/usr/lib/modules/$KVER/"
done
depmod -b "$ROOT" "$KVER"

# --- configuration files ---------------------------------------------------------------------
cat >"$ROOT/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat >"$ROOT/etc/group" <<'GROUP'
root:x:0:
disk:x:6:
nogroup:x:65534:
GROUP
printf '127.0.0.1 localhost\n::1 localhost\n10.99.0.1 node\n' >"$ROOT/etc/hosts"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
printf 'datera-e2e\n' >"$ROOT/etc/hostname"
ln -s ../proc/self/mounts "$ROOT/etc/mtab"
mkdir -p "$ROOT/root"

# --- guest scripts ---------------------------------------------------------------------------
cp "$HERE/guest/init" "$ROOT/init"
cp "$HERE/guest/lib.sh" "$ROOT/e2e/lib.sh"
mkdir -p "$ROOT/e2e/scenarios"
cp "$HERE"/guest/scenarios/*.sh "$ROOT/e2e/scenarios/"
cp "$HERE/../../systemd/datera-agent-multipath.conf" "$ROOT/e2e/" # 70-multipathd installs it
chmod 755 "$ROOT/init" "$ROOT"/e2e/scenarios/*.sh
printf '%s\n' "$KVER" >"$ROOT/e2e/kernel-version"

# --- kernel and the archive ------------------------------------------------------------------
cp "$STAGE/boot/vmlinuz-$KVER" "$OUT_DIR/vmlinuz"
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) |
  zstd -q -T0 -3 -f -o "$OUT_DIR/initramfs.zst"
log "initramfs $(du -sh "$ROOT" | cut -f1) unpacked, $(du -h "$OUT_DIR/initramfs.zst" | cut -f1) zstd; kernel $KVER"

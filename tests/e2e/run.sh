#!/usr/bin/env bash
# The kernel e2e tier: fetch (cached) -> initramfs -> boot a QEMU guest running Debian's kernel, the
# kernel LIO target and open-iscsi -> read the scenario results from the serial console.
#
#   tests/e2e/run.sh BUILD_DIR
#
# BUILD_DIR/bin must hold datera-agent, datera-flexvolume, datera-sim and datera-agentctl. Artefacts go to
# BUILD_DIR/e2e/ (vmlinuz, initramfs.zst, root/, serial.log).
#
# Environment:
#   E2E_ONLY=00-smoke[,..]  run only these scenarios (guest: e2e.only=)
#   E2E_APPEND="..."        extra kernel command line (e.g. e2e.klog=7 e2e.timeout=600)
#   E2E_QEMU_TIMEOUT=900    hard limit for the guest, in seconds
#   E2E_SMP=2 E2E_MEM=1024  guest CPUs and memory (MiB)
#   DATERA_E2E_CACHE        package cache and stage (default /var/cache/datera-e2e)
#
# Exit status: 0 iff the guest printed "E2E RESULT: PASS"; 77 (after a loud SKIP line) if QEMU
# cannot run here; 1 otherwise.
set -eu -o pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD_DIR=$(cd "$1" && pwd)
OUT=$BUILD_DIR/e2e
LOG=$OUT/serial.log
mkdir -p "$OUT"

skip() {
  echo "SKIP kernel e2e tier: $*" >&2
  exit 77
}
ms() { date +%s%3N; }
secs() { # $1 = milliseconds
  printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
}

T_START=$(ms)

# --- 1. host tools and guest payload ---------------------------------------------------------
echo "== e2e: fetch"
t=$(ms)
rc=0
"$HERE/fetch.sh" || rc=$?
if [ "$rc" = 77 ] || ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  skip "qemu-system-x86_64 is not installed and cannot be installed (fetch.sh rc=$rc)"
fi
[ "$rc" = 0 ] || { echo "e2e: fetch.sh failed (rc=$rc)" >&2; exit 1; }
T_FETCH=$(($(ms) - t))

# --- 2. initramfs ----------------------------------------------------------------------------
echo "== e2e: initramfs"
t=$(ms)
"$HERE/build-initramfs.sh" "$BUILD_DIR" "$OUT"
T_INITRAMFS=$(($(ms) - t))

# --- 3. boot ---------------------------------------------------------------------------------
# KVM only when a guest really runs under it: on some hosts /dev/kvm is writable but a KVM guest
# never prints a line (nested virtualization without support), and the tier would hang until its
# timeout. The kernel's first console line within 10 s proves it; else TCG, said loudly.
kvm_boots() {
  local out
  out=$(timeout 10 qemu-system-x86_64 -accel kvm -cpu host -smp 1 -m 256 -display none \
    -monitor none -serial stdio -no-reboot -nic none -kernel "$OUT/vmlinuz" \
    -append "console=ttyS0 panic=-1" </dev/null 2>/dev/null | head -c 4096 || true)
  [[ $out == *"Linux version"* ]]
}
if [ -w /dev/kvm ] && [ -z "${E2E_NO_KVM:-}" ] && kvm_boots; then
  ACCEL=(-accel kvm -cpu host)
else
  [ -w /dev/kvm ] && [ -z "${E2E_NO_KVM:-}" ] &&
    echo "== e2e: /dev/kvm is there but a KVM guest printed nothing in 10 s; using TCG"
  ACCEL=(-accel "tcg,tb-size=256" -cpu max)
fi
APPEND="console=ttyS0 panic=-1 loglevel=4 quiet"
[ -n "${E2E_ONLY:-}" ] && APPEND="$APPEND e2e.only=$E2E_ONLY"
[ -n "${E2E_APPEND:-}" ] && APPEND="$APPEND $E2E_APPEND"
QEMU=(qemu-system-x86_64 "${ACCEL[@]}" -smp "${E2E_SMP:-2}" -m "${E2E_MEM:-1024}"
  -display none -monitor none -serial stdio -no-reboot -nic none
  -kernel "$OUT/vmlinuz" -initrd "$OUT/initramfs.zst" -append "$APPEND")
echo "== e2e: boot (${ACCEL[*]}), serial log: $LOG"
echo "+ ${QEMU[*]}"
t=$(ms)
qrc=0
timeout "${E2E_QEMU_TIMEOUT:-900}" "${QEMU[@]}" </dev/null 2>&1 | tr -d '\r' | tee "$LOG" || qrc=$?
T_BOOT=$(($(ms) - t))

# --- 4. verdict ------------------------------------------------------------------------------
echo
echo "== e2e: summary"
grep -E '^E2E (SCENARIO .* (PASS|FAIL|SKIP)|BOOT FAIL|STEP )' "$LOG" || true
printf 'e2e timings: fetch %ss, initramfs %ss, qemu %ss, total %ss\n' "$(secs "$T_FETCH")" \
  "$(secs "$T_INITRAMFS")" "$(secs "$T_BOOT")" "$(secs $(($(ms) - T_START)))"
# PASS needs the guest's final verdict and no FAIL line anywhere (a scenario cannot fake a pass).
if [ "$(grep '^E2E RESULT:' "$LOG" | tail -n 1)" = "E2E RESULT: PASS" ] &&
  ! grep -qE '^E2E (SCENARIO [^ ]+ FAIL|BOOT FAIL)' "$LOG"; then
  echo "E2E RESULT: PASS"
  exit 0
fi
if [ "$qrc" = 124 ]; then
  echo "e2e: QEMU killed after ${E2E_QEMU_TIMEOUT:-900}s without a result" >&2
elif ! grep -q '^E2E RESULT:' "$LOG"; then
  echo "e2e: the guest printed no result (qemu rc=$qrc)" >&2
fi
echo "E2E RESULT: FAIL"
exit 1

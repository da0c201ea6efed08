#!/usr/bin/env bash
# Runs every test tier on a fresh Debian 12 machine: installs dependencies, builds, checks format,
# runs the static checks (tools/lint.sh: shellcheck, clang-tidy), then runs the unit and
# host-integration tiers through CTest, the kernel e2e tier, the image tier (tests/image), and
# after them the sanitizer tier (tools/sanitize.sh) and a short fuzz run (tools/fuzz.sh).
# Those last two run whatever the other's result, and fail the run at the end.
# Needs root (mounts, other uids).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
BUILD=${BUILD_DIR:-build}
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDATERA_BUILD_TESTS=ON \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "${launcher[@]}"
cmake --build "$BUILD" -j"$(nproc)"

echo "== format (clang-format --dry-run --Werror)"
tools/format.sh --check

echo "== static checks (tools/lint.sh)"
# Every script through shellcheck; clang-tidy (.clang-tidy) on the product sources, files
# unchanged since they last passed skipped. Any finding fails the run here, before the tiers.
tools/lint.sh "$BUILD"

echo "== unit and host tiers (ctest)"
ctest --test-dir "$BUILD" --output-on-failure -j2 --timeout 300 -LE 'e2e|image'

echo "== kernel e2e tier"
# A QEMU guest with Debian's kernel, real open-iscsi and LIO (tests/e2e/README.md). It reports a
# loud SKIP (exit 77) only when QEMU cannot run at all.
ctest --test-dir "$BUILD" -L e2e --output-on-failure

echo "== image tier"
# The runtime image from this build's binaries on a cached mmdebstrap base, and the DaemonSet's pod
# under podman with the driver driven from the host (tests/image/README.md). A loud SKIP (exit 77)
# only when podman cannot run a container here.
ctest --test-dir "$BUILD" -L image --output-on-failure

# Run both even when one fails; report at the end (the tiers above have passed by now).
late_failures=()

echo "== sanitizer tier (GCC -fsanitize=address,undefined: unit tier and host subset)"
# tools/sanitize.sh builds build-asan (only the unit tier, a host subset and the binaries they
# start) and runs them under ASan+UBSan with leak detection. Exit 77 is its loud SKIP when the
# build overran SANITIZE_BUILD_TIMEOUT (docs/benchmarks.md has its times); SANITIZE=0 skips it.
if [[ ${SANITIZE:-1} == 0 ]]; then
  echo "SKIP sanitizer tier: SANITIZE=0"
else
  san_rc=0
  tools/sanitize.sh || san_rc=$?
  if ((san_rc == 77)); then
    echo "SKIP sanitizer tier: its build overran its time bound (see above)"
  elif ((san_rc != 0)); then
    late_failures+=("sanitizer tier")
  fi
fi

echo "== fuzz (tools/fuzz.sh: regressions, then ${FUZZ_SECONDS:-10}s per target)"
# Exit 77 is the loud SKIP for a machine without clang/libFuzzer; anything else non-zero fails.
fuzz_rc=0
tools/fuzz.sh "${FUZZ_SECONDS:-10}" || fuzz_rc=$?
if ((fuzz_rc == 77)); then
  echo "SKIP fuzz tier: clang or libFuzzer missing (see above)"
elif ((fuzz_rc != 0)); then
  late_failures+=("fuzz")
fi

if ((${#late_failures[@]})); then
  echo "FAILED: ${late_failures[*]}" >&2
  exit 1
fi

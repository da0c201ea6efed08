#!/usr/bin/env bash
# Runs every test tier on a fresh Debian 12 machine: installs dependencies, builds, checks format,
# then runs the unit and host-integration tiers through CTest, the kernel e2e tier, and after them
# the sanitizer tier (ASan + UBSan build of the unit tier and a host subset) and a short fuzz run
# (tools/fuzz.sh). Those last two run whatever the other's result, and fail the run at the end.
# Needs root (mounts, other uids).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
BUILD=${BUILD_DIR:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDATERA_BUILD_TESTS=ON
cmake --build "$BUILD" -j"$(nproc)"

echo "== format (clang-format --dry-run --Werror)"
tools/format.sh --check

echo "== unit and host tiers (ctest)"
ctest --test-dir "$BUILD" --output-on-failure -j2 --timeout 300 -LE e2e

echo "== kernel e2e tier"
# A QEMU guest with Debian's kernel, real open-iscsi and LIO (tests/e2e/README.md). It reports a
# loud SKIP (exit 77) only when QEMU cannot run at all.
ctest --test-dir "$BUILD" -L e2e --output-on-failure

# Run both even when one fails; report at the end (the tiers above have passed by now).
late_failures=()

echo "== sanitizer tier (GCC -fsanitize=address,undefined: unit tier and host subset)"
# The host subset: the tests whose real binaries (agent, shim, simulator, agentctl) serve real
# sockets; the mount-heavy volume and handoff tests stay in the main host tier (docs/benchmarks.md).
ASAN_BUILD=${ASAN_BUILD_DIR:-build-asan}
ASAN_HOST_TESTS=(integration_agent_test integration_edf_client_test datera_sim_process_test
  agentctl_process_test agent_http_test)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if cmake -S . -B "$ASAN_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDATERA_BUILD_TESTS=ON \
  -DDATERA_SANITIZE=ON "${launcher[@]}" && cmake --build "$ASAN_BUILD" -j"$(nproc)"; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  ctest --test-dir "$ASAN_BUILD" --output-on-failure -j2 --timeout 600 --no-tests=error -L unit ||
    late_failures+=("sanitizer unit tier")
  # CTest names tests after their gtest names, so the subset runs binary by binary.
  for t in "${ASAN_HOST_TESTS[@]}"; do
    timeout 900 "$ASAN_BUILD/tests/$t" || late_failures+=("sanitizer host: $t")
  done
else
  late_failures+=("sanitizer build")
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

#!/usr/bin/env bash
# The sanitizer tier: builds the project with GCC's -fsanitize=address,undefined in build-asan
# (DATERA_SANITIZE=ON; the shim is linked dynamically there) and runs the unit tier and a host
# subset under it, with leak detection. Exit 0 when everything passed.
#
#   tools/sanitize.sh        # ASAN_BUILD_DIR (default build-asan), SANITIZE_BUILD_TIMEOUT (s)
#
# Exit 0: passed; 1: a finding or a failed test; 77: the build did not finish within
# SANITIZE_BUILD_TIMEOUT (default 1500 s), a loud SKIP that keeps CI inside its time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
late_failures=()
# The host subset: the tests whose real binaries (agent, shim, simulator, agentctl) serve real
# sockets; the mount-heavy volume and handoff tests stay in the main host tier (docs/benchmarks.md).
ASAN_BUILD=${ASAN_BUILD_DIR:-build-asan}
ASAN_HOST_TESTS=(integration_agent_test integration_edf_client_test datera_sim_process_test
  agentctl_process_test agent_http_test)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# Only what the tier runs: the unit tier's test binaries (the unit-tests target), the host subset
# and the real binaries those start; benchmarks and the rest of the host tier are not built.
wanted=(unit-tests "${ASAN_HOST_TESTS[@]}" datera-agent datera-flexvolume datera-sim datera-agentctl)
t0=$(date +%s)
limit=${SANITIZE_BUILD_TIMEOUT:-1500}
build_rc=0
cmake -S . -B "$ASAN_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDATERA_BUILD_TESTS=ON \
  -DDATERA_SANITIZE=ON "${launcher[@]}" >/dev/null || build_rc=$?
if ((build_rc == 0)); then
  timeout "$limit" cmake --build "$ASAN_BUILD" -j"$(nproc)" --target "${wanted[@]}" || build_rc=$?
fi
if ((build_rc == 124)); then
  echo "=================================================================="
  echo "SKIP sanitizer tier: its build took over $limit s on this machine"
  echo "(ccache makes the next run faster; or raise SANITIZE_BUILD_TIMEOUT)"
  echo "=================================================================="
  exit 77
fi
if ((build_rc == 0)); then
  echo "sanitizer tier: build took $(($(date +%s) - t0)) s"
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

if ((${#late_failures[@]})); then
  echo "FAILED: ${late_failures[*]}" >&2
  exit 1
fi
echo "sanitizer tier: passed"

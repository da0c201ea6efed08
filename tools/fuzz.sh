#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang 14, ASan + UBSan, the component libraries built
# the same way) in build-fuzz, replays every saved crash in tests/fuzz/regressions/, then fuzzes
# each target for SECONDS from its seeds in tests/fuzz/corpus/ (tests/fuzz/README.md).
#
#   tools/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]   # default 60 s, every target
#   tools/fuzz.sh 600                                # the long run: 10 minutes per target
#
# Exit 0: no crash; 1: a regression replay or the fuzzing found one (the input is saved under
# build-fuzz/fuzz-crashes/<target>/, see the README for turning it into a regression); 77: clang
# or libFuzzer is missing (a loud SKIP). Environment: FUZZ_BUILD_DIR (default build-fuzz),
# FUZZ_BUILD_TIMEOUT (seconds the build may take, default 1800), FUZZ_JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${1:-60}
shift || true
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
BUILD_TIMEOUT=${FUZZ_BUILD_TIMEOUT:-1800}
JOBS=${FUZZ_JOBS:-$(nproc)}
ALL_TARGETS=(http_request flexvolume_argv volume_options edf_reply journal_record config_yaml kmsg_record)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL_TARGETS[@]}")

skip() {
  echo "==================================================================" >&2
  echo "SKIP fuzzing: $*" >&2
  echo "(apt-get install clang-14 libclang-rt-14-dev, or run tools/setup.sh)" >&2
  echo "==================================================================" >&2
  exit 77
}
command -v clang++ >/dev/null || skip "clang++ not found"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  >"$probe/p.cpp"
clang++ -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>"$probe/err" ||
  skip "clang++ cannot link -fsanitize=fuzzer: $(head -c 300 "$probe/err")"

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
echo "== fuzz: configure and build $BUILD (clang++, at most ${BUILD_TIMEOUT}s)"
t0=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DDATERA_FUZZ=ON -DDATERA_BUILD_TESTS=OFF "${launcher[@]}" >/dev/null
if ! timeout "$BUILD_TIMEOUT" cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]/#/fuzz_}"; then
  echo "FAIL fuzz: building the fuzz targets failed or took over ${BUILD_TIMEOUT}s" >&2
  exit 1
fi
echo "fuzz: build took $(($(date +%s) - t0)) s"

# A finding must never be silent: UBSan stops at the first report (-fno-sanitize-recover=all).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD/fuzz/fuzz_$t"
  [[ -x $bin ]] || { echo "FAIL fuzz: no target '$t' (known: ${ALL_TARGETS[*]})" >&2; exit 1; }
  log="$BUILD/fuzz-logs/$t.log"
  mkdir -p "$BUILD/fuzz-logs" "$BUILD/fuzz-crashes/$t" "$BUILD/fuzz-corpus/$t"

  mapfile -t regressions < <(find "tests/fuzz/regressions/$t" -type f 2>/dev/null | sort)
  if ((${#regressions[@]})); then
    if "$bin" -runs=1 "${regressions[@]}" >"$log.replay" 2>&1; then
      echo "fuzz $t: ${#regressions[@]} regression input(s) replayed, no crash"
    else
      echo "FAIL fuzz $t: a saved regression crashes again; the report:" >&2
      grep -E "ERROR|SUMMARY|Running: |#[0-9]+ 0x" "$log.replay" | head -40 >&2
      failed+=("$t (regression)")
    fi
  fi

  # New inputs go to build-fuzz/fuzz-corpus/<t> (first directory); the seeds are only read.
  max_len=8192
  [[ $t == http_request ]] && max_len=70000  # past the server's 64 KiB request limit
  if "$bin" -max_total_time="$SECONDS_PER" -timeout=10 -rss_limit_mb=2048 -max_len=$max_len \
    -print_final_stats=1 -artifact_prefix="$BUILD/fuzz-crashes/$t/" \
    "$BUILD/fuzz-corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    echo "fuzz $t: ${SECONDS_PER}s, $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" |
      grep -o '[0-9]*$') runs, no crash"
  else
    echo "FAIL fuzz $t: crash found; the report ($log):" >&2
    grep -E "ERROR|SUMMARY|#[0-9]+ 0x|Test unit written" "$log" | head -40 >&2
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "FAIL fuzz: ${failed[*]} (tests/fuzz/README.md: a crash becomes a regression)" >&2
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} target(s), no crash"

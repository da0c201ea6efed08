#!/usr/bin/env bash
# Whole-process benchmark: how the iSCSI NOP-Out timers shape the I/O stall of a VIP failover
# (gratuitous ARP sent) and of an access IP change (the old IP vanishes; the agent moves the
# volume), on a real kernel. Runs the kernel tier's agent scenario once per setting and run, and
# prints the guest's measurements as a table.
#
#   tools/bench/failover-timers.sh BUILD_DIR [RUNS] [SETTINGS...]
#   e.g. tools/bench/failover-timers.sh build 2 2/2 5/5 5/10
#
# SETTINGS are noop_out_interval/noop_out_timeout in seconds (default: 2/2 5/5 5/10).
set -eu -o pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [RUNS] [INTERVAL/TIMEOUT...]" >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$1
RUNS=${2:-2}
shift $(($# >= 2 ? 2 : 1))
SETTINGS=("$@")
[ ${#SETTINGS[@]} -gt 0 ] || SETTINGS=(2/2 5/5 5/10)
OUT=$(mktemp -d /tmp/failover-timers.XXXXXX)

printf '| noop interval/timeout | run | failover stall (s) | failover errors | keeper recovery (s) | IP change stall (s) | IP change errors | move (s) | trigger |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for s in "${SETTINGS[@]}"; do
  for r in $(seq 1 "$RUNS"); do
    log=$OUT/${s%/*}-${s#*/}-$r.log
    if ! E2E_ONLY=10-agent E2E_APPEND="e2e.noop=$s" "$HERE/tests/e2e/run.sh" "$BUILD" >"$log" 2>&1; then
      printf '| %s | %s | run failed: see %s |||||||\n' "$s" "$r" "$log"
      continue
    fi
    fo=$(grep '^E2E FACT failover ' "$log")
    kr=$(grep '^E2E FACT keeper ' "$log")
    rb=$(grep '^E2E FACT rebalance ' "$log")
    field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
    trig=$(printf '%s\n' "$rb" | sed -n "s/.*trigger='access moved on the array (\([^)]*\))'.*/\1/p")
    printf '| %s | %s | %s | %s | %s | %s | %s | %.2f | %s |\n' "$s" "$r" \
      "$(field "$fo" longest_write_s)" "$(field "$fo" errors)" \
      "$(printf '%.2f' "$(field "$kr" recovery_seconds)")" \
      "$(field "$rb" longest_write_s)" "$(field "$rb" errors)" "$(field "$rb" move_s)" "$trig"
  done
done
echo "logs: $OUT" >&2

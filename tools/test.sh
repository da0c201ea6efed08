#!/usr/bin/env bash
# Runs every test tier on a fresh Debian 12 machine: installs dependencies, builds, checks format,
# then runs the unit and host-integration tiers through CTest. Needs root (mounts, other uids).
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

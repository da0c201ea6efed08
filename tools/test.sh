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
ctest --test-dir "$BUILD" --output-on-failure -j2 --timeout 300

echo "== kernel e2e tier"
echo "SKIP kernel e2e tier: it has no scenarios yet; they arrive with the session keeper (issue #5)."

#!/usr/bin/env bash
# Static checks, run by tools/test.sh: shellcheck on every shell script of the project (findings of
# severity warning and above), then clang-tidy with the repo's .clang-tidy on every product source
# file (base/, agent/, plugins/, metrics/, tools/ but its benchmarks) in BUILD's compile_commands.json.
# Any finding fails.
#
# clang-tidy costs ~8 s of CPU per file (Asio/Beast coroutine headers), ~5 min for the tree on 2
# cores, so a file whose own text and project headers (ninja's dependency list), .clang-tidy and
# the clang-tidy version are unchanged since it last passed is skipped: a stamp per clean file, keyed
# by those contents only, in LINT_STAMPS (default /var/cache/datera-lint, so a fresh clone on the
# same machine reuses them, as the kernel tier reuses its downloads). TIDY_ALL=1 ignores the stamps.
#
# Usage: tools/lint.sh [BUILD]   (default: $BUILD_DIR or build; configured with
#        -DCMAKE_EXPORT_COMPILE_COMMANDS=ON and built, so ninja knows every file's headers)
# Exit: 0 clean, 1 a finding (printed above).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-${BUILD_DIR:-build}}
root=$PWD

echo "== shellcheck"
mapfile -t scripts < <(git ls-files -co --exclude-standard -- '*.sh' .ci/run tests/e2e/guest/init)
shellcheck -x -S warning "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean"

echo "== clang-tidy"
[[ -f $BUILD/compile_commands.json ]] || {
  echo "no $BUILD/compile_commands.json: configure with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON" >&2
  exit 1
}
stamps=${LINT_STAMPS:-/var/cache/datera-lint}
mkdir -p "$stamps"
[[ ${TIDY_ALL:-0} == 1 ]] && rm -f "$stamps"/*
salt=$(
  clang-tidy --version
  cat .clang-tidy
)
# "source object" per product file, from the compile database.
mapfile -t units < <(python3 - "$BUILD/compile_commands.json" "$root" <<'PY'
import json, shlex, sys
db, root = sys.argv[1], sys.argv[2] + "/"
seen = set()  # a file built into two targets is analysed once
for e in json.load(open(db)):
    f = e["file"]
    rel = f[len(root):] if f.startswith(root) else ""
    if rel in seen:
        continue
    seen.add(rel)
    # Not tools/bench: benchmark programs, not shipped (and 4 files fewer to analyse).
    if rel.split("/")[0] in ("base", "agent", "plugins", "metrics", "tools") and not rel.startswith("tools/bench/"):
        args = shlex.split(e["command"])
        print(rel, args[args.index("-o") + 1])
PY
)
todo=()
for unit in "${units[@]}"; do
  read -r src obj <<<"$unit"
  # The key: the file, every project header it includes, the check set and the tool's version.
  key=$(
    {
      echo "$salt"
      ninja -C "$BUILD" -t deps "$obj" | sed -n 's/^    //p' | (cd "$BUILD" && xargs -r realpath -m) |
        grep "^$root/" | sort | xargs -r cat
      cat "$src"
    } | sha256sum | cut -c1-32
  )
  [[ -f $stamps/$key ]] || todo+=("$src:$key")
done
echo "clang-tidy: ${#units[@]} files, $((${#units[@]} - ${#todo[@]})) unchanged since they passed"
((${#todo[@]})) || exit 0
# One clang-tidy per file, in parallel; a clean file gets its stamp.
# shellcheck disable=SC2016 # the inner bash expands them
printf '%s\n' "${todo[@]}" | xargs -P"${TIDY_JOBS:-$(nproc)}" -I{} bash -c '
  src=${1%:*} key=${1##*:}
  if clang-tidy -p "$2" --quiet --warnings-as-errors="*" \
       --extra-arg=-Wno-unknown-warning-option "$src" 2>/dev/null; then
    touch "$3/$key"
  else
    exit 1
  fi' _ {} "$BUILD" "$stamps" || {
  echo "clang-tidy: findings above (fix them, or disable a check narrowly in .clang-tidy with why)" >&2
  exit 1
}
echo "clang-tidy: clean"

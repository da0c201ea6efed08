#!/usr/bin/env bash
# Validates the project's manifests offline (tools/manifests/README.md): renders daemonset/,
# deploy/csi/ and deploy/csi/examples/ with `kubectl kustomize`, checks every rendered object
# against its Kubernetes OpenAPI schema and every key against the schema's properties
# (tools/manifests/validate.js), then requires each broken copy in
# tests/deploy/manifest_breakages.yaml to be rejected. The ctest test deploy_manifests_schema.
#
#   tools/manifests/validate.sh [KUSTOMIZATION_DIR]
# With a directory (an overlay of your own, say) it renders and checks that one instead, without
# the breakage cases, which are written against the project's sets.
#
# Installs what is missing: kubectl (Debian's kubernetes-client) and Node.js/npm with apt-get when
# run as root, and the pinned npm packages with `npm ci` into a cache directory (MANIFESTS_CACHE,
# default /var/cache/datera-manifests) keyed by package.json and package-lock.json, so later runs
# use no network.
# Exit 0: valid; 1: a check failed; 77: SKIP, a tool could not be had (the message names it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if (($# > 1)); then
  echo "usage: $0 [KUSTOMIZATION_DIR]" >&2
  exit 2
fi
# The kustomizations to render, by the name the breakage cases' `set` uses (validate.js).
if (($# == 1)); then
  names=("$1")
  dirs=("$1")
  breakages=()
else
  names=(daemonset deploy/csi deploy/csi/examples)
  dirs=("$root/daemonset" "$root/deploy/csi" "$root/deploy/csi/examples")
  breakages=(--breakages "$root/tests/deploy/manifest_breakages.yaml")
fi

skip() {
  echo "=================================================================="
  echo "SKIP manifests validation: $*"
  echo "=================================================================="
  exit 77
}

# apt-get install, once the package lists are there; only as root, only for commands missing, so
# a kubectl or Node.js installed another way (another package, a newer release) is left alone.
apt_install() {
  [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null || return 1
  export DEBIAN_FRONTEND=noninteractive
  echo "validate.sh: apt-get install $*"
  apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

command -v kubectl >/dev/null || apt_install kubernetes-client ||
  skip "kubectl is missing and 'apt-get install kubernetes-client' failed (or not root)"
command -v node >/dev/null || apt_install nodejs ||
  skip "node is missing and 'apt-get install nodejs' failed (or not root)"
command -v npm >/dev/null || apt_install npm ||
  skip "npm is missing and 'apt-get install npm' failed (or not root)"

# The pinned packages, installed once per lock file. Built in a temporary directory and renamed
# into place, so an interrupted or concurrent run never leaves a half-filled cache behind.
cache_root=${MANIFESTS_CACHE:-/var/cache/datera-manifests}
if ! mkdir -p "$cache_root" 2>/dev/null || [[ ! -w $cache_root ]]; then
  cache_root=${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/datera-manifests
  mkdir -p "$cache_root" 2>/dev/null || skip "no writable cache directory for the npm packages (set MANIFESTS_CACHE)"
fi
# Keyed by package.json too: an edit there that the lock file lacks must reach `npm ci`, which
# then fails, instead of running on the old packages.
deps_hash=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)
deps="$cache_root/$deps_hash"
if [[ ! -f $deps/.complete ]]; then
  rm -rf "$deps" # left by hand or by an older version of this script: not known to be whole
  tmp=$(mktemp -d "$cache_root/.install.XXXXXX")
  cp "$here/package.json" "$here/package-lock.json" "$tmp/"
  echo "validate.sh: npm ci into $deps (first run with this package.json and lock file)"
  npm_log="$tmp/npm.log"
  if ! (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >"$npm_log" 2>&1; then
    cat "$npm_log" >&2
    # Only an unreachable registry is a SKIP; a lock file out of step with package.json, or any
    # other npm error, is the project's defect and fails.
    if grep -Eq 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|network' "$npm_log"; then
      rm -rf "$tmp"
      skip "npm ci could not reach the npm registry (log above)"
    fi
    rm -rf "$tmp"
    echo "validate.sh: npm ci failed (log above)" >&2
    exit 1
  fi
  touch "$tmp/.complete"
  mv -T "$tmp" "$deps" 2>/dev/null || rm -rf "$tmp" # another run got there first
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "validate.sh: $(kubectl version --client 2>/dev/null | head -n1), node $(node --version)"
sets=()
for i in "${!dirs[@]}"; do
  out="$work/rendered-$i.yaml"
  # A kubeconfig that does not exist: rendering needs no cluster, and must not reach one.
  KUBECONFIG="$work/no-kubeconfig" kubectl kustomize "${dirs[$i]}" >"$out"
  sets+=("${names[$i]}=$out")
done
node "$here/validate.js" --deps "$deps" "${breakages[@]}" "${sets[@]}"

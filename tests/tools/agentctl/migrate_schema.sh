#!/usr/bin/env bash
# datera-agentctl migrate's CSI PVs against the Kubernetes schemas (tools/manifests/validate.sh:
# every field known, every type right). Exit 77 (a loud SKIP) when the validator cannot run.
set -euo pipefail
agentctl=$1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/k"
"$agentctl" migrate --pvs "$here/flex_pvs.json" --secret-namespace datera-system \
  --manifests "$work/csi-pvs.json" >"$work/plan.txt"
cat "$work/plan.txt"
# kustomize takes objects, not a List: one file per PV.
/usr/bin/python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
items = json.load(open(f"{work}/csi-pvs.json"))["items"]
assert len(items) == 2, f"{len(items)} CSI PVs, not 2"
with open(f"{work}/k/kustomization.yaml", "w") as k:
    k.write("resources:\n")
    for i, pv in enumerate(items):
        json.dump(pv, open(f"{work}/k/pv-{i}.json", "w"))
        k.write(f"- pv-{i}.json\n")
PY
"$root/tools/manifests/validate.sh" "$work/k"

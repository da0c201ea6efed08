#!/usr/bin/env bash
# datera-agentctl migrate's CSI PVs against the Kubernetes schemas (tools/manifests/validate.sh:
# every field known, every type right): from FlexVolume PVs and from Datera CSI PVs. Exit 77 (a
# loud SKIP) when the validator cannot run.
set -euo pipefail
agentctl=$1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/k"
for source in flex_pvs datera_csi_pvs; do
  "$agentctl" migrate --pvs "$here/$source.json" --secret-namespace datera-system \
    --manifests "$work/$source.csi.json" >"$work/$source.plan.txt"
  cat "$work/$source.plan.txt"
done
# kustomize takes objects, not a List: one file per PV.
/usr/bin/python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
with open(f"{work}/k/kustomization.yaml", "w") as k:
    k.write("resources:\n")
    for source in ("flex_pvs", "datera_csi_pvs"):
        items = json.load(open(f"{work}/{source}.csi.json"))["items"]
        assert len(items) == 2, f"{source}: {len(items)} CSI PVs, not 2"
        for i, pv in enumerate(items):
            assert pv["spec"]["csi"]["driver"] == "agent.iscsi.datera.io", pv
            json.dump(pv, open(f"{work}/k/{source}-{i}.json", "w"))
            k.write(f"- {source}-{i}.json\n")
PY
"$root/tools/manifests/validate.sh" "$work/k"

#!/usr/bin/python3
"""One CSI call per invocation, for the kernel tier's shell scenarios (80-csi): the test tier's
client (tests/csi/csi_client.py) behind a command line.

    csi.py SOCKET METHOD [key=value ...]

METHOD: info, probe, node-info, create, delete, publish, unpublish, stage, unstage, node-publish,
node-unpublish, stats, expand, node-expand, snapshot, delete-snapshot. Keys: vol=, node=, gib=, fs=
(xfs, ext4, or block for a raw block volume), staging=, target=, name= (a snapshot's), snapshot=
(a snapshot id: create from it; delete-snapshot's), and p.K=V (StorageClass parameters), c.K=V
(volume context), pc.K=V (publish context).

Prints the reply as one line of JSON and exits 0; a failed call prints `ERROR CODE: details` and
exits 3 (CODE is the gRPC status name, e.g. FAILED_PRECONDITION); a usage error exits 2.
"""

import json
import sys

from google.protobuf import json_format

from csi_client import CsiClient, CsiError, block, mount

GIB = 1 << 30


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sock, method = argv[1], argv[2]
    kv, params, ctx, pctx = {}, {}, {}, {}
    for a in argv[3:]:
        k, sep, v = a.partition("=")
        if not sep:
            print(f"csi.py: not key=value: {a}", file=sys.stderr)
            return 2
        for prefix, into in (("p.", params), ("c.", ctx), ("pc.", pctx)):
            if k.startswith(prefix):
                into[k[len(prefix):]] = v
                break
        else:
            kv[k] = v
    fs = kv.get("fs", "xfs")
    cap = block() if fs == "block" else mount(fs)
    vol = kv.get("vol", "")
    size = int(kv.get("gib", "0")) * GIB
    with CsiClient(sock, timeout=float(kv.get("timeout", "120"))) as c:
        calls = {
            "info": lambda: c.plugin_info(),
            "probe": lambda: c.probe(),
            "node-info": lambda: c.node_info(),
            "create": lambda: c.create_volume(vol, cap, size, parameters=params,
                                              from_snapshot=kv.get("snapshot")),
            "snapshot": lambda: c.create_snapshot(kv["name"], vol),
            "delete-snapshot": lambda: c.delete_snapshot(kv["snapshot"]),
            "delete": lambda: c.delete_volume(vol),
            "publish": lambda: c.controller_publish(vol, kv["node"], cap, context=ctx),
            "unpublish": lambda: c.controller_unpublish(vol, kv.get("node", "")),
            "stage": lambda: c.node_stage(vol, kv["staging"], cap, publish_context=pctx,
                                          context=ctx),
            "unstage": lambda: c.node_unstage(vol, kv["staging"]),
            "node-publish": lambda: c.node_publish(vol, kv["staging"], kv["target"], cap,
                                                   publish_context=pctx, context=ctx),
            "node-unpublish": lambda: c.node_unpublish(vol, kv["target"]),
            "stats": lambda: c.node_volume_stats(vol, kv["target"]),
            "expand": lambda: c.controller_expand(vol, size),
            "node-expand": lambda: c.node_expand(vol, kv["target"], size,
                                                 staging_path=kv.get("staging", "")),
        }
        if method not in calls:
            print(f"csi.py: unknown method {method}", file=sys.stderr)
            return 2
        try:
            reply = calls[method]()
        except CsiError as e:
            print(f"ERROR {e.code}: {e.details}")
            return 3
        print(json.dumps(json_format.MessageToDict(reply, preserving_proto_field_name=True),
                         sort_keys=True, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

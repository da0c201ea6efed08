#!/usr/bin/python3
"""CSI against FlexVolume on one agent, in one run: the latency of bringing a new volume into a pod
and of taking it away, through each front end, on datera-sim's file backend and loop devices.

    sudo /usr/bin/python3 tools/bench/csi_latency.py [BUILD_DIR] [ROUNDS] [HANDOFF]

FlexVolume: the installed shim's `mount` (create, ACL and lease, login, mkfs, staging mount, bind)
and `unmount`. CSI: CreateVolume, ControllerPublishVolume, NodeStageVolume, NodePublishVolume, and
back. Medians over ROUNDS new volumes each (default 10). HANDOFF is the agent's handoff.mode:
`agent` (the default: a FlexVolume mount claims the volume's lease, which waits claim_settle, 1 s)
or `off` (no lease: the two front ends do the same node work). Needs root, loop devices and
mkfs.xfs.
Results go to docs/benchmarks.md by hand, with the command.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(ROOT, "build")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
HANDOFF = sys.argv[3] if len(sys.argv) > 3 else "agent"
sys.path[:0] = [os.path.join(ROOT, "tests", "csi"), os.path.join(BUILD, "tests", "csi", "py")]

from csi_client import CsiClient, mount  # noqa: E402


def wait_for(pred, what, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"csi_latency: timed out waiting for {what}")


def ms(t0):
    return (time.monotonic() - t0) * 1000.0


def main():
    if os.geteuid() != 0:
        raise SystemExit("csi_latency: run as root (it mounts filesystems)")
    work = tempfile.mkdtemp(prefix="dt-csi-bench-")
    procs = []
    try:
        sim_port, metrics_port = 17811, 17812
        with open(f"{work}/pw", "w") as f:
            f.write("pw\n")
        os.chmod(f"{work}/pw", 0o600)
        procs.append(subprocess.Popen(
            [f"{BUILD}/bin/datera-sim", "--listen", f"127.0.0.1:{sim_port}", "--state",
             f"{work}/array/state.json", "--backend", "file", "--file-dir", f"{work}/array/vols",
             "--user", "admin", "--password", "pw"],
            stdout=open(f"{work}/sim.log", "w"), stderr=subprocess.STDOUT))
        wait_for(lambda: "listening on" in open(f"{work}/sim.log").read(), "datera-sim")
        with open(f"{work}/config.yaml", "w") as f:
            f.write(f"""node_name: node-a
socket_path: {work}/run/agent.sock
plugin_dir: {work}/plugins
kubelet_root: {work}/kubelet
state_dir: {work}/state
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
backend: {{server: "127.0.0.1:{sim_port}", username: admin, password_file: {work}/pw}}
initiator: {{kind: loop, iqn: "iqn.1993-08.org.debian:01:bench-node-a"}}
csi: {{enabled: true, endpoint: {work}/csi/csi.sock, controller: true, node: true}}
handoff: {{mode: {HANDOFF}}}
""")
        procs.append(subprocess.Popen([f"{BUILD}/bin/datera-agent", "--config",
                                       f"{work}/config.yaml"],
                                      stdout=open(f"{work}/agent.log", "w"),
                                      stderr=subprocess.STDOUT))
        shim = f"{work}/plugins/datera~iscsi/iscsi"
        wait_for(lambda: os.path.exists(shim) and os.path.exists(f"{work}/csi/csi.sock"),
                 "the agent's driver and CSI socket")
        csi = CsiClient(f"{work}/csi/csi.sock")
        csi.wait_ready()
        t = {k: [] for k in ["flex mount", "flex unmount", "CreateVolume",
                             "ControllerPublishVolume", "NodeStageVolume", "NodePublishVolume",
                             "csi total up", "NodeUnpublishVolume", "NodeUnstageVolume",
                             "ControllerUnpublishVolume", "DeleteVolume", "csi total down"]}
        kubelet = f"{work}/kubelet"
        for i in range(ROUNDS):
            # FlexVolume: one call does it all.
            pod = f"{kubelet}/pods/flex-{i}/volumes/datera~iscsi/pv-flex-{i}"
            os.makedirs(pod)
            opts = json.dumps({"volumeID": f"flex-{i}", "size": "1", "kubernetes.io/fsType": "xfs",
                               "kubernetes.io/readwrite": "rw"})
            t0 = time.monotonic()
            out = subprocess.run([shim, "mount", pod, opts], capture_output=True, text=True)
            t["flex mount"].append(ms(t0))
            assert '"Success"' in out.stdout, out.stdout
            t0 = time.monotonic()
            out = subprocess.run([shim, "unmount", pod], capture_output=True, text=True)
            t["flex unmount"].append(ms(t0))
            assert '"Success"' in out.stdout, out.stdout
            # CSI: the same work in kubelet's and the sidecars' four calls.
            vol = f"pvc-{i}"
            staging = f"{kubelet}/plugins/kubernetes.io/csi/agent.iscsi.datera.io/h{i}/globalmount"
            target = f"{kubelet}/pods/csi-{i}/volumes/kubernetes.io~csi/pv-{i}/mount"
            os.makedirs(os.path.dirname(staging))
            os.makedirs(os.path.dirname(target))
            up = time.monotonic()
            t0 = time.monotonic()
            csi.create_volume(vol, mount("xfs"), required_bytes=1 << 30)
            t["CreateVolume"].append(ms(t0))
            t0 = time.monotonic()
            csi.controller_publish(vol, "node-a", mount("xfs"))
            t["ControllerPublishVolume"].append(ms(t0))
            t0 = time.monotonic()
            csi.node_stage(vol, staging, mount("xfs"))
            t["NodeStageVolume"].append(ms(t0))
            t0 = time.monotonic()
            csi.node_publish(vol, staging, target, mount("xfs"))
            t["NodePublishVolume"].append(ms(t0))
            t["csi total up"].append(ms(up))
            down = time.monotonic()
            for name, call in [("NodeUnpublishVolume", lambda: csi.node_unpublish(vol, target)),
                               ("NodeUnstageVolume", lambda: csi.node_unstage(vol, staging)),
                               ("ControllerUnpublishVolume",
                                lambda: csi.controller_unpublish(vol, "node-a")),
                               ("DeleteVolume", lambda: csi.delete_volume(vol))]:
                t0 = time.monotonic()
                call()
                t[name].append(ms(t0))
            t["csi total down"].append(ms(down))
        print(f"csi_latency: {ROUNDS} new 1 GiB xfs volumes per front end, handoff.mode "
              f"{HANDOFF}, medians (ms)")
        for k, v in t.items():
            print(f"  {k:28s} {statistics.median(v):8.1f}")
        up_ratio = statistics.median(t["csi total up"]) / statistics.median(t["flex mount"])
        down_ratio = statistics.median(t["csi total down"]) / statistics.median(t["flex unmount"])
        print(f"  CSI/FlexVolume, bring up: {up_ratio:.2f}   take down: {down_ratio:.2f}")
        csi.close()
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)
        out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
        for target in sorted((l for l in out.stdout.split() if l.startswith(work)), reverse=True):
            subprocess.run(["umount", target])
        loops = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"],
                               capture_output=True, text=True).stdout.splitlines()
        for line in loops:
            parts = line.split()
            if len(parts) == 2 and parts[1].startswith(work):
                subprocess.run(["losetup", "-d", parts[0]])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""What a frozen snapshot costs, in one run on one agent (controller and node), datera-sim's file
backend and loop devices:

    sudo /usr/bin/python3 tools/bench/snapshot_freeze.py [BUILD_DIR] [ROUNDS] [LEASE_TTL_S]

- CreateSnapshot of a volume no node holds (the array's snapshot alone: no freeze) against
  CreateSnapshot of a volume staged and written to (the freeze request waits for the node's next
  grant check, every LEASE_TTL_S/3; default 3 s, so checks every 1 s; production's 30 s means
  up to 10 s);
- the writer's view: the longest gap between two completed fsync'd 4 KiB writes in the second
  before the call, and during the call (the freeze holds writers), and the node's own
  datera_agent_filesystem_frozen_seconds.
Medians over ROUNDS snapshots (default 10). Results go to docs/benchmarks.md by hand, with the
command.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(ROOT, "build")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
TTL = int(sys.argv[3]) if len(sys.argv) > 3 else 3
sys.path[:0] = [os.path.join(ROOT, "tests", "csi"), os.path.join(BUILD, "tests", "csi", "py")]

from csi_client import CsiClient, mount  # noqa: E402


def wait_for(pred, what, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"snapshot_freeze: timed out waiting for {what}")


class Writer(threading.Thread):
    """fsync'd 4 KiB writes, back to back; `done` holds each completion time."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.done = []
        self.halt = threading.Event()

    def run(self):
        with open(self.path, "wb") as f:
            block = os.urandom(4096)
            while not self.halt.is_set():
                f.write(block)
                f.flush()
                os.fsync(f.fileno())
                self.done.append(time.monotonic())

    def longest_gap(self, start, end):
        times = [t for t in self.done if start <= t <= end]
        points = [start] + times + [end]
        return max(b - a for a, b in zip(points, points[1:]))


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main():
    if os.geteuid() != 0:
        raise SystemExit("snapshot_freeze: run as root (it mounts filesystems)")
    work = tempfile.mkdtemp(prefix="dt-snap-bench-")
    procs = []
    try:
        sim_port, metrics_port = 17821, 17822
        with open(f"{work}/pw", "w") as f:
            f.write("pw\n")
        os.chmod(f"{work}/pw", 0o600)
        procs.append(subprocess.Popen(
            [f"{BUILD}/bin/datera-sim", "--listen", f"127.0.0.1:{sim_port}", "--state",
             f"{work}/array/state.json", "--backend", "file", "--file-dir", f"{work}/array/vols",
             "--user", "admin", "--password", "pw", "--op-state-delay", "0ms"],
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
handoff: {{lease_ttl: {TTL}s, claim_settle: 300ms, claim_write_bound: 200ms}}
""")
        procs.append(subprocess.Popen([f"{BUILD}/bin/datera-agent", "--config",
                                       f"{work}/config.yaml"],
                                      stdout=open(f"{work}/agent.log", "w"),
                                      stderr=subprocess.STDOUT))
        wait_for(lambda: os.path.exists(f"{work}/csi/csi.sock"), "the agent's CSI socket")
        csi = CsiClient(f"{work}/csi/csi.sock", timeout=120)
        csi.wait_ready()
        cap = mount("xfs")
        kubelet = f"{work}/kubelet"

        # The array's snapshot alone: a volume no node holds.
        csi.create_volume("idle", cap, required_bytes=1 << 30)
        unheld = []
        for i in range(ROUNDS):
            t0 = time.monotonic()
            csi.create_snapshot(f"idle-{i}", "idle")
            unheld.append((time.monotonic() - t0) * 1000)

        # A staged volume under fsync'd writes.
        staging = f"{kubelet}/plugins/kubernetes.io/csi/agent.iscsi.datera.io/h/globalmount"
        target = f"{kubelet}/pods/p/volumes/kubernetes.io~csi/pv/mount"
        os.makedirs(staging)
        os.makedirs(os.path.dirname(target))
        csi.create_volume("busy", cap, required_bytes=1 << 30)
        csi.controller_publish("busy", "node-a", cap)
        wait_for(lambda: csi_stage(csi, staging, cap), "the grant to reach the node", 30)
        csi.node_publish("busy", staging, target, cap)
        writer = Writer(f"{target}/log.bin")
        writer.start()
        time.sleep(1)
        held, gap_before, gap_during = [], [], []
        for i in range(ROUNDS):
            before = time.monotonic()
            time.sleep(1.0)
            t0 = time.monotonic()
            csi.create_snapshot(f"busy-{i}", "busy")
            t1 = time.monotonic()
            held.append((t1 - t0) * 1000)
            gap_before.append(writer.longest_gap(before, t0) * 1000)
            gap_during.append(writer.longest_gap(t0, t1) * 1000)
        writer.halt.set()
        writer.join(10)
        frozen_n = metric(metrics_port, "datera_agent_filesystem_frozen_seconds_count")
        frozen_s = metric(metrics_port, "datera_agent_filesystem_frozen_seconds_sum")
        consistent = metric(metrics_port,
                            'datera_agent_csi_copies_total{consistency="frozen",kind="snapshot"}')
        print(f"snapshot_freeze: {ROUNDS} snapshots each, lease_ttl {TTL} s (grant checks every "
              f"{TTL / 3:.1f} s), medians (ms)")
        print(f"  CreateSnapshot, no node holds it (no freeze) {statistics.median(unheld):9.1f}")
        print(f"  CreateSnapshot, staged and written (frozen)  {statistics.median(held):9.1f}")
        print(f"  writer's longest wait, the second before     {statistics.median(gap_before):9.1f}")
        print(f"  writer's longest wait, during the call       {statistics.median(gap_during):9.1f}")
        print(f"  node: frozen {int(frozen_n)} times, {1000 * frozen_s / max(frozen_n, 1):.1f} ms "
              f"each on average; the controller counted {int(consistent)} frozen snapshots")
        print(f"  writes completed: {len(writer.done)}")
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


def csi_stage(csi, staging, cap):
    """NodeStageVolume, retried while the node has not seen the grant (UNAVAILABLE)."""
    try:
        csi.node_stage("busy", staging, cap)
        return True
    except Exception as e:  # CsiError UNAVAILABLE: the grant check has not run yet
        if "UNAVAILABLE" not in str(e):
            raise
        return False


if __name__ == "__main__":
    main()

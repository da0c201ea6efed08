#!/usr/bin/python3
"""The CSI front end's volume lifecycle on the host tier, driven over gRPC as the CSI sidecars and
kubelet would drive it.

Real processes: one datera-sim (file backend, ACL enforced by the loop initiator) and three
datera-agents, each in its own network namespace reaching the simulator over its own veth link,
as tests/integration/handoff_test.cpp sets nodes up: `node-c` plays the controller Deployment
(csi.controller: true, csi.node: false), `node-a` and `node-b` are nodes (csi.node: true) with the
loop initiator and their own IQN, kubelet root, state dir and CSI socket. Mounts and loop devices
are the host's (nsenter --net only), so the test reads /proc/self/mountinfo and the devices.

Checks, each printed as `[ OK ]` or `[ FAIL ]` (every case runs; the exit status is 1 if any
failed, 77 after a loud SKIP line when this machine cannot run it):
  identity    GetPluginInfo (the driver name), Probe ready, NodeGetInfo (the node's name)
  lifecycle   CreateVolume (and its idempotent repeat; ALREADY_EXISTS for a bigger size),
              NodeStageVolume before any publish refused (no mount, no device),
              ControllerPublishVolume to node-a: the array's ACL holds node-a's IQN alone and the
              ownership record names node-a; a publish to node-b meanwhile is FAILED_PRECONDITION;
              NodeStage + NodePublish on node-a: the staging mount and the bind at the target
              (mountinfo), data written and fsynced; NodeGetVolumeStats; DeleteVolume while
              published is FAILED_PRECONDITION; NodeUnpublish/NodeUnstage: no mount left;
              ControllerUnpublish; ControllerPublish to node-b, stage and publish there: the same
              data, the same filesystem UUID (no second mkfs); ControllerExpand + NodeExpand: df
              shows the larger filesystem; teardown, DeleteVolume: the app instance is gone
  block       a volumeMode Block volume: staged and published as a device file; a pattern written
              with O_DIRECT and fsync reads back
  latency     CreateVolume, NodeStageVolume and NodePublishVolume, median of several runs:
              `[ measure ] csi <op> <ms> ms` lines
  self-fence  published and staged on node-a, then ControllerUnpublish + ControllerPublish to
              node-b (a force-detach): node-a's agent tears its mounts down within a few lease
              periods and counts a self-fence; node-b stages and reads node-a's data
  migration   (also) node-a's FlexVolume mkfs recorded formatted: "true"; with the key wiped,
              node-b's CSI stage writes it again and its mkfs counter does not move
  format_guard  metadata formatted: "true" over a blank device: NodeStageVolume is
              FAILED_PRECONDITION, says why, counts a refusal, and mkfs never runs
  import_datera_csi  an app instance as Datera's CSI driver leaves it (CSI-<pv>, formatted,
              fs_type xfs, an xfs with data), its PV through `migrate`, then published, staged
              and read through this driver: same filesystem UUID, same data, no mkfs, lease and
              ACL node-a's while published and free after

Run by CTest (tests/csi/CMakeLists.txt) as
  /usr/bin/python3 lifecycle_test.py --agent BIN/datera-agent --sim BIN/datera-sim
with PYTHONPATH holding <build>/tests/csi/py (csi_pb2, csi_pb2_grpc) and tests/csi (csi_client).
Needs root, /dev/loop-control, mkfs.xfs, mkfs.ext4 and network namespaces.
"""

import argparse
import hashlib
import json
import mmap
import os
import re
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

SKIP = 77
DRIVER = "agent.iscsi.datera.io"
TTL = 3  # handoff.lease_ttl of every agent, seconds: renewals (and grant checks) every TTL/3
GIB = 1 << 30
PASSWORD = "sim-Passw0rd"
IP = "/usr/sbin/ip"
MKFS_XFS = 'datera_agent_volume_filesystems_created_total{fstype="xfs"}'


def log(msg):
    print(msg, flush=True)


def skip_unless_possible():
    why = None
    if os.geteuid() != 0:
        why = "the CSI lifecycle mounts filesystems (root)"
    elif not os.access("/dev/loop-control", os.R_OK | os.W_OK):
        why = "no /dev/loop-control; the loop initiator cannot run here"
    else:
        for tool in ("mkfs.xfs", "mkfs.ext4", "blkid", "losetup"):
            if not shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin"):
                why = f"{tool} is missing"
                break
        if not why and not (os.access(IP, os.X_OK) and os.access("/usr/bin/nsenter", os.X_OK)):
            why = "ip or nsenter is missing (one network namespace per node)"
    if why:
        print(f"SKIP csi lifecycle test: {why}", file=sys.stderr, flush=True)
        print(f"SKIPPED: {why}", flush=True)
        sys.exit(SKIP)


try:
    import grpc  # noqa: F401  (Debian's python3-grpcio; csi_client needs it)
    import csi_client
    from csi_client import CsiError, block, mount, pb
except ImportError as e:  # a build or setup fault, not a machine that cannot run the test
    print(f"lifecycle_test: cannot import the CSI client ({e}); PYTHONPATH needs "
          "<build>/tests/csi/py and tests/csi, and /usr/bin/python3 needs python3-grpcio",
          file=sys.stderr)
    sys.exit(1)


class Failed(Exception):
    pass


class Skip(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def expect_code(code, fn, *args, **kwargs):
    """Calls fn and expects the CSI call to fail with `code` (a grpc.StatusCode name)."""
    try:
        fn(*args, **kwargs)
    except CsiError as e:
        check(e.code == code, f"{e.method}: expected {code}, got {e.code}: {e.details}")
        return e
    raise Failed(f"{fn.__name__}: expected {code}, the call succeeded")


def wait_for(cond, timeout, step=0.1):
    end = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)


def run(argv, check_rc=True):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check_rc and r.returncode != 0:
        raise Failed(f"{' '.join(argv)}: rc={r.returncode}: {r.stdout.strip()}")
    return r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


# --- the host's mounts and devices -------------------------------------------------------------

def _unescape(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mountinfo():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.rstrip("\n").split(" - ", 1)
            a, b = pre.split(), post.split()
            out.append({"devno": a[2], "root": _unescape(a[3]), "target": _unescape(a[4]),
                        "opts": a[5], "fstype": b[0], "source": _unescape(b[1])})
    return out


def mount_at(path):
    """The visible (last) mount at `path`, or None."""
    found = None
    for m in mountinfo():
        if m["target"] == path:
            found = m
    return found


def mounts_under(root):
    return [m["target"] for m in mountinfo() if m["target"].startswith(root + "/")]


def loops_under(directory):
    out = []
    for name in os.listdir("/sys/block"):
        if not name.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                if f.read().strip().startswith(directory):
                    out.append("/dev/" + name)
        except OSError:
            pass
    return out


def kmsg_mark():
    """Writes a unique line into the kernel log and yields it (the ring buffer drops old lines, so
    "the lines since" is found by content, not by count)."""
    mark = f"dt-csi-test mark {os.getpid()} {time.monotonic_ns()}"
    with open("/dev/kmsg", "w") as f:
        f.write(mark + "\n")
    return mark


def xfs_lines_since(mark, device):
    """The kernel's lines about the xfs on `device` logged after `mark`."""
    lines = run(["/usr/bin/dmesg"]).stdout.splitlines()
    at = max((i for i, line in enumerate(lines) if mark in line), default=-1)
    tag = f"XFS ({os.path.basename(device)})"
    return [line for line in lines[at + 1:] if tag in line]


def check_mounted_clean(lines, what):
    """Mounted without the kernel finding anything wrong. Since Linux 5.13 a freeze covers the xfs
    log instead of writing an unmount record, so a copy of a frozen xfs replays that covering
    record at mount ("Starting recovery" is expected); corruption or I/O errors are not."""
    check(any("Mounting" in x for x in lines), f"{what}: the kernel logged no xfs mount: {lines}")
    bad = [x for x in lines if re.search(r"corrupt|error|shutdown|fail", x, re.I)]
    check(not bad, f"{what}: the kernel reports problems: {bad}")


def numbered(n):
    """The content of the writer's n-th file: 4 KiB anyone can recompute."""
    return hashlib.sha256(str(n).encode()).digest() * 128


class Writer(threading.Thread):
    """What a database does to a volume while it is snapshot: files written and fsynced one after
    another (their number recorded once durable), and a stream of buffered writes never synced,
    so the page cache holds dirty data at any moment."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root = root
        self.synced = -1  # the last file known durable
        self.streamed = 0  # bytes of stream.bin handed to the kernel (in its page cache, unsynced)
        self.error = None
        self.halt = threading.Event()

    def run(self):
        try:
            with open(os.path.join(self.root, "stream.bin"), "wb") as stream:
                n = 0
                while not self.halt.is_set():
                    with open(os.path.join(self.root, f"f-{n:06d}"), "wb") as f:
                        f.write(numbered(n))
                        f.flush()
                        os.fsync(f.fileno())
                    d = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
                    os.fsync(d)
                    os.close(d)
                    self.synced = n
                    stream.write(os.urandom(64 * 1024))
                    stream.flush()
                    self.streamed += 64 * 1024
                    n += 1
                    time.sleep(0.002)
        except Exception as e:  # reported by the case
            self.error = e


def fs_uuid(device):
    return run(["/usr/sbin/blkid", "-p", "-s", "UUID", "-o", "value", device]).stdout.strip()


def df_size(path):
    """The filesystem's size in bytes, as df reports it."""
    out = run(["/usr/bin/df", "-B1", "--output=size", path]).stdout.split()
    return int(out[-1])


# --- processes --------------------------------------------------------------------------------

class Sim:
    """datera-sim with the file backend, on 0.0.0.0 (each node reaches it over its veth link)."""

    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="dt-csi-sim-")
        self.log_path = os.path.join(self.dir, "sim.log")
        argv = [binary, "--listen", "0.0.0.0:0", "--state", os.path.join(self.dir, "state.json"),
                "--user", "admin", "--password", PASSWORD, "--backend", "file", "--file-dir",
                os.path.join(self.dir, "volumes")]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.port = None
        end = time.monotonic() + 10
        while time.monotonic() < end and self.proc.poll() is None:
            m = re.search(r"listening on http://([0-9.]+):([0-9]+)", self.log())
            if m:
                self.port = int(m.group(2))
                return
            time.sleep(0.02)
        raise RuntimeError("datera-sim did not start: " + self.log())

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def get(self, path):
        status, body = http_get(f"http://127.0.0.1:{self.port}{path}")
        return json.loads(body)

    def export(self, volume):
        """The app instance's export (uuid, acl IQNs, path), or None when the array has none."""
        for e in self.get("/_sim/exports")["exports"]:
            if e["app_instance"] == volume:
                return e
        return None

    def app_instance(self, volume):
        for tenant in self.get("/_sim/state")["tenants"].values():
            for ai in tenant["app_instances"]:
                if ai.get("name") == volume:
                    return ai
        return None

    def metadata(self, volume):
        ai = self.app_instance(volume)
        return (ai or {}).get("metadata", {}) or {}

    def edf(self, method, path, body=None):
        """One call of the EDF REST API (v2.2, as admin): what another client of the array (an
        operator, Datera's own CSI driver) sends. Yields the reply's `data`."""
        def call(m, p, b, headers):
            req = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/v2.2{p}", method=m,
                data=None if b is None else json.dumps(b).encode(),
                headers=dict(headers, **{"content-type": "application/json"}))
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read().decode())
        key = call("PUT", "/login", {"name": "admin", "password": PASSWORD}, {})["key"]
        return call(method, path, body, {"auth-token": key})["data"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class NetNs:
    """A network namespace joined to the host's by a veth pair with a /30 of its own
    (tests/testing/netns.h; a /16 of its own, 10.232/16, so it never meets the C++ tests')."""

    def __init__(self, tag, index):
        block = ((os.getpid() % 4000) * 4 + index) * 4
        net = f"10.232.{(block >> 8) & 255}."
        self.host_ip = net + str((block & 255) | 1)
        self.node_ip = net + str((block & 255) | 2)
        self.name = f"dc{os.getpid()}{tag}"
        self.host_if = f"vc{os.getpid()}{tag}"
        steps = [
            [IP, "netns", "add", self.name],
            [IP, "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns",
             self.name],
            [IP, "addr", "add", self.host_ip + "/30", "dev", self.host_if],
            [IP, "link", "set", self.host_if, "up"],
            [IP, "-n", self.name, "addr", "add", self.node_ip + "/30", "dev", "eth0"],
            [IP, "-n", self.name, "link", "set", "eth0", "up"],
            [IP, "-n", self.name, "link", "set", "lo", "up"]]
        self.made = False
        for s in steps:
            r = run(s, check_rc=False)
            if r.returncode != 0:
                self.close()
                raise RuntimeError(f"network namespace {self.name}: {' '.join(s)}: {r.stdout}")
            self.made = True

    def enter(self):
        return ["/usr/bin/nsenter", f"--net=/run/netns/{self.name}", "--"]

    def close(self):
        run([IP, "link", "del", self.host_if], check_rc=False)
        run([IP, "netns", "del", self.name], check_rc=False)


class Agent:
    """One node's datera-agent in its own temp tree and network namespace, serving CSI on
    <root>/csi/csi.sock; `kubelet` is its kubelet_root."""

    def __init__(self, binary, name, sim, net, controller, node):
        self.name = name
        self.iqn = f"iqn.1993-08.org.debian:01:csi-{os.getpid()}-{name}"
        self.net = net
        self.root = tempfile.mkdtemp(prefix=f"dt-csi-{name}-")
        self.kubelet = os.path.join(self.root, "kubelet")
        os.makedirs(self.kubelet)
        self.endpoint = os.path.join(self.root, "csi", "csi.sock")
        self.log_path = os.path.join(self.root, "agent.log")
        self.port = free_port()
        with open(os.path.join(self.root, "password"), "w") as f:
            f.write(PASSWORD)
        yaml = f"""node_name: it-node
socket_path: {self.root}/run/agent.sock
plugin_dir: {self.root}/plugins
kubelet_root: {self.kubelet}
state_dir: {self.root}/state
shutdown_grace: 3s
metrics: {{listen: '{net.node_ip}:{self.port}'}}
backend: {{server: '{net.host_ip}:{sim.port}', username: admin, password_file: '{self.root}/password'}}
initiator: {{kind: loop, iqn: '{self.iqn}'}}
handoff: {{lease_ttl: {TTL}s, claim_settle: 300ms, claim_write_bound: 200ms}}
csi: {{enabled: true, endpoint: '{self.endpoint}', driver_name: {DRIVER}, controller: {str(controller).lower()}, node: {str(node).lower()}, max_volumes_per_node: 0}}
"""
        self.config = os.path.join(self.root, "config.yaml")
        with open(self.config, "w") as f:
            f.write(yaml)
        env = dict(os.environ, DATERA_AGENT_NODE_NAME=name)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(net.enter() + [binary, "--config", self.config],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)
        self.client = None

    def wait_ready(self, timeout=20):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}'s agent exited ({self.proc.returncode}):\n"
                                   + self.log_tail(40))
            try:
                return http_get(f"http://{self.net.node_ip}:{self.port}/readyz", 1)[0] == 200
            except OSError:
                return False
        if not wait_for(ready, timeout, 0.05):
            raise RuntimeError(f"{self.name}'s agent not ready in {timeout} s:\n" + self.log_tail(40))
        self.client = csi_client.CsiClient(self.endpoint, timeout=60)
        try:
            self.client.wait_ready(10)
        except grpc.FutureTimeoutError:
            raise RuntimeError(f"{self.name}'s agent serves no CSI on {self.endpoint}:\n"
                               + self.log_tail(40)) from None

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def log_tail(self, n):
        return "\n".join(f"  {self.name}| {line}" for line in self.log_text().splitlines()[-n:])

    def metric(self, name_with_labels):
        _, text = http_get(f"http://{self.net.node_ip}:{self.port}/metrics")
        for line in text.splitlines():
            if line.startswith(name_with_labels + " "):
                return float(line.split()[-1])
        return 0.0

    # kubelet's paths below this node's kubelet_root, made as kubelet makes them: the staging
    # dir itself, only the parent of a publish target (the plugin makes the target).
    def staging(self, pv):
        p = os.path.join(self.kubelet, "plugins/kubernetes.io/csi", DRIVER,
                         hashlib.sha256(pv.encode()).hexdigest(), "globalmount")
        os.makedirs(p, exist_ok=True)
        return p

    def target(self, pv, pod_uid):
        parent = os.path.join(self.kubelet, "pods", pod_uid, "volumes/kubernetes.io~csi", pv)
        os.makedirs(parent, exist_ok=True)
        return os.path.join(parent, "mount")

    def block_staging(self, pv):
        p = os.path.join(self.kubelet, "plugins/kubernetes.io/csi/volumeDevices/staging", pv)
        os.makedirs(p, exist_ok=True)
        return p

    def block_target(self, pv, pod_uid):
        parent = os.path.join(self.kubelet, "plugins/kubernetes.io/csi/volumeDevices/publish", pv)
        os.makedirs(parent, exist_ok=True)
        return os.path.join(parent, pod_uid)

    def stop(self):
        if self.client:
            self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


# --- the test cases ---------------------------------------------------------------------------

class Lifecycle:
    def __init__(self, agent_bin, sim_bin):
        self.agent_bin = agent_bin
        self.sim = Sim(sim_bin)
        self.nets = {}
        self.agents = {}
        try:
            for i, (name, ctl, node) in enumerate(
                    [("node-c", True, False), ("node-a", False, True), ("node-b", False, True)]):
                try:
                    self.nets[name] = NetNs(name[-1], i)
                except RuntimeError as e:
                    raise Skip(f"cannot make a network namespace for {name} ({e}); the test "
                               "runs each node in one") from None
                self.agents[name] = Agent(agent_bin, name, self.sim, self.nets[name], ctl, node)
            for a in self.agents.values():
                a.wait_ready()
        except Exception:
            self.teardown()
            raise
        self.ctl = self.agents["node-c"].client
        self.ctl_agent = self.agents["node-c"]
        self.a = self.agents["node-a"]
        self.b = self.agents["node-b"]
        self.measures = {}

    def teardown(self):
        for a in self.agents.values():
            a.stop()
        for a in self.agents.values():
            for m in reversed(mounts_under(a.root)):
                run(["/usr/bin/umount", "-l", m], check_rc=False)
        for dev in loops_under(self.sim.dir):
            run(["/usr/sbin/losetup", "-d", dev], check_rc=False)
        self.sim.stop()
        for n in self.nets.values():
            n.close()
        if os.environ.get("DT_CSI_KEEP") != "1":
            for a in self.agents.values():
                shutil.rmtree(a.root, ignore_errors=True)
            shutil.rmtree(self.sim.dir, ignore_errors=True)

    def logs(self):
        out = [a.log_tail(40) for a in self.agents.values()]
        out.append("\n".join("  sim| " + line for line in self.sim.log().splitlines()[-20:]))
        return "\n".join(out)

    # helpers: one volume through the CSI calls
    def create(self, name, cap, gib=1, params=None):
        t0 = time.monotonic()
        r = self.ctl.create_volume(name, cap, gib * GIB, parameters=params or {"replica": "2"})
        self.measures.setdefault("CreateVolume", []).append((time.monotonic() - t0) * 1000)
        return r.volume

    def publish(self, vol, node, cap):
        return self.ctl.controller_publish(vol.volume_id, node.name, cap,
                                           context=dict(vol.volume_context))

    def stage(self, node, vol, cap, pctx, staging):
        t0 = time.monotonic()
        node.client.node_stage(vol.volume_id, staging, cap, publish_context=dict(pctx),
                               context=dict(vol.volume_context))
        self.measures.setdefault("NodeStageVolume", []).append((time.monotonic() - t0) * 1000)

    def node_publish(self, node, vol, cap, staging, target):
        t0 = time.monotonic()
        node.client.node_publish(vol.volume_id, staging, target, cap,
                                 context=dict(vol.volume_context))
        self.measures.setdefault("NodePublishVolume", []).append((time.monotonic() - t0) * 1000)

    def acl(self, volume):
        e = self.sim.export(volume)
        check(e is not None, f"the array has no export of {volume}")
        return sorted(e["acl"])

    def owner(self, volume):
        return self.sim.metadata(volume).get("datera-agent.owner", "")

    def cleanup(self, volume, staging_target_pairs):
        """Best effort, for a case that failed half-way: unpublish, unstage, unpublish on the
        controller, delete."""
        for node, staging, target in staging_target_pairs:
            for call in (lambda: node.client.node_unpublish(volume, target),
                         lambda: node.client.node_unstage(volume, staging)):
                try:
                    call()
                except Exception:
                    pass
        for call in (lambda: self.ctl.controller_unpublish(volume, ""),
                     lambda: self.ctl.delete_volume(volume)):
            try:
                call()
            except Exception:
                pass

    # --- cases ---
    def case_identity(self):
        for a in self.agents.values():
            info = a.client.plugin_info()
            check(info.name == DRIVER, f"{a.name}: GetPluginInfo name {info.name!r}, not {DRIVER}")
            check(info.vendor_version, f"{a.name}: GetPluginInfo has no vendor_version")
            probe = a.client.probe()
            check(probe.HasField("ready") and probe.ready.value,
                  f"{a.name}: Probe is not ready: {probe}")
        for a in (self.a, self.b):
            check(a.client.node_info().node_id == a.name, f"NodeGetInfo of {a.name}")
        caps = [c.rpc.type for c in self.ctl.controller_capabilities().capabilities]
        check(pb.ControllerServiceCapability.RPC.PUBLISH_UNPUBLISH_VOLUME in caps,
              f"the controller does not advertise PUBLISH_UNPUBLISH_VOLUME: {caps}")

    def case_lifecycle(self):
        name = "pvc-life"
        cap = mount("xfs")
        sa, ta = self.a.staging(name), self.a.target(name, "uid-a")
        sb, tb = self.b.staging(name), self.b.target(name, "uid-b")
        try:
            self._lifecycle(name, cap, sa, ta, sb, tb)
        except Exception:
            self.cleanup(name, [(self.a, sa, ta), (self.b, sb, tb)])
            raise

    def _lifecycle(self, name, cap, sa, ta, sb, tb):
        vol = self.create(name, cap, params={"replica": "2", "placementMode": "hybrid"})
        check(vol.volume_id == name, f"volume_id {vol.volume_id!r}, not the name {name}")
        check(vol.capacity_bytes == GIB, f"capacity {vol.capacity_bytes}, not 1 GiB")
        again = self.create(name, cap, params={"replica": "2", "placementMode": "hybrid"})
        check(again.volume_id == name and again.capacity_bytes == GIB,
              f"the repeated CreateVolume answered {again}")
        expect_code("ALREADY_EXISTS", self.ctl.create_volume, name, cap, 2 * GIB,
                    parameters={"replica": "2"})
        check(self.sim.app_instance(name) is not None, "no app instance on the array")
        log(f"  created {name}: {self.sim.export(name)['uuid']}")

        # Before any ControllerPublishVolume no node may stage it.
        try:
            self.b.client.node_stage(name, sb, cap, context=dict(vol.volume_context))
            raise Failed("node-b staged a volume published to no node")
        except CsiError as e:
            log(f"  NodeStageVolume before any ControllerPublishVolume: {e.code}")
        check(mount_at(sb) is None, f"{sb} is mounted although the stage was refused")
        check(not loops_under(self.sim.dir), "a refused stage left a device attached")

        # Attach to node-a: the ACL is node-a's IQN alone, the ownership record names node-a.
        pctx = self.publish(vol, self.a, cap).publish_context
        check(self.acl(name) == [self.a.iqn], f"ACL {self.acl(name)}, not node-a's IQN alone")
        check(self.owner(name) == "node-a",
              f"the ownership record names {self.owner(name)!r}: {self.sim.metadata(name)}")
        # Idempotent for the same node; refused for another while node-a holds it.
        self.publish(vol, self.a, cap)
        e = expect_code("FAILED_PRECONDITION", self.publish, vol, self.b, cap)
        check("node-a" in e.details, f"the refusal does not name node-a: {e.details}")
        check(self.acl(name) == [self.a.iqn], f"ACL changed by a refused publish: {self.acl(name)}")

        # node-a: stage (login, mkfs, staging mount) and publish (bind at the target).
        self.stage(self.a, vol, cap, pctx, sa)
        ms = mount_at(sa)
        check(ms is not None, f"nothing mounted at the staging path {sa}")
        check(ms["fstype"] == "xfs", f"staging mount is {ms['fstype']}, not xfs")
        self.node_publish(self.a, vol, cap, sa, ta)
        mt = mount_at(ta)
        check(mt is not None, f"nothing mounted at the target {ta}")
        check(mt["devno"] == ms["devno"] and mt["fstype"] == "xfs",
              f"the target is not a bind of the staging mount: {mt} vs {ms}")
        check("rw" in mt["opts"].split(","), f"the target is not read-write: {mt['opts']}")
        device = ms["source"]
        uuid_a = fs_uuid(device)
        check(uuid_a, f"no filesystem UUID on {device}")
        payload = os.urandom(1 << 20)
        with open(os.path.join(ta, "data.bin"), "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())

        stats = self.a.client.node_volume_stats(name, ta)
        by_unit = {u.unit: u for u in stats.usage}
        check(pb.VolumeUsage.BYTES in by_unit, f"NodeGetVolumeStats has no BYTES usage: {stats}")
        used = by_unit[pb.VolumeUsage.BYTES]
        check(used.used > 0 and used.total > 0 and used.available > 0,
              f"usage in bytes: {used}")
        check(used.total <= GIB, f"total {used.total} is more than the volume")
        check(not stats.volume_condition.abnormal,
              f"the volume condition is abnormal: {stats.volume_condition.message}")

        e = expect_code("FAILED_PRECONDITION", self.ctl.delete_volume, name)
        check(self.sim.app_instance(name) is not None, "DeleteVolume removed a published volume")

        # node-a lets go.
        self.a.client.node_unpublish(name, ta)
        check(mount_at(ta) is None, f"the target {ta} is still mounted")
        self.a.client.node_unstage(name, sa)
        check(mount_at(sa) is None, f"the staging path {sa} is still mounted")
        check(not [m for m in mounts_under(self.a.kubelet)], "node-a has mounts left: "
              + str(mounts_under(self.a.kubelet)))
        self.ctl.controller_unpublish(name, "node-a")
        check(self.acl(name) == [], f"ACL after ControllerUnpublish: {self.acl(name)}")
        check(self.owner(name) == "", f"the ownership record still names {self.owner(name)!r}")
        self.ctl.controller_unpublish(name, "node-a")  # idempotent

        # node-b takes it: the same data, the same filesystem (no mkfs the second time).
        pctx = self.publish(vol, self.b, cap).publish_context
        check(self.acl(name) == [self.b.iqn], f"ACL {self.acl(name)}, not node-b's IQN alone")
        check(self.owner(name) == "node-b", f"the ownership record names {self.owner(name)!r}")
        self.stage(self.b, vol, cap, pctx, sb)
        self.node_publish(self.b, vol, cap, sb, tb)
        ms = mount_at(sb)
        check(ms is not None and mount_at(tb) is not None, "node-b's mounts are missing")
        uuid_b = fs_uuid(ms["source"])
        check(uuid_b == uuid_a, f"filesystem UUID {uuid_b} on node-b, {uuid_a} on node-a: "
              "the second stage ran mkfs")
        check(f"volume {name}: {ms['source']} is blank" not in self.b.log_text(),
              "node-b's agent says it made a filesystem")
        with open(os.path.join(tb, "data.bin"), "rb") as f:
            check(f.read() == payload, "node-b does not read node-a's data")

        # Expansion online: the array's volume, then the node's filesystem.
        before = df_size(tb)
        r = self.ctl.controller_expand(name, 2 * GIB)
        check(r.capacity_bytes == 2 * GIB, f"ControllerExpandVolume capacity {r.capacity_bytes}")
        check(r.node_expansion_required, "ControllerExpandVolume: node expansion not required")
        check(self.sim.export(name)["size_gib"] == 2, "the array's volume did not grow")
        r = self.b.client.node_expand(name, tb, 2 * GIB, staging_path=sb, capability=cap)
        after = df_size(tb)
        log(f"  expand: df {before} -> {after} bytes (NodeExpandVolume says {r.capacity_bytes})")
        check(after > before + GIB // 2, f"df shows {after} bytes after NodeExpandVolume, "
              f"{before} before")
        with open(os.path.join(tb, "data.bin"), "rb") as f:
            check(f.read() == payload, "the data changed across the expansion")

        # Teardown and delete.
        self.b.client.node_unpublish(name, tb)
        self.b.client.node_unstage(name, sb)
        check(not mounts_under(self.b.kubelet), f"node-b has mounts left: "
              f"{mounts_under(self.b.kubelet)}")
        self.ctl.controller_unpublish(name, "node-b")
        self.ctl.delete_volume(name)
        check(self.sim.app_instance(name) is None, "the app instance is still on the array")
        self.ctl.delete_volume(name)  # idempotent
        check(not loops_under(self.sim.dir), f"loop devices left: {loops_under(self.sim.dir)}")

    def case_block(self):
        name = "pvc-blk"
        cap = block()
        staging, target = self.a.block_staging(name), self.a.block_target(name, "uid-blk")
        try:
            vol = self.create(name, cap)
            pctx = self.publish(vol, self.a, cap).publish_context
            self.stage(self.a, vol, cap, pctx, staging)
            self.node_publish(self.a, vol, cap, staging, target)
            st = os.stat(target)
            check(stat.S_ISBLK(st.st_mode), f"the published {target} is not a block device")
            check(mount_at(target) is not None, f"nothing is bound at {target}")
            size = 4 << 20
            buf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT needs
            pattern = os.urandom(4096) * (size // 4096)
            buf.write(pattern)
            fd = os.open(target, os.O_RDWR | os.O_DIRECT)
            try:
                for off in (0, 512 << 20):
                    check(os.pwritev(fd, [buf], off) == size, "short O_DIRECT write")
                os.fsync(fd)
            finally:
                os.close(fd)
            fd = os.open(target, os.O_RDONLY | os.O_DIRECT)
            try:
                for off in (0, 512 << 20):
                    back = mmap.mmap(-1, size)
                    check(os.preadv(fd, [back], off) == size, "short O_DIRECT read")
                    check(back[:] == pattern, f"the pattern at {off} did not read back")
            finally:
                os.close(fd)
            stats = self.a.client.node_volume_stats(name, target)
            by_unit = {u.unit: u for u in stats.usage}
            check(by_unit.get(pb.VolumeUsage.BYTES) and by_unit[pb.VolumeUsage.BYTES].total == GIB,
                  f"block volume stats: {stats}")
            self.a.client.node_unpublish(name, target)
            check(mount_at(target) is None, f"{target} is still bound")
            self.a.client.node_unstage(name, staging)
            check(not mounts_under(self.a.kubelet), f"node-a has mounts left: "
                  f"{mounts_under(self.a.kubelet)}")
            self.ctl.controller_unpublish(name, "node-a")
            self.ctl.delete_volume(name)
            check(self.sim.app_instance(name) is None, "the block volume is still on the array")
        except Exception:
            self.cleanup(name, [(self.a, staging, target)])
            raise

    def case_latency(self):
        runs = int(os.environ.get("DT_CSI_LATENCY_RUNS", "5"))
        self.measures = {}
        cap = mount("xfs")
        for i in range(runs):
            name = f"pvc-lat-{i}"
            staging, target = self.a.staging(name), self.a.target(name, f"uid-lat-{i}")
            try:
                vol = self.create(name, cap)
                pctx = self.publish(vol, self.a, cap).publish_context
                self.stage(self.a, vol, cap, pctx, staging)
                self.node_publish(self.a, vol, cap, staging, target)
                self.a.client.node_unpublish(name, target)
                self.a.client.node_unstage(name, staging)
                self.ctl.controller_unpublish(name, "node-a")
                self.ctl.delete_volume(name)
            except Exception:
                self.cleanup(name, [(self.a, staging, target)])
                raise
        for op in ("CreateVolume", "NodeStageVolume", "NodePublishVolume"):
            v = self.measures.get(op, [])
            check(len(v) == runs, f"{op}: {len(v)} samples")
            log(f"[ measure ] csi {op} {statistics.median(v):.1f} ms (median of {runs}, "
                f"min {min(v):.1f}, max {max(v):.1f})")

    def case_condition(self):
        # The keeper's view through NodeGetVolumeStats: a filesystem shut down on purpose (the
        # path a failed log write takes in xfs) turns the VolumeCondition abnormal, with why.
        if not os.access("/dev/kmsg", os.R_OK) or not shutil.which("xfs_io"):
            log("SKIP condition: needs a readable /dev/kmsg and xfs_io")
            return
        name = "pvc-cond"
        cap = mount("xfs")
        sa, ta = self.a.staging(name), self.a.target(name, "uid-ca")
        try:
            vol = self.create(name, cap)
            pctx = self.publish(vol, self.a, cap).publish_context
            self.stage(self.a, vol, cap, pctx, sa)
            self.node_publish(self.a, vol, cap, sa, ta)

            def condition():
                return self.a.client.node_volume_stats(name, ta).volume_condition

            check(wait_for(lambda: condition().message == "session healthy", 15),
                  f"no healthy condition from the keeper: {condition()}")
            check(not condition().abnormal, f"abnormal while healthy: {condition()}")
            run(["xfs_io", "-x", "-c", "shutdown", sa])
            check(wait_for(lambda: condition().abnormal, 15),
                  f"still normal after the filesystem shut down: {condition()}")
            c = condition()
            check("fs_failed" in c.message and "Shutting down filesystem" in c.message,
                  f"the condition does not say why: {c.message!r}")
            self.a.client.node_unpublish(name, ta)
            self.a.client.node_unstage(name, sa)
            self.ctl.controller_unpublish(name, "node-a")
            self.ctl.delete_volume(name)
        except Exception:
            self.cleanup(name, [(self.a, sa, ta)])
            raise

    def case_migration(self):
        # A volume used through the FlexVolume shim on node-a (agent mode: lease and ACL), written,
        # unmounted; `datera-agentctl migrate` writes its CSI PV; node-b stages and publishes that
        # PV's volume through CSI and reads the same data, without mkfs (docs/migrate.md).
        name, pv = "vol-migrate", "pv-migrate"
        agentctl = os.path.join(os.path.dirname(self.agent_bin), "datera-agentctl")
        shim = os.path.join(self.a.root, "plugins", "datera~iscsi", "iscsi")
        pod = os.path.join(self.a.kubelet, "pods", "uid-fm", "volumes", "datera~iscsi", pv)
        os.makedirs(pod, exist_ok=True)
        cap = mount("xfs")
        sb, tb = self.b.staging(pv), self.b.target(pv, "uid-mb")
        try:
            opts = json.dumps({"volumeID": name, "size": "1", "replica": "2",
                               "kubernetes.io/fsType": "xfs", "kubernetes.io/readwrite": "rw",
                               "kubernetes.io/pvOrVolumeName": pv})
            r = run([shim, "mount", pod, opts])
            check('"Success"' in r.stdout, f"FlexVolume mount: {r.stdout}")
            check(self.owner(name) == "node-a", f"FlexVolume's lease names {self.owner(name)!r}")
            uuid_flex = fs_uuid(mount_at(pod)["source"])
            payload = os.urandom(64 * 1024)
            with open(os.path.join(pod, "data.bin"), "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            r = run([shim, "unmount", pod])
            check('"Success"' in r.stdout, f"FlexVolume unmount: {r.stdout}")
            check(self.owner(name) == "" and self.acl(name) == [],
                  f"after the unmount: lease {self.owner(name)!r}, ACL {self.acl(name)}")
            check(self.sim.metadata(name).get("formatted") == "true",
                  f"node-a's mkfs left no formatted record: {self.sim.metadata(name)}")
            # As a volume formatted before the record existed: the CSI stage must record it.
            self.sim.edf("PUT", f"/app_instances/{name}/metadata", {"formatted": ""})

            flex_pv = {"apiVersion": "v1", "kind": "PersistentVolume",
                       "metadata": {"name": pv},
                       "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                "persistentVolumeReclaimPolicy": "Retain",
                                "claimRef": {"kind": "PersistentVolumeClaim",
                                             "namespace": "default", "name": "data-m"},
                                "flexVolume": {"driver": "datera/iscsi", "fsType": "xfs",
                                               "options": {"volumeID": name, "size": "1",
                                                           "replica": "2"}}},
                       "status": {"phase": "Bound"}}
            pvs_file = os.path.join(self.a.root, "pvs.json")
            out_file = os.path.join(self.a.root, "csi-pvs.json")
            with open(pvs_file, "w") as f:
                json.dump({"apiVersion": "v1", "kind": "List", "items": [flex_pv]}, f)
            run([agentctl, "migrate", "--pvs", pvs_file, "--manifests", out_file,
                 "--driver", DRIVER])
            with open(out_file) as f:
                csi_pv = json.load(f)["items"][0]["spec"]["csi"]
            check(csi_pv["volumeHandle"] == name, f"the CSI PV's volumeHandle {csi_pv}")

            # What kubelet and the attacher do with that PV, on node-b.
            vol = pb.Volume(volume_id=csi_pv["volumeHandle"],
                            volume_context=csi_pv["volumeAttributes"])
            pctx = self.publish(vol, self.b, cap).publish_context
            check(self.owner(name) == "node-b" and self.acl(name) == [self.b.iqn],
                  f"after the grant: lease {self.owner(name)!r}, ACL {self.acl(name)}")
            mkfs_before = self.b.metric(MKFS_XFS)
            self.stage(self.b, vol, cap, pctx, sb)
            self.node_publish(self.b, vol, cap, sb, tb)
            ms = mount_at(sb)
            check(ms is not None, "node-b's staging mount is missing")
            check(fs_uuid(ms["source"]) == uuid_flex, "the CSI stage made a new filesystem")
            check(f"volume {name}: {ms['source']} is blank" not in self.b.log_text(),
                  "node-b's agent says it made a filesystem")
            check(self.b.metric(MKFS_XFS) == mkfs_before,
                  f"node-b counts mkfs runs during the CSI stage: {self.b.metric(MKFS_XFS)}")
            check(self.sim.metadata(name).get("formatted") == "true",
                  f"the CSI stage did not record the filesystem: {self.sim.metadata(name)}")
            with open(os.path.join(tb, "data.bin"), "rb") as f:
                check(f.read() == payload, "the CSI volume does not hold FlexVolume's data")
            self.b.client.node_unpublish(name, tb)
            self.b.client.node_unstage(name, sb)
            self.ctl.controller_unpublish(name, "node-b")
            self.ctl.delete_volume(name)
        except Exception:
            try:
                run([shim, "unmount", pod], check_rc=False)
            except Exception:
                pass
            self.cleanup(name, [(self.b, sb, tb)])
            raise

    def case_snapshot(self):
        # A snapshot of a volume under writes restores into a new volume whose xfs mounts clean
        # (no log recovery: node-a froze it around the copy) and holds every file synced before
        # CreateSnapshot was called; a clone of the live volume likewise. docs/csi.md says what is
        # guaranteed.
        name, cap = "vol-snap", mount("xfs")
        sa, ta = self.a.staging("pv-snap"), self.a.target("pv-snap", "uid-sa")
        sr, tr = self.b.staging("pv-restored"), self.b.target("pv-restored", "uid-sr")
        sc, tc = self.b.staging("pv-clone"), self.b.target("pv-clone", "uid-sc")
        snap_id = None
        writer = None
        try:
            vol = self.create(name, cap)
            pctx = self.publish(vol, self.a, cap).publish_context
            self.stage(self.a, vol, cap, pctx, sa)
            self.node_publish(self.a, vol, cap, sa, ta)
            writer = Writer(ta)
            writer.start()
            check(wait_for(lambda: writer.synced >= 50, 20), "the writer made no progress")
            synced_before = writer.synced
            streamed_before = writer.streamed
            t0 = time.monotonic()
            snap = self.ctl.create_snapshot("snapshot-1", name).snapshot
            took = time.monotonic() - t0
            time.sleep(0.5)  # writes go on after it
            writer.halt.set()
            writer.join(10)
            check(writer.error is None, f"the writer failed: {writer.error}")
            snap_id = snap.snapshot_id
            log(f"snapshot {snap_id} in {took:.2f} s with {synced_before + 1} files synced before, "
                f"{writer.synced + 1} at the end")
            self.measures.setdefault("CreateSnapshot", []).append(took * 1000)
            check(snap.source_volume_id == name and snap_id.startswith(name + ":"),
                  f"snapshot {snap}")
            check(snap.ready_to_use, "the snapshot is not ready to use")
            frozen = self.ctl_agent.metric(
                'datera_agent_csi_copies_total{consistency="frozen",kind="snapshot"}')
            check(frozen == 1, f"the controller counts {frozen} frozen snapshot(s)")
            check(self.a.metric('datera_agent_filesystem_freezes_total{result="frozen"}') >= 1,
                  "node-a counts no freeze")
            held = self.a.metric("datera_agent_filesystem_frozen_seconds_sum")
            log(f"node-a's filesystem stayed frozen {held:.3f} s (writers waited at most that)")
            listed = [e.snapshot.snapshot_id for e in self.ctl.list_snapshots(name).entries]
            check(listed == [snap_id], f"ListSnapshots of {name}: {listed}")
            expect_code("FAILED_PRECONDITION", self.ctl.delete_volume, name)

            # Restored on node-b, while node-a still mounts the source (same xfs UUID: nouuid).
            mark = kmsg_mark()
            restored = self.ctl.create_volume("vol-restored", cap, 1 * GIB,
                                              parameters={"replica": "2"},
                                              from_snapshot=snap_id).volume
            check(restored.content_source.snapshot.snapshot_id == snap_id,
                  f"content source {restored.content_source}")
            rctx = self.publish(restored, self.b, cap).publish_context
            self.stage(self.b, restored, cap, rctx, sr)
            self.node_publish(self.b, restored, cap, sr, tr)
            dev = mount_at(sr)["source"]
            check_mounted_clean(xfs_lines_since(mark, dev), "the restored volume")
            # Written but never synced before the call: only a freeze puts it in the copy (the
            # kernel writes dirty pages back after 30 s on its own).
            size = os.path.getsize(os.path.join(tr, "stream.bin"))
            check(size >= streamed_before,
                  f"the restored stream.bin has {size} bytes; {streamed_before} were written "
                  "(unsynced) before CreateSnapshot: the node's page cache was not flushed")
            for n in range(synced_before + 1):
                with open(os.path.join(tr, f"f-{n:06d}"), "rb") as f:
                    check(f.read() == numbered(n), f"file {n} (synced before) differs")
            check(f"volume vol-restored: {dev} is blank" not in self.b.log_text(),
                  "node-b made a filesystem on the restored volume")

            # A clone of the live source, frozen the same way.
            mark = kmsg_mark()
            clone = self.ctl.create_volume("vol-clone", cap, 1 * GIB, parameters={"replica": "2"},
                                           from_volume=name).volume
            cctx = self.publish(clone, self.b, cap).publish_context
            self.stage(self.b, clone, cap, cctx, sc)
            self.node_publish(self.b, clone, cap, sc, tc)
            check_mounted_clean(xfs_lines_since(mark, mount_at(sc)["source"]), "the clone")
            for n in range(writer.synced + 1):
                with open(os.path.join(tc, f"f-{n:06d}"), "rb") as f:
                    check(f.read() == numbered(n), f"file {n} of the clone differs")

            for v, s_, t_ in (("vol-restored", sr, tr), ("vol-clone", sc, tc)):
                self.b.client.node_unpublish(v, t_)
                self.b.client.node_unstage(v, s_)
                self.ctl.controller_unpublish(v, "node-b")
                # Unmounted, the copy's xfs passes a full read-only check.
                image = self.sim.export(v)["path"]
                r = run(["/usr/sbin/xfs_repair", "-n", "-f", image], check_rc=False)
                check(r.returncode == 0, f"xfs_repair -n finds problems in {v}: {r.stdout[-600:]}")
                self.ctl.delete_volume(v)
            self.a.client.node_unpublish(name, ta)
            self.a.client.node_unstage(name, sa)
            self.ctl.controller_unpublish(name, "node-a")
            self.ctl.delete_snapshot(snap_id)
            self.ctl.delete_snapshot(snap_id)  # idempotent
            self.ctl.delete_volume(name)
        except Exception:
            if writer:
                writer.halt.set()
                writer.join(10)
            self.cleanup("vol-restored", [(self.b, sr, tr)])
            self.cleanup("vol-clone", [(self.b, sc, tc)])
            if snap_id:
                try:
                    self.ctl.delete_snapshot(snap_id)
                except Exception:
                    pass
            self.cleanup(name, [(self.a, sa, ta)])
            raise

    def case_self_fence(self):
        # ext4: node-a's mount may still be up while node-b mounts the same filesystem on this
        # one kernel, which xfs refuses (duplicate UUID).
        name = "pvc-fence"
        cap = mount("ext4")
        sa, ta = self.a.staging(name), self.a.target(name, "uid-fa")
        sb, tb = self.b.staging(name), self.b.target(name, "uid-fb")
        try:
            vol = self.create(name, cap)
            pctx = self.publish(vol, self.a, cap).publish_context
            self.stage(self.a, vol, cap, pctx, sa)
            self.node_publish(self.a, vol, cap, sa, ta)
            with open(os.path.join(ta, "before.txt"), "w") as f:
                f.write("before the force-detach\n")
                f.flush()
                os.fsync(f.fileno())
            fenced_before = self.a.metric('datera_agent_fencing_actions_total{kind="self_fenced"}')
            # Kubernetes gave up on node-a: detach without its unmount, attach to node-b.
            self.ctl.controller_unpublish(name, "node-a")
            t0 = time.monotonic()
            pctx = self.publish(vol, self.b, cap).publish_context
            check(self.acl(name) == [self.b.iqn], f"ACL {self.acl(name)}, not node-b alone")
            gone = wait_for(lambda: mount_at(ta) is None and mount_at(sa) is None, 4 * TTL)
            took = time.monotonic() - t0
            check(gone, f"node-a still serves a volume it lost {took:.1f} s after the "
                  f"force-detach: {mounts_under(self.a.kubelet)}")
            log(f"[ measure ] csi self-fence {took * 1000:.0f} ms after the force-detach "
                f"(lease_ttl {TTL} s: grant checks every {TTL / 3:.1f} s)")
            check(wait_for(lambda: self.a.metric(
                'datera_agent_fencing_actions_total{kind="self_fenced"}') == fenced_before + 1, 5),
                "node-a's metrics count no self-fence")
            # node-b stages what node-a wrote.
            self.stage(self.b, vol, cap, pctx, sb)
            self.node_publish(self.b, vol, cap, sb, tb)
            with open(os.path.join(tb, "before.txt")) as f:
                check(f.read() == "before the force-detach\n", "node-b does not read node-a's data")
            self.b.client.node_unpublish(name, tb)
            self.b.client.node_unstage(name, sb)
            self.ctl.controller_unpublish(name, "node-b")
            self.ctl.delete_volume(name)
            check(wait_for(lambda: not loops_under(self.sim.dir), 10),
                  f"loop devices left: {loops_under(self.sim.dir)}")
        except Exception:
            self.cleanup(name, [(self.a, sa, ta), (self.b, sb, tb)])
            raise

    def case_format_guard(self):
        # The array says the volume holds a filesystem (metadata formatted: "true"), but the
        # device reads blank: the stage refuses, and mkfs never runs over what may be data.
        name = "pvc-guard"
        cap = mount("xfs")
        sa, ta = self.a.staging(name), self.a.target(name, "uid-ga")
        try:
            vol = self.create(name, cap)
            self.sim.edf("PUT", f"/app_instances/{name}/metadata", {"formatted": "true"})
            pctx = self.publish(vol, self.a, cap).publish_context
            mkfs_before = self.a.metric(MKFS_XFS)
            refused_before = self.a.metric("datera_agent_volume_format_refused_total")
            e = expect_code("FAILED_PRECONDITION", self.stage, self.a, vol, cap, pctx, sa)
            for says in ("refusing mkfs", "reads blank", f"app instance {name}'s metadata says "
                         'formatted: "true"', "delete the key by hand"):
                check(says in e.details, f"the refusal does not say {says!r}: {e.details}")
            check(self.a.metric(MKFS_XFS) == mkfs_before, "mkfs ran over a formatted volume")
            check(self.a.metric("datera_agent_volume_format_refused_total") == refused_before + 1,
                  "node-a counts no refusal")
            check(mount_at(sa) is None, "a refused stage left a staging mount")
            check(self.sim.metadata(name).get("formatted") == "true", "the record was changed")
            self.ctl.controller_unpublish(name, "node-a")
            self.ctl.delete_volume(name)
        except Exception:
            self.cleanup(name, [(self.a, sa, ta)])
            raise

    def case_import_datera_csi(self):
        # A volume as Datera's own CSI driver leaves it (app instance "CSI-" + the PV name,
        # metadata formatted: "true", fs_type: xfs, an xfs with data on it), its PV through
        # `datera-agentctl migrate`, then ControllerPublish + NodeStage + NodePublish through this
        # driver on node-a: the same filesystem, the same data, no mkfs.
        pv = "pvc-5f0c1e2a-import"
        name = "CSI-" + pv[:58]
        agentctl = os.path.join(os.path.dirname(self.agent_bin), "datera-agentctl")
        cap = mount("xfs")
        sa, ta = self.a.staging(pv), self.a.target(pv, "uid-ia")
        mnt = tempfile.mkdtemp(prefix="dt-csi-import-")
        try:
            self.sim.edf("POST", "/app_instances", {
                "name": name, "create_mode": "normal",
                "storage_instances": [{"name": "storage-1", "volumes": [
                    {"name": "volume-1", "size": 1, "replica_count": 1,
                     "placement_mode": "hybrid"}]}]})
            self.sim.edf("PUT", f"/app_instances/{name}/metadata", {
                "display_name": pv, "formatted": "true", "fs_type": "xfs", "fs_args": "",
                "replica_count": "1", "placement_mode": "hybrid", "mount_path": "",
                "device_path": ""})
            e = self.sim.export(name)
            check(e is not None, f"the simulator exports no {name}")
            image = os.path.join(self.sim.dir, "volumes", e["uuid"] + ".img")
            check(wait_for(lambda: os.path.exists(image), 5), f"no backing file {image}")
            run(["/usr/sbin/mkfs.xfs", "-q", image])
            uuid_datera = fs_uuid(image)
            payload = os.urandom(64 * 1024)
            run(["/usr/bin/mount", "-o", "loop", image, mnt])
            try:
                with open(os.path.join(mnt, "data.bin"), "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                run(["/usr/bin/umount", mnt])

            datera_pv = {"apiVersion": "v1", "kind": "PersistentVolume",
                         "metadata": {"name": pv, "annotations": {
                             "pv.kubernetes.io/provisioned-by": "dsp.csi.daterainc.io"}},
                         "spec": {"capacity": {"storage": "1Gi"},
                                  "accessModes": ["ReadWriteOnce"],
                                  "persistentVolumeReclaimPolicy": "Delete",
                                  "storageClassName": "dat-block-storage",
                                  "claimRef": {"kind": "PersistentVolumeClaim",
                                               "namespace": "default", "name": "data-i",
                                               "uid": "0b1c2d3e-0000-4000-8000-000000000001"},
                                  "csi": {"driver": "dsp.csi.daterainc.io", "fsType": "xfs",
                                          "volumeHandle": name,
                                          "volumeAttributes": {
                                              "storage.kubernetes.io/csiProvisionerIdentity":
                                                  "1583947393829-8081-dsp.csi.daterainc.io"}}},
                         "status": {"phase": "Bound"}}
            pvs_file = os.path.join(self.a.root, "datera-pvs.json")
            out_file = os.path.join(self.a.root, "datera-csi-pvs.json")
            with open(pvs_file, "w") as f:
                json.dump({"apiVersion": "v1", "kind": "List", "items": [datera_pv]}, f)
            plan = run([agentctl, "migrate", "--pvs", pvs_file, "--manifests", out_file,
                        "--driver", DRIVER]).stdout
            check("stop Datera's CSI node plugin" in plan, f"the plan: {plan}")
            with open(out_file) as f:
                csi_pv = json.load(f)["items"][0]["spec"]["csi"]
            check(csi_pv["driver"] == DRIVER and csi_pv["volumeHandle"] == name
                  and csi_pv["fsType"] == "xfs", f"the CSI PV's source {csi_pv}")

            vol = pb.Volume(volume_id=csi_pv["volumeHandle"],
                            volume_context=csi_pv["volumeAttributes"])
            pctx = self.publish(vol, self.a, cap).publish_context
            check(self.owner(name) == "node-a" and self.acl(name) == [self.a.iqn],
                  f"after the grant: lease {self.owner(name)!r}, ACL {self.acl(name)}")
            mkfs_before = self.a.metric(MKFS_XFS)
            self.stage(self.a, vol, cap, pctx, sa)
            self.node_publish(self.a, vol, cap, sa, ta)
            ms = mount_at(sa)
            check(ms is not None, "node-a's staging mount is missing")
            check(fs_uuid(ms["source"]) == uuid_datera, "the CSI stage made a new filesystem")
            check(self.a.metric(MKFS_XFS) == mkfs_before,
                  f"node-a counts mkfs runs during the stage: {self.a.metric(MKFS_XFS)}")
            check(f"volume {name}: {ms['source']} is blank" not in self.a.log_text(),
                  "node-a's agent says it made a filesystem")
            with open(os.path.join(ta, "data.bin"), "rb") as f:
                check(f.read() == payload, "the volume does not hold what Datera's CSI wrote")
            md = self.sim.metadata(name)
            check(md.get("formatted") == "true" and md.get("fs_type") == "xfs",
                  f"Datera's metadata was changed: {md}")
            self.a.client.node_unpublish(name, ta)
            self.a.client.node_unstage(name, sa)
            self.ctl.controller_unpublish(name, "node-a")
            check(self.owner(name) == "" and self.acl(name) == [],
                  f"after the unpublish: lease {self.owner(name)!r}, ACL {self.acl(name)}")
            self.ctl.delete_volume(name)
        except Exception:
            if mount_at(mnt) is not None:
                run(["/usr/bin/umount", "-l", mnt], check_rc=False)
            self.cleanup(name, [(self.a, sa, ta)])
            raise
        finally:
            shutil.rmtree(mnt, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", required=True)
    ap.add_argument("--sim", required=True)
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    skip_unless_possible()
    try:
        t = Lifecycle(args.agent, args.sim)
    except Skip as e:
        print(f"SKIP csi lifecycle test: {e}", file=sys.stderr, flush=True)
        return SKIP
    except RuntimeError as e:
        print(f"lifecycle_test: set-up failed: {e}", file=sys.stderr)
        return 1
    cases = ["identity", "lifecycle", "block", "latency", "condition", "migration", "snapshot",
             "self_fence", "format_guard", "import_datera_csi"]
    if args.only:
        cases = [c for c in cases if c in args.only.split(",")]
    failed = []
    try:
        for c in cases:
            log(f"[ RUN  ] {c}")
            t0 = time.monotonic()
            try:
                getattr(t, "case_" + c)()
                log(f"[   OK ] {c} ({time.monotonic() - t0:.1f} s)")
            except Exception as e:  # every case runs; each failure is reported
                failed.append(c)
                detail = str(e) if isinstance(e, (Failed, CsiError)) else traceback.format_exc()
                log(f"[ FAIL ] {c}: {detail}\n{t.logs()}")
    finally:
        t.teardown()
    log(f"csi lifecycle: {len(cases) - len(failed)} of {len(cases)} cases passed"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

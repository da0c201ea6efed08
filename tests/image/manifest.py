#!/usr/bin/python3
"""Turns daemonset/daemonset.yaml and configmap.yaml into the podman arguments that run the agent
the way kubelet runs the DaemonSet's pod, for tests/image/run.sh (which sources the output).

    manifest.py DAEMONSET_YAML CONFIGMAP_YAML ROOT NODE_NAME SIM_URL PASSWORD_NAME IQN OUT_SH

PASSWORD_NAME: a file run.sh puts next to the config file (the Secret a real install mounts).

Everything the pod spec says and this test can emulate is mapped; anything else is an error, so a
manifest the test does not understand fails the test instead of being run differently:
- hostNetwork/hostPID/hostIPC -> --network/--pid/--ipc host; securityContext.privileged ->
  --privileged (capabilities.add -> --cap-add); env value/fieldRef spec.nodeName -> -e;
  args/command; resources.limits.memory -> --memory; terminationGracePeriodSeconds -> stop -t;
  httpGet probes and named ports -> URLs on the host (hostNetwork).
- Each volumeMount -> -v with the mode it names: Bidirectional -> rshared (run.sh makes the host
  dir a shared mount first, as the host's / is shared under systemd), HostToContainer -> rslave,
  None -> rprivate; readOnly -> ro.
- hostPath volumes live in a scratch root ROOT, so the test never touches the host's real
  /var/lib/kubelet, /etc/iscsi, ...; except the kernel's own trees (/dev, /sys, /lib/modules),
  which are the host's. A hostPath that holds a path of the agent's config (socket_path,
  plugin_dir, kubelet_root, state_dir) must be mounted at its own path (the shim on the host and
  kubelet's argv use host paths): it is ROOT+path on both sides, and the config says ROOT+path.
  The others keep their mountPath in the container (iscsiadm, libudev and modprobe use fixed
  paths). The configMap volume is a directory ROOT/configmap/<name> with the config file.
"""

import json
import os
import shlex
import sys

import yaml

KERNEL_PATHS = ("/dev", "/sys", "/lib/modules")
CONFIG_PATH_KEYS = ("socket_path", "plugin_dir", "kubelet_root", "state_dir")
PROPAGATION = {"Bidirectional": "rshared", "HostToContainer": "rslave", "None": "rprivate"}


class ManifestError(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise ManifestError(msg)


def known(obj, keys, where):
    unknown = sorted(set(obj) - set(keys))
    need(not unknown, f"{where}: the image test does not know {unknown}; teach tests/image/manifest.py")


def under(path, parent):
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def memory_arg(q):
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    for suffix, podman in units.items():
        if str(q).endswith(suffix):
            return str(q)[: -len(suffix)] + podman
    need(str(q).isdigit(), f"resources.limits.memory {q!r}: unknown unit")
    return str(q)


def main(argv):
    ds_file, cm_file, root, node, sim_url, password_name, iqn, out = argv[1:9]
    ds = yaml.safe_load(open(ds_file))
    need(ds.get("kind") == "DaemonSet", f"{ds_file}: not a DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    known(pod, ["serviceAccountName", "hostNetwork", "hostPID", "hostIPC", "dnsPolicy",
                "priorityClassName", "tolerations", "terminationGracePeriodSeconds",
                "containers", "volumes"], "pod spec")
    need(len(pod["containers"]) == 1, "pod spec: exactly one container expected")
    c = pod["containers"][0]
    known(c, ["name", "image", "imagePullPolicy", "args", "command", "env", "securityContext",
              "ports", "livenessProbe", "readinessProbe", "startupProbe", "resources",
              "volumeMounts"], f"container {c.get('name')}")

    cms = [d for d in yaml.safe_load_all(open(cm_file)) if d and d.get("kind") == "ConfigMap"]
    need(len(cms) == 1, f"{cm_file}: one ConfigMap expected")
    cm = cms[0]

    args = []
    if pod.get("hostNetwork"):
        args += ["--network", "host"]
    else:
        raise ManifestError("hostNetwork is not true: the probes on 127.0.0.1 and iscsid's abstract "
                            "socket need the host network (the test emulates only that)")
    if pod.get("hostPID"):
        args += ["--pid", "host"]
    if pod.get("hostIPC"):
        args += ["--ipc", "host"]

    sc = c.get("securityContext", {})
    known(sc, ["privileged", "capabilities", "readOnlyRootFilesystem"], "securityContext")
    if sc.get("privileged"):
        args.append("--privileged")
    for cap in sc.get("capabilities", {}).get("add", []):
        args += ["--cap-add", cap]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")

    for e in c.get("env", []):
        known(e, ["name", "value", "valueFrom"], f"env {e.get('name')}")
        if "value" in e:
            args += ["-e", f"{e['name']}={e['value']}"]
        else:
            path = e["valueFrom"].get("fieldRef", {}).get("fieldPath")
            need(path == "spec.nodeName", f"env {e['name']}: only fieldRef spec.nodeName is emulated")
            args += ["-e", f"{e['name']}={node}"]

    limits = c.get("resources", {}).get("limits", {})
    if "memory" in limits:
        args += ["--memory", memory_arg(limits["memory"])]

    # The agent's config: the ConfigMap's file with the config-named paths moved under ROOT, and
    # the test's array (datera-sim) and initiator (loop) added.
    need(len(cm["data"]) == 1, "ConfigMap: one key (the config file) expected")
    cm_key, cm_text = next(iter(cm["data"].items()))
    cfg = yaml.safe_load(cm_text)
    config_paths = {}
    for k in CONFIG_PATH_KEYS:
        need(k in cfg and str(cfg[k]).startswith("/"), f"ConfigMap {cm_key}: {k} missing or relative")
        config_paths[k] = cfg[k]

    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    rows, shared, extra = [], [], []
    config_mount = None
    seen = set()
    for v in pod["volumes"]:
        name = v["name"]
        need(name in mounts, f"volume {name} is not mounted by the container")
        m = mounts[name]
        seen.add(name)
        known(m, ["name", "mountPath", "readOnly", "mountPropagation"], f"volumeMount {name}")
        mode = m.get("mountPropagation", "None")
        need(mode in PROPAGATION, f"volumeMount {name}: mountPropagation {mode!r} unknown")
        need(not (mode == "Bidirectional" and not sc.get("privileged")),
             f"volumeMount {name}: Bidirectional needs a privileged container")
        ro = bool(m.get("readOnly"))
        mp = m["mountPath"]
        if "configMap" in v:
            need(v["configMap"]["name"] == cm["metadata"]["name"],
                 f"volume {name}: ConfigMap {v['configMap']['name']} is not {cm['metadata']['name']}")
            known(v["configMap"], ["name"], f"volume {name}.configMap")
            need(mode == "None", f"volume {name}: a ConfigMap cannot propagate mounts")
            host = os.path.join(root, "configmap", name)
            config_mount = (host, mp, cm_key)
            rows.append(dict(name=name, kind="configmap", host=host, ctr=mp, ro=ro, mode=mode,
                             type="-"))
            continue
        need("hostPath" in v, f"volume {name}: only hostPath and configMap volumes are emulated")
        hp = v["hostPath"]
        known(hp, ["path", "type"], f"volume {name}.hostPath")
        path, typ = hp["path"], hp.get("type", "")
        need(typ in ("Directory", "DirectoryOrCreate"),
             f"volume {name}: hostPath type {typ!r} is not emulated")
        holds = [k for k, p in config_paths.items()
                 if under(os.path.dirname(p) if k == "socket_path" else p, path)]
        if path in KERNEL_PATHS:
            kind, host, ctr = "kernel", path, mp
            if not os.path.isdir(path):
                # Kubelet would refuse the pod (type Directory); the test still runs it, and says so.
                print(f"NOTE: the host has no {path}: volume {name} gets an empty dir from the "
                      f"scratch root (kubelet would refuse a hostPath of type {typ} here)",
                      file=sys.stderr)
                host = root + path
        elif holds:
            need(mp == path, f"volume {name}: holds {holds} of the config but is mounted at {mp}, "
                             f"not at its host path {path} (the shim on the host uses host paths)")
            kind, host, ctr = "samepath", root + path, root + path
        else:
            kind, host, ctr = "host", root + path, mp
        rows.append(dict(name=name, kind=kind, host=host, ctr=ctr, ro=ro, mode=mode, type=typ,
                         holds=holds))
        if mode == "Bidirectional":
            shared.append(host)

    need(not set(mounts) - seen, f"volumeMounts without a volume: {sorted(set(mounts) - seen)}")
    need(config_mount is not None, "no configMap volume: the agent would have no config")
    for k, p in config_paths.items():
        d = os.path.dirname(p) if k == "socket_path" else p
        need(any(k in r.get("holds", []) for r in rows if r["kind"] == "samepath"),
             f"config {k}={p}: no hostPath volume holds {d} at its own path")
        cfg[k] = root + p

    # The agent's own args must name the mounted config file.
    if "command" in c:
        args += ["--entrypoint", json.dumps(c["command"])]
    entry_args = c.get("args", [])
    cfg_file_in_ctr = os.path.join(config_mount[1], config_mount[2])
    need(cfg_file_in_ctr in entry_args,
         f"container args {entry_args} do not name the ConfigMap's file {cfg_file_in_ctr}")

    cfg["backend"] = {"server": sim_url, "username": "admin",
                      "password_file": os.path.join(config_mount[1], password_name)}
    cfg["initiator"] = {"kind": "loop", "iqn": iqn}
    os.makedirs(config_mount[0], exist_ok=True)
    with open(os.path.join(config_mount[0], config_mount[2]), "w") as f:
        f.write("# tests/image: ConfigMap " + cm["metadata"]["name"] + " with paths under the "
                "scratch root, datera-sim and the loop initiator\n")
        yaml.safe_dump(cfg, f, sort_keys=False)

    for r in rows:
        opts = [PROPAGATION[r["mode"]]]
        if r["ro"]:
            opts.insert(0, "ro")
        args += ["-v", f"{r['host']}:{r['ctr']}:{','.join(opts)}"]

    # Probes: kubelet on the host network reaches host:port; named ports resolve to containerPort.
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    probes = {}
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(kind)
        if p is None:
            continue
        known(p, ["httpGet", "periodSeconds", "failureThreshold", "initialDelaySeconds",
                  "timeoutSeconds", "successThreshold"], kind)
        need("httpGet" in p, f"{kind}: only httpGet probes are emulated")
        g = p["httpGet"]
        known(g, ["host", "path", "port", "scheme"], f"{kind}.httpGet")
        need(g.get("scheme", "HTTP") == "HTTP", f"{kind}: scheme {g.get('scheme')} not emulated")
        port = ports.get(g["port"], g["port"]) if isinstance(g["port"], str) else g["port"]
        need(isinstance(port, int), f"{kind}: port {g['port']!r} names no container port")
        # Without host, kubelet probes the pod IP, which is the node's on the host network.
        probes[kind] = f"http://{g.get('host', '127.0.0.1')}:{port}{g.get('path', '/')}"
    need("metrics" in ports, "no container port named metrics")

    q = shlex.quote
    with open(out, "w") as f:
        f.write("# generated by tests/image/manifest.py from " + ds_file + "\n")
        f.write("PODMAN_ARGS=(" + " ".join(q(a) for a in args) + ")\n")
        f.write("ENTRY_ARGS=(" + " ".join(q(a) for a in entry_args) + ")\n")
        f.write(f"MANIFEST_IMAGE={q(c['image'])}\n")
        f.write(f"HOST_NETWORK={int(bool(pod.get('hostNetwork')))}\n")
        f.write(f"HOST_PID={int(bool(pod.get('hostPID')))}\n")
        f.write(f"PRIVILEGED={int(bool(sc.get('privileged')))}\n")
        f.write(f"GRACE={int(pod.get('terminationGracePeriodSeconds', 30))}\n")
        f.write(f"LIVENESS_URL={q(probes.get('livenessProbe', ''))}\n")
        f.write(f"READINESS_URL={q(probes.get('readinessProbe', ''))}\n")
        f.write(f"METRICS_URL={q('http://127.0.0.1:%d/metrics' % ports['metrics'])}\n")
        f.write(f"METRICS_PORT={ports['metrics']}\n")
        f.write("SHARED_DIRS=(" + " ".join(q(s) for s in shared) + ")\n")
        # name|kind|host|ctr|ro|mode|type, one per volume
        f.write("MOUNT_ROWS=(" + " ".join(
            q("|".join([r["name"], r["kind"], r["host"], r["ctr"], "ro" if r["ro"] else "rw",
                        r["mode"], r["type"]])) for r in rows) + ")\n")
        f.write(f"CONFIG_HOST_DIR={q(config_mount[0])}\n")
        f.write(f"CONFIG_CTR_FILE={q(cfg_file_in_ctr)}\n")
        for k in CONFIG_PATH_KEYS:
            f.write(f"CFG_{k.upper()}={q(cfg[k])}\n")


if __name__ == "__main__":
    try:
        main(sys.argv)
    except ManifestError as e:
        print(f"FAIL manifest: {e}", file=sys.stderr)
        sys.exit(1)

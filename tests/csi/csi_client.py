"""A small CSI client over a Unix socket, for tests that drive the agent's CSI front end.

Needs the stubs generated into <build>/tests/csi/py (target csi_python_stubs) on PYTHONPATH, and
Debian's python3-grpcio and python3-protobuf (run it with /usr/bin/python3).

    client = CsiClient("/var/lib/kubelet/plugins/iscsi.csi.datera.io/csi.sock")
    client.node_stage("pvc-1", "/staging/pvc-1", mount("xfs"), secrets={...})

Every call raises CsiError with the gRPC status code's name ("NOT_FOUND", ...) and the server's
message when the call fails. Requests are never printed: they may carry secrets.
"""

import grpc

import csi_pb2
import csi_pb2_grpc

pb = csi_pb2


class CsiError(Exception):
    """A failed CSI call: `code` is the gRPC status code's name, `details` the server's message."""

    def __init__(self, method, code, details):
        super().__init__(f"{method}: {code}: {details}")
        self.method = method
        self.code = code
        self.details = details


def mount(fs_type="", flags=(), mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER):
    """A filesystem VolumeCapability."""
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode))


def block(mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER):
    """A raw block VolumeCapability."""
    return pb.VolumeCapability(
        block=pb.VolumeCapability.BlockVolume(),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode))


class CsiClient:
    """One channel to a CSI socket; a method per RPC a volume's lifecycle uses."""

    def __init__(self, socket_path, timeout=30.0):
        self.channel = grpc.insecure_channel("unix://" + socket_path)
        self.timeout = timeout
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.node = csi_pb2_grpc.NodeStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout=10.0):
        """Waits until the socket accepts a connection (raises grpc.FutureTimeoutError)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def _call(self, stub, method, request):
        try:
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise CsiError(method, e.code().name, e.details()) from None

    # Identity
    def plugin_info(self):
        return self._call(self.identity, "GetPluginInfo", pb.GetPluginInfoRequest())

    def plugin_capabilities(self):
        return self._call(self.identity, "GetPluginCapabilities", pb.GetPluginCapabilitiesRequest())

    def probe(self):
        return self._call(self.identity, "Probe", pb.ProbeRequest())

    # Controller
    def controller_capabilities(self):
        return self._call(self.controller, "ControllerGetCapabilities",
                          pb.ControllerGetCapabilitiesRequest())

    def create_volume(self, name, capability, required_bytes=0, parameters=None, secrets=None,
                      from_snapshot=None, from_volume=None):
        req = pb.CreateVolumeRequest(
            name=name, capacity_range=pb.CapacityRange(required_bytes=required_bytes),
            volume_capabilities=[capability], parameters=parameters or {},
            secrets=secrets or {})
        if from_snapshot:
            req.volume_content_source.snapshot.snapshot_id = from_snapshot
        if from_volume:
            req.volume_content_source.volume.volume_id = from_volume
        return self._call(self.controller, "CreateVolume", req)

    def create_snapshot(self, name, source_volume_id, secrets=None):
        return self._call(self.controller, "CreateSnapshot", pb.CreateSnapshotRequest(
            name=name, source_volume_id=source_volume_id, secrets=secrets or {}))

    def delete_snapshot(self, snapshot_id, secrets=None):
        return self._call(self.controller, "DeleteSnapshot", pb.DeleteSnapshotRequest(
            snapshot_id=snapshot_id, secrets=secrets or {}))

    def list_snapshots(self, source_volume_id="", snapshot_id="", max_entries=0,
                       starting_token=""):
        return self._call(self.controller, "ListSnapshots", pb.ListSnapshotsRequest(
            source_volume_id=source_volume_id, snapshot_id=snapshot_id, max_entries=max_entries,
            starting_token=starting_token))

    def delete_volume(self, volume_id, secrets=None):
        return self._call(self.controller, "DeleteVolume",
                          pb.DeleteVolumeRequest(volume_id=volume_id, secrets=secrets or {}))

    def controller_publish(self, volume_id, node_id, capability, readonly=False, context=None,
                           secrets=None):
        return self._call(self.controller, "ControllerPublishVolume",
                          pb.ControllerPublishVolumeRequest(
                              volume_id=volume_id, node_id=node_id, volume_capability=capability,
                              readonly=readonly, volume_context=context or {},
                              secrets=secrets or {}))

    def controller_unpublish(self, volume_id, node_id, secrets=None):
        return self._call(self.controller, "ControllerUnpublishVolume",
                          pb.ControllerUnpublishVolumeRequest(
                              volume_id=volume_id, node_id=node_id, secrets=secrets or {}))

    def controller_expand(self, volume_id, required_bytes, capability=None, secrets=None):
        return self._call(self.controller, "ControllerExpandVolume",
                          pb.ControllerExpandVolumeRequest(
                              volume_id=volume_id,
                              capacity_range=pb.CapacityRange(required_bytes=required_bytes),
                              volume_capability=capability, secrets=secrets or {}))

    # Node
    def node_info(self):
        return self._call(self.node, "NodeGetInfo", pb.NodeGetInfoRequest())

    def node_capabilities(self):
        return self._call(self.node, "NodeGetCapabilities", pb.NodeGetCapabilitiesRequest())

    def node_stage(self, volume_id, staging_path, capability, publish_context=None, context=None,
                   secrets=None):
        return self._call(self.node, "NodeStageVolume", pb.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging_path, volume_capability=capability,
            publish_context=publish_context or {}, volume_context=context or {},
            secrets=secrets or {}))

    def node_unstage(self, volume_id, staging_path):
        return self._call(self.node, "NodeUnstageVolume", pb.NodeUnstageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging_path))

    def node_publish(self, volume_id, staging_path, target_path, capability, readonly=False,
                     publish_context=None, context=None, secrets=None):
        return self._call(self.node, "NodePublishVolume", pb.NodePublishVolumeRequest(
            volume_id=volume_id, staging_target_path=staging_path, target_path=target_path,
            volume_capability=capability, readonly=readonly,
            publish_context=publish_context or {}, volume_context=context or {},
            secrets=secrets or {}))

    def node_unpublish(self, volume_id, target_path):
        return self._call(self.node, "NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(
            volume_id=volume_id, target_path=target_path))

    def node_volume_stats(self, volume_id, volume_path, staging_path=""):
        return self._call(self.node, "NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(
            volume_id=volume_id, volume_path=volume_path, staging_target_path=staging_path))

    def node_expand(self, volume_id, volume_path, required_bytes=0, staging_path="",
                    capability=None):
        return self._call(self.node, "NodeExpandVolume", pb.NodeExpandVolumeRequest(
            volume_id=volume_id, volume_path=volume_path, staging_target_path=staging_path,
            capacity_range=pb.CapacityRange(required_bytes=required_bytes),
            volume_capability=capability))

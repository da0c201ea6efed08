#pragma once

// The CSI front end's logic as the transport (server.h) sees it: one method per RPC of the three
// services, each a pure request -> (status, response) step on the agent's event loop. The
// transport owns gRPC, the socket, the per-call metric and the failure log line; the handlers own
// the mapping onto the volume core (agent/volume) and the controller's grants. A handler never
// blocks: it co_awaits. Methods a role does not serve keep the default: UNIMPLEMENTED.

#include <grpcpp/support/status.h>

#include <boost/asio/awaitable.hpp>

#include "plugins/csi/csi.pb.h"

namespace datera::csi {

namespace pb = ::csi::v1;
using Status = grpc::Status;
template <class T>
using Task = boost::asio::awaitable<T>;

inline Status unimplemented(const char* method) {
  return Status(grpc::StatusCode::UNIMPLEMENTED, std::string(method) + " is not served here");
}

class IdentityHandler {
 public:
  virtual ~IdentityHandler() = default;
  virtual Task<Status> get_plugin_info(const pb::GetPluginInfoRequest& req,
                                       pb::GetPluginInfoResponse& resp) = 0;
  virtual Task<Status> get_plugin_capabilities(const pb::GetPluginCapabilitiesRequest& req,
                                               pb::GetPluginCapabilitiesResponse& resp) = 0;
  virtual Task<Status> probe(const pb::ProbeRequest& req, pb::ProbeResponse& resp) = 0;
};

class ControllerHandler {
 public:
  virtual ~ControllerHandler() = default;
  virtual Task<Status> create_volume(const pb::CreateVolumeRequest&, pb::CreateVolumeResponse&) {
    co_return unimplemented("CreateVolume");
  }
  virtual Task<Status> delete_volume(const pb::DeleteVolumeRequest&, pb::DeleteVolumeResponse&) {
    co_return unimplemented("DeleteVolume");
  }
  virtual Task<Status> controller_publish_volume(const pb::ControllerPublishVolumeRequest&,
                                                 pb::ControllerPublishVolumeResponse&) {
    co_return unimplemented("ControllerPublishVolume");
  }
  virtual Task<Status> controller_unpublish_volume(const pb::ControllerUnpublishVolumeRequest&,
                                                   pb::ControllerUnpublishVolumeResponse&) {
    co_return unimplemented("ControllerUnpublishVolume");
  }
  virtual Task<Status> validate_volume_capabilities(const pb::ValidateVolumeCapabilitiesRequest&,
                                                    pb::ValidateVolumeCapabilitiesResponse&) {
    co_return unimplemented("ValidateVolumeCapabilities");
  }
  virtual Task<Status> list_volumes(const pb::ListVolumesRequest&, pb::ListVolumesResponse&) {
    co_return unimplemented("ListVolumes");
  }
  virtual Task<Status> get_capacity(const pb::GetCapacityRequest&, pb::GetCapacityResponse&) {
    co_return unimplemented("GetCapacity");
  }
  virtual Task<Status> controller_get_capabilities(const pb::ControllerGetCapabilitiesRequest&,
                                                   pb::ControllerGetCapabilitiesResponse&) {
    co_return unimplemented("ControllerGetCapabilities");
  }
  virtual Task<Status> create_snapshot(const pb::CreateSnapshotRequest&,
                                       pb::CreateSnapshotResponse&) {
    co_return unimplemented("CreateSnapshot");
  }
  virtual Task<Status> delete_snapshot(const pb::DeleteSnapshotRequest&,
                                       pb::DeleteSnapshotResponse&) {
    co_return unimplemented("DeleteSnapshot");
  }
  virtual Task<Status> list_snapshots(const pb::ListSnapshotsRequest&, pb::ListSnapshotsResponse&) {
    co_return unimplemented("ListSnapshots");
  }
  virtual Task<Status> controller_expand_volume(const pb::ControllerExpandVolumeRequest&,
                                                pb::ControllerExpandVolumeResponse&) {
    co_return unimplemented("ControllerExpandVolume");
  }
  virtual Task<Status> controller_get_volume(const pb::ControllerGetVolumeRequest&,
                                             pb::ControllerGetVolumeResponse&) {
    co_return unimplemented("ControllerGetVolume");
  }
};

class NodeHandler {
 public:
  virtual ~NodeHandler() = default;
  virtual Task<Status> node_stage_volume(const pb::NodeStageVolumeRequest&,
                                         pb::NodeStageVolumeResponse&) {
    co_return unimplemented("NodeStageVolume");
  }
  virtual Task<Status> node_unstage_volume(const pb::NodeUnstageVolumeRequest&,
                                           pb::NodeUnstageVolumeResponse&) {
    co_return unimplemented("NodeUnstageVolume");
  }
  virtual Task<Status> node_publish_volume(const pb::NodePublishVolumeRequest&,
                                           pb::NodePublishVolumeResponse&) {
    co_return unimplemented("NodePublishVolume");
  }
  virtual Task<Status> node_unpublish_volume(const pb::NodeUnpublishVolumeRequest&,
                                             pb::NodeUnpublishVolumeResponse&) {
    co_return unimplemented("NodeUnpublishVolume");
  }
  virtual Task<Status> node_get_volume_stats(const pb::NodeGetVolumeStatsRequest&,
                                             pb::NodeGetVolumeStatsResponse&) {
    co_return unimplemented("NodeGetVolumeStats");
  }
  virtual Task<Status> node_expand_volume(const pb::NodeExpandVolumeRequest&,
                                          pb::NodeExpandVolumeResponse&) {
    co_return unimplemented("NodeExpandVolume");
  }
  virtual Task<Status> node_get_capabilities(const pb::NodeGetCapabilitiesRequest&,
                                             pb::NodeGetCapabilitiesResponse&) {
    co_return unimplemented("NodeGetCapabilities");
  }
  virtual Task<Status> node_get_info(const pb::NodeGetInfoRequest&, pb::NodeGetInfoResponse&) {
    co_return unimplemented("NodeGetInfo");
  }
};

}  // namespace datera::csi

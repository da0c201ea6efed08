#pragma once

// CSI Node: the volume core's verbs (agent/volume) under CSI's names, for volumes the controller
// granted to this node (ControllerPublishVolume; Mode::csi records, checked against the array's
// ownership record like FlexVolume's controller mode, and self-fenced when the grant moves).
// - NodeStageVolume: log in, verify the LUN's serial, map, mkfs only when blank, mount at
//   kubelet's staging path; a Block volume stops after the map (no filesystem).
// - NodePublishVolume: bind the staging mount (or, for Block, the device itself) onto kubelet's
//   target, read-only when asked.
// - NodeUnpublishVolume, NodeUnstageVolume: undo them; unstage also removes the map and logs out.
// - NodeExpandVolume: rescan, reload the map, grow the filesystem.
// - NodeGetVolumeStats: usage plus a VolumeCondition from the session keeper (abnormal while the
//   session is down, the disk offline, a path failed or the filesystem shut down, with why).
// Every call is idempotent; a call for a volume with another call in flight answers ABORTED.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/csi/handlers.h"
#include "agent/csi/in_flight.h"
#include "agent/csi/stats.h"
#include "agent/volume/manager.h"
#include "base/logging.h"

namespace datera::csi {

/// A volume's health as the session keeper sees it; nullopt: not watched (yet).
struct Condition {
  bool abnormal = false;
  std::string message;
};
using ConditionSource = std::function<std::optional<Condition>(const std::string& volume)>;

struct NodeOptions {
  std::string node_id;  ///< the Kubernetes node name (the controller grants to it)
  int64_t max_volumes_per_node = 0;
  edf::BackendTarget default_backend;
  std::vector<std::string> allowed_servers;
};

class Node final : public NodeHandler {
 public:
  Node(NodeOptions options, volume::Manager& core, Stats& stats, ConditionSource condition,
       LoggerPtr log);

  Task<Status> node_stage_volume(const pb::NodeStageVolumeRequest& req,
                                 pb::NodeStageVolumeResponse& resp) override;
  Task<Status> node_unstage_volume(const pb::NodeUnstageVolumeRequest& req,
                                   pb::NodeUnstageVolumeResponse& resp) override;
  Task<Status> node_publish_volume(const pb::NodePublishVolumeRequest& req,
                                   pb::NodePublishVolumeResponse& resp) override;
  Task<Status> node_unpublish_volume(const pb::NodeUnpublishVolumeRequest& req,
                                     pb::NodeUnpublishVolumeResponse& resp) override;
  Task<Status> node_get_volume_stats(const pb::NodeGetVolumeStatsRequest& req,
                                     pb::NodeGetVolumeStatsResponse& resp) override;
  Task<Status> node_expand_volume(const pb::NodeExpandVolumeRequest& req,
                                  pb::NodeExpandVolumeResponse& resp) override;
  Task<Status> node_get_capabilities(const pb::NodeGetCapabilitiesRequest& req,
                                     pb::NodeGetCapabilitiesResponse& resp) override;
  Task<Status> node_get_info(const pb::NodeGetInfoRequest& req,
                             pb::NodeGetInfoResponse& resp) override;

 private:
  /// The condition reported for a volume this node holds.
  pb::VolumeCondition condition_of(const volume::Manager::Served& s) const;

  NodeOptions options_;
  volume::Manager& core_;
  Stats& stats_;
  ConditionSource condition_;
  LoggerPtr log_;
  InFlight in_flight_;
};

}  // namespace datera::csi

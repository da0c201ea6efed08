#pragma once

// CSI Controller, run by the agent with the controller role (the controller Deployment): creates
// and deletes app instances, and grants and revokes a node's access through the same Grants as
// FlexVolume's controller mode (agent/controller/grants.h): the ownership record names the node at
// the next epoch, the ACL is narrowed to its IQN, and a volume another node holds is refused.
// - CreateVolume: idempotent by name (the app instance name); an existing volume smaller than
//   required or larger than the limit is ALREADY_EXISTS, as the specification asks.
// - DeleteVolume: refused (FAILED_PRECONDITION) while a node holds the volume; gone is success.
// - ListVolumes: one listing of the array, paginated by an index token.
// - ControllerGetVolume: the array's state as a VolumeCondition, and the node holding it.
// Secrets: `username`, `password` and `server` select another array with its own account (the
// FlexVolume rules: only backend.allowed_servers, the agent's credentials only to its own array).

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "agent/controller/grants.h"
#include "agent/csi/handlers.h"
#include "agent/csi/in_flight.h"
#include "agent/csi/mapping.h"
#include "agent/csi/metrics.h"
#include "agent/volume/array.h"
#include "base/logging.h"

namespace datera::csi {

struct ControllerOptions {
  edf::BackendTarget default_backend;
  std::vector<std::string> allowed_servers;
  /// Snapshots and clones of a volume a node holds: how long to wait for that node's answer to
  /// the freeze request (it looks at its next grant check, every lease_ttl/3), how often to look,
  /// and how long the node may hold the freeze (the request expires after wait + hold).
  std::chrono::milliseconds freeze_wait{15'000};
  std::chrono::milliseconds freeze_poll{50};
  std::chrono::milliseconds freeze_hold{10'000};
};

class Controller final : public ControllerHandler {
 public:
  Controller(ControllerOptions options, volume::Arrays& arrays, controller::Grants& grants,
             Metrics& metrics, LoggerPtr log);

  Task<Status> create_volume(const pb::CreateVolumeRequest& req,
                             pb::CreateVolumeResponse& resp) override;
  Task<Status> delete_volume(const pb::DeleteVolumeRequest& req,
                             pb::DeleteVolumeResponse& resp) override;
  Task<Status> controller_publish_volume(const pb::ControllerPublishVolumeRequest& req,
                                         pb::ControllerPublishVolumeResponse& resp) override;
  Task<Status> controller_unpublish_volume(const pb::ControllerUnpublishVolumeRequest& req,
                                           pb::ControllerUnpublishVolumeResponse& resp) override;
  Task<Status> validate_volume_capabilities(const pb::ValidateVolumeCapabilitiesRequest& req,
                                            pb::ValidateVolumeCapabilitiesResponse& resp) override;
  Task<Status> list_volumes(const pb::ListVolumesRequest& req,
                            pb::ListVolumesResponse& resp) override;
  Task<Status> controller_get_capabilities(const pb::ControllerGetCapabilitiesRequest& req,
                                           pb::ControllerGetCapabilitiesResponse& resp) override;
  Task<Status> controller_expand_volume(const pb::ControllerExpandVolumeRequest& req,
                                        pb::ControllerExpandVolumeResponse& resp) override;
  Task<Status> controller_get_volume(const pb::ControllerGetVolumeRequest& req,
                                     pb::ControllerGetVolumeResponse& resp) override;
  Task<Status> create_snapshot(const pb::CreateSnapshotRequest& req,
                               pb::CreateSnapshotResponse& resp) override;
  Task<Status> delete_snapshot(const pb::DeleteSnapshotRequest& req,
                               pb::DeleteSnapshotResponse& resp) override;
  Task<Status> list_snapshots(const pb::ListSnapshotsRequest& req,
                              pb::ListSnapshotsResponse& resp) override;

 private:
  /// The array a request's secrets select (the default one without), and the volume's options.
  Result<edf::VolumeOptions> target(const std::string& volume, const StringMap& secrets) const;
  /// target() for a call that removes something: no options means answer `answer` (OK for an id
  /// this agent could never have made, INVALID_ARGUMENT naming `method` otherwise).
  struct Existing {
    std::optional<edf::VolumeOptions> options;
    Status answer;
  };
  Existing existing(const char* method, const std::string& volume, const StringMap& secrets) const;
  /// The volume's array and app instance; without the instance, the answer to give (the array's
  /// error, with no array, or NOT_FOUND).
  struct Found {
    volume::Array* array = nullptr;
    std::optional<edf::AppInstance> volume;
    Status answer;
  };
  Task<Found> find(const edf::BackendTarget& backend, const std::string& volume);
  /// The metadata key a clone records its source in (source_text()), so a retried CreateVolume
  /// can tell the same request from one naming another source.
  static constexpr const char* kSourceKey = "datera-agent.source";
  /// "snapshot <id>" or "volume <id>".
  static std::string source_text(const pb::VolumeContentSource& source);
  /// CreateVolume from a content source (snapshots.cpp): the clone's spec, or the answer.
  Task<Status> clone_source(const pb::VolumeContentSource& source, volume::Array& array,
                            edf::VolumeSpec& spec, std::string& recorded);
  /// Asks the node holding `volume` to freeze its filesystem (volume/freeze.h) and waits, bounded,
  /// for its answer. Yields the copy's consistency (a Metrics label) and, in `why`, words for the
  /// log; `requested` says whether end_freeze() has keys to delete.
  Task<std::string> freeze(volume::Array& array, const std::string& volume, const std::string& id,
                           std::string& why, bool& requested);
  Task<void> end_freeze(volume::Array& array, const std::string& volume);
  /// Counts a snapshot or clone (`kind`) of `volume` by consistency, and logs it: a warning when
  /// it is crash-consistent only, with `why`.
  void copy_taken(const char* kind, const std::string& volume, const std::string& what,
                  const std::string& consistency, const std::string& why);

  ControllerOptions options_;
  volume::Arrays& arrays_;
  controller::Grants& grants_;
  Metrics& metrics_;
  LoggerPtr log_;
  InFlight in_flight_;
};

}  // namespace datera::csi

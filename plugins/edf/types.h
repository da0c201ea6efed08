#pragma once

// What the agent needs to know about EDF objects, parsed out of the API's JSON. Every driver
// (Cinder, CSI, the original Flex driver) uses one storage instance `storage-1` holding one volume
// `volume-1`; so does this client.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace datera::edf {

using Json = nlohmann::json;
using Metadata = std::map<std::string, std::string>;

inline constexpr const char* kStorageInstance = "storage-1";
inline constexpr const char* kVolume = "volume-1";
inline constexpr size_t kMetadataLimit = 2048;  ///< EDF's hard limit on serialized metadata

/// Array login credentials. Never printed: there is deliberately no formatter for this type.
struct Credentials {
  std::string user;
  std::string password;
  bool empty() const { return user.empty() || password.empty(); }
};

/// What to create when a volume does not exist yet (from FlexVolume options, see options.h).
struct VolumeSpec {
  std::string name;  ///< app instance name
  int64_t size_gib = 16;
  int replica_count = 3;
  std::string placement_mode = "hybrid";
  std::string ip_pool = "default";
  std::string template_name;   ///< when set, size is a template override and the rest comes from it
  uint64_t max_iops = 0;       ///< 0 = unlimited
  uint64_t max_bandwidth = 0;  ///< KiB/s, 0 = unlimited
  /// Content source (at most one set): the new app instance is a copy of that snapshot or volume,
  /// sent as EDF's clone_snapshot_src / clone_volume_src ({"path": ...}); the clone has the
  /// source's size (a larger size_gib is a resize after the create).
  std::string clone_snapshot_src;  ///< snapshot_path(...)
  std::string clone_volume_src;    ///< volume_path(...)
};

/// A point-in-time copy of an app instance's volume: `…/volumes/volume-1/snapshots/<utc_ts>`.
struct Snapshot {
  std::string app_instance;  ///< the source app instance's name
  std::string timestamp;     ///< utc_ts, e.g. "1445384931.322468627": its id within the volume
  std::string uuid;          ///< what the creator sent (an idempotency key), or the array's own
  std::string op_state;      ///< available once usable; unavailable while being made
  std::string path;          ///< as the array returned it

  bool available() const { return op_state == "available"; }
  /// Parses one snapshot object; `app_instance` is the source's name (snapshots do not carry it).
  static Result<Snapshot> from_json(const Json& j, const std::string& app_instance);
};

/// "/app_instances/<ai>/storage_instances/storage-1/volumes/volume-1"
std::string volume_path(const std::string& app_instance);
/// volume_path(ai) + "/snapshots/<timestamp>"
std::string snapshot_path(const std::string& app_instance, const std::string& timestamp);

struct AppInstance {
  std::string id;
  std::string name;
  std::string admin_state;  ///< online | offline
  std::string op_state;     ///< of storage-1: available | unavailable | failed
  std::string iqn;
  std::vector<std::string> ips;
  std::vector<std::string> acl;  ///< initiator IQNs in storage-1's ACL
  std::string volume_uuid;       ///< equals the LUN's SCSI unit serial
  int64_t size_gib = 0;
  int replica_count = 0;
  /// volume-1's snapshots when the array lists them inline (the app instance GET and listing do);
  /// empty when it lists none or only their paths.
  std::vector<Snapshot> snapshots;

  static Result<AppInstance> from_json(const Json& j);
};

/// A registered host: `/initiators/<iqn>` with its display name.
struct InitiatorInfo {
  std::string iqn;
  std::string name;
};

/// The initiator name a node's agent registers under, so a controller that only knows the node
/// name can find the node's IQN: "k8s_node_<node>" (EDF names must start with a letter or '_'
/// and hold at most 128 characters; Kubernetes node names may start with a digit and run to 253,
/// so a longer node name is cut, and two nodes sharing its first 119 characters would collide).
std::string initiator_name_for_node(const std::string& node);

/// Names the client puts into URL paths: EDF's own rule (a UUID, or a letter/underscore then
/// 2..63 of [A-Za-z0-9_.-]). Anything else is refused before a request is made.
bool is_valid_name(const std::string& name);
/// A snapshot's utc_ts as it may go into a URL path or a CSI snapshot id: digits and at most one
/// dot, 1..32 characters.
bool is_valid_snapshot_timestamp(const std::string& ts);
/// IQN per EDF's schema (iqn.YYYY-MM.reverse.domain[:...], 16..223 chars) or eui.<16 hex>.
bool is_valid_iqn(const std::string& iqn);

}  // namespace datera::edf

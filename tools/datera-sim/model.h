#pragma once

// The simulated EDF array as a pure in-memory model: tenants, app instances with their storage
// instances and volumes, initiators, ACLs, metadata, and the simulator's own records (ACL change
// log, VIP failover events). No I/O and no timers: time comes from an injected Clock, so op_state
// readiness is computed by comparing timestamps, and tests move time by hand.
//
// Operations take EDF request documents (the JSON a client sends) and apply the rules of the
// reference (tools/datera-sim/README.md lists them). Failures are values: an Error whose `code` is
// the HTTP status; edf_error_name() gives the EDF error name for it (400 InvalidRequestError,
// 404 NotFoundError, 409 ConflictError, 422 ValidationFailedError, ...).

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace datera::sim {

using TimePoint = std::chrono::system_clock::time_point;
using Clock = std::function<TimePoint()>;

/// The wall clock, for production.
Clock system_clock();

/// EDF error name for an HTTP status (400 -> "InvalidRequestError", ...).
std::string edf_error_name(unsigned http_status);
/// Builds an Error carrying an HTTP status in `code`.
Error edf_error(unsigned http_status, std::string message);

/// EDF's own error numbers, the `code` of an error body (0 for the rest). Each implies its HTTP
/// status; an Error carrying one has code in edf_code_category().
enum class EdfCode {
  duplicate_snapshot_uuid = 15,  ///< 400 InvalidRequestError (Datera's CSI matches on it)
};
const std::error_category& edf_code_category();
Error edf_error(EdfCode code, std::string message);
/// The HTTP status of a model Error (an EDF code's own status; 500 for anything else).
unsigned error_status(const Error& e);
/// The EDF code of a model Error, 0 when it has none.
int error_edf_code(const Error& e);

using Metadata = std::map<std::string, std::string>;
constexpr size_t kMetadataLimit = 2048;  ///< characters of the serialized map

/// A point-in-time copy of a volume: `…/volumes/<vol>/snapshots/<utc_ts>`.
struct Snapshot {
  std::string utc_ts;      ///< "<epoch seconds>.<9 digits of ns>", unique within its volume
  std::string uuid;        ///< the creator's (or a new one)
  int64_t created_ms = 0;  ///< available op_state_delay after this
  int64_t size = 0;        ///< GiB of the volume when it was taken
};

struct Volume {
  std::string name;
  int64_t size = 0;  ///< GiB
  int replica_count = 3;
  std::string placement_mode = "hybrid";
  std::string uuid;  ///< also the LUN's SCSI unit serial
  std::map<std::string, int64_t>
      performance_policy;           ///< *_iops_max / *_bandwidth_max; 0 = unlimited
  std::vector<Snapshot> snapshots;  ///< oldest first
  /// A clone's data source, for the export backend: the volume uuid it was copied from, and the
  /// snapshot's utc_ts when the source was a snapshot of that volume ("" for a volume).
  std::string clone_of_volume;
  std::string clone_of_snapshot;
};

struct Auth {
  std::string type = "none";  ///< none | chap | mchap
  std::string target_user_name;
  std::string target_pswd;
  std::string initiator_user_name;
  std::string initiator_pswd;
};

/// An ACL member: "/initiators/<iqn>" or "/initiator_groups/<name>", and the tenant it lives in.
struct AclRef {
  std::string path;
  std::string tenant;
  bool operator==(const AclRef&) const = default;
};

struct StorageInstance {
  std::string name;
  std::string uuid;
  std::string ip_pool = "/access_network_ip_pools/default";
  std::vector<std::string> ips;  ///< two access VIPs
  std::string iqn;
  std::string node;                    ///< storage node currently holding the VIPs
  std::vector<AclRef> acl_initiators;  ///< no duplicates
  std::vector<AclRef> acl_initiator_groups;
  Auth auth;
  std::vector<std::string> active_initiators;
  Metadata metadata;
  std::vector<Volume> volumes;
};

struct AppInstance {
  std::string id;  ///< uuid
  std::string name;
  std::string tenant;
  std::string admin_state = "online";
  std::string create_mode = "normal";
  std::optional<std::string> descr;
  std::string access_control_mode = "deny_all";
  std::string app_template;     ///< "" or "/app_templates/<name>"
  int64_t online_since_ms = 0;  ///< when admin_state last became online (epoch ms)
  uint64_t seq = 0;             ///< creation order, for stable listings
  Metadata metadata;
  std::vector<StorageInstance> storage_instances;
};

struct Initiator {
  std::string id;  ///< the IQN or eui.
  std::string name;
  std::string tenant;
};

struct AclChange {
  int64_t ts_ms = 0;
  std::string tenant;
  std::string app_instance;  ///< name
  std::string app_instance_id;
  std::string storage_instance;
  std::string op;         ///< add | remove
  std::string initiator;  ///< the path, "/initiators/<iqn>" or "/initiator_groups/<name>"
};

struct FailoverEvent {
  int64_t ts_ms = 0;
  std::string tenant;
  std::string app_instance;
  std::string storage_instance;
  std::vector<std::string> ips;
  std::string from_node;
  std::string to_node;
};

struct RebalanceEvent {
  int64_t ts_ms = 0;
  std::string tenant;
  std::string app_instance;
  std::string storage_instance;
  std::vector<std::string> old_ips;
  std::vector<std::string> new_ips;
};

/// An IPv4 network such as 172.28.0.0/24.
struct Cidr {
  uint32_t network = 0;
  int prefix = 24;

  static Result<Cidr> parse(const std::string& text);
  std::string to_string() const;
  /// Usable hosts (network and broadcast excluded for prefixes < 31).
  uint32_t host_count() const;
  /// The i-th usable host, wrapping around.
  std::string host(uint64_t i) const;
  std::string netmask() const;
};

struct ModelOptions {
  std::chrono::milliseconds op_state_delay{0};
  /// One pool: each SI takes two consecutive addresses. Two pools: one address from each, as on a
  /// real array with two access networks.
  std::vector<Cidr> ip_pools{Cidr{0xAC1C0000u, 24}};  // 172.28.0.0/24
  std::vector<std::string> storage_nodes{"node-1", "node-2", "node-3"};
  std::optional<uint64_t> seed;  ///< ids, IQNs; random when unset
  size_t log_limit = 10000;      ///< ACL log / event entries kept
};

/// Who can see an SI's volumes (for export backends): ACL resolved to IQNs.
struct ExportView {
  std::string tenant;
  std::string app_instance;
  std::string app_instance_id;
  std::string storage_instance;
  std::string volume;
  std::string uuid;
  int64_t size = 0;
  bool online = false;
  std::string access_control_mode;
  std::vector<std::string> acl_iqns;
  std::string iqn;
  std::vector<std::string> ips;
  std::string node;  ///< storage node holding the VIPs (the lio backend's network namespace)
  /// A clone's data source (Volume::clone_of_*): a new volume's file starts as a copy of it.
  std::string clone_of_volume;
  std::string clone_of_snapshot;
};

/// A snapshot as the export backend sees it: the data it must hold is the volume's as of now.
struct SnapshotView {
  std::string volume_uuid;
  std::string utc_ts;
  int64_t size = 0;  ///< GiB
};

nlohmann::json to_json_value(const AclChange& c);
nlohmann::json to_json_value(const FailoverEvent& e);
nlohmann::json to_json_value(const RebalanceEvent& e);

class Model {
 public:
  Model(ModelOptions options, Clock clock);

  // --- names and tenants ---
  /// "" -> "/root"; "/root" or "/root/<name>"; anything else is a 400.
  static Result<std::string> normalize_tenant(const std::string& header);
  static bool valid_name(const std::string& name);     ///< SI, volume, policy names
  static bool valid_ai_name(const std::string& name);  ///< a name or a UUID
  static bool valid_initiator_id(const std::string& id);
  static bool valid_uuid(const std::string& text);
  static bool valid_utc_ts(const std::string& ts);  ///< "<seconds>.<9 digits>"

  // --- app instances ---
  Result<AppInstance> create_app_instance(const std::string& tenant, const nlohmann::json& body);
  /// By id, or by name for backward compatibility.
  Result<AppInstance> get_app_instance(const std::string& tenant, const std::string& id) const;
  /// Creation order; tenant "all" lists every tenant.
  std::vector<AppInstance> list_app_instances(const std::string& tenant) const;
  /// admin_state, force, descr, name, access_control_mode.
  Result<AppInstance> update_app_instance(const std::string& tenant, const std::string& id,
                                          const nlohmann::json& body);
  /// Refused (409) while online unless body has force:true.
  Status delete_app_instance(const std::string& tenant, const std::string& id,
                             const nlohmann::json& body);

  // --- storage instances and volumes ---
  Result<StorageInstance> get_storage_instance(const std::string& tenant, const std::string& ai,
                                               const std::string& si) const;
  /// ip_pool, auth.
  Result<StorageInstance> update_storage_instance(const std::string& tenant, const std::string& ai,
                                                  const std::string& si,
                                                  const nlohmann::json& body);
  Result<StorageInstance> set_auth(const std::string& tenant, const std::string& ai,
                                   const std::string& si, const nlohmann::json& body);
  /// Full replace of the lists present in the body; duplicates and {path,tenant} tolerated.
  Result<StorageInstance> replace_acl(const std::string& tenant, const std::string& ai,
                                      const std::string& si, const nlohmann::json& body);
  /// {"op":"add"|"remove","path":...} on "initiators" or "initiator_groups".
  Result<StorageInstance> acl_op(const std::string& tenant, const std::string& ai,
                                 const std::string& si, const std::string& list,
                                 const nlohmann::json& body);
  Result<Volume> get_volume(const std::string& tenant, const std::string& ai, const std::string& si,
                            const std::string& vol) const;
  /// size (grow only), replica_count, placement_mode, performance_policy.
  Result<Volume> update_volume(const std::string& tenant, const std::string& ai,
                               const std::string& si, const std::string& vol,
                               const nlohmann::json& body);
  Result<Volume> set_performance_policy(const std::string& tenant, const std::string& ai,
                                        const std::string& si, const std::string& vol,
                                        const nlohmann::json& body);

  // --- snapshots (of one volume) ---
  /// body {"uuid"?}; a uuid the volume already has is a 400 with EdfCode::duplicate_snapshot_uuid.
  Result<Snapshot> create_snapshot(const std::string& tenant, const std::string& ai,
                                   const std::string& si, const std::string& vol,
                                   const nlohmann::json& body);
  Result<std::vector<Snapshot>> list_snapshots(const std::string& tenant, const std::string& ai,
                                               const std::string& si, const std::string& vol) const;
  Result<Snapshot> get_snapshot(const std::string& tenant, const std::string& ai,
                                const std::string& si, const std::string& vol,
                                const std::string& utc_ts) const;
  Status delete_snapshot(const std::string& tenant, const std::string& ai, const std::string& si,
                         const std::string& vol, const std::string& utc_ts);
  /// available once op_state_delay has passed since it was taken.
  std::string op_state(const Snapshot& s) const;
  /// Every snapshot of every volume (the export backend keeps one file each).
  std::vector<SnapshotView> snapshot_views() const;

  // --- metadata (si "" = the app instance's) ---
  Result<Metadata> get_metadata(const std::string& tenant, const std::string& ai,
                                const std::string& si = "") const;
  /// Merge; "" deletes a key; 400 when the result would exceed kMetadataLimit.
  Result<Metadata> put_metadata(const std::string& tenant, const std::string& ai,
                                const nlohmann::json& body, const std::string& si = "");

  // --- initiators ---
  Result<Initiator> create_initiator(const std::string& tenant, const nlohmann::json& body);
  Result<Initiator> get_initiator(const std::string& tenant, const std::string& id) const;
  std::vector<Initiator> list_initiators(const std::string& tenant) const;
  Status delete_initiator(const std::string& tenant, const std::string& id);

  // --- state, readiness ---
  /// available once online for op_state_delay; unavailable while offline or still coming up.
  std::string op_state(const AppInstance& ai) const;
  TimePoint now() const { return clock_(); }
  int64_t now_ms() const;

  // --- simulator control ---
  Result<FailoverEvent> failover(const std::string& tenant, const std::string& ai,
                                 const std::string& si, const std::string& to_node);
  Result<RebalanceEvent> rebalance(const std::string& tenant, const std::string& ai,
                                   const std::string& si, const std::vector<std::string>& ips);
  const std::vector<AclChange>& acl_log() const { return acl_log_; }
  const std::vector<FailoverEvent>& failovers() const { return failovers_; }
  const std::vector<RebalanceEvent>& rebalances() const { return rebalances_; }
  std::vector<ExportView> exports() const;
  const ModelOptions& options() const { return options_; }

  // --- persistence ---
  /// Bumped by every successful mutation; a saver compares it to what it last wrote.
  uint64_t generation() const { return generation_; }
  nlohmann::json to_json() const;
  /// Replaces the whole state with a to_json() document.
  Status load_json(const nlohmann::json& doc);

 private:
  struct Tenant {
    std::vector<AppInstance> app_instances;  ///< creation order
    std::vector<Initiator> initiators;       ///< creation order
  };

  AppInstance* find_ai(const std::string& tenant, const std::string& id);
  const AppInstance* find_ai(const std::string& tenant, const std::string& id) const;
  Result<StorageInstance*> find_si(const std::string& tenant, const std::string& ai,
                                   const std::string& si, AppInstance** owner = nullptr);
  Result<Volume*> find_volume(const std::string& tenant, const std::string& ai,
                              const std::string& si, const std::string& vol);
  /// The body of a clone: one new storage instance and volume like the source's, from
  /// clone_snapshot_src / clone_volume_src ({"path": ...}).
  Result<StorageInstance> clone_source(const std::string& tenant, const nlohmann::json& body,
                                       const std::string& what);
  Result<AclRef> acl_ref(const nlohmann::json& entry, const std::string& list,
                         const std::string& tenant) const;
  void log_acl(const AppInstance& ai, const StorageInstance& si, const std::string& op,
               const AclRef& ref);
  std::string new_uuid();
  std::string new_iqn();
  std::vector<std::string> allocate_ips();
  void touched() { ++generation_; }

  ModelOptions options_;
  Clock clock_;
  std::mt19937_64 rng_;
  std::map<std::string, Tenant> tenants_;
  uint64_t next_seq_ = 1;
  uint64_t next_ip_ = 0;
  std::vector<AclChange> acl_log_;
  std::vector<FailoverEvent> failovers_;
  std::vector<RebalanceEvent> rebalances_;
  uint64_t generation_ = 0;
};

}  // namespace datera::sim

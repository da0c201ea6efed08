#pragma once

// What the volume manager needs from a Datera array, as a small interface so its logic can be unit
// tested; EdfArrays is the real one: one EDF client per (array, user), made on first use, because
// FlexVolume options may name their own array and credentials (backstoreServer, secretRef).

#include <cerrno>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "base/logging.h"
#include "base/result.h"
#include "plugins/edf/client.h"
#include "plugins/edf/metrics.h"
#include "plugins/edf/options.h"
#include "plugins/edf/transport.h"

namespace datera::volume {

class Array {
 public:
  virtual ~Array() = default;
  /// The app instance, created from `spec` when absent.
  virtual boost::asio::awaitable<Result<edf::AppInstance>> ensure_volume(
      const edf::VolumeSpec& spec) = 0;
  /// nullopt when the array has no such app instance.
  virtual boost::asio::awaitable<Result<std::optional<edf::AppInstance>>> find_volume(
      const std::string& name) = 0;
  virtual boost::asio::awaitable<Status> ensure_initiator(const std::string& iqn,
                                                          const std::string& label) = 0;
  /// Every registered initiator (controller mode finds a node's IQN by its registered name).
  virtual boost::asio::awaitable<Result<std::vector<edf::InitiatorInfo>>> initiators() = 0;
  /// The names of every app instance (controller mode's detach, which gets only a PV name).
  virtual boost::asio::awaitable<Result<std::vector<std::string>>> volume_names() = 0;
  /// Every app instance, in pages (the periodic access check of many volumes at once).
  virtual boost::asio::awaitable<Result<std::vector<edf::AppInstance>>> list_volumes() = 0;
  virtual boost::asio::awaitable<Status> acl_add(const std::string& name,
                                                 const std::string& iqn) = 0;
  virtual boost::asio::awaitable<Status> acl_remove(const std::string& name,
                                                    const std::string& iqn) = 0;
  /// The initiator IQNs in the volume's ACL.
  virtual boost::asio::awaitable<Result<std::vector<std::string>>> acl(const std::string& name) = 0;
  /// App instance metadata (a flat string map; PUT merges, "" deletes a key).
  virtual boost::asio::awaitable<Result<edf::Metadata>> metadata(const std::string& name) = 0;
  virtual boost::asio::awaitable<Status> put_metadata(const std::string& name,
                                                      const edf::Metadata& keys) = 0;
  /// Online, then waits (bounded) until storage reports available; yields the fresh state.
  virtual boost::asio::awaitable<Result<edf::AppInstance>> bring_online(
      const std::string& name, std::chrono::milliseconds timeout) = 0;
  virtual boost::asio::awaitable<Status> resize(const std::string& name, int64_t size_gib) = 0;
  virtual boost::asio::awaitable<Status> delete_volume(const std::string& name) = 0;

  // Snapshots of an app instance's volume. Each snapshot is named by (app instance, timestamp).
  /// Takes a snapshot now. `uuid` is the idempotency key: when the volume already has a snapshot
  /// with that uuid (EDF: 400 InvalidRequestError code 15), that one is the answer.
  virtual boost::asio::awaitable<Result<edf::Snapshot>> create_snapshot(
      const std::string& name, const std::string& uuid) = 0;
  /// The volume's snapshots, oldest first (a 404 for the app instance is an error).
  virtual boost::asio::awaitable<Result<std::vector<edf::Snapshot>>> snapshots(
      const std::string& name) = 0;
  /// Deletes one; a snapshot (or app instance) that is already gone counts as deleted.
  virtual boost::asio::awaitable<Status> delete_snapshot(const std::string& name,
                                                         const std::string& timestamp) = 0;
};

class Arrays {
 public:
  virtual ~Arrays() = default;
  /// The array for `target` (host, port, credentials; is_default: the agent's current ones); the
  /// same object for the same target.
  virtual Result<Array*> get(const edf::BackendTarget& target) = 0;
  /// The same array for lease renewals, grant checks and access checks: each call bounded to about
  /// a third of the lease TTL (few retries, short timeouts), so a node cut off from the array
  /// counts and logs a failed renewal within its renewal period, instead of retrying for minutes
  /// while holding the volume's lock.
  virtual Result<Array*> get_for_leases(const edf::BackendTarget& target) { return get(target); }
};

// How the volume core reads an Error's code: only here, so a change of its representation (an
// int today: HTTP statuses, edf::Errc values and errno share it) touches one place.

/// The array has no such object (HTTP 404).
inline bool is_not_found(const Error& e) {
  return edf::is_not_found(e);
}
/// The array refused the credentials (HTTP 401 or 403).
inline bool is_unauthorized(const Error& e) {
  return e.code == HttpStatus::unauthorized || e.code == HttpStatus::forbidden;
}
/// No reply from the array (or a lost one: the request may have been applied).
inline bool is_unreachable(const Error& e) {
  return e.code == edf::Errc::transport || e.code == edf::Errc::lost_reply;
}
/// Another node holds the volume's lease and keeps it (ownership::Coordinator::acquire).
inline bool is_claim_refused(const Error& e) {
  return e.code == errno_code(EBUSY);
}
/// The formatted guard refused mkfs: the device reads blank, the array says it holds a filesystem.
/// It holds until someone looks (CSI: FAILED_PRECONDITION).
inline Error format_refused(std::string message) {
  return Error{std::move(message), errno_code(EMEDIUMTYPE)};
}
inline bool is_format_refused(const Error& e) {
  return e.code == errno_code(EMEDIUMTYPE);
}
/// A failure kubelet's retry is expected to get past (the controller has not attached it yet).
inline Error retry_later(std::string message) {
  return Error{std::move(message), errno_code(EAGAIN)};
}

struct EdfArraysOptions {
  edf::TlsOptions tls;
  std::string tenant = "/root";
  std::chrono::milliseconds request_timeout{30'000};
  /// get_for_leases(): per-attempt timeout and attempts (0 ms: same client as get()).
  std::chrono::milliseconds lease_request_timeout{0};
  int lease_attempts = 2;
  /// The agent's array and account (backend.*): what a target with is_default resolves to at
  /// each get(), so records never hold a copy of its password.
  edf::BackendTarget default_backend;
  /// Makes the transport of each new client, for the array at `endpoint`. Unset (production):
  /// edf::make_beast_transport with `tls`. Tests hand in one that reaches the array without a
  /// socket (the simulator's request handler, in process).
  std::function<Result<std::unique_ptr<edf::Transport>>(const edf::Endpoint& endpoint)>
      make_transport;
};

class EdfArrays : public Arrays {
 public:
  EdfArrays(boost::asio::any_io_executor executor, EdfArraysOptions options, edf::Metrics& probe,
            LoggerPtr log);
  ~EdfArrays() override;
  Result<Array*> get(const edf::BackendTarget& target) override;
  Result<Array*> get_for_leases(const edf::BackendTarget& target) override;

 private:
  struct Entry;
  Result<Array*> get(const edf::BackendTarget& target, bool leases);
  Result<edf::BackendTarget> resolve(const edf::BackendTarget& target) const;
  boost::asio::any_io_executor executor_;
  EdfArraysOptions options_;
  edf::Metrics& metrics_;
  LoggerPtr log_;
  std::map<std::string, std::unique_ptr<Entry>> entries_;
};

}  // namespace datera::volume

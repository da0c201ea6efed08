#pragma once

// Asynchronous client of the Datera EDF REST API (v2.2 first, v2.1 supported), on the agent's event
// loop.
//
// - Version discovery through GET /api_versions; the v2.1+ envelope is unwrapped.
// - Lazy login (PUT /login); on a 401 the key is dropped, the client logs in again and repeats the
//   request once.
// - Retries with exponential backoff and jitter on 503, connection failures and timeouts, for
//   requests that are safe to repeat: GET, PUT, DELETE always; POST only when nothing was sent or
//   the array answered 503. A POST whose reply was lost is resolved by the caller (create: a GET by
//   name, also when the retried POST meets 409).
// - Errors say what failed, on which volume, with the EDF error name, HTTP status and message, and
//   carry the HTTP status as Error::code (HttpStatus; Errc for the client's own).
// - Credentials never reach logs, metrics or error messages.
//
// Not thread-safe: one Client per array endpoint, used from its executor.

#include <chrono>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "base/logging.h"
#include "base/result.h"
#include "plugins/edf/metrics.h"
#include "plugins/edf/transport.h"
#include "plugins/edf/types.h"

namespace datera::edf {

/// The client's own Error::code values (category "edf"); the array's refusals carry their HTTP
/// status (HttpStatus), and a TLS failure its TransportErrc.
enum class Errc {
  transport = 1,    ///< no reply after every retry
  lost_reply = 2,   ///< a non-repeatable request was sent and its reply lost
  bad_reply = 3,    ///< the array answered something unparseable
  not_ready = 4,    ///< a wait for op_state ran out
  invalid_arg = 5,  ///< refused before any request (bad name, metadata too large)
  unsupported = 6,  ///< no API version both sides speak
};
const std::error_category& edf_category();
inline std::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), edf_category()};
}
/// The array answered 404: the object is not there (deletes take that as done).
inline bool is_not_found(const Error& e) {
  return e.code == HttpStatus::not_found;
}

std::string safe_excerpt(const std::string& text, size_t max = 200);

struct RetryPolicy {
  int max_attempts = 6;                  ///< including the first
  std::chrono::milliseconds base{250};   ///< first backoff; doubles each retry
  std::chrono::milliseconds cap{8'000};  ///< longest single backoff
};

struct ClientOptions {
  std::string server;  ///< "host:port", for messages
  Credentials credentials;
  std::string tenant = "/root";
  std::string api_version;  ///< empty: discover (v2.2, else v2.1)
  std::chrono::milliseconds request_timeout{30'000};
  RetryPolicy retry;
  uint32_t seed = std::random_device{}();  ///< jitter; tests fix it
};

class Client {
 public:
  Client(boost::asio::any_io_executor executor, Transport& transport, ClientOptions options,
         Metrics& probe, LoggerPtr log);

  /// The API version in use ("v2.2"), discovering it on first use.
  boost::asio::awaitable<Result<std::string>> version();

  /// GET /system: the array's name and software version; a cheap proof of reachability and login.
  boost::asio::awaitable<Result<Json>> system();

  // App instances (by name). `volume` in error messages is the app instance name.
  boost::asio::awaitable<Result<AppInstance>> get_app_instance(const std::string& name);
  /// POSTs a new app instance (a clone when spec.clone_*_src is set); a lost reply (or 409 after
  /// one) is resolved by a GET by name.
  boost::asio::awaitable<Result<AppInstance>> create_app_instance(const VolumeSpec& spec);
  /// GET, and create when absent (409 from a concurrent creator resolves to a GET).
  boost::asio::awaitable<Result<AppInstance>> ensure_app_instance(const VolumeSpec& spec);
  boost::asio::awaitable<Result<AppInstance>> set_online(const std::string& name, bool online);
  /// Polls until storage-1 reports op_state available, at most `timeout`.
  boost::asio::awaitable<Result<AppInstance>> wait_available(const std::string& name,
                                                             std::chrono::milliseconds timeout,
                                                             std::chrono::milliseconds interval);
  boost::asio::awaitable<Status> resize(const std::string& name, int64_t size_gib);
  /// Offline with force, then DELETE; an app instance that is already gone counts as deleted.
  boost::asio::awaitable<Status> delete_app_instance(const std::string& name);
  /// Every app instance, kListPage per request.
  boost::asio::awaitable<Result<std::vector<AppInstance>>> list_app_instances();
  static constexpr size_t kListPage = 100;

  // Snapshots of an app instance's volume-1, each named by its utc_ts.
  /// POSTs a snapshot with `uuid` (the idempotency key); a lost reply repeats the POST once. When
  /// the array refuses it with 400 (EDF's code 15, duplicate snapshot uuid, among others) or the
  /// reply is lost again, the snapshot with that uuid in the volume's listing is the answer, as
  /// Datera's CSI does; without one, the refusal stands.
  boost::asio::awaitable<Result<Snapshot>> create_snapshot(const std::string& name,
                                                           const std::string& uuid);
  /// Every snapshot of the volume, oldest first, kListPage per request.
  boost::asio::awaitable<Result<std::vector<Snapshot>>> list_snapshots(const std::string& name);
  /// A snapshot that is already gone (or whose app instance is) counts as deleted.
  boost::asio::awaitable<Status> delete_snapshot(const std::string& name,
                                                 const std::string& timestamp);

  // Initiators and ACL.
  boost::asio::awaitable<Status> ensure_initiator(const std::string& iqn, const std::string& label);
  /// Every initiator of the tenant (one GET; EDF answers a list or an object keyed by id).
  boost::asio::awaitable<Result<std::vector<InitiatorInfo>>> list_initiators();
  boost::asio::awaitable<Status> acl_add(const std::string& name, const std::string& iqn);
  boost::asio::awaitable<Status> acl_remove(const std::string& name, const std::string& iqn);
  boost::asio::awaitable<Result<std::vector<std::string>>> get_acl(const std::string& name);

  // Metadata: a flat string map, merged by the array on PUT ("" deletes a key).
  boost::asio::awaitable<Result<Metadata>> get_metadata(const std::string& name);
  boost::asio::awaitable<Status> put_metadata(const std::string& name, const Metadata& changes);

  /// Forgets the session key (tests; the next request logs in again).
  void drop_session() { key_.clear(); }

 private:
  struct Call {
    std::string method;
    std::string path;  ///< below the version prefix, e.g. "/app_instances/x"
    std::optional<Json> body;
    std::string what;    ///< "get app instance", for errors
    std::string volume;  ///< for errors; empty when not about one volume
    bool repeatable = true;
  };
  /// One API call with login, re-login and retries. Yields the envelope's `data` (or the body).
  boost::asio::awaitable<Result<Json>> call(Call c);
  boost::asio::awaitable<Result<Json>> call_full(Call c, Json* metadata_out);
  /// Sends one request, repeating it with backoff on 503 and on transport failures (for
  /// non-repeatable requests only when nothing was sent). Yields the last response, or an Error
  /// with code Errc::transport, Errc::lost_reply (request maybe applied) or TLS failure.
  boost::asio::awaitable<Result<HttpResponse>> exchange(const HttpRequest& req, bool repeatable,
                                                        const Call& c);
  boost::asio::awaitable<Status> login();
  /// A call about the app instance named c.volume (checked first) whose reply is that instance.
  boost::asio::awaitable<Result<AppInstance>> app_instance_call(Call c);
  boost::asio::awaitable<void> backoff(int attempt, const std::string& reason, const Call& c);
  Error api_error(const Call& c, unsigned status, const std::string& body) const;
  Error wrap(const Call& c, const std::string& msg, std::error_code code) const;
  boost::asio::awaitable<Status> acl_change(const std::string& name, const std::string& iqn,
                                            bool add);
  static std::string si_path(const std::string& name);
  /// The snapshot with `uuid` in the volume's listing; nullopt when there is none.
  boost::asio::awaitable<Result<std::optional<Snapshot>>> find_snapshot(const std::string& name,
                                                                        const std::string& uuid);

  boost::asio::any_io_executor executor_;
  Transport& transport_;
  ClientOptions options_;
  Metrics& metrics_;
  LoggerPtr log_;
  std::mt19937 rng_;
  std::string version_;
  std::string key_;
};

}  // namespace datera::edf

template <>
struct std::is_error_code_enum<datera::edf::Errc> : std::true_type {};

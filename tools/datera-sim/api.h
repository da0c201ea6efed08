#pragma once

// The EDF REST protocol over the model: an http::Handler that routes /api_versions, /v2.1/... and
// /v2.2/... to the model with the EDF envelope, sessions (Auth-Token), the tenant header, EDF error
// bodies, pagination, and injected faults; plus the simulator's own control endpoints under
// /_sim/ (no auth, clearly not EDF). No sockets here: the transport is agent/http's Server.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "agent/http/types.h"
#include "base/logging.h"
#include "tools/datera-sim/model.h"
#include "tools/datera-sim/sessions.h"

namespace datera::sim {

/// Injected faults, for EDF requests only (never /_sim/). Rates are probabilities per request.
struct Faults {
  int64_t latency_ms = 0;        ///< added before handling (a timer, the loop stays free)
  double error_rate = 0;         ///< 503 {"message":"overloaded"}, no effect
  double drop_rate = 0;          ///< connection closed before handling, no effect
  double lost_reply_rate = 0;    ///< handled (effects stay), then the connection is closed
  std::optional<uint64_t> seed;  ///< makes the fault sequence reproducible

  nlohmann::json to_json() const;
  /// Parses a POST /_sim/faults body; Error code 400 on bad input.
  static Result<Faults> parse(const nlohmann::json& body);
};

/// Where the export backend keeps a volume's data, for GET /_sim/exports ("" when it keeps none).
using DataPathFn = std::function<std::string(const ExportView&)>;

struct ApiOptions {
  std::string system_name = "datera-sim";
  std::string sw_version = "3.3.0.0";
  std::string backend = "memory";
  DataPathFn data_path;
  /// Runs after a request changed the model and before the reply goes out (persist the state,
  /// reconcile the backend). Unset: nothing to do.
  std::function<boost::asio::awaitable<void>()> commit;
};

class Api : public http::Handler {
 public:
  Api(Model& model, Sessions& sessions, LoggerPtr log, ApiOptions options = {});

  boost::asio::awaitable<http::Response> handle(http::Request request) override;

  const Faults& faults() const { return faults_; }
  void set_faults(const Faults& f);

 private:
  struct Ctx;

  http::Response dispatch(const http::Request& req, const std::string& path);
  http::Response edf(Ctx& ctx);
  http::Response app_instances(Ctx& ctx, const std::vector<std::string>& segs);
  http::Response initiators(Ctx& ctx, const std::vector<std::string>& segs);
  http::Response login(Ctx& ctx);
  http::Response control(const http::Request& req, const std::string& path);

  nlohmann::json render_ai(const AppInstance& ai, const Ctx& ctx) const;
  nlohmann::json render_si(const AppInstance& ai, const StorageInstance& si, const Ctx& ctx) const;
  nlohmann::json render_volume(const AppInstance& ai, const StorageInstance& si, const Volume& v,
                               const std::string& op_state) const;
  nlohmann::json render_acl(const AppInstance& ai, const StorageInstance& si, const Ctx& ctx) const;
  nlohmann::json render_snapshot(const AppInstance& ai, const StorageInstance& si, const Volume& v,
                                 const Snapshot& s) const;
  nlohmann::json render_initiator(const Initiator& i) const;

  http::Response ok(const Ctx& ctx, nlohmann::json data, nlohmann::json metadata = nullptr) const;
  http::Response list(const Ctx& ctx, std::vector<nlohmann::json> items) const;
  http::Response fail(const Ctx& ctx, const Error& error) const;
  /// `code`: EDF's error number in the body (0 for most errors).
  http::Response fail(const Ctx& ctx, unsigned status, const std::string& message,
                      int code = 0) const;

  bool roll(double rate);

  Model& model_;
  Sessions& sessions_;
  LoggerPtr log_;
  ApiOptions options_;
  Faults faults_;
  /// /_sim/misroute: app instance name -> the app instance whose data its export points at.
  std::map<std::string, std::string> misroute_;
  std::mt19937_64 fault_rng_;
  uint64_t next_req_id_ = 1;
  /// /_sim/logins: every PUT /login, and per user name how many were accepted or refused.
  uint64_t login_requests_ = 0;
  std::map<std::string, std::pair<uint64_t, uint64_t>> logins_;
};

/// Percent-decodes; '+' becomes a space when `plus_is_space` (query strings, form bodies).
std::string url_decode(const std::string& text, bool plus_is_space = false);
/// "a=1&b=x%20y" -> {{"a","1"},{"b","x y"}}.
std::vector<std::pair<std::string, std::string>> parse_form(const std::string& text);

}  // namespace datera::sim

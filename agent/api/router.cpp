#include "agent/api/router.h"

#include <algorithm>
#include <cctype>
#include <cerrno>

#include "base/json.h"

namespace datera::api {

using http::error_response;
using http::Response;

namespace {

Response json_response(const nlohmann::json& body, std::string route) {
  Response r;
  // Replies may quote request data or names read from the system: invalid UTF-8 becomes U+FFFD
  // rather than an exception.
  r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  r.route = std::move(route);
  return r;
}

/// A volume name as a path segment: what a Datera name may hold, nothing that could escape.
bool plausible_volume(const std::string& v) {
  return !v.empty() && v.size() <= 64 && std::all_of(v.begin(), v.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

/// Paths are ASCII (the transport refuses anything else too; this keeps the router safe alone).
bool printable_ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x21 && static_cast<unsigned char>(c) <= 0x7e;
  });
}

constexpr const char* kRoutes =
    " (routes: POST /v1/flexvolume, GET /v1/status, GET /v1/volumes, "
    "POST /v1/volumes/<volume>/release, POST /v1/drain)";

}  // namespace

Router::Router(flexvolume::Service& flex, StatusSource& status, Maintenance& maintenance,
               LoggerPtr log)
    : flex_(flex), status_(status), maintenance_(maintenance), log_(std::move(log)) {}

boost::asio::awaitable<Response> Router::handle(http::Request request) {
  const auto path = request.path();
  if (!printable_ascii(request.target)) {
    co_return error_response(400, "bad_target",
                             "the request target must be ASCII without control characters "
                             "(percent-encode anything else)");
  }
  if (path == "/v1/flexvolume") {
    if (request.method != "POST")
      co_return error_response(405, "method", "use POST on /v1/flexvolume");
    co_return co_await flexvolume(request);
  }
  if (path == "/v1/status" || path == "/v1/volumes") {
    if (request.method != "GET") co_return error_response(405, "method", "use GET on " + path);
    if (path == "/v1/status") co_return json_response(status_.status(), "status");
    co_return json_response(status_.volumes(), "volumes");
  }
  const std::string prefix = "/v1/volumes/", suffix = "/release";
  if (path == "/v1/drain" || (path.size() > prefix.size() + suffix.size() &&
                              path.rfind(prefix, 0) == 0 && path.ends_with(suffix))) {
    if (request.method != "POST") co_return error_response(405, "method", "use POST on " + path);
    const std::string volume =
        path == "/v1/drain"
            ? std::string()
            : path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
    if (path != "/v1/drain" && !plausible_volume(volume)) {
      co_return error_response(400, "bad_volume",
                               "'" + volume + "' is not a volume name (letters, digits, _ - .)");
    }
    co_return co_await maintenance(request, volume);
  }
  co_return error_response(404, "not_found", "no route " + path + kRoutes);
}

boost::asio::awaitable<Response> Router::maintenance(const http::Request& request,
                                                     const std::string& volume) {
  bool force = false;
  if (!request.body.empty()) {
    const auto parsed = json::parse_bounded(request.body);
    const nlohmann::json body = parsed ? *parsed : nlohmann::json();
    if (!body.is_object() || (body.contains("force") && !body["force"].is_boolean())) {
      co_return error_response(400, "bad_json", R"(the body is {"force": true|false} or nothing)");
    }
    force = body.value("force", false);
  }
  if (volume.empty()) {
    log_->info("drain requested{}", force ? " (force)" : "");
    auto results = co_await maintenance_.drain(force);
    co_return json_response({{"volumes", std::move(results)}}, "drain");
  }
  log_->info("volume {}: release requested{}", volume, force ? " (force)" : "");
  auto result = co_await maintenance_.release(volume, force);
  Response r = json_response(result, "release");
  const std::string outcome = result.value("result", "");
  if (outcome == "in_use" || outcome == "staged") r.status = 409;
  if (outcome == "failed") r.status = 500;
  co_return r;
}

boost::asio::awaitable<Response> Router::flexvolume(const http::Request& request) {
  auto parsed = json::parse_bounded(request.body);
  if (!parsed) {
    co_return error_response(400, "bad_json", "request body: " + parsed.error().message);
  }
  const nlohmann::json body = std::move(*parsed);
  auto req = flex::request_from_json(body);
  if (!req) {
    if (req.error().code == errno_code(ENOTSUP)) {
      // A newer kubelet command: "Not supported" lets kubelet use its own fallback.
      co_return json_response(flex::not_supported(req.error().message), "flexvolume");
    }
    co_return error_response(400, "bad_request", req.error().message);
  }
  auto reply = co_await flex_.call(std::move(*req));
  co_return json_response(reply, "flexvolume");
}

http::Admission uid_admission(std::vector<uid_t> allowed, LoggerPtr log) {
  return [allowed = std::move(allowed), log = std::move(log)](
             const std::optional<http::PeerCred>& peer) -> std::optional<Response> {
    if (!peer) {
      log->warn("refusing an API client whose credentials could not be read");
      return error_response(403, "peer_unknown", "peer credentials unavailable");
    }
    if (std::find(allowed.begin(), allowed.end(), peer->uid) != allowed.end()) return std::nullopt;
    log->warn("refusing API client pid={} uid={}: uid not in api.allowed_uids", peer->pid,
              peer->uid);
    return error_response(403, "peer_uid",
                          "uid " + std::to_string(peer->uid) +
                              " may not use the datera-agent API (see api.allowed_uids)");
  };
}

}  // namespace datera::api

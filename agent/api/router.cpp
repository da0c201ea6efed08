#include "agent/api/router.h"

#include <algorithm>
#include <cerrno>

namespace datera::api {

using http::error_response;
using http::Response;

namespace {

Response json_response(const nlohmann::json& body, std::string route) {
  Response r;
  r.body = body.dump();
  r.route = std::move(route);
  return r;
}

}  // namespace

Router::Router(flexvolume::Service& flex, StatusSource& status, LoggerPtr log)
    : flex_(flex), status_(status), log_(std::move(log)) {}

boost::asio::awaitable<Response> Router::handle(http::Request request) {
  const auto path = request.path();
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
  co_return error_response(404, "not_found",
                           "no route " + path +
                               " (routes: POST /v1/flexvolume, GET /v1/status, "
                               "GET /v1/volumes)");
}

boost::asio::awaitable<Response> Router::flexvolume(const http::Request& request) {
  const auto body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded())
    co_return error_response(400, "bad_json", "request body is not valid JSON");
  auto req = flex::request_from_json(body);
  if (!req) {
    if (req.error().code == ENOTSUP) {
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

#pragma once

// The Unix-socket API, protocol apart from transport: a pure mapping from http::Request to
// http::Response over injected services. Routes:
//   POST /v1/flexvolume   {"command","args","options"} -> FlexVolume reply object (always 200 when
//                         the body was understood, whatever the reply status)
//   GET  /v1/status       version, node, uptime, driver install state, counts
//   GET  /v1/volumes      volumes this agent knows about
//   POST /v1/volumes/<volume>/release  {"force":false}: give the volume up on this node (no pod
//                         here may use it); 200 released or nothing here, 409 kept (in use, or
//                         kubelet's device mount), 500 a step failed
//   POST /v1/drain        {"force":false}: the same for every volume; 200 with one result each

#include <functional>
#include <sys/types.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/flexvolume/service.h"
#include "agent/http/server.h"
#include "agent/http/types.h"
#include "base/logging.h"

namespace datera::api {

/// Supplies the documents behind GET routes; the composition root assembles them.
class StatusSource {
 public:
  virtual ~StatusSource() = default;
  virtual nlohmann::json status() = 0;
  virtual nlohmann::json volumes() = 0;
};

/// Gives volumes up on an operator's request. Each result is an object with "volume", "result"
/// (released, not_here, in_use, staged, failed), "message" and "pods".
class Maintenance {
 public:
  virtual ~Maintenance() = default;
  virtual boost::asio::awaitable<nlohmann::json> release(std::string volume, bool force) = 0;
  /// An array of results, one per volume this node held.
  virtual boost::asio::awaitable<nlohmann::json> drain(bool force) = 0;
};

class Router : public http::Handler {
 public:
  Router(flexvolume::Service& flex, StatusSource& status, Maintenance& maintenance, LoggerPtr log);
  boost::asio::awaitable<http::Response> handle(http::Request request) override;

 private:
  boost::asio::awaitable<http::Response> flexvolume(const http::Request& request);
  boost::asio::awaitable<http::Response> maintenance(const http::Request& request,
                                                     const std::string& volume);

  flexvolume::Service& flex_;
  StatusSource& status_;
  Maintenance& maintenance_;
  LoggerPtr log_;
};

/// Admission policy for the API socket: peers whose SO_PEERCRED uid is not in `allowed` get 403.
http::Admission uid_admission(std::vector<uid_t> allowed, LoggerPtr log);

}  // namespace datera::api

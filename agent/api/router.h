#pragma once

// The Unix-socket API, protocol apart from transport: a pure mapping from http::Request to
// http::Response over injected services. Routes:
//   POST /v1/flexvolume   {"command","args","options"} -> FlexVolume reply object (always 200 when
//                         the body was understood, whatever the reply status)
//   GET  /v1/status       version, node, uptime, driver install state, counts
//   GET  /v1/volumes      volumes this agent knows about

#include <functional>
#include <sys/types.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/common/logging.h"
#include "agent/flexvolume/service.h"
#include "agent/http/server.h"
#include "agent/http/types.h"

namespace datera::api {

/// Supplies the documents behind GET routes; the composition root assembles them.
class StatusSource {
 public:
  virtual ~StatusSource() = default;
  virtual nlohmann::json status() = 0;
  virtual nlohmann::json volumes() = 0;
};

class Router : public http::Handler {
 public:
  Router(flexvolume::Service& flex, StatusSource& status, LoggerPtr log);
  boost::asio::awaitable<http::Response> handle(http::Request request) override;

 private:
  boost::asio::awaitable<http::Response> flexvolume(const http::Request& request);

  flexvolume::Service& flex_;
  StatusSource& status_;
  LoggerPtr log_;
};

/// Admission policy for the API socket: peers whose SO_PEERCRED uid is not in `allowed` get 403.
http::Admission uid_admission(std::vector<uid_t> allowed, LoggerPtr log);

}  // namespace datera::api

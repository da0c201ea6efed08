#pragma once

// Transport-neutral HTTP request/response and the handler interface. Handlers never see a socket:
// the transport (server.h) decodes, enforces limits and peer policy, and encodes the reply.

#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>

namespace datera::http {

/// Who is on the other end of a Unix socket (SO_PEERCRED); absent for TCP peers.
struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

struct Request {
  std::string method;  ///< "GET", "POST", ...
  std::string target;  ///< path and query as sent
  std::string body;
  std::string content_type;
  std::string user_agent;
  std::optional<PeerCred> peer;
  /// Every header field as received (name as sent, value), in order.
  std::vector<std::pair<std::string, std::string>> headers;

  /// The path without query string.
  std::string path() const { return target.substr(0, target.find('?')); }
  /// The query string after '?', still percent-encoded ("" when there is none).
  std::string query() const {
    const auto q = target.find('?');
    return q == std::string::npos ? std::string() : target.substr(q + 1);
  }
  /// The first header whose name matches case-insensitively, or nullopt.
  std::optional<std::string> header(std::string_view name) const {
    const auto ascii_lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c + 32) : c; };
    for (const auto& [key, value] : headers) {
      if (key.size() != name.size()) continue;
      bool same = true;
      for (size_t i = 0; i < key.size() && same; ++i) {
        same = ascii_lower(key[i]) == ascii_lower(name[i]);
      }
      if (same) return value;
    }
    return std::nullopt;
  }
};

struct Response {
  unsigned status = 200;
  std::string body;
  std::string content_type = "application/json";
  /// Low-cardinality label for metrics ("flexvolume", "status", "unknown"...), set by handlers.
  std::string route = "unknown";
  /// Close the connection without sending anything: the request's effects stay, its reply is lost.
  /// Only the EDF simulator's fault injection uses this.
  bool drop_connection = false;
};

/// A JSON error body: {"status":"Failure","message":...,"error":reason}. It is FlexVolume-shaped so
/// a shim can print it as its reply unchanged.
Response error_response(unsigned status, const std::string& reason, const std::string& message);

class Handler {
 public:
  virtual ~Handler() = default;
  virtual boost::asio::awaitable<Response> handle(Request request) = 0;
};

}  // namespace datera::http

#pragma once

// A tiny blocking HTTP/1.1 client over a Unix stream socket, for the shim: one request, one reply,
// `Connection: close`, every step bounded by a deadline. No Boost, so the shim starts fast.

#include <chrono>
#include <string>
#include <string_view>

#include "base/result.h"

namespace datera::flex {

struct HttpReply {
  unsigned status = 0;
  std::string body;
};

/// Parses a complete response (status line, headers, Content-Length or read-to-close body).
Result<HttpReply> parse_http_reply(std::string_view raw);

enum class ClientErrc { connect = 1, timeout = 2, io = 3, protocol = 4 };
const std::error_category& client_category();
inline std::error_code make_error_code(ClientErrc e) {
  return {static_cast<int>(e), client_category()};
}

/// One request (GET sends no body) to the server at `socket_path`. Error codes: ClientErrc values.
Result<HttpReply> http_request(const std::string& socket_path, const std::string& method,
                               const std::string& path, const std::string& body,
                               const std::string& user_agent,
                               std::chrono::milliseconds connect_timeout,
                               std::chrono::milliseconds total_timeout);

/// POSTs `body` (JSON) to `path` on the server at `socket_path`. Error codes: ClientErrc values.
Result<HttpReply> post_json(const std::string& socket_path, const std::string& path,
                            const std::string& body, const std::string& user_agent,
                            std::chrono::milliseconds connect_timeout,
                            std::chrono::milliseconds total_timeout);

}  // namespace datera::flex

template <>
struct std::is_error_code_enum<datera::flex::ClientErrc> : std::true_type {};

#pragma once

// The client's only door to the network: one HTTP exchange at a time per call, asynchronous.
// The Beast implementation keeps connections alive between calls; tests script a fake.

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "base/logging.h"
#include "base/result.h"

namespace datera::edf {

struct HttpRequest {
  std::string method;  ///< GET, PUT, POST, DELETE
  std::string target;  ///< path and query, e.g. /v2.2/app_instances?limit=100
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{30'000};
};

struct HttpResponse {
  unsigned status = 0;
  std::string body;
};

/// Transport failures, as Error::code values (category "edf transport").
enum class TransportErrc {
  connect = 1,  ///< nothing was sent: always safe to retry
  timeout = 2,  ///< sent, no (complete) reply: the request may or may not have taken effect
  io = 3,       ///< connection broke after sending: same uncertainty as timeout
  tls = 4,      ///< TLS handshake or certificate verification failed: retrying will not help
};
const std::error_category& transport_category();
inline std::error_code make_error_code(TransportErrc e) {
  return {static_cast<int>(e), transport_category()};
}
bool sent_nothing(const Error& e);

class Transport {
 public:
  virtual ~Transport() = default;
  virtual boost::asio::awaitable<Result<HttpResponse>> send(HttpRequest request) = 0;
};

struct Endpoint {
  std::string host;
  unsigned short port = 7717;
};

/// HTTPS settings. Verification is on unless explicitly skipped: the array's certificate must chain
/// to `ca_file` (or the system store when empty) and name the host (DNS name or IP address).
struct TlsOptions {
  bool enabled = false;
  std::string ca_file;
  bool insecure_skip_verify = false;  ///< logged as a warning when the transport is made
};

/// HTTP/1.1 (or HTTPS) over TCP with keep-alive connection reuse (up to `max_idle` idle
/// connections). A reused connection that the server already closed is retried once on a fresh one.
/// Fails only when the TLS settings are unusable (e.g. an unreadable CA file).
Result<std::unique_ptr<Transport>> make_beast_transport(boost::asio::any_io_executor executor,
                                                        Endpoint endpoint, LoggerPtr log,
                                                        TlsOptions tls = {}, size_t max_idle = 4);

}  // namespace datera::edf

template <>
struct std::is_error_code_enum<datera::edf::TransportErrc> : std::true_type {};

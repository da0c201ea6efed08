#pragma once

// HTTPS for the simulator, in front of its plain http::Server: accepts TLS connections, completes
// the handshake, and hands the server the other end of a socket pair (Server::adopt) whose bytes
// it relays both ways. Closing either side closes both, so the server's lost-reply and drop faults
// reach HTTPS clients unchanged. The agent's own HTTP transport so carries no TLS.

#include <chrono>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "agent/http/metrics.h"
#include "agent/http/server.h"
#include "base/logging.h"
#include "base/result.h"

namespace datera::sim {

class TlsFront {
 public:
  /// `handshake_timeout` bounds a connection that never completes its handshake; failures are
  /// counted in `probe` as rejections with reason tls_handshake.
  TlsFront(boost::asio::any_io_executor executor, std::shared_ptr<boost::asio::ssl::context> tls,
           http::Server& server, http::Metrics& probe, LoggerPtr log,
           std::chrono::milliseconds handshake_timeout);

  /// Binds TCP; port 0 picks a free port. Returns the bound endpoint.
  Result<boost::asio::ip::tcp::endpoint> listen(const std::string& host, unsigned short port);
  void start();
  /// Stops accepting (connections already handed over end with the server's drain).
  void stop();

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> relay(boost::asio::ip::tcp::socket socket);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  http::Server& server_;
  http::Metrics& metrics_;
  LoggerPtr log_;
  std::chrono::milliseconds handshake_timeout_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor_;
};

}  // namespace datera::sim

#pragma once

// HTTP/1.1 transport on Beast for both of the agent's servers: the Unix-socket API (peer
// credentials, 0600 socket) and the TCP metrics port. It decodes requests under hard limits, asks
// an optional admission policy about the peer, calls the Handler, and encodes the reply.
//
// Lifecycle: construct, listen_unix()/listen_tcp(), start(); on shutdown stop_accepting() closes
// the listener and idle keep-alive connections while requests being handled run on, and drain()
// waits a bounded time for them. Everything runs on one executor (one thread); not thread-safe.

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include "agent/http/metrics.h"
#include "agent/http/types.h"
#include "base/logging.h"
#include "base/result.h"

namespace datera::http {

struct ServerOptions {
  std::string name = "http";                       ///< for logs
  size_t max_connections = 64;                     ///< more are answered 503 and closed at once
  std::chrono::milliseconds read_timeout{10'000};  ///< whole request, and keep-alive idle time;
                                                   ///< at expiry the connection is closed
  std::chrono::milliseconds write_timeout{10'000};
  size_t max_request_bytes = 64 * 1024;  ///< request head + body
  /// TCP only: open connections one peer address may hold; more are answered 503 and closed at
  /// once, so one client cannot take every slot. 0 = no per-peer bound.
  size_t max_connections_per_source = 0;
  /// The first byte of each request (and so the keep-alive idle time) must arrive within this;
  /// the whole request still within read_timeout, counted from the same start, which bounds a
  /// client sending one byte at a time. 0 = read_timeout.
  std::chrono::milliseconds first_byte_timeout{0};
};

/// Returns a response to refuse the peer, or nullopt to serve it.
using Admission = std::function<std::optional<Response>(const std::optional<PeerCred>&)>;

/// A TCP acceptor listening on host:port (an IP address; port 0 picks one), address reuse on.
Result<std::unique_ptr<boost::asio::ip::tcp::acceptor>> bind_tcp(
    const boost::asio::any_io_executor& executor, const std::string& host, unsigned short port);

class Server {
 public:
  Server(boost::asio::any_io_executor executor, ServerOptions options, Handler& handler,
         Metrics& probe, LoggerPtr log, Admission admission = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds a Unix socket at `path`: parent dir created 0750, socket chmod 0600. A stale socket file
  /// (nobody accepting) is replaced; a live one, or a non-socket file at the path, is an error.
  Status listen_unix(const std::string& path);
  /// Binds TCP; port 0 picks a free port. Returns the bound endpoint.
  Result<boost::asio::ip::tcp::endpoint> listen_tcp(const std::string& host, unsigned short port);
  /// Serves a connection accepted elsewhere, under the same bounds (no peer credentials, no
  /// per-source count): how datera-sim's TLS front (tools/datera-sim/tls_front.h) hands over the
  /// plain side of a socket pair, so this transport itself never carries TLS.
  void adopt(boost::asio::local::stream_protocol::socket socket);

  /// Starts the accept loop(s) on the executor.
  void start();
  /// Stops accepting and closes idle connections; in-flight requests continue.
  void stop_accepting();
  /// Waits up to `bound` for in-flight requests to finish, then closes whatever is left.
  /// Returns true when everything finished in time.
  boost::asio::awaitable<bool> drain(std::chrono::milliseconds bound);
  /// Removes the socket file if it is still the one this server created (not a successor's).
  void remove_socket_file();

  size_t connections() const { return conns_.size(); }
  size_t in_flight() const;

 private:
  struct Conn {
    std::function<void()> close;
    bool busy = false;   ///< a request is being handled or answered
    std::string source;  ///< the TCP peer's address, counted in per_source_; "" for Unix peers
  };
  using ConnIt = std::list<Conn>::iterator;

  template <typename Protocol, typename Acceptor>
  boost::asio::awaitable<void> accept_loop(Acceptor& acceptor);
  /// Answers 503 and closes when over a connection bound, else starts the connection's session.
  template <typename Protocol>
  void admit(typename Protocol::socket socket, std::optional<PeerCred> peer, std::string source);
  template <typename Protocol>
  boost::asio::awaitable<void> session(typename Protocol::socket socket,
                                       std::optional<PeerCred> peer, std::string source);
  /// The request loop.
  template <typename Stream>
  boost::asio::awaitable<void> serve(Stream& stream, std::optional<PeerCred> peer,
                                     std::string source);
  /// Counts a refused or timed-out connection and logs it, at most once per reason every
  /// kRefusalLogInterval with the number left unlogged since: a flood must not flood the log.
  void refused(const std::string& reason, const std::string& message);
  void conn_done(ConnIt it);

  boost::asio::any_io_executor executor_;
  ServerOptions options_;
  Handler& handler_;
  Metrics& metrics_;
  LoggerPtr log_;
  Admission admission_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> unix_acceptor_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> tcp_acceptor_;
  std::string socket_path_;
  unsigned long socket_ino_ = 0;
  long long socket_ctime_ns_ = 0;
  std::list<Conn> conns_;
  std::map<std::string, size_t> per_source_;  ///< open connections by TCP peer address
  struct LogGate {
    std::chrono::steady_clock::time_point last{};
    size_t unlogged = 0;
  };
  std::map<std::string, LogGate> refusal_log_;  ///< by reason
  bool stopping_ = false;
  boost::asio::steady_timer drained_;
  std::shared_ptr<bool> alive_;  ///< lets detached coroutines notice the server is gone
};

}  // namespace datera::http

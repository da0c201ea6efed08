#pragma once

// The CSI front end's gRPC transport: serves the Identity service, and the Controller and Node
// services when given their handlers, on a Unix socket, with gRPC's callback API. Each call is
// handed to the agent's event loop: its handler coroutine (handlers.h) runs there, and the call is
// answered with the status it returns. gRPC's own threads only decode, post and encode; no handler
// code runs on them.
//
// The transport owns: the socket (directory checks, stale-socket replacement, 0600), the message
// size bound, the per-call metrics, one log line per failed call (method, code, message; never a
// request, which may carry `secrets`), and turning an exception out of a handler (a bug) into
// INTERNAL.
//
// Lifecycle: construct, start() (binds and serves), co_await stop(bound) before the event loop and
// the handlers go away. stop() refuses new calls, lets calls in flight finish within `bound`, then
// answers the rest UNAVAILABLE. A handler coroutine still running then works on its own copies of
// the request and response and its answer is dropped, so the handlers must outlive it (the
// composition root destroys them after the event loop). The event loop must keep running during
// stop(). Not thread-safe: call start() and stop() from the event loop's thread.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "agent/csi/handlers.h"
#include "agent/csi/metrics.h"
#include "base/logging.h"
#include "base/result.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace datera::csi {

struct ServerOptions {
  std::string socket_path;                  ///< the Unix socket kubelet (or a sidecar) connects to
  int max_receive_bytes = 4 * 1024 * 1024;  ///< larger requests are RESOURCE_EXHAUSTED
};

namespace detail {
class Core;
class IdentityService;
class ControllerService;
class NodeService;
}  // namespace detail

class Server {
 public:
  /// `controller` and `node` may be null: that service is not registered, and its calls are
  /// answered UNIMPLEMENTED by gRPC itself (not counted in the metrics). The handlers, the
  /// metrics and the executor's io_context must outlive the server.
  Server(boost::asio::any_io_executor executor, ServerOptions options, IdentityHandler& identity,
         ControllerHandler* controller, NodeHandler* node, Metrics& metrics, LoggerPtr log);
  /// Without a stop() first: answers every call in flight UNAVAILABLE and shuts gRPC down at once.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Prepares the socket's directory (fs::prepare_socket_dir: created 0750 when missing), replaces
  /// a stale socket at the path (only a socket, never followed; a live one means another server
  /// is there, an error), starts gRPC on it and makes it 0600.
  datera::Status start();

  /// Stops serving: new calls are refused; calls in flight get until `bound` to finish, then are
  /// answered UNAVAILABLE. Removes the socket file if it is still this server's. Returns true when
  /// every call finished in time. gRPC's blocking Shutdown() runs on a thread of its own so the
  /// event loop keeps running the handlers meanwhile.
  boost::asio::awaitable<bool> stop(std::chrono::milliseconds bound);

  /// Calls arrived and not answered yet.
  size_t in_flight() const;

 private:
  void remove_socket_file();

  boost::asio::any_io_executor executor_;
  ServerOptions options_;
  LoggerPtr log_;
  std::shared_ptr<detail::Core> core_;
  std::unique_ptr<detail::IdentityService> identity_;
  std::unique_ptr<detail::ControllerService> controller_;
  std::unique_ptr<detail::NodeService> node_;
  std::unique_ptr<grpc::Server> server_;
  unsigned long socket_ino_ = 0;
  long long socket_ctime_ns_ = 0;
};

}  // namespace datera::csi

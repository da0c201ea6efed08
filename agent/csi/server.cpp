#include "agent/csi/server.h"

#include <atomic>
#include <cerrno>
#include <exception>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/server_callback.h>
#include <map>
#include <mutex>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "base/fs.h"
#include "base/json.h"
#include "plugins/csi/csi.grpc.pb.h"

namespace datera::csi {

namespace asio = boost::asio;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace detail {

/// One call: the reactor gRPC answers through, and the transport's own copies of the request and
/// response. The handler works on the copies, never on gRPC's messages, because stop() may answer
/// a call (and so let gRPC free its messages) while the handler still runs.
class CallBase {
 public:
  CallBase(const char* method, grpc::ServerUnaryReactor* reactor)
      : method_(method), reactor_(reactor), start_(Clock::now()) {}
  virtual ~CallBase() = default;
  CallBase(const CallBase&) = delete;
  CallBase& operator=(const CallBase&) = delete;

  /// Moves the handler's response into gRPC's (on success, just before Finish()).
  virtual void deliver() = 0;
  /// The volume the request names (volume_id, or CreateVolume's name), for the failure's log line
  /// (its JSON `volume` field); "" when none, or when it is not printable.
  virtual std::string volume() const = 0;

  const char* method_;
  grpc::ServerUnaryReactor* reactor_;
  Clock::time_point start_;
  uint64_t id_ = 0;
  bool finished_ = false;  ///< guarded by Core::mu_
};

template <class Req, class Resp>
class Call final : public CallBase {
 public:
  Call(const char* method, grpc::ServerUnaryReactor* reactor, const Req& req, Resp& out)
      : CallBase(method, reactor), req_(req), out_(out) {}
  void deliver() override { out_.Swap(&resp_); }
  std::string volume() const override {
    std::string v;
    if constexpr (requires { req_.volume_id(); }) {
      v = req_.volume_id();
    } else if constexpr (requires { req_.name(); }) {
      v = req_.name();
    }
    return v.size() <= 253 && !datera::json::has_control_char(v) ? v : std::string();
  }

  Req req_;
  Resp resp_;

 private:
  Resp& out_;
};

/// What calls share with the server, kept alive by each call's coroutine (a handler may run on
/// after stop() answered for it, and after the Server object is gone).
class Core {
 public:
  Core(asio::any_io_executor executor, Metrics& metrics, LoggerPtr log)
      : executor_(std::move(executor)), metrics_(metrics), log_(std::move(log)) {}

  /// On a gRPC thread: registers the call and posts its handler onto the event loop.
  template <class H, class Req, class Resp>
  grpc::ServerUnaryReactor* dispatch(const std::shared_ptr<Core>& self,
                                     grpc::CallbackServerContext* ctx, const char* method,
                                     H& handler, Task<Status> (H::*fn)(const Req&, Resp&),
                                     const Req* req, Resp* resp) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    auto call = std::make_shared<Call<Req, Resp>>(method, reactor, *req, *resp);
    metrics_.started();
    {
      const std::lock_guard lock(mu_);
      if (!closed_) {
        call->id_ = next_id_++;
        calls_.emplace(call->id_, call);
      } else {
        call->finished_ = true;
      }
    }
    if (call->finished_) {  // past stop()'s bound: gRPC no longer waits for anyone
      answer(*call, Status(grpc::StatusCode::UNAVAILABLE, "the agent is shutting down"), false);
      return reactor;
    }
    asio::post(executor_, [self, call, &handler, fn] {
      asio::co_spawn(self->executor_, run(self, call, handler, fn), [self](std::exception_ptr e) {
        // run() catches everything; reaching here is a bug in the transport itself.
        if (e) self->log_->error("csi: a call's coroutine ended with an exception");
      });
    });
    return reactor;
  }

  /// On the event loop: answers `call` with `status` unless stop() already did.
  void complete(CallBase& call, const Status& status, bool logged) {
    {
      const std::lock_guard lock(mu_);
      if (call.finished_) {
        log_->debug("csi {}: finished after the transport had answered it UNAVAILABLE",
                    call.method_);
        return;
      }
      call.finished_ = true;
      calls_.erase(call.id_);
    }
    if (status.ok()) call.deliver();
    answer(call, status, logged);
  }

  /// Answers every call in flight UNAVAILABLE, and every later one at once.
  void close() {
    std::vector<std::shared_ptr<CallBase>> open;
    {
      const std::lock_guard lock(mu_);
      closed_ = true;
      for (auto& [id, call] : calls_) {
        call->finished_ = true;
        open.push_back(call);
      }
      calls_.clear();
    }
    for (auto& call : open) {
      answer(*call,
             Status(grpc::StatusCode::UNAVAILABLE,
                    "the agent is shutting down; the call did not finish in time"),
             false);
    }
  }

  size_t in_flight() const {
    const std::lock_guard lock(mu_);
    return calls_.size();
  }

  const LoggerPtr& log() const { return log_; }

 private:
  template <class H, class Req, class Resp>
  static Task<void> run(std::shared_ptr<Core> self, std::shared_ptr<Call<Req, Resp>> call,
                        H& handler, Task<Status> (H::*fn)(const Req&, Resp&)) {
    Status status;
    bool logged = false;
    try {
      status = co_await (handler.*fn)(call->req_, call->resp_);
    } catch (const std::exception& e) {
      self->log_->error("csi {}: the handler threw ({}), a bug; answered INTERNAL", call->method_,
                        e.what());
      status = Status(grpc::StatusCode::INTERNAL, "internal error");
      logged = true;
    } catch (...) {
      self->log_->error("csi {}: the handler threw a non-exception, a bug; answered INTERNAL",
                        call->method_);
      status = Status(grpc::StatusCode::INTERNAL, "internal error");
      logged = true;
    }
    self->complete(*call, status, logged);
  }

  /// Finish()es the call and counts it; the one log line of a failed call. The request is never
  /// logged: CSI requests carry secrets.
  /// Counted and logged before Finish(), so whoever sees the answer sees the count too.
  void answer(CallBase& call, const Status& status, bool logged) {
    metrics_.finished(call.method_, status.error_code(), Clock::now() - call.start_);
    if (!status.ok() && !logged) {
      const std::string volume = call.volume();
      log_->warn("csi {}: {} {}{}", call.method_, code_name(status.error_code()),
                 status.error_message(), volume.empty() ? "" : " (volume " + volume + ")");
    }
    call.reactor_->Finish(status);
  }

  asio::any_io_executor executor_;
  Metrics& metrics_;
  LoggerPtr log_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<CallBase>> calls_;
  uint64_t next_id_ = 1;
  bool closed_ = false;
};

// One override per RPC, each handing the call to Core::dispatch with the handler's method.
#define DT_CSI_RPC(Method, fn)                                                                 \
  grpc::ServerUnaryReactor* Method(grpc::CallbackServerContext* ctx,                           \
                                   const pb::Method##Request* req, pb::Method##Response* resp) \
      override {                                                                               \
    return core_->dispatch(core_, ctx, #Method, handler_, &Handler::fn, req, resp);            \
  }

class IdentityService final : public pb::Identity::CallbackService {
 public:
  using Handler = IdentityHandler;
  IdentityService(std::shared_ptr<Core> core, Handler& handler)
      : core_(std::move(core)), handler_(handler) {}
  DT_CSI_RPC(GetPluginInfo, get_plugin_info)
  DT_CSI_RPC(GetPluginCapabilities, get_plugin_capabilities)
  DT_CSI_RPC(Probe, probe)

 private:
  std::shared_ptr<Core> core_;
  Handler& handler_;
};

class ControllerService final : public pb::Controller::CallbackService {
 public:
  using Handler = ControllerHandler;
  ControllerService(std::shared_ptr<Core> core, Handler& handler)
      : core_(std::move(core)), handler_(handler) {}
  DT_CSI_RPC(CreateVolume, create_volume)
  DT_CSI_RPC(DeleteVolume, delete_volume)
  DT_CSI_RPC(ControllerPublishVolume, controller_publish_volume)
  DT_CSI_RPC(ControllerUnpublishVolume, controller_unpublish_volume)
  DT_CSI_RPC(ValidateVolumeCapabilities, validate_volume_capabilities)
  DT_CSI_RPC(ListVolumes, list_volumes)
  DT_CSI_RPC(GetCapacity, get_capacity)
  DT_CSI_RPC(ControllerGetCapabilities, controller_get_capabilities)
  DT_CSI_RPC(CreateSnapshot, create_snapshot)
  DT_CSI_RPC(DeleteSnapshot, delete_snapshot)
  DT_CSI_RPC(ListSnapshots, list_snapshots)
  DT_CSI_RPC(ControllerExpandVolume, controller_expand_volume)
  DT_CSI_RPC(ControllerGetVolume, controller_get_volume)

 private:
  std::shared_ptr<Core> core_;
  Handler& handler_;
};

class NodeService final : public pb::Node::CallbackService {
 public:
  using Handler = NodeHandler;
  NodeService(std::shared_ptr<Core> core, Handler& handler)
      : core_(std::move(core)), handler_(handler) {}
  DT_CSI_RPC(NodeStageVolume, node_stage_volume)
  DT_CSI_RPC(NodeUnstageVolume, node_unstage_volume)
  DT_CSI_RPC(NodePublishVolume, node_publish_volume)
  DT_CSI_RPC(NodeUnpublishVolume, node_unpublish_volume)
  DT_CSI_RPC(NodeGetVolumeStats, node_get_volume_stats)
  DT_CSI_RPC(NodeExpandVolume, node_expand_volume)
  DT_CSI_RPC(NodeGetCapabilities, node_get_capabilities)
  DT_CSI_RPC(NodeGetInfo, node_get_info)

 private:
  std::shared_ptr<Core> core_;
  Handler& handler_;
};

#undef DT_CSI_RPC

}  // namespace detail

Server::Server(asio::any_io_executor executor, ServerOptions options, IdentityHandler& identity,
               ControllerHandler* controller, NodeHandler* node, Metrics& metrics, LoggerPtr log)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      log_(std::move(log)),
      core_(std::make_shared<detail::Core>(executor_, metrics, log_)),
      identity_(std::make_unique<detail::IdentityService>(core_, identity)) {
  if (controller != nullptr) {
    controller_ = std::make_unique<detail::ControllerService>(core_, *controller);
  }
  if (node != nullptr) node_ = std::make_unique<detail::NodeService>(core_, *node);
}

Server::~Server() {
  if (server_) {
    // Nobody awaited stop(): answer everything now, so gRPC's Shutdown() has nothing to wait for.
    core_->close();
    server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    remove_socket_file();
  }
}

size_t Server::in_flight() const {
  return core_->in_flight();
}

datera::Status Server::start() {
  const std::string& path = options_.socket_path;
  if (auto st = fs::prepare_socket_dir(fs::dirname(path)); !st) {
    return st.error().wrap("the CSI socket's directory");
  }
  struct stat sb {};
  if (::lstat(path.c_str(), &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode)) {
      return Error{path + " exists and is " + fs::describe_file_type(sb.st_mode) +
                       ", not a socket; refusing to replace it (remove it by hand if it is yours)",
                   errno_code(EEXIST)};
    }
    // Someone accepting there is another live server (a second agent): never steal its socket.
    asio::local::stream_protocol::socket probe(executor_);
    error_code ec;
    probe.connect(asio::local::stream_protocol::endpoint(path), ec);
    if (!ec) {
      return Error{"another server is already serving " + path +
                       " (stop it first, or give this one a different socket)",
                   errno_code(EADDRINUSE)};
    }
    log_->info("replacing stale CSI socket {} (connect: {})", path, ec.message());
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Error::from_errno("removing stale socket " + path, errno);
    }
  }

  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(options_.max_receive_bytes);
  builder.RegisterService(identity_.get());
  if (controller_) builder.RegisterService(controller_.get());
  if (node_) builder.RegisterService(node_.get());
  server_ = builder.BuildAndStart();
  if (!server_) {
    return Error{"gRPC could not serve unix:" + path + " (its reason is in the log above)",
                 errno_code(EADDRNOTAVAIL)};
  }
  // gRPC binds and listens in one step, so the socket is reachable for the moment until chmod;
  // the directory (0750, root's) bounds who can reach it meanwhile.
  if (::chmod(path.c_str(), 0600) != 0) {
    const int err = errno;
    core_->close();
    server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    return Error::from_errno("chmod 0600 " + path, err);
  }
  if (::lstat(path.c_str(), &sb) == 0) {
    socket_ino_ = sb.st_ino;
    socket_ctime_ns_ = sb.st_ctim.tv_sec * 1'000'000'000LL + sb.st_ctim.tv_nsec;
  }
  log_->info("serving CSI on unix:{} (identity{}{})", path, controller_ ? ", controller" : "",
             node_ ? ", node" : "");
  return ok_status();
}

asio::awaitable<bool> Server::stop(std::chrono::milliseconds bound) {
  if (!server_) co_return true;
  // gRPC's Shutdown() blocks until every call is answered; the answers come from this event loop,
  // so it runs on a thread of its own while this coroutine waits on a timer the thread cancels.
  struct Shared {
    explicit Shared(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;
    bool done = false;
  };
  auto shared = std::make_shared<Shared>(executor_);
  grpc::Server* server = server_.get();
  const auto deadline = std::chrono::system_clock::now() + bound;
  std::thread shutdown([server, deadline, shared, ex = executor_] {
    server->Shutdown(deadline);
    asio::post(ex, [shared] {
      shared->done = true;
      shared->timer.cancel();
    });
  });
  error_code ec;
  shared->timer.expires_after(bound);
  co_await shared->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  bool clean = true;
  if (!shared->done) {
    clean = core_->in_flight() == 0;
    if (!clean) {
      log_->warn("csi: {} call(s) still running after {} ms; answering them UNAVAILABLE",
                 core_->in_flight(), bound.count());
    }
    core_->close();
  }
  // No suspension between the check and the wait, so the thread's post cannot slip in between.
  if (!shared->done) {
    shared->timer.expires_at(asio::steady_timer::time_point::max());
    co_await shared->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  shutdown.join();
  core_->close();  // calls that arrive from now on are answered at once
  server_.reset();
  remove_socket_file();
  co_return clean;
}

void Server::remove_socket_file() {
  const std::string& path = options_.socket_path;
  struct stat sb {};
  // A successor may already have replaced the file: only remove our own. Inode numbers are reused
  // at once, so the change time must match too.
  if (socket_ino_ != 0 && ::lstat(path.c_str(), &sb) == 0 && sb.st_ino == socket_ino_ &&
      sb.st_ctim.tv_sec * 1'000'000'000LL + sb.st_ctim.tv_nsec == socket_ctime_ns_) {
    ::unlink(path.c_str());
  }
  socket_ino_ = 0;
}

}  // namespace datera::csi

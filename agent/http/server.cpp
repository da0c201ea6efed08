#include "agent/http/server.h"

#include <cerrno>
#include <cstdio>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "base/fs.h"

namespace datera::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::use_awaitable;
using boost::system::error_code;

Response error_response(unsigned status, const std::string& reason, const std::string& message) {
  Response r;
  r.status = status;
  r.route = reason;
  // Messages may quote request data: invalid UTF-8 becomes U+FFFD instead of a throw.
  r.body = nlohmann::json{{"status", "Failure"}, {"message", message}, {"error", reason}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

namespace {

bhttp::response<bhttp::string_body> encode(const Response& r, unsigned version, bool keep_alive) {
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(r.status), version};
  res.set(bhttp::field::server, "datera-agent");
  res.set(bhttp::field::content_type, r.content_type);
  res.body() = r.body;
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

/// Maps a Beast read error to (status, reason, message); status 0 means "just close".
struct ReadFailure {
  unsigned status;
  const char* reason;
  std::string message;
};

ReadFailure classify(const error_code& ec, size_t limit) {
  if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
      ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
    return {0, "closed", ""};
  }
  if (ec == bhttp::error::header_limit || ec == bhttp::error::body_limit ||
      ec == bhttp::error::buffer_overflow) {
    return {413, "too_large",
            "request larger than " + std::to_string(limit) + " bytes (head and body together)"};
  }
  return {400, "malformed", "malformed HTTP request: " + ec.message()};
}

/// RFC 9112 request targets are visible ASCII; anything else arrives percent-encoded.
bool printable_ascii(std::string_view s) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) return false;
  }
  return true;
}

std::optional<PeerCred> peer_of(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::nullopt;
  return PeerCred{cred.pid, cred.uid, cred.gid};
}

}  // namespace

Server::Server(asio::any_io_executor executor, ServerOptions options, Handler& handler,
               Metrics& probe, LoggerPtr log, Admission admission)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      handler_(handler),
      metrics_(probe),
      log_(std::move(log)),
      admission_(std::move(admission)),
      drained_(executor_),
      alive_(std::make_shared<bool>(true)) {}

Server::~Server() {
  *alive_ = false;
  for (auto& c : conns_) c.close();
}

size_t Server::in_flight() const {
  size_t n = 0;
  for (const auto& c : conns_) n += c.busy ? 1 : 0;
  return n;
}

Status Server::listen_unix(const std::string& path) {
  using asio::local::stream_protocol;
  if (auto st = fs::prepare_socket_dir(fs::dirname(path)); !st) {
    return st.error().wrap("the API socket's directory");
  }
  struct stat sb {};
  if (::lstat(path.c_str(), &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode)) {
      return Error{path +
                   " exists and is not a socket; refusing to replace it (remove it by hand "
                   "if it is yours)"};
    }
    // Someone accepting there means another agent is alive: two agents on one node would fight
    // over volumes, so refuse to start rather than steal its socket.
    stream_protocol::socket probe(executor_);
    error_code ec;
    probe.connect(stream_protocol::endpoint(path), ec);
    if (!ec) {
      return Error{"another datera-agent is already serving " + path +
                   " (stop it first, or give this one a different socket_path)"};
    }
    log_->info("replacing stale socket {} (connect: {})", path, ec.message());
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Error::from_errno("removing stale socket " + path, errno);
    }
  }
  auto acceptor = std::make_unique<stream_protocol::acceptor>(executor_);
  error_code ec;
  acceptor->open(stream_protocol(), ec);
  if (!ec) acceptor->bind(stream_protocol::endpoint(path), ec);
  if (ec) return Error{"binding " + path + ": " + ec.message(), errno_code(ec.value())};
  // Tighten before listen(): nobody can connect between bind and chmod.
  if (::chmod(path.c_str(), 0600) != 0) return Error::from_errno("chmod 0600 " + path, errno);
  acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Error{"listening on " + path + ": " + ec.message(), errno_code(ec.value())};
  if (::stat(path.c_str(), &sb) == 0) {
    socket_ino_ = sb.st_ino;
    socket_ctime_ns_ = sb.st_ctim.tv_sec * 1'000'000'000LL + sb.st_ctim.tv_nsec;
  }
  socket_path_ = path;
  unix_acceptor_ = std::move(acceptor);
  return ok_status();
}

Result<std::unique_ptr<asio::ip::tcp::acceptor>> bind_tcp(const asio::any_io_executor& executor,
                                                          const std::string& host,
                                                          unsigned short port) {
  error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return Error{"'" + host + "' is not an IP address: " + ec.message()};
  const asio::ip::tcp::endpoint ep(addr, port);
  auto acceptor = std::make_unique<asio::ip::tcp::acceptor>(executor);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Error{"listening on " + host + ":" + std::to_string(port) + ": " + ec.message(),
                 errno_code(ec.value())};
  }
  return acceptor;
}

Result<asio::ip::tcp::endpoint> Server::listen_tcp(const std::string& host, unsigned short port) {
  auto acceptor = bind_tcp(executor_, host, port);
  if (!acceptor) return acceptor.error();
  error_code ec;
  auto bound = (*acceptor)->local_endpoint(ec);
  tcp_acceptor_ = std::move(*acceptor);
  return bound;
}

void Server::start() {
  auto on_done = [log = log_, name = options_.name](const std::exception_ptr& e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log->critical("{} accept loop failed: {}", name, ex.what());
    }
  };
  if (unix_acceptor_) {
    asio::co_spawn(executor_, accept_loop<asio::local::stream_protocol>(*unix_acceptor_), on_done);
  }
  if (tcp_acceptor_) {
    asio::co_spawn(executor_, accept_loop<asio::ip::tcp>(*tcp_acceptor_), on_done);
  }
}

template <typename Protocol, typename Acceptor>
asio::awaitable<void> Server::accept_loop(Acceptor& acceptor) {
  const auto alive = alive_;
  for (;;) {
    error_code ec;
    typename Protocol::socket socket =
        co_await acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
    if (!*alive || stopping_) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) co_return;
      // EMFILE and friends: log, count, and keep accepting rather than die.
      log_->warn("{}: accept failed: {}", options_.name, ec.message());
      metrics_.rejected("accept_error");
      continue;
    }
    std::optional<PeerCred> peer;
    std::string source;
    if constexpr (std::is_same_v<Protocol, asio::local::stream_protocol>) {
      peer = peer_of(socket.native_handle());
    } else {
      const auto remote = socket.remote_endpoint(ec);
      source = ec ? std::string("unknown") : remote.address().to_string();
    }
    admit<Protocol>(std::move(socket), peer, std::move(source));
  }
}

template <typename Protocol>
void Server::admit(typename Protocol::socket socket, std::optional<PeerCred> peer,
                   std::string source) {
  std::string refusal;
  if (conns_.size() >= options_.max_connections) {
    refusal = "too_many_connections";
    refused(refusal, std::to_string(conns_.size()) + " connections open, refusing a new one");
  } else if (!source.empty() && options_.max_connections_per_source != 0 &&
             per_source_[source] >= options_.max_connections_per_source) {
    refusal = "too_many_from_source";
    refused(refusal, source + " holds " + std::to_string(per_source_[source]) +
                         " connections, refusing another from it");
  }
  if (!refusal.empty()) {
    // Over a bound: answer without spawning anything, non-blocking, and close.
    const auto res = encode(
        error_response(503, refusal, "agent busy: too many open connections, retry"), 11, false);
    std::ostringstream os;
    os << res;
    const auto text = os.str();
    error_code ec;
    socket.non_blocking(true, ec);
    socket.write_some(asio::buffer(text), ec);
    socket.close(ec);
    return;
  }
  // Counted here, not when the session starts: the next accept may run first.
  if (!source.empty()) ++per_source_[source];
  asio::co_spawn(executor_, session<Protocol>(std::move(socket), peer, std::move(source)),
                 asio::detached);
}

void Server::adopt(asio::local::stream_protocol::socket socket) {
  if (stopping_) {
    error_code ignored;
    socket.close(ignored);
    return;
  }
  admit<asio::local::stream_protocol>(std::move(socket), std::nullopt, "");
}

template <typename Protocol>
asio::awaitable<void> Server::session(typename Protocol::socket socket,
                                      std::optional<PeerCred> peer, std::string source) {
  beast::basic_stream<Protocol> stream(std::move(socket));
  // clang-tidy 14 takes the coroutine frame's copy of `source` for a move (a false positive on
  // coroutine parameters); it is moved once, here.
  // NOLINTNEXTLINE(bugprone-use-after-move)
  co_await serve(stream, peer, std::move(source));
}

template <typename Stream>
asio::awaitable<void> Server::serve(Stream& stream, std::optional<PeerCred> peer,
                                    std::string source) {
  const auto alive = alive_;
  auto& lowest = beast::get_lowest_layer(stream);
  conns_.push_back(Conn{[&lowest] {
                          error_code ignored;
                          lowest.socket().shutdown(asio::socket_base::shutdown_both, ignored);
                          lowest.socket().close(ignored);
                        },
                        false, std::move(source)});
  const ConnIt self = std::prev(conns_.end());
  metrics_.connection_opened();

  beast::flat_buffer buffer;
  size_t requests = 0;  ///< answered on this connection
  try {
    for (;;) {
      bhttp::request_parser<bhttp::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(options_.max_request_bytes));
      // Beast checks a Content-Length against the body limit as the head completes, so the limit
      // is set up front; head + body is checked together right after.
      parser.body_limit(options_.max_request_bytes);
      // Two deadlines from one start: the first byte soon (an idle client gives its slot back
      // quickly), the whole request within read_timeout (one byte at a time does not extend it).
      const auto request_deadline = std::chrono::steady_clock::now() + options_.read_timeout;
      error_code ec;
      bool first_byte_late = false;
      if (buffer.size() == 0 && options_.first_byte_timeout.count() > 0 &&
          options_.first_byte_timeout < options_.read_timeout) {
        lowest.expires_after(options_.first_byte_timeout);
        const size_t n = co_await stream.async_read_some(buffer.prepare(4096),
                                                         asio::redirect_error(use_awaitable, ec));
        buffer.commit(n);
        first_byte_late = ec == beast::error::timeout;
      }
      size_t head = 0;
      if (!ec) {
        lowest.expires_at(request_deadline);
        head = co_await bhttp::async_read_header(stream, buffer, parser,
                                                 asio::redirect_error(use_awaitable, ec));
      }
      if (!ec) {
        const auto length = parser.content_length();
        if (length && head + *length > options_.max_request_bytes) {
          ec = bhttp::error::body_limit;
        } else {
          parser.body_limit(options_.max_request_bytes > head ? options_.max_request_bytes - head
                                                              : 0);
          co_await bhttp::async_read(stream, buffer, parser,
                                     asio::redirect_error(use_awaitable, ec));
        }
      }
      if (!*alive) co_return;
      if (ec == beast::error::timeout) {
        // basic_stream closed the socket at the deadline, so there is no one to answer. An idle
        // keep-alive connection ending this way is normal; a half-sent request is a rejection.
        if (parser.got_some() || buffer.size() != 0) {
          refused("read_timeout", "closed a connection that sent only part of a request within " +
                                      std::to_string(options_.read_timeout.count()) + " ms");
        } else if (requests == 0) {
          // Connected and never said anything: the slot was held for nothing.
          refused("idle_timeout", "closed a connection that sent nothing within " +
                                      std::to_string((first_byte_late ? options_.first_byte_timeout
                                                                      : options_.read_timeout)
                                                         .count()) +
                                      " ms");
        }
        break;
      }
      if (ec) {
        const auto failure = classify(ec, options_.max_request_bytes);
        if (failure.status != 0 && !(stopping_ && ec == asio::error::operation_aborted)) {
          refused(failure.reason, "refused a request: " + failure.message);
          lowest.expires_after(options_.write_timeout);
          auto res =
              encode(error_response(failure.status, failure.reason, failure.message), 11, false);
          co_await bhttp::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
        }
        break;
      }

      auto msg = parser.release();
      if (!printable_ascii(msg.target())) {
        // Not logged as received: it may hold control characters.
        refused("malformed", "refused a request whose target is not printable ASCII");
        lowest.expires_after(options_.write_timeout);
        auto res = encode(error_response(400, "malformed",
                                         "the request target must be ASCII without control "
                                         "characters (percent-encode anything else)"),
                          11, false);
        co_await bhttp::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
        break;
      }
      self->busy = true;
      Response response;
      bool admission_refused = false;
      if (auto refusal = admission_ ? admission_(peer) : std::nullopt) {
        response = std::move(*refusal);
        admission_refused = true;
        metrics_.rejected(response.route);
      } else {
        Request req;
        req.method = std::string(msg.method_string());
        req.target = std::string(msg.target());
        req.body = std::move(msg.body());
        req.content_type = std::string(msg[bhttp::field::content_type]);
        req.user_agent = std::string(msg[bhttp::field::user_agent]);
        for (const auto& field : msg) {
          req.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
        }
        req.peer = peer;
        try {
          response = co_await handler_.handle(std::move(req));
        } catch (const std::exception& e) {
          // A handler that throws has a bug; answer 500 and keep serving everyone else.
          log_->error("{}: handler failed on {} {}: {}", options_.name,
                      std::string(msg.method_string()), std::string(msg.target()), e.what());
          response = error_response(500, "internal", std::string("internal error: ") + e.what());
        }
      }
      if (!*alive) co_return;
      if (response.drop_connection) {
        metrics_.request(response.route, 0);
        break;
      }
      metrics_.request(response.route, response.status);
      ++requests;
      // A handler's 4xx leaves the framing intact, so the connection may stay; a refused peer goes.
      const bool keep = msg.keep_alive() && !stopping_ && !admission_refused;
      auto res = encode(response, msg.version(), keep);
      lowest.expires_after(options_.write_timeout);
      co_await bhttp::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
      self->busy = false;
      if (ec || !keep || stopping_) break;
    }
  } catch (const std::exception& e) {
    if (*alive)
      log_->error("{}: connection ended by an unexpected error: {}", options_.name, e.what());
  }
  if (!*alive) co_return;
  error_code ignored;
  lowest.socket().shutdown(asio::socket_base::shutdown_send, ignored);
  lowest.close();
  conn_done(self);
}

void Server::conn_done(ConnIt it) {
  if (!it->source.empty()) {
    if (auto n = per_source_.find(it->source); n != per_source_.end() && --n->second == 0) {
      per_source_.erase(n);
    }
  }
  conns_.erase(it);
  metrics_.connection_closed();
  if (stopping_ && in_flight() == 0) drained_.cancel();
}

void Server::refused(const std::string& reason, const std::string& message) {
  metrics_.rejected(reason);
  constexpr auto kRefusalLogInterval = std::chrono::seconds(10);
  auto& gate = refusal_log_[reason];
  const auto now = std::chrono::steady_clock::now();
  if (gate.last != std::chrono::steady_clock::time_point{} &&
      now - gate.last < kRefusalLogInterval) {
    ++gate.unlogged;
    return;
  }
  if (gate.unlogged != 0) {
    log_->warn("{}: {} ({}; {} more like it since the last such line)", options_.name, message,
               reason, gate.unlogged);
  } else {
    log_->warn("{}: {} ({})", options_.name, message, reason);
  }
  gate.last = now;
  gate.unlogged = 0;
}

void Server::stop_accepting() {
  if (stopping_) return;
  stopping_ = true;
  error_code ignored;
  if (unix_acceptor_) unix_acceptor_->close(ignored);
  if (tcp_acceptor_) tcp_acceptor_->close(ignored);
  // Idle keep-alive connections have nothing to finish; close them now.
  for (auto& c : conns_) {
    if (!c.busy) c.close();
  }
}

asio::awaitable<bool> Server::drain(std::chrono::milliseconds bound) {
  stop_accepting();
  if (in_flight() != 0) {
    drained_.expires_after(bound);
    error_code ec;
    co_await drained_.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  const bool clean = in_flight() == 0;
  if (!clean) {
    log_->warn("{}: {} request(s) still running after {} ms; closing them", options_.name,
               in_flight(), bound.count());
  }
  for (auto& c : conns_) c.close();
  co_return clean;
}

void Server::remove_socket_file() {
  if (socket_path_.empty()) return;
  struct stat sb {};
  // A successor agent may already have replaced the file: only remove our own. Inode numbers are
  // reused at once, so the change time must match too.
  if (::lstat(socket_path_.c_str(), &sb) == 0 && sb.st_ino == socket_ino_ &&
      sb.st_ctim.tv_sec * 1'000'000'000LL + sb.st_ctim.tv_nsec == socket_ctime_ns_) {
    ::unlink(socket_path_.c_str());
  }
  socket_path_.clear();
}

}  // namespace datera::http

#include "tools/datera-sim/tls_front.h"

#include <array>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

namespace datera::sim {

namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;

namespace {

/// Copies `from` to `to` until either side fails or ends.
template <typename From, typename To>
asio::awaitable<void> pump(From& from, To& to) {
  std::array<char, 16 * 1024> buf{};
  for (;;) {
    auto [ec, n] =
        co_await from.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
    if (n > 0) {
      auto [wec, written] = co_await asio::async_write(to, asio::buffer(buf.data(), n),
                                                       asio::as_tuple(asio::use_awaitable));
      if (wec) co_return;
    }
    if (ec) co_return;
  }
}

}  // namespace

TlsFront::TlsFront(asio::any_io_executor executor, std::shared_ptr<asio::ssl::context> tls,
                   http::Server& server, http::Metrics& probe, LoggerPtr log,
                   std::chrono::milliseconds handshake_timeout)
    : executor_(std::move(executor)),
      tls_(std::move(tls)),
      server_(server),
      metrics_(probe),
      log_(std::move(log)),
      handshake_timeout_(handshake_timeout) {}

Result<asio::ip::tcp::endpoint> TlsFront::listen(const std::string& host, unsigned short port) {
  auto acceptor = http::bind_tcp(executor_, host, port);
  if (!acceptor) return acceptor.error();
  error_code ec;
  auto bound = (*acceptor)->local_endpoint(ec);
  acceptor_ = std::move(*acceptor);
  return bound;
}

void TlsFront::start() {
  if (acceptor_) asio::co_spawn(executor_, accept_loop(), asio::detached);
}

void TlsFront::stop() {
  error_code ignored;
  if (acceptor_) acceptor_->close(ignored);
}

asio::awaitable<void> TlsFront::accept_loop() {
  for (;;) {
    error_code ec;
    auto socket = co_await acceptor_->async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) co_return;
    if (ec) {
      log_->warn("https: accept failed: {}", ec.message());
      continue;
    }
    asio::co_spawn(executor_, relay(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> TlsFront::relay(asio::ip::tcp::socket socket) {
  using namespace asio::experimental::awaitable_operators;
  beast::ssl_stream<beast::tcp_stream> tls(beast::tcp_stream(std::move(socket)), *tls_);
  tls.next_layer().expires_after(handshake_timeout_);
  error_code ec;
  co_await tls.async_handshake(asio::ssl::stream_base::server,
                               asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    metrics_.rejected("tls_handshake");
    log_->warn("https: TLS handshake failed: {}", ec.message());
    co_return;
  }
  tls.next_layer().expires_never();  // from here on the server's own timeouts apply
  asio::local::stream_protocol::socket ours(executor_), theirs(executor_);
  asio::local::connect_pair(ours, theirs, ec);
  if (ec) {
    log_->warn("https: no socket pair for a connection: {}", ec.message());
    co_return;
  }
  server_.adopt(std::move(theirs));
  co_await (pump(tls, ours) || pump(ours, tls));
  error_code ignored;
  ours.close(ignored);
  beast::get_lowest_layer(tls).socket().shutdown(asio::socket_base::shutdown_both, ignored);
  beast::get_lowest_layer(tls).close();
}

}  // namespace datera::sim

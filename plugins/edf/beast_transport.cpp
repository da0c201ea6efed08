#include <memory>
#include <optional>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "base/json.h"
#include "plugins/edf/transport.h"

namespace datera::edf {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::use_awaitable;
using boost::system::error_code;

namespace {

Error transport_error(TransportErrc c, std::string msg) {
  return Error{std::move(msg), c};
}

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

class BeastTransport : public Transport {
 public:
  BeastTransport(asio::any_io_executor ex, Endpoint ep, LoggerPtr log,
                 std::optional<ssl::context> tls, size_t max_idle)
      : executor_(std::move(ex)),
        endpoint_(std::move(ep)),
        where_(endpoint_.host + ":" + std::to_string(endpoint_.port)),
        log_(std::move(log)),
        tls_(std::move(tls)),
        max_idle_(max_idle) {}

  asio::awaitable<Result<HttpResponse>> send(HttpRequest request) override {
    if (tls_) co_return co_await send_on(idle_tls_, request);
    co_return co_await send_on(idle_plain_, request);
  }

 private:
  template <typename S>
  asio::awaitable<Result<HttpResponse>> send_on(std::vector<std::unique_ptr<S>>& pool,
                                                const HttpRequest& req) {
    // A pooled connection may have been closed by the server while idle: that failure shows before
    // any reply byte arrives, and is retried once on a fresh connection.
    for (int attempt = 0; attempt < 2; ++attempt) {
      std::unique_ptr<S> stream;
      const bool reused = !pool.empty();
      if (reused) {
        stream = std::move(pool.back());
        pool.pop_back();
      } else {
        auto fresh = co_await connect<S>(req.timeout);
        if (!fresh) co_return fresh.error();
        stream = std::move(*fresh);
      }
      bool stale = false;
      bool keep = false;
      auto result = co_await exchange(*stream, req, stale, keep);
      if (!result && reused && stale) {
        log_->debug("pooled connection to {} was closed by the server; reconnecting", where_);
        continue;
      }
      if (result && keep && pool.size() < max_idle_) pool.push_back(std::move(stream));
      co_return result;
    }
    co_return transport_error(TransportErrc::io,
                              "connection to " + where_ + " closed twice in a row");
  }

  asio::awaitable<Result<beast::tcp_stream>> connect_tcp(std::chrono::milliseconds timeout) {
    asio::ip::tcp::resolver resolver(executor_);
    error_code ec;
    auto results = co_await resolver.async_resolve(endpoint_.host, std::to_string(endpoint_.port),
                                                   asio::redirect_error(use_awaitable, ec));
    if (ec)
      co_return transport_error(TransportErrc::connect,
                                "resolving " + where_ + ": " + ec.message());
    beast::tcp_stream stream(executor_);
    stream.expires_after(timeout);
    co_await stream.async_connect(results, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      co_return transport_error(
          TransportErrc::connect,
          "connecting to " + where_ + ": " +
              (ec == beast::error::timeout ? std::string("timed out") : ec.message()));
    }
    stream.socket().set_option(asio::ip::tcp::no_delay(true), ec);
    co_return std::move(stream);
  }

  template <typename S>
  asio::awaitable<Result<std::unique_ptr<S>>> connect(std::chrono::milliseconds timeout) {
    auto tcp = co_await connect_tcp(timeout);
    if (!tcp) co_return tcp.error();
    if constexpr (std::is_same_v<S, PlainStream>) {
      co_return std::make_unique<PlainStream>(std::move(*tcp));
    } else {
      auto stream = std::make_unique<TlsStream>(std::move(*tcp), *tls_);
      error_code ec;
      asio::ip::make_address(endpoint_.host, ec);  // only: is it an IP address?
      // SNI is for DNS names only; certificate checks cover both names and IP addresses.
      if (ec && SSL_set_tlsext_host_name(stream->native_handle(), endpoint_.host.c_str()) != 1) {
        co_return transport_error(TransportErrc::tls, "setting the TLS server name for " + where_);
      }
      stream->set_verify_callback(ssl::host_name_verification(endpoint_.host));
      beast::get_lowest_layer(*stream).expires_after(timeout);
      co_await stream->async_handshake(ssl::stream_base::client,
                                       asio::redirect_error(use_awaitable, ec));
      if (ec) {
        co_return transport_error(TransportErrc::tls,
                                  "TLS handshake with " + where_ + " failed: " + ec.message() +
                                      " (check the array certificate, or set the CA file)");
      }
      co_return stream;
    }
  }

  template <typename S>
  asio::awaitable<Result<HttpResponse>> exchange(S& stream, const HttpRequest& req, bool& stale,
                                                 bool& keep) {
    bhttp::request<bhttp::string_body> msg{bhttp::string_to_verb(req.method), req.target, 11};
    msg.set(bhttp::field::host, endpoint_.host);
    msg.set(bhttp::field::user_agent, "datera-agent");
    for (const auto& [k, v] : req.headers) msg.set(k, v);
    msg.body() = req.body;
    msg.keep_alive(true);
    msg.prepare_payload();
    beast::get_lowest_layer(stream).expires_after(req.timeout);
    error_code ec;
    co_await bhttp::async_write(stream, msg, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      stale = true;
      co_return transport_error(TransportErrc::io, "sending " + req.method + " " + req.target +
                                                       " to " + where_ + ": " + ec.message());
    }
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    // The array is outside the trust boundary: a reply larger than any JSON the agent accepts
    // (json::kMaxBytes) is refused while it is read, not buffered first.
    parser.body_limit(json::kMaxBytes);
    parser.header_limit(64 * 1024);
    co_await bhttp::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      stale = !parser.got_some() &&
              (ec == bhttp::error::end_of_stream || ec == asio::error::connection_reset ||
               ec == asio::error::eof || ec == ssl::error::stream_truncated);
      if (ec == beast::error::timeout) {
        co_return transport_error(TransportErrc::timeout,
                                  "no reply to " + req.method + " " + req.target + " from " +
                                      where_ + " within " + std::to_string(req.timeout.count()) +
                                      " ms");
      }
      co_return transport_error(TransportErrc::io, "reading the reply to " + req.method + " " +
                                                       req.target + " from " + where_ + ": " +
                                                       ec.message());
    }
    auto res = parser.release();
    keep = res.keep_alive();
    co_return HttpResponse{res.result_int(), std::move(res.body())};
  }

  asio::any_io_executor executor_;
  Endpoint endpoint_;
  std::string where_;
  LoggerPtr log_;
  std::optional<ssl::context> tls_;
  size_t max_idle_;
  std::vector<std::unique_ptr<PlainStream>> idle_plain_;
  std::vector<std::unique_ptr<TlsStream>> idle_tls_;
};

}  // namespace

Result<std::unique_ptr<Transport>> make_beast_transport(asio::any_io_executor executor,
                                                        Endpoint endpoint, LoggerPtr log,
                                                        TlsOptions tls, size_t max_idle) {
  std::optional<ssl::context> ctx;
  if (tls.enabled) {
    ctx.emplace(ssl::context::tls_client);
    error_code ec;
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                     ec);
    if (tls.insecure_skip_verify) {
      log->warn(
          "TLS certificate verification is OFF for {}:{}: anyone on the path can impersonate the "
          "array",
          endpoint.host, endpoint.port);
      ctx->set_verify_mode(ssl::verify_none, ec);
    } else {
      ctx->set_verify_mode(ssl::verify_peer, ec);
      if (tls.ca_file.empty()) {
        ctx->set_default_verify_paths(ec);
      } else {
        ctx->load_verify_file(tls.ca_file, ec);
      }
      if (ec) {
        return Error{"loading the CA for " + endpoint.host + " (" +
                     (tls.ca_file.empty() ? std::string("system store") : tls.ca_file) +
                     "): " + ec.message()};
      }
    }
  }
  return std::unique_ptr<Transport>(std::make_unique<BeastTransport>(
      std::move(executor), std::move(endpoint), std::move(log), std::move(ctx), max_idle));
}

}  // namespace datera::edf

#include <deque>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "plugins/datera/transport.h"

namespace datera::edf {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::use_awaitable;
using boost::system::error_code;

bool sent_nothing(const Error& e) {
  return e.code == static_cast<int>(TransportErrc::connect);
}

namespace {

Error transport_error(TransportErrc c, std::string msg) {
  return Error{std::move(msg), static_cast<int>(c)};
}

class BeastTransport : public Transport {
 public:
  BeastTransport(asio::any_io_executor ex, Endpoint ep, LoggerPtr log, size_t max_idle)
      : executor_(std::move(ex)),
        endpoint_(std::move(ep)),
        log_(std::move(log)),
        max_idle_(max_idle) {}

  asio::awaitable<Result<HttpResponse>> send(HttpRequest request) override {
    const HttpRequest& req = request;
    // A pooled connection may have been closed by the server while idle: that failure shows before
    // any reply byte arrives, and is retried once on a fresh connection.
    for (int attempt = 0; attempt < 2; ++attempt) {
      std::unique_ptr<beast::tcp_stream> stream;
      const bool reused = !idle_.empty();
      if (reused) {
        stream = std::move(idle_.back());
        idle_.pop_back();
      } else {
        auto fresh = co_await connect(req.timeout);
        if (!fresh) co_return fresh.error();
        stream = std::move(*fresh);
      }
      bool stale = false;
      auto result = co_await exchange(*stream, req, stale);
      if (!result && reused && stale) {
        log_->debug("pooled connection to {}:{} was closed by the server; reconnecting",
                    endpoint_.host, endpoint_.port);
        continue;
      }
      co_return result;
    }
    co_return transport_error(TransportErrc::io, "connection closed twice by " + endpoint_.host);
  }

 private:
  asio::awaitable<Result<std::unique_ptr<beast::tcp_stream>>> connect(
      std::chrono::milliseconds timeout) {
    asio::ip::tcp::resolver resolver(executor_);
    error_code ec;
    auto results = co_await resolver.async_resolve(endpoint_.host, std::to_string(endpoint_.port),
                                                   asio::redirect_error(use_awaitable, ec));
    const std::string where = endpoint_.host + ":" + std::to_string(endpoint_.port);
    if (ec)
      co_return transport_error(TransportErrc::connect, "resolving " + where + ": " + ec.message());
    auto stream = std::make_unique<beast::tcp_stream>(executor_);
    stream->expires_after(timeout);
    co_await stream->async_connect(results, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      co_return transport_error(
          TransportErrc::connect,
          "connecting to " + where + ": " +
              (ec == beast::error::timeout ? std::string("timed out") : ec.message()));
    }
    stream->socket().set_option(asio::ip::tcp::no_delay(true), ec);
    co_return stream;
  }

  asio::awaitable<Result<HttpResponse>> exchange(beast::tcp_stream& stream, const HttpRequest& req,
                                                 bool& stale) {
    bhttp::request<bhttp::string_body> msg{bhttp::string_to_verb(req.method), req.target, 11};
    msg.set(bhttp::field::host, endpoint_.host);
    msg.set(bhttp::field::user_agent, "datera-agent");
    for (const auto& [k, v] : req.headers) msg.set(k, v);
    msg.body() = req.body;
    msg.keep_alive(true);
    msg.prepare_payload();
    stream.expires_after(req.timeout);
    error_code ec;
    co_await bhttp::async_write(stream, msg, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      stale = true;
      co_return transport_error(TransportErrc::io,
                                "sending " + req.method + " " + req.target + ": " + ec.message());
    }
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64u << 20);
    co_await bhttp::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      stale = !parser.got_some() && (ec == bhttp::error::end_of_stream ||
                                     ec == asio::error::connection_reset || ec == asio::error::eof);
      if (ec == beast::error::timeout) {
        co_return transport_error(TransportErrc::timeout,
                                  "no reply to " + req.method + " " + req.target + " within " +
                                      std::to_string(req.timeout.count()) + " ms");
      }
      co_return transport_error(TransportErrc::io, "reading the reply to " + req.method + " " +
                                                       req.target + ": " + ec.message());
    }
    auto res = parser.release();
    HttpResponse out{res.result_int(), std::move(res.body())};
    if (res.keep_alive() && idle_.size() < max_idle_) {
      idle_.push_back(std::make_unique<beast::tcp_stream>(std::move(stream)));
    }
    co_return out;
  }

  asio::any_io_executor executor_;
  Endpoint endpoint_;
  LoggerPtr log_;
  size_t max_idle_;
  std::vector<std::unique_ptr<beast::tcp_stream>> idle_;
};

}  // namespace

std::unique_ptr<Transport> make_beast_transport(asio::any_io_executor executor, Endpoint endpoint,
                                                LoggerPtr log, size_t max_idle) {
  return std::make_unique<BeastTransport>(std::move(executor), std::move(endpoint), std::move(log),
                                          max_idle);
}

}  // namespace datera::edf

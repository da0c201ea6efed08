// The Beast transport over real TCP on loopback against the project's own HTTP server.

#include "plugins/edf/transport.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <gtest/gtest.h>

#include "agent/http/server.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

namespace datera::edf {
namespace {

using namespace std::chrono_literals;
using testing::run_async;

struct Echo : http::Handler {
  int requests = 0;
  boost::asio::awaitable<http::Response> handle(http::Request req) override {
    ++requests;
    if (req.path() == "/slow") {
      boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, 500ms);
      co_await t.async_wait(boost::asio::use_awaitable);
    }
    http::Response r;
    r.status = req.path() == "/missing" ? 404 : 200;
    r.body = req.method + " " + req.target + " " + req.body;
    co_return r;
  }
};

class TransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    http::ServerOptions o;
    o.read_timeout = 300ms;  // idle keep-alive connections are closed by the server after this
    server_ =
        std::make_unique<http::Server>(ioc_.get_executor(), o, echo_, metrics_, null_logger());
    auto ep = server_->listen_tcp("127.0.0.1", 0);
    ASSERT_TRUE(ep.ok());
    server_->start();
    auto t =
        make_beast_transport(ioc_.get_executor(), Endpoint{"127.0.0.1", ep->port()}, null_logger());
    ASSERT_TRUE(t.ok());
    transport_ = std::move(*t);
  }
  Result<HttpResponse> send(std::string method, std::string target, std::string body = {},
                            std::chrono::milliseconds timeout = 2s) {
    HttpRequest r{
        std::move(method), std::move(target), {{"X-Test", "1"}}, std::move(body), timeout};
    return run_async(ioc_, transport_->send(std::move(r)));
  }
  boost::asio::io_context ioc_;
  Echo echo_;
  prometheus::Registry registry_;
  http::Metrics metrics_{registry_, "edf"};
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<Transport> transport_;
};

TEST_F(TransportTest, ExchangesAndReusesOneConnection) {
  auto a = send("PUT", "/v2.2/login", R"({"name":"admin"})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, 200u);
  EXPECT_EQ(a->body, R"(PUT /v2.2/login {"name":"admin"})");
  ASSERT_TRUE(send("GET", "/b").ok());
  auto c = send("GET", "/missing");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->status, 404u);
  EXPECT_EQ(echo_.requests, 3);
  EXPECT_EQ(server_->connections(), 1u) << "keep-alive: three requests, one connection";
}

TEST_F(TransportTest, ServerClosedIdleConnectionIsReplacedTransparently) {
  ASSERT_TRUE(send("GET", "/one").ok());
  // Let the server's idle timeout close the pooled connection.
  boost::asio::steady_timer t(ioc_, 500ms);
  t.async_wait([](auto) {});
  ioc_.restart();
  ioc_.run_for(600ms);
  auto r = send("GET", "/two");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->body, "GET /two ");
}

TEST_F(TransportTest, TimeoutAndRefusedConnectionAreTyped) {
  auto slow = send("GET", "/slow", "", 100ms);
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.error().code, TransportErrc::timeout);
  EXPECT_FALSE(sent_nothing(slow.error()));

  auto closed = make_beast_transport(ioc_.get_executor(), Endpoint{"127.0.0.1", 1}, null_logger());
  ASSERT_TRUE(closed.ok());
  HttpRequest r{"GET", "/", {}, "", 1s};
  auto refused = run_async(ioc_, (*closed)->send(std::move(r)));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(sent_nothing(refused.error())) << refused.error().message;
  EXPECT_NE(refused.error().message.find("127.0.0.1:1"), std::string::npos);
}

/// A TLS server that answers every request "tls ok", with a certificate made by openssl(1).
class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    make_cert("good", "subjectAltName=DNS:localhost,IP:127.0.0.1");
    make_cert("noip", "subjectAltName=DNS:other.example");
  }
  void make_cert(const std::string& name, const std::string& san) {
    const std::string cmd =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=datera-sim -addext '" + san +
        "' -keyout " + (dir_ / name + ".key") + " -out " + (dir_ / name + ".pem") +
        " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0)
        << "openssl is needed for TLS tests (tools/setup.sh installs it)";
  }
  /// Serves one TLS connection per accept with `cert`; returns the port.
  unsigned short serve(const std::string& cert) {
    server_ctx_.use_certificate_chain_file(dir_ / cert + ".pem");
    server_ctx_.use_private_key_file(dir_ / cert + ".key", boost::asio::ssl::context::pem);
    acceptor_.open(boost::asio::ip::tcp::v4());
    acceptor_.bind({boost::asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    boost::asio::co_spawn(ioc_, accept_loop(), boost::asio::detached);
    return acceptor_.local_endpoint().port();
  }
  boost::asio::awaitable<void> accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      auto sock = co_await acceptor_.async_accept(
          boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec) co_return;
      boost::asio::co_spawn(ioc_, session(std::move(sock)), boost::asio::detached);
    }
  }
  boost::asio::awaitable<void> session(boost::asio::ip::tcp::socket sock) {
    namespace bhttp = boost::beast::http;
    boost::beast::ssl_stream<boost::beast::tcp_stream> stream(std::move(sock), server_ctx_);
    boost::system::error_code ec;
    co_await stream.async_handshake(boost::asio::ssl::stream_base::server,
                                    boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    if (ec) co_return;
    for (;;) {
      boost::beast::flat_buffer buf;
      bhttp::request<bhttp::string_body> req;
      co_await bhttp::async_read(stream, buf, req,
                                 boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec) co_return;
      ++served_;
      bhttp::response<bhttp::string_body> res{bhttp::status::ok, 11};
      res.body() = "tls ok";
      res.keep_alive(true);
      res.prepare_payload();
      co_await bhttp::async_write(stream, res,
                                  boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec) co_return;
    }
  }
  Result<HttpResponse> get(const std::string& host, unsigned short port, TlsOptions tls) {
    auto t = make_beast_transport(ioc_.get_executor(), Endpoint{host, port}, null_logger(), tls);
    if (!t) return t.error();
    HttpRequest r{"GET", "/system", {}, "", 3s};
    return run_async(ioc_, (*t)->send(std::move(r)));
  }

  testing::TempDir dir_{"dt-tls"};
  boost::asio::io_context ioc_;
  boost::asio::ssl::context server_ctx_{boost::asio::ssl::context::tls_server};
  boost::asio::ip::tcp::acceptor acceptor_{ioc_};
  int served_ = 0;
};

TEST_F(TlsTest, VerifiesAgainstTheGivenCaAndTheAddress) {
  const auto port = serve("good");
  auto r = get("127.0.0.1", port, TlsOptions{true, dir_ / "good.pem", false});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->body, "tls ok");
  auto by_name = get("localhost", port, TlsOptions{true, dir_ / "good.pem", false});
  ASSERT_TRUE(by_name.ok()) << by_name.error().message;
}

TEST_F(TlsTest, VerificationIsOnByDefault) {
  const auto port = serve("good");
  auto r = get("127.0.0.1", port, TlsOptions{true, "", false});  // system store: does not know it
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, TransportErrc::tls);
  EXPECT_NE(r.error().message.find("certificate verify failed"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(served_, 0);
}

TEST_F(TlsTest, CertificateForAnotherHostIsRefused) {
  const auto port = serve("noip");
  auto r = get("127.0.0.1", port, TlsOptions{true, dir_ / "noip.pem", false});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, TransportErrc::tls);
  EXPECT_EQ(served_, 0);
}

TEST_F(TlsTest, SkippingVerificationIsExplicit) {
  const auto port = serve("noip");
  auto r = get("127.0.0.1", port, TlsOptions{true, "", true});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(served_, 1);
}

TEST_F(TlsTest, UnreadableCaFileFailsUpFront) {
  auto t = make_beast_transport(ioc_.get_executor(), Endpoint{"127.0.0.1", 7718}, null_logger(),
                                TlsOptions{true, dir_ / "missing.pem", false});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message.find("missing.pem"), std::string::npos);
}

}  // namespace
}  // namespace datera::edf

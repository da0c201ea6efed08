// The Beast transport over real TCP on loopback against the project's own HTTP server.

#include "plugins/datera/transport.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "agent/http/server.h"
#include "tests/testing/run_async.h"

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
    server_ = std::make_unique<http::Server>(ioc_.get_executor(), o, echo_, probe_, null_logger());
    auto ep = server_->listen_tcp("127.0.0.1", 0);
    ASSERT_TRUE(ep.ok());
    server_->start();
    transport_ =
        make_beast_transport(ioc_.get_executor(), Endpoint{"127.0.0.1", ep->port()}, null_logger());
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
  http::Probe probe_{registry_, "edf"};
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
  EXPECT_EQ(slow.error().code, static_cast<int>(TransportErrc::timeout));
  EXPECT_FALSE(sent_nothing(slow.error()));

  auto closed = make_beast_transport(ioc_.get_executor(), Endpoint{"127.0.0.1", 1}, null_logger());
  HttpRequest r{"GET", "/", {}, "", 1s};
  auto refused = run_async(ioc_, closed->send(std::move(r)));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(sent_nothing(refused.error())) << refused.error().message;
  EXPECT_NE(refused.error().message.find("127.0.0.1:1"), std::string::npos);
}

}  // namespace
}  // namespace datera::edf

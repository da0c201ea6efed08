// The HTTP transport over a real Unix socket, in-process: limits, malformed input, peer policy,
// connection bound, stale-socket handling and bounded drain. Clients are plain blocking sockets
// (and the shim's own client), the server runs on an io_context thread.

#include "agent/http/server.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <future>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "plugins/flex/unix_http_client.h"
#include "tests/testing/slow_client.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/unix_client.h"

namespace datera::http {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// Echoes the body; "/slow/<ms>" waits that long first.
struct EchoHandler : Handler {
  asio::awaitable<Response> handle(Request req) override {
    if (req.path().rfind("/slow/", 0) == 0) {
      asio::steady_timer t(co_await asio::this_coro::executor);
      t.expires_after(std::chrono::milliseconds(std::stoi(req.path().substr(6))));
      co_await t.async_wait(asio::use_awaitable);
    }
    Response r;
    r.route = "echo";
    r.drop_connection = req.path() == "/drop";
    r.body = R"({"status":"Success","echo":")" + req.body + R"(","uid":)" +
             std::to_string(req.peer ? req.peer->uid : 99999) + "}";
    co_return r;
  }
};

using testing::raw_exchange;

std::string post(const std::string& target, const std::string& body) {
  return testing::http_post(target, body);
}

class ServerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    stop_loop();
    server_.reset();
  }
  void start(ServerOptions opts = {}, Admission admission = {}) {
    opts.name = "test";
    server_ = std::make_unique<Server>(ioc_.get_executor(), opts, handler_, metrics_, null_logger(),
                                       std::move(admission));
    auto st = server_->listen_unix(path_);
    ASSERT_TRUE(st.ok()) << st.error().message;
    server_->start();
    work_.emplace(asio::make_work_guard(ioc_));
    loop_ = std::thread([this] { ioc_.run(); });
  }
  void stop_loop() {
    work_.reset();
    if (loop_.joinable()) {
      asio::post(ioc_, [this] { ioc_.stop(); });
      loop_.join();
    }
  }
  template <typename F>
  auto on_loop(F f) {
    std::promise<decltype(f())> p;
    asio::post(ioc_, [&] { p.set_value(f()); });
    return p.get_future().get();
  }
  Result<flex::HttpReply> client_post(const std::string& target, const std::string& body) {
    return flex::post_json(path_, target, body, "test", 2s, 5s);
  }

  /// Waits until the server has a request in flight (the handler runs on the loop thread).
  size_t wait_in_flight() {
    for (int i = 0; i < 200 && on_loop([this] { return server_->in_flight(); }) == 0; ++i) {
      std::this_thread::sleep_for(5ms);
    }
    return on_loop([this] { return server_->in_flight(); });
  }

  testing::TempDir tmp_{"dt-srv"};
  const std::string dir_ = tmp_.path();
  const std::string path_ = dir_ + "/run/agent.sock";
  asio::io_context ioc_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread loop_;
  EchoHandler handler_;
  prometheus::Registry registry_;
  Metrics metrics_{registry_, "test"};
  std::unique_ptr<Server> server_;
};

TEST_F(ServerTest, SocketAndDirectoryModes) {
  start();
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
}

// socket_path may name a shared directory (/run, kubelet's plugin dir): it is used as it is, never
// chmod-ed, as long as only root can write into it.
TEST_F(ServerTest, AnExistingSocketDirectoryIsCheckedNotChanged) {
  ASSERT_EQ(::mkdir((dir_ + "/run").c_str(), 0755), 0);
  ASSERT_EQ(::chmod((dir_ + "/run").c_str(), 0755), 0);
  start();
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u) << "the existing directory keeps its mode";
  EXPECT_TRUE(client_post("/x", "ok").ok());
}

TEST_F(ServerTest, AWritableOrForeignSocketDirectoryIsRefused) {
  const std::string run = dir_ + "/run";
  ASSERT_EQ(::mkdir(run.c_str(), 0700), 0);
  Server server(ioc_.get_executor(), ServerOptions{}, handler_, metrics_, null_logger());
  for (const mode_t mode : {0777, 0770, 0757, 01777}) {
    ASSERT_EQ(::chmod(run.c_str(), mode), 0);
    const auto st = server.listen_unix(path_);
    ASSERT_FALSE(st.ok()) << std::oct << mode;
    EXPECT_NE(st.error().message.find("writable by group or others"), std::string::npos)
        << st.error().message;
    struct stat sb {};
    ASSERT_EQ(::stat(run.c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 07777, mode) << "left as it was";
    EXPECT_NE(::access(path_.c_str(), F_OK), 0) << "no socket created";
  }
  if (::getuid() != 0) GTEST_SKIP() << "needs root to give the directory to another uid";
  ASSERT_EQ(::chmod(run.c_str(), 0755), 0);
  ASSERT_EQ(::chown(run.c_str(), 4321, 4321), 0);
  const auto st = server.listen_unix(path_);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("owned by uid 4321"), std::string::npos) << st.error().message;
}

TEST_F(ServerTest, ServesRequestsWithPeerCredentials) {
  start();
  auto r = client_post("/x", "hi");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 200u);
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["echo"], "hi");
  EXPECT_EQ(j["uid"], ::getuid());
}

TEST_F(ServerTest, DroppedReplyClosesWithoutAnswer) {
  start();
  EXPECT_EQ(raw_exchange(path_, post("/drop", "lost")), "");
  auto r = client_post("/x", "after");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200u);
}

TEST_F(ServerTest, OversizeRequestIs413AndServerKeepsServing) {
  start();
  const std::string big(70 * 1024, 'x');
  const auto reply = raw_exchange(path_, post("/x", big));
  EXPECT_NE(reply.find("HTTP/1.1 413"), std::string::npos) << reply.substr(0, 200);
  EXPECT_NE(reply.find("too_large"), std::string::npos);
  // Head alone over the limit.
  const auto head =
      raw_exchange(path_, "GET /x HTTP/1.1\r\nX-Pad: " + std::string(66 * 1024, 'a') + "\r\n\r\n");
  EXPECT_NE(head.find("HTTP/1.1 413"), std::string::npos) << head.substr(0, 200);
  // Just under the limit is fine.
  auto ok = client_post("/x", std::string(60 * 1024, 'y'));
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->status, 200u);
}

TEST_F(ServerTest, MalformedRequestIs400AndServerKeepsServing) {
  start();
  for (const std::string bad : {"NOT HTTP AT ALL\r\n\r\n", "GET /x HTTP/9.9\r\n\r\n",
                                "POST /x HTTP/1.1\r\nContent-Length: zz\r\n\r\n"}) {
    const auto reply = raw_exchange(path_, bad);
    EXPECT_NE(reply.find("HTTP/1.1 400"), std::string::npos) << bad << " -> " << reply;
    EXPECT_NE(reply.find("\"status\":\"Failure\""), std::string::npos);
  }
  auto r = client_post("/x", "still here");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200u);
}

// HTTP targets are ASCII (anything else is percent-encoded): raw bytes outside it, or control
// characters, are refused before any handler sees (or logs) them.
TEST_F(ServerTest, TargetWithNonAsciiOrControlBytesIs400) {
  start();
  for (const std::string& target : {std::string("/x\xff\xfe"), std::string("/\xc3\xa9"),
                                    std::string("/a\x7f"), std::string("/a\x01")}) {
    const auto reply = raw_exchange(path_, "GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
    const auto body = reply.substr(reply.find("\r\n\r\n") + 4);
    const auto j = nlohmann::json::parse(body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << reply;
    EXPECT_EQ(j["error"], "malformed");
  }
  auto r = client_post("/x?q=%C3%A9", "fine");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200u);
}

// Error replies carry the message as given; one holding invalid UTF-8 still serialises.
TEST(ErrorResponse, InvalidUtf8InTheMessageIsReplacedNotThrown) {
  Response r;
  ASSERT_NO_THROW(r = error_response(404, "not_found", "no route /\xff"));
  EXPECT_EQ(nlohmann::json::parse(r.body)["message"], "no route /\xef\xbf\xbd");
}

TEST_F(ServerTest, SlowClientIsCutOffAtReadTimeout) {
  ServerOptions o;
  o.read_timeout = 300ms;
  start(o);
  const auto t0 = std::chrono::steady_clock::now();
  const auto reply =
      raw_exchange(path_, "POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\npartial", false);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(reply, "") << "the connection is closed at the deadline";
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3s);
  auto r = client_post("/x", "next");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200u);
  // The close happens on the server's thread; read the counter there once it has run.
  auto counted = [this] {
    for (const auto& f : registry_.Collect()) {
      for (const auto& m : f.metric) {
        for (const auto& l : m.label) {
          if (l.name == "reason" && l.value == "read_timeout" && m.counter.value == 1) return true;
        }
      }
    }
    return false;
  };
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    seen = on_loop(counted);
    if (!seen) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(seen);
}

int connect_unix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strcpy(a.sun_path, path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

double rejections(prometheus::Registry& registry, const std::string& reason) {
  for (const auto& f : registry.Collect()) {
    for (const auto& m : f.metric) {
      for (const auto& l : m.label) {
        if (l.name == "reason" && l.value == reason) return m.counter.value;
      }
    }
  }
  return 0;
}

TEST_F(ServerTest, AnIdleConnectionGivesItsSlotBackAtTheFirstByteTimeout) {
  ServerOptions o;
  o.first_byte_timeout = 200ms;
  o.read_timeout = 5s;
  start(o);
  const int fd = connect_unix(path_);
  ASSERT_GE(fd, 0);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(testing::closed_within(fd, 3s));
  const auto took = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 2s) << "closed at the first-byte timeout, not the read timeout";
  EXPECT_EQ(on_loop([this] { return rejections(registry_, "idle_timeout"); }), 1.0);
  // A client that sends its request at once is served as before.
  auto r = client_post("/x", "prompt");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 200u);
}

// One byte at a time restarts nothing: the whole request must arrive within read_timeout.
TEST_F(ServerTest, OneByteAtATimeIsCutOffAtTheRequestDeadline) {
  ServerOptions o;
  o.first_byte_timeout = 150ms;
  o.read_timeout = 600ms;
  start(o);
  const int fd = connect_unix(path_);
  ASSERT_GE(fd, 0);
  const std::string req = "GET /x HTTP/1.1\r\nX-Pad: " + std::string(100, 'a');
  const auto t0 = std::chrono::steady_clock::now();
  const bool closed = testing::closed_while_trickling(fd, req, 50ms);
  const auto took = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  EXPECT_TRUE(closed);
  EXPECT_GE(took, 500ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(on_loop([this] { return rejections(registry_, "read_timeout"); }), 1.0);
}

// TCP peers are bounded per address: one client holding idle connections leaves room for others.
TEST_F(ServerTest, ConnectionsPerSourceAreBoundedOnTcp) {
  ServerOptions o;
  o.name = "test";
  o.max_connections = 100;
  o.max_connections_per_source = 3;
  server_ = std::make_unique<Server>(ioc_.get_executor(), o, handler_, metrics_, null_logger());
  auto bound = server_->listen_tcp("127.0.0.1", 0);
  ASSERT_TRUE(bound.ok()) << bound.error().message;
  server_->start();
  work_.emplace(asio::make_work_guard(ioc_));
  loop_ = std::thread([this] { ioc_.run(); });

  auto connect_from = [&](const char* source) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, source, &a.sin_addr);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    a.sin_port = htons(bound->port());
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  };
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(connect_from("127.0.0.2"));
  for (int i = 0; i < 200 && on_loop([this] { return server_->connections(); }) < 3; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  // A fourth from the same address is refused at once...
  const int extra = connect_from("127.0.0.2");
  EXPECT_TRUE(testing::closed_within(extra, 2s));
  ::close(extra);
  EXPECT_EQ(on_loop([this] { return rejections(registry_, "too_many_from_source"); }), 1.0);
  // ...while another address is served.
  const int other = connect_from("127.0.0.3");
  const auto req = post("/x", "other");
  ASSERT_EQ(::send(other, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::string reply;
  timeval tv{2, 0};
  ::setsockopt(other, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[4096];
  for (ssize_t n; (n = ::recv(other, buf, sizeof buf, 0)) > 0;) reply.append(buf, size_t(n));
  ::close(other);
  EXPECT_EQ(reply.rfind("HTTP/1.1 200", 0), 0u) << reply;
  // Once the held ones close, the first address may connect again.
  for (int fd : held) ::close(fd);
  for (int i = 0; i < 200 && on_loop([this] { return server_->connections(); }) > 0; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  const int again = connect_from("127.0.0.2");
  ASSERT_EQ(::send(again, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  reply.clear();
  ::setsockopt(again, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (ssize_t n; (n = ::recv(again, buf, sizeof buf, 0)) > 0;) reply.append(buf, size_t(n));
  ::close(again);
  EXPECT_EQ(reply.rfind("HTTP/1.1 200", 0), 0u) << reply;
}

TEST_F(ServerTest, ConnectionsBeyondTheBoundGet503) {
  ServerOptions o;
  o.max_connections = 2;
  start(o);
  std::vector<int> idle;
  for (int i = 0; i < 2; ++i) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path_.c_str());
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    idle.push_back(fd);
  }
  // Wait until the server has taken both (the accept loop runs on its own thread).
  for (int i = 0; i < 200 && on_loop([this] { return server_->connections(); }) < 2; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  const auto reply = raw_exchange(path_, post("/x", "z"));
  EXPECT_NE(reply.find("HTTP/1.1 503"), std::string::npos) << reply;
  for (int fd : idle) ::close(fd);
  // Once they go away, requests are served again.
  bool served = false;
  for (int i = 0; i < 200 && !served; ++i) {
    auto r = client_post("/x", "again");
    served = r.ok() && r->status == 200;
    if (!served) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(served);
}

TEST_F(ServerTest, NonAllowedUidGets403) {
  start({}, [](const std::optional<PeerCred>& peer) -> std::optional<Response> {
    if (peer && peer->uid == 0) return std::nullopt;
    return error_response(403, "peer_uid", "uid not allowed");
  });
  if (::getuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  // Let the unprivileged child reach the socket at all (the agent itself keeps 0750/0600).
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((dir_ + "/run").c_str(), 0755), 0);
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  const auto reply = testing::raw_exchange_as(65534, path_, post("/x", "nobody"));
  EXPECT_NE(reply.find("HTTP/1.1 403"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("nobody\""), std::string::npos) << "the handler must not have run";
  auto root = client_post("/x", "root");
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->status, 200u);
}

TEST_F(ServerTest, StaleSocketIsReplacedLiveOneAndOtherFilesAreNot) {
  // A stale socket: bound, then its owner died.
  ASSERT_EQ(std::system(("mkdir -p " + dir_ + "/run").c_str()), 0);
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path_.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ::close(fd);
  }
  start();
  auto r = client_post("/x", "fresh");
  ASSERT_TRUE(r.ok());

  // A second server on the same path must refuse: the first one is alive.
  Server second(ioc_.get_executor(), {}, handler_, metrics_, null_logger());
  auto st = second.listen_unix(path_);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("another datera-agent is already serving"), std::string::npos);

  // A regular file is never deleted.
  const std::string file = dir_ + "/run/not-a-socket";
  ASSERT_EQ(std::system(("touch " + file).c_str()), 0);
  Server third(ioc_.get_executor(), {}, handler_, metrics_, null_logger());
  auto st3 = third.listen_unix(file);
  ASSERT_FALSE(st3.ok());
  EXPECT_NE(st3.error().message.find("not a socket"), std::string::npos);
  EXPECT_EQ(::access(file.c_str(), F_OK), 0);
}

TEST_F(ServerTest, DrainLetsInFlightCallsFinishAndRefusesNewOnes) {
  start();
  auto slow =
      std::async(std::launch::async, [this] { return client_post("/slow/400", "inflight"); });
  ASSERT_EQ(wait_in_flight(), 1u);
  std::promise<bool> drained;
  asio::co_spawn(ioc_, server_->drain(5s),
                 [&](std::exception_ptr, bool clean) { drained.set_value(clean); });
  // After stop_accepting, new connections are refused.
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    auto r = client_post("/x", "late");
    refused = !r.ok();
    if (!refused) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(refused);
  auto r = slow.get();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 200u);
  EXPECT_NE(r->body.find("inflight"), std::string::npos);
  EXPECT_TRUE(drained.get_future().get());
}

TEST_F(ServerTest, DrainIsBounded) {
  start();
  auto slow =
      std::async(std::launch::async, [this] { return client_post("/slow/3000", "too slow"); });
  ASSERT_EQ(wait_in_flight(), 1u);
  std::promise<bool> drained;
  const auto t0 = std::chrono::steady_clock::now();
  asio::co_spawn(ioc_, server_->drain(200ms),
                 [&](std::exception_ptr, bool clean) { drained.set_value(clean); });
  EXPECT_FALSE(drained.get_future().get());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_FALSE(slow.get().ok());  // cut off
}

TEST_F(ServerTest, RemoveSocketFileSparesASuccessorsSocket) {
  start();
  on_loop([this] {
    server_->stop_accepting();
    return 0;
  });
  // A successor replaced the file meanwhile.
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path_.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ::close(fd);
  }
  on_loop([this] {
    server_->remove_socket_file();
    return 0;
  });
  EXPECT_EQ(::access(path_.c_str(), F_OK), 0) << "a successor's socket was removed";
}

}  // namespace
}  // namespace datera::http

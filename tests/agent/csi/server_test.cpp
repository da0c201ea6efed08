// The CSI gRPC transport over a real Unix socket, in-process: a grpc++ client stub against the
// Server running fake handlers on an io_context thread. Covers the answer paths (OK, a handler's
// error, UNIMPLEMENTED for a service not served, an exception turned INTERNAL), the event loop
// staying free while a call is in flight, the metrics, the socket's handling and a bounded stop.

#include "agent/csi/server.h"

#include <fstream>
#include <future>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/ostream_sink.h>

#include "base/log_format.h"
#include "plugins/csi/csi.grpc.pb.h"
#include "tests/testing/temp_dir.h"

namespace datera::csi {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// A handler that waits, on the event loop, until the test opens its gate; `entered` says it runs.
struct Gate {
  explicit Gate(asio::io_context& ioc) : timer(ioc) {
    timer.expires_at(asio::steady_timer::time_point::max());
  }
  Task<void> wait() {
    entered.set_value();
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  asio::steady_timer timer;
  std::promise<void> entered;
};

struct FakeIdentity : IdentityHandler {
  Task<Status> get_plugin_info(const pb::GetPluginInfoRequest&,
                               pb::GetPluginInfoResponse& resp) override {
    resp.set_name("iscsi.csi.datera.io");
    resp.set_vendor_version("test");
    co_return Status::OK;
  }
  Task<Status> get_plugin_capabilities(const pb::GetPluginCapabilitiesRequest&,
                                       pb::GetPluginCapabilitiesResponse&) override {
    co_return Status::OK;
  }
  Task<Status> probe(const pb::ProbeRequest&, pb::ProbeResponse& resp) override {
    resp.mutable_ready()->set_value(true);
    co_return Status::OK;
  }
};

struct FakeNode : NodeHandler {
  explicit FakeNode(asio::io_context& ioc) : slow(ioc), hung(ioc) {}
  Task<Status> node_get_info(const pb::NodeGetInfoRequest&,
                             pb::NodeGetInfoResponse& resp) override {
    resp.set_node_id("node-1");
    co_return Status::OK;
  }
  Task<Status> node_stage_volume(const pb::NodeStageVolumeRequest& req,
                                 pb::NodeStageVolumeResponse&) override {
    co_return Status(grpc::StatusCode::NOT_FOUND, "no volume " + req.volume_id());
  }
  Task<Status> node_unstage_volume(const pb::NodeUnstageVolumeRequest&,
                                   pb::NodeUnstageVolumeResponse&) override {
    throw std::logic_error("a bug in the handler");
    co_return Status::OK;
  }
  /// Slow: waits for the test to open its gate, then answers OK.
  Task<Status> node_publish_volume(const pb::NodePublishVolumeRequest&,
                                   pb::NodePublishVolumeResponse&) override {
    co_await slow.wait();
    co_return Status::OK;
  }
  /// Never finishes on its own (stop() must bound it).
  Task<Status> node_get_volume_stats(const pb::NodeGetVolumeStatsRequest&,
                                     pb::NodeGetVolumeStatsResponse& resp) override {
    co_await hung.wait();
    resp.add_usage()->set_total(1);
    co_return Status::OK;
  }
  Gate slow;
  Gate hung;
};

class CsiServerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server_ && loop_.joinable()) stop_server(2s);
    work_.reset();
    if (loop_.joinable()) {
      asio::post(ioc_, [this] { ioc_.stop(); });
      loop_.join();
    }
    server_.reset();
  }

  datera::Status start(ServerOptions opts = {}) {
    opts.socket_path = path_;
    server_ = std::make_unique<Server>(ioc_.get_executor(), opts, identity_, nullptr, &node_,
                                       metrics_, log_);
    auto st = server_->start();
    if (!loop_.joinable()) {
      work_.emplace(asio::make_work_guard(ioc_));
      loop_ = std::thread([this] { ioc_.run(); });
    }
    return st;
  }

  bool stop_server(std::chrono::milliseconds bound) {
    auto done = asio::co_spawn(ioc_, server_->stop(bound), asio::use_future);
    return done.get();
  }

  std::shared_ptr<grpc::Channel> channel() {
    return grpc::CreateChannel("unix:" + path_, grpc::InsecureChannelCredentials());
  }

  template <class Fn>
  grpc::Status call(Fn fn) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    return fn(ctx);
  }

  /// datera_agent_csi_requests_total{method,code}, 0 when absent.
  double requests(const std::string& method, const std::string& code) {
    for (const auto& family : registry_.Collect()) {
      if (family.name != "datera_agent_csi_requests_total") continue;
      for (const auto& m : family.metric) {
        std::map<std::string, std::string> labels;
        for (const auto& l : m.label) labels[l.name] = l.value;
        if (labels["method"] == method && labels["code"] == code) return m.counter.value;
      }
    }
    return 0;
  }
  double in_flight_gauge() {
    for (const auto& family : registry_.Collect()) {
      if (family.name == "datera_agent_csi_requests_in_flight")
        return family.metric.at(0).gauge.value;
    }
    return -1;
  }

  testing::TempDir tmp_{"dt-csi"};
  const std::string dir_ = tmp_.path() + "/plugin";
  const std::string path_ = dir_ + "/csi.sock";
  asio::io_context ioc_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread loop_;
  FakeIdentity identity_;
  FakeNode node_{ioc_};
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  std::ostringstream log_text_;
  LoggerPtr log_ = std::make_shared<spdlog::logger>(
      "csi", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text_));
  std::unique_ptr<Server> server_;
};

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST_F(CsiServerTest, AnswersEachPathAndCountsIt) {
  ASSERT_TRUE(start().ok());
  auto ch = channel();
  auto identity = pb::Identity::NewStub(ch);
  auto controller = pb::Controller::NewStub(ch);
  auto node = pb::Node::NewStub(ch);

  pb::GetPluginInfoResponse info;
  auto st = call([&](grpc::ClientContext& c) {
    return identity->GetPluginInfo(&c, pb::GetPluginInfoRequest(), &info);
  });
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(info.name(), "iscsi.csi.datera.io");
  EXPECT_EQ(info.vendor_version(), "test");

  pb::ProbeResponse probe;
  st =
      call([&](grpc::ClientContext& c) { return identity->Probe(&c, pb::ProbeRequest(), &probe); });
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(probe.has_ready() && probe.ready().value());

  // No controller handler: the service is not registered, gRPC answers UNIMPLEMENTED.
  pb::CreateVolumeResponse created;
  st = call([&](grpc::ClientContext& c) {
    return controller->CreateVolume(&c, pb::CreateVolumeRequest(), &created);
  });
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);

  // A method the node handler keeps at its default.
  pb::NodeExpandVolumeResponse expanded;
  st = call([&](grpc::ClientContext& c) {
    return node->NodeExpandVolume(&c, pb::NodeExpandVolumeRequest(), &expanded);
  });
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);

  pb::NodeStageVolumeRequest stage;
  stage.set_volume_id("pvc-1");
  (*stage.mutable_secrets())["password"] = "hunter2";
  pb::NodeStageVolumeResponse staged;
  st = call([&](grpc::ClientContext& c) { return node->NodeStageVolume(&c, stage, &staged); });
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), "no volume pvc-1");

  pb::NodeUnstageVolumeResponse unstaged;
  st = call([&](grpc::ClientContext& c) {
    return node->NodeUnstageVolume(&c, pb::NodeUnstageVolumeRequest(), &unstaged);
  });
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(st.error_message(), "internal error") << "the exception's text stays in the log";

  EXPECT_EQ(requests("GetPluginInfo", "OK"), 1);
  EXPECT_EQ(requests("Probe", "OK"), 1);
  EXPECT_EQ(requests("NodeExpandVolume", "UNIMPLEMENTED"), 1);
  EXPECT_EQ(requests("NodeStageVolume", "NOT_FOUND"), 1);
  EXPECT_EQ(requests("NodeUnstageVolume", "INTERNAL"), 1);
  EXPECT_EQ(requests("CreateVolume", "UNIMPLEMENTED"), 0) << "gRPC answered it, not the transport";
  EXPECT_EQ(in_flight_gauge(), 0);

  // One line per failed call, the exception's text in it; never a request's secrets.
  const std::string log = log_text_.str();
  EXPECT_EQ(count(log, "csi NodeStageVolume: NOT_FOUND no volume pvc-1 (volume pvc-1)"), 1u) << log;
  EXPECT_EQ(
      datera::volume_of_message("csi NodeStageVolume: NOT_FOUND no volume pvc-1 (volume pvc-1)"),
      "pvc-1")
      << "the JSON log's volume field";
  EXPECT_EQ(count(log, "csi NodeExpandVolume: UNIMPLEMENTED"), 1u) << log;
  EXPECT_EQ(count(log, "csi NodeUnstageVolume:"), 1u) << log;
  EXPECT_EQ(count(log, "threw (a bug in the handler)"), 1u) << log;
  EXPECT_EQ(count(log, "GetPluginInfo"), 0u) << log;
  EXPECT_EQ(log.find("hunter2"), std::string::npos) << log;
}

// A slow handler suspended on the loop does not hold up another call: the loop is not blocked.
TEST_F(CsiServerTest, ASlowCallDoesNotBlockOthers) {
  ASSERT_TRUE(start().ok());
  auto ch = channel();
  auto identity = pb::Identity::NewStub(ch);
  auto node = pb::Node::NewStub(ch);

  auto slow = std::async(std::launch::async, [&] {
    pb::NodePublishVolumeResponse resp;
    return call([&](grpc::ClientContext& c) {
      return node->NodePublishVolume(&c, pb::NodePublishVolumeRequest(), &resp);
    });
  });
  ASSERT_EQ(node_.slow.entered.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_EQ(in_flight_gauge(), 1);

  pb::NodeGetInfoResponse info;
  auto st = call([&](grpc::ClientContext& c) {
    return node->NodeGetInfo(&c, pb::NodeGetInfoRequest(), &info);
  });
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(info.node_id(), "node-1");
  EXPECT_EQ(slow.wait_for(0s), std::future_status::timeout) << "the slow call is still in flight";
  EXPECT_EQ(requests("NodeGetInfo", "OK"), 1);
  EXPECT_EQ(requests("NodePublishVolume", "OK"), 0);

  asio::post(ioc_, [this] { node_.slow.timer.cancel(); });
  EXPECT_TRUE(slow.get().ok());
  EXPECT_EQ(requests("NodePublishVolume", "OK"), 1);
  EXPECT_EQ(in_flight_gauge(), 0);
}

// stop() bounds a call that never finishes: it is answered UNAVAILABLE at the bound.
TEST_F(CsiServerTest, StopBoundsACallInFlight) {
  ASSERT_TRUE(start().ok());
  auto node = pb::Node::NewStub(channel());
  auto hung = std::async(std::launch::async, [&] {
    pb::NodeGetVolumeStatsResponse resp;
    return call([&](grpc::ClientContext& c) {
      return node->NodeGetVolumeStats(&c, pb::NodeGetVolumeStatsRequest(), &resp);
    });
  });
  ASSERT_EQ(node_.hung.entered.get_future().wait_for(10s), std::future_status::ready);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(stop_server(200ms)) << "a call was still running at the bound";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(hung.get().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(requests("NodeGetVolumeStats", "UNAVAILABLE"), 1);
  EXPECT_EQ(in_flight_gauge(), 0);
  struct stat sb {};
  EXPECT_NE(::lstat(path_.c_str(), &sb), 0) << "the socket file is removed";

  // The handler finishing later answers nobody.
  asio::post(ioc_, [this] { node_.hung.timer.cancel(); });
  EXPECT_TRUE(stop_server(1s)) << "a second stop() is a no-op";
}

TEST_F(CsiServerTest, SocketAndDirectoryModes) {
  ASSERT_TRUE(start().ok());
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
}

TEST_F(CsiServerTest, AStaleSocketIsReplaced) {
  ASSERT_EQ(::mkdir(dir_.c_str(), 0750), 0);
  // A socket file nobody accepts on: what a killed agent leaves behind.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path_.copy(addr.sun_path, sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
  auto st = start();
  ASSERT_TRUE(st.ok()) << st.error().message;
  pb::GetPluginInfoResponse info;
  auto identity = pb::Identity::NewStub(channel());
  EXPECT_TRUE(call([&](grpc::ClientContext& c) {
                return identity->GetPluginInfo(&c, pb::GetPluginInfoRequest(), &info);
              }).ok());
}

TEST_F(CsiServerTest, ALiveSocketIsNotStolen) {
  ASSERT_TRUE(start().ok());
  Server second(ioc_.get_executor(), ServerOptions{path_}, identity_, nullptr, nullptr, metrics_,
                null_logger());
  auto st = second.start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("already serving"), std::string::npos) << st.error().message;
}

TEST_F(CsiServerTest, ANonSocketOrSymlinkAtThePathIsRefused) {
  ASSERT_EQ(::mkdir(dir_.c_str(), 0750), 0);
  const std::string target = tmp_ / "target";
  { std::ofstream(target) << "keep me"; }
  ASSERT_EQ(::symlink(target.c_str(), path_.c_str()), 0);
  auto st = start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("a symbolic link, not a socket"), std::string::npos)
      << st.error().message;
  struct stat sb {};
  EXPECT_EQ(::stat(target.c_str(), &sb), 0) << "the symlink's target is untouched";
}

TEST_F(CsiServerTest, ARequestOverTheSizeBoundIsRefused) {
  ServerOptions opts;
  opts.max_receive_bytes = 4096;
  ASSERT_TRUE(start(opts).ok());
  auto node = pb::Node::NewStub(channel());
  pb::NodeStageVolumeRequest big;
  big.set_volume_id(std::string(8192, 'x'));
  pb::NodeStageVolumeResponse resp;
  auto st = call([&](grpc::ClientContext& c) { return node->NodeStageVolume(&c, big, &resp); });
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

}  // namespace
}  // namespace datera::csi

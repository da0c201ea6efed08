#include "agent/flexvolume/service.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "tests/testing/run_async.h"

namespace datera::flexvolume {
namespace {

using testing::run_async;

class ServiceTest : public ::testing::Test {
 protected:
  flex::Json call(std::vector<std::string> argv) {
    auto req = flex::parse_argv(argv);
    EXPECT_TRUE(req.ok());
    return run_async(service_.call(std::move(*req)));
  }
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  Service service_{
      ServiceOptions{"datera/iscsi", flex::Json{{"attach", false}}, std::chrono::seconds(5)},
      metrics_, null_logger()};
};

TEST_F(ServiceTest, InitReturnsCapabilities) {
  auto r = call({"init"});
  EXPECT_EQ(r["status"], "Success");
  EXPECT_EQ(r["capabilities"]["attach"], false);
}

TEST_F(ServiceTest, GetVolumeNamePrefersVolumeId) {
  EXPECT_EQ(call({"getvolumename",
                  R"({"volumeID":"vol-1","kubernetes.io/pvOrVolumeName":"pv"})"})["volumeName"],
            "vol-1");
  EXPECT_EQ(call({"getvolumename", R"({"kubernetes.io/pvOrVolumeName":"pv-9"})"})["volumeName"],
            "pv-9");
  EXPECT_EQ(call({"getvolumename", "{}"})["status"], "Failure");
  EXPECT_EQ(call({"getvolumename", R"({"volumeID":"../../etc"})"})["status"], "Failure");
}

TEST_F(ServiceTest, LaterCapabilitiesFailWithReasonNeverNotSupported) {
  for (std::vector<std::string> argv :
       {std::vector<std::string>{"mount", "/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv",
                                 R"({"volumeID":"vol-7"})"},
        std::vector<std::string>{"unmount", "/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv"},
        std::vector<std::string>{"expandfs", "{}", "/dev/sdb", "/m", "2", "1"},
        std::vector<std::string>{"attach", R"({"volumeID":"vol-7"})", "node-1"}}) {
    auto r = call(argv);
    EXPECT_EQ(r["status"], "Failure") << argv[0];
    const auto msg = r["message"].get<std::string>();
    EXPECT_NE(msg.find(argv[0]), std::string::npos) << msg;
    EXPECT_NE(msg.find("Nothing was changed"), std::string::npos) << msg;
    if (argv[0] != "attach") {
      EXPECT_NE(msg.find("its volume service is not serving"), std::string::npos) << msg;
    }
  }
  EXPECT_NE(
      call({"mount", "/p", R"({"volumeID":"vol-7"})"})["message"].get<std::string>().find("vol-7"),
      std::string::npos);
}

TEST_F(ServiceTest, CountsAndMetricsFollowCalls) {
  call({"init"});
  call({"unmount", "/p"});
  EXPECT_EQ(service_.counts().total, 2u);
  EXPECT_EQ(service_.counts().failed, 1u);
  EXPECT_EQ(service_.counts().in_flight, 0u);
  bool saw_failure = false;
  for (const auto& family : registry_.Collect()) {
    if (family.name != "datera_agent_flexvolume_requests_total") continue;
    for (const auto& m : family.metric) {
      bool unmount = false, failed = false;
      for (const auto& l : m.label) {
        unmount |= l.name == "command" && l.value == "unmount";
        failed |= l.name == "status" && l.value == "Failure";
      }
      if (unmount && failed) saw_failure = m.counter.value == 1;
    }
  }
  EXPECT_TRUE(saw_failure);
}

TEST(VolumeOf, FromOptionsOrPaths) {
  EXPECT_EQ(volume_of(*flex::parse_argv({"mount", "/p", R"({"volumeID":"v"})"})), "v");
  EXPECT_EQ(volume_of(*flex::parse_argv({"unmount", "/pods/x"})), "/pods/x");
}

}  // namespace
}  // namespace datera::flexvolume

namespace datera::flexvolume {
namespace {

/// A volume manager whose mount takes 200 ms.
struct SlowVolumes : VolumeOps {
  bool finished = false;
  boost::asio::awaitable<flex::Json> mount(const flex::Request&) override {
    boost::asio::steady_timer t(co_await boost::asio::this_coro::executor,
                                std::chrono::milliseconds(200));
    co_await t.async_wait(boost::asio::use_awaitable);
    finished = true;
    co_return flex::success();
  }
  boost::asio::awaitable<flex::Json> unmount(const flex::Request&) override {
    co_return flex::success();
  }
  boost::asio::awaitable<flex::Json> expand(const flex::Request&) override {
    co_return flex::success();
  }
  boost::asio::awaitable<flex::Json> waitforattach(const flex::Request&) override {
    co_return flex::success();
  }
  boost::asio::awaitable<flex::Json> mountdevice(const flex::Request&) override {
    co_return flex::success();
  }
  boost::asio::awaitable<flex::Json> unmountdevice(const flex::Request&) override {
    co_return flex::success();
  }
};

/// Both halves of controller mode, recording which one each call reached.
struct Recorder : VolumeOps, ControllerOps {
  std::vector<std::string> seen;
  boost::asio::awaitable<flex::Json> note(const std::string& who, const flex::Request& r) {
    seen.push_back(who + " " + r.command);
    co_return flex::success();
  }
  boost::asio::awaitable<flex::Json> mount(const flex::Request& r) override {
    return note("node", r);
  }
  boost::asio::awaitable<flex::Json> unmount(const flex::Request& r) override {
    return note("node", r);
  }
  boost::asio::awaitable<flex::Json> expand(const flex::Request& r) override {
    return note("node", r);
  }
  boost::asio::awaitable<flex::Json> waitforattach(const flex::Request& r) override {
    return note("node", r);
  }
  boost::asio::awaitable<flex::Json> mountdevice(const flex::Request& r) override {
    return note("node", r);
  }
  boost::asio::awaitable<flex::Json> unmountdevice(const flex::Request& r) override {
    return note("node", r);
  }
  boost::asio::awaitable<flex::Json> attach(const flex::Request& r) override {
    return note("controller", r);
  }
  boost::asio::awaitable<flex::Json> detach(const flex::Request& r) override {
    return note("controller", r);
  }
  boost::asio::awaitable<flex::Json> isattached(const flex::Request& r) override {
    return note("controller", r);
  }
};

const std::vector<std::vector<std::string>> kAttachCalls = {
    {"attach", R"({"volumeID":"v"})", "node-1"},
    {"isattached", R"({"volumeID":"v"})", "node-1"},
    {"detach", "pv-1", "node-1"},
    {"waitforattach", "", R"({"volumeID":"v"})"},
    {"mountdevice", "/var/lib/kubelet/plugins/m/pv-1", "/dev/sdb", R"({"volumeID":"v"})"},
    {"unmountdevice", "/var/lib/kubelet/plugins/m/pv-1"},
    {"mount", "/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv", R"({"volumeID":"v"})"}};

TEST(ServiceModes, ControlCharactersInAnyArgumentOrOptionAreRefusedBeforeTheVolumeCode) {
  // A NUL cut the path at c_str() (a bind over kubelet_root); a newline forges log lines.
  prometheus::Registry registry;
  Metrics probe{registry};
  Service service{
      ServiceOptions{"datera/iscsi", flex::Json{{"attach", false}}, std::chrono::seconds(5)}, probe,
      null_logger()};
  Recorder ops;
  service.set_volume_ops(&ops);
  const std::string pod = "/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv";
  const std::vector<flex::Request> hostile = {
      {"mount", {pod + std::string(1, '\0') + "/../../.."}, {{"volumeID", "v"}}},
      {"unmount", {pod + "\nERROR forged line"}, flex::Json::object()},
      {"mount", {pod}, {{"volumeID", "v"}, {"serverPasswd", "s3cret\x1b[2J"}}},
      {"mount", {pod}, {{"volumeID", "v"}, {"bad\tkey", "x"}}}};
  for (const auto& r : hostile) {
    auto reply = testing::run_async(service.call(r));
    EXPECT_EQ(reply["status"], "Failure") << reply.dump();
    const auto message = reply["message"].get<std::string>();
    EXPECT_NE(message.find("control character"), std::string::npos) << message;
    EXPECT_EQ(message.find("s3cret"), std::string::npos) << "never echoes the value";
  }
  EXPECT_TRUE(ops.seen.empty()) << "the volume code never saw them";
  auto fine = testing::run_async(service.call({"mount", {pod}, {{"volumeID", "v"}}}));
  EXPECT_EQ(fine["status"], "Success") << "the control case";
}

TEST(ServiceModes, ControllerModeRoutesEachCallToItsHalf) {
  prometheus::Registry registry;
  Metrics probe{registry};
  Service service{
      ServiceOptions{"datera/iscsi", flex::Json{{"attach", true}}, std::chrono::seconds(5)}, probe,
      null_logger()};
  Recorder ops;
  service.set_volume_ops(&ops);
  service.set_controller_ops(&ops);
  for (const auto& argv : kAttachCalls) {
    auto req = flex::parse_argv(argv);
    ASSERT_TRUE(req.ok()) << argv[0];
    EXPECT_EQ(testing::run_async(service.call(std::move(*req)))["status"], "Success") << argv[0];
  }
  EXPECT_EQ(ops.seen,
            (std::vector<std::string>{"controller attach", "controller isattached",
                                      "controller detach", "node waitforattach", "node mountdevice",
                                      "node unmountdevice", "node mount"}));
}

TEST(ServiceModes, WithoutAttachTheControllerCallsFailNamingTheSwitch) {
  prometheus::Registry registry;
  Metrics probe{registry};
  Service service{
      ServiceOptions{"datera/iscsi", flex::Json{{"attach", false}}, std::chrono::seconds(5)}, probe,
      null_logger()};
  Recorder ops;
  service.set_volume_ops(&ops);
  service.set_controller_ops(&ops);
  for (size_t i = 0; i + 1 < kAttachCalls.size(); ++i) {
    auto req = flex::parse_argv(kAttachCalls[i]);
    ASSERT_TRUE(req.ok());
    auto r = testing::run_async(service.call(std::move(*req)));
    EXPECT_EQ(r["status"], "Failure") << kAttachCalls[i][0];
    EXPECT_NE(r["message"].get<std::string>().find("attach: false"), std::string::npos) << r.dump();
  }
  EXPECT_TRUE(ops.seen.empty()) << "nothing reached a volume operation";
}

TEST(ServiceTimeout, AnOperationPastTheDeadlineIsAnsweredButNotCancelled) {
  prometheus::Registry registry;
  Metrics probe{registry};
  Service service{
      ServiceOptions{"datera/iscsi", flex::Json{{"attach", false}}, std::chrono::milliseconds(50)},
      probe, null_logger()};
  SlowVolumes volumes;
  service.set_volume_ops(&volumes);
  boost::asio::io_context ioc;
  auto req = flex::parse_argv(
      {"mount", "/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv", R"({"volumeID":"vol-slow"})"});
  ASSERT_TRUE(req.ok());
  auto reply = testing::run_async(ioc, service.call(std::move(*req)));
  EXPECT_EQ(reply["status"], "Failure");
  EXPECT_NE(reply["message"].get<std::string>().find("did not finish"), std::string::npos);
  EXPECT_FALSE(volumes.finished) << "answered at the deadline, before the mount ended";
  ioc.restart();
  ioc.run_for(std::chrono::seconds(2));
  EXPECT_TRUE(volumes.finished) << "the mount went on to its end instead of being cancelled";
}

}  // namespace
}  // namespace datera::flexvolume

// api::Admin over a real volume manager and keeper with do-nothing fakes below them: the shape of
// /v1/status (datera-agentctl and operators read it; it must not drift) and release/drain before
// and after the start-up reconcile.

#include "agent/api/admin.h"

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "base/version.h"
#include "tests/testing/fake_array.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/virtual_clock.h"

namespace datera::api {
namespace {

namespace asio = boost::asio;

struct IdleInitiator : initiator::Initiator {
  std::string kind() const override { return "idle"; }
  Result<std::string> initiator_iqn() const override { return Error{"not used"}; }
  asio::awaitable<Result<initiator::Device>> connect(const initiator::Target&,
                                                     std::chrono::milliseconds) override {
    co_return Error{"not used"};
  }
  asio::awaitable<Status> disconnect(const initiator::Target&) override { co_return ok_status(); }
  asio::awaitable<Status> prune(const initiator::Target&) override { co_return ok_status(); }
  asio::awaitable<Status> refresh(const initiator::Target&) override { co_return ok_status(); }
  asio::awaitable<Result<std::vector<initiator::Session>>> sessions() override {
    co_return std::vector<initiator::Session>{};
  }
};

struct IdleMounter : mount::Mounter {
  asio::awaitable<Result<std::optional<std::string>>> probe(const std::string&) override {
    co_return std::optional<std::string>{};
  }
  asio::awaitable<Status> format(const std::string&, const std::string&) override {
    co_return ok_status();
  }
  asio::awaitable<Status> mount(const mount::MountRequest&) override { co_return ok_status(); }
  asio::awaitable<Status> bind(const std::string&, const std::string&, bool) override {
    co_return ok_status();
  }
  asio::awaitable<Status> unmount(const std::string&) override { co_return ok_status(); }
  asio::awaitable<Status> freeze(const std::string&) override { co_return ok_status(); }
  asio::awaitable<Status> thaw(const std::string&) override { co_return ok_status(); }
  asio::awaitable<Status> grow(const std::string&, const std::string&,
                               const std::string&) override {
    co_return ok_status();
  }
  Result<mount::MountTablePtr> mounts() const override {
    return std::make_shared<const mount::MountTable>();
  }
  Result<std::string> resolve_beneath(const std::string&, const std::string& path) const override {
    return path;
  }
};

class AdminTest : public ::testing::Test {
 protected:
  AdminTest()
      : journal_(dir_ / "journal", pool_, null_logger()),
        manager_(manager_options(), arrays_, initiator_, mounter_, journal_, volume_probe_,
                 null_logger()),
        keeper_(
            ioc_.get_executor(), keeper::KeeperOptions{}, clock_, initiator_,
            [] { return std::vector<keeper::Watched>{}; }, nullptr, keeper_probe_, null_logger()),
        flex_(flexvolume::ServiceOptions{}, flex_probe_, null_logger()),
        admin_(facts(), readiness_, flex_, manager_, keeper_) {}

  volume::ManagerOptions manager_options() {
    volume::ManagerOptions o;
    o.node_name = "node-a";
    o.kubelet_root = dir_ / "kubelet";
    o.staging_dir = dir_ / "staging";
    return o;
  }
  static StatusFacts facts() {
    StatusFacts f;
    f.node = "node-a";
    f.initiator = "open-iscsi";
    f.io_hold = std::chrono::milliseconds(1500);
    f.kubelet_root = "/var/lib/kubelet";
    f.plugin_dir = "/plugins";
    f.initiator_iqn = [] { return Result<std::string>(Error{"no initiatorname.iscsi"}); };
    f.multipath_maps = [] { return true; };
    f.multipathd = [] { return false; };
    f.driver = [] { return nlohmann::json{{"state", "installed"}}; };
    f.api = [] {
      return nlohmann::json{{"socket", "/run/a.sock"}, {"connections", 1}, {"in_flight", 0}};
    };
    f.backend = [] { return nlohmann::json{{"configured", false}}; };
    return f;
  }

  testing::TempDir dir_{"admin"};
  asio::io_context ioc_;
  asio::thread_pool pool_{1};
  prometheus::Registry registry_;
  testing::FakeArrays arrays_;
  IdleInitiator initiator_;
  IdleMounter mounter_;
  volume::Journal journal_;
  volume::Metrics volume_probe_{registry_};
  volume::Manager manager_;
  keeper::Metrics keeper_probe_{registry_};
  testing::VirtualClock clock_;  ///< the keeper only answers here; it never runs its loop
  keeper::Keeper keeper_;
  flexvolume::Metrics flex_probe_{registry_};
  flexvolume::Service flex_;
  metrics::Readiness readiness_;
  Admin admin_;
};

TEST_F(AdminTest, StatusKeepsItsShape) {
  readiness_.add("driver", "not installed yet");
  auto expected = nlohmann::json::parse(R"({
    "api": {"connections": 1, "in_flight": 0, "socket": "/run/a.sock"},
    "attach": false,
    "backend": {"configured": false},
    "driver": {"state": "installed"},
    "flexvolume": {"calls_failed": 0, "calls_in_flight": 0, "calls_total": 0},
    "initiator": "open-iscsi",
    "initiator_iqn": null,
    "initiator_iqn_error": "no initiatorname.iscsi",
    "kubelet_root": "/var/lib/kubelet",
    "multipath": {"io_hold_seconds": 1.5, "maps": true, "multipathd": false},
    "node": "node-a",
    "plugin_dir": "/plugins",
    "readiness": {"driver": {"detail": "not installed yet", "ok": false}},
    "ready": false
  })");
  expected["version"] = version::kVersion;
  expected["commit"] = version::kGitCommit;
  expected["protocol"] = version::kProtocol;
  expected["pid"] = ::getpid();
  const auto status = admin_.status();
  ASSERT_TRUE(status["uptime_seconds"].is_number_integer()) << status.dump();
  EXPECT_GE(status["uptime_seconds"].get<long>(), 0);
  expected["uptime_seconds"] = status["uptime_seconds"];
  EXPECT_EQ(status.dump(), expected.dump());
}

TEST_F(AdminTest, ReleaseAndDrainWaitForTheStartUpReconcile) {
  auto early = testing::run_async(ioc_, admin_.release("pv-1", false));
  EXPECT_EQ(early["result"], "failed");
  EXPECT_NE(early["message"].get<std::string>().find("still starting"), std::string::npos);
  auto early_drain = testing::run_async(ioc_, admin_.drain(false));
  ASSERT_EQ(early_drain.size(), 1u);
  EXPECT_EQ(early_drain[0]["result"], "failed");

  (void)testing::run_async(ioc_, manager_.reconcile());
  readiness_.add("volumes", "reconciling");
  readiness_.set("volumes", true, "reconciled");
  EXPECT_EQ(testing::run_async(ioc_, admin_.release("pv-1", false))["result"], "not_here");
  EXPECT_EQ(testing::run_async(ioc_, admin_.drain(false)), nlohmann::json::array());
  EXPECT_EQ(admin_.volumes(), (nlohmann::json{{"volumes", nlohmann::json::array()}}));
}

}  // namespace
}  // namespace datera::api

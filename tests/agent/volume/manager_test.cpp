// The volume manager's decisions with fakes for the array, the initiator and the mounter. The
// real path (shim, agent, simulator, loop devices, xfs) is tests/integration/volume_test.cpp.

#include "agent/volume/manager.h"

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

namespace datera::volume {
namespace {

namespace asio = boost::asio;

struct FakeArray : Array {
  std::vector<std::string> calls;
  std::string uuid = "uuid-1";
  asio::awaitable<Result<edf::AppInstance>> ensure_volume(const edf::VolumeSpec& spec) override {
    calls.push_back("ensure " + spec.name);
    co_return ai(spec.name);
  }
  asio::awaitable<Result<std::optional<edf::AppInstance>>> find_volume(
      const std::string& name) override {
    co_return std::optional<edf::AppInstance>(ai(name));
  }
  asio::awaitable<Status> ensure_initiator(const std::string& iqn, const std::string&) override {
    calls.push_back("initiator " + iqn);
    co_return ok_status();
  }
  asio::awaitable<Status> acl_add(const std::string& name, const std::string&) override {
    calls.push_back("acl+ " + name);
    co_return ok_status();
  }
  asio::awaitable<Status> acl_remove(const std::string& name, const std::string&) override {
    calls.push_back("acl- " + name);
    co_return ok_status();
  }
  asio::awaitable<Result<edf::AppInstance>> bring_online(const std::string& name,
                                                         std::chrono::milliseconds) override {
    calls.push_back("online " + name);
    co_return ai(name);
  }
  asio::awaitable<Status> resize(const std::string&, int64_t) override { co_return ok_status(); }
  asio::awaitable<Status> delete_volume(const std::string& name) override {
    calls.push_back("delete " + name);
    co_return ok_status();
  }
  edf::AppInstance ai(const std::string& name) const {
    edf::AppInstance a;
    a.name = name;
    a.iqn = "iqn.2013-05.com.daterainc:tc:01:sn:1";
    a.ips = {"172.28.0.1"};
    a.volume_uuid = uuid;
    a.op_state = "available";
    return a;
  }
};

struct FakeArrays : Arrays {
  FakeArray array;
  Result<Array*> get(const edf::BackendTarget&) override { return &array; }
};

struct FakeInitiator : initiator::Initiator {
  std::optional<Error> connect_error;
  std::vector<std::string> calls;
  std::string kind() const override { return "fake"; }
  Result<std::string> initiator_iqn() const override {
    return std::string("iqn.1993-08.org.debian:01:node-a");
  }
  asio::awaitable<Result<initiator::Device>> connect(const initiator::Target& t,
                                                     std::chrono::milliseconds) override {
    calls.push_back("connect " + t.serial);
    if (connect_error) co_return *connect_error;
    co_return initiator::Device{"/dev/sdz", t.serial, 8, 16};
  }
  asio::awaitable<Status> disconnect(const initiator::Target& t) override {
    calls.push_back("disconnect " + t.serial);
    co_return ok_status();
  }
  asio::awaitable<Status> prune(const initiator::Target& t) override {
    std::string keep;
    for (const auto& p : t.portals) keep += " " + p;
    calls.push_back("prune" + keep);
    co_return ok_status();
  }
  asio::awaitable<Status> refresh(const initiator::Target& t) override {
    calls.push_back("refresh " + t.serial);
    co_return ok_status();
  }
  asio::awaitable<Result<std::vector<initiator::Session>>> sessions() override {
    co_return std::vector<initiator::Session>{};
  }
};

struct FakeMounter : mount::Mounter {
  std::optional<std::string> fs;  ///< what probe() finds
  int formats = 0;
  std::vector<mount::MountEntry> table;
  std::vector<std::string> calls;
  std::vector<std::string> last_options;
  asio::awaitable<Result<std::optional<std::string>>> probe(const std::string&) override {
    co_return fs;
  }
  asio::awaitable<Status> format(const std::string&, const std::string& t) override {
    ++formats;
    fs = t;
    co_return ok_status();
  }
  asio::awaitable<Status> mount(const mount::MountRequest& r) override {
    calls.push_back("mount " + r.fstype + " " + r.target);
    last_options = r.options;
    table.push_back({r.device, r.target, r.fstype, "/", "rw", false, 8, 16});
    co_return ok_status();
  }
  asio::awaitable<Status> bind(const std::string& source, const std::string& target,
                               bool ro) override {
    calls.push_back("bind " + target);
    table.push_back({source, target, *fs, "/", ro ? "ro" : "rw", ro, 8, 16});
    co_return ok_status();
  }
  asio::awaitable<Status> unmount(const std::string& target) override {
    calls.push_back("unmount " + target);
    std::erase_if(table, [&](const mount::MountEntry& m) { return m.target == target; });
    co_return ok_status();
  }
  asio::awaitable<Status> grow(const std::string&, const std::string&,
                               const std::string&) override {
    co_return ok_status();
  }
  Result<std::vector<mount::MountEntry>> mounts() const override { return table; }
};

class ManagerTest : public ::testing::Test {
 protected:
  ManagerTest() : journal_(dir_ / "journal", pool_, null_logger()) {
    ManagerOptions o;
    o.node_name = "node-a";
    o.kubelet_root = "/var/lib/kubelet";
    o.staging_dir = "/var/lib/datera-agent/staging";
    o.default_backend.host = "10.0.0.1";
    o.default_backend.credentials = {"admin", "password"};
    manager_ = std::make_unique<Manager>(o, arrays_, initiator_, mounter_, journal_, probe_,
                                         null_logger());
    (void)testing::run_async(ioc_, manager_->reconcile());
  }
  flex::Json call(const std::string& command, const std::string& pod,
                  flex::Json options = flex::Json::object()) {
    flex::Request r;
    r.command = command;
    r.args = {pod};
    r.options = std::move(options);
    return testing::run_async(ioc_, command == "mount" ? manager_->mount(r) : manager_->unmount(r));
  }
  static flex::Json opts(const std::string& vol) {
    return {{"volumeID", vol}, {"kubernetes.io/fsType", "xfs"}};
  }
  const std::string pod_ = "/var/lib/kubelet/pods/u1/volumes/datera~iscsi/pv";

  testing::TempDir dir_{"dt-mgr"};
  asio::io_context ioc_;
  asio::thread_pool pool_{1};
  prometheus::Registry registry_;
  Probe probe_{registry_};
  FakeArrays arrays_;
  FakeInitiator initiator_;
  FakeMounter mounter_;
  Journal journal_;
  std::unique_ptr<Manager> manager_;
};

TEST_F(ManagerTest, RefusesPodDirsOutsideKubeletRootBeforeTouchingAnything) {
  for (const std::string bad : {"/etc", "/var/lib/kubelet", "/var/lib/kubelet/../../etc/x",
                                "relative/dir", "/var/lib/kubeletX/pods/u/v"}) {
    auto r = call("mount", bad, opts("vol-1"));
    EXPECT_EQ(r["status"], "Failure") << bad;
  }
  EXPECT_TRUE(arrays_.array.calls.empty());
  EXPECT_TRUE(initiator_.calls.empty());
  EXPECT_TRUE(mounter_.calls.empty());
}

TEST_F(ManagerTest, FormatsOnlyABlankDevice) {
  mounter_.fs = std::nullopt;
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  EXPECT_EQ(mounter_.formats, 1);
  ASSERT_EQ(call("unmount", pod_)["status"], "Success");
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  EXPECT_EQ(mounter_.formats, 1) << "a device with a filesystem is never formatted again";
}

TEST_F(ManagerTest, AnExistingFilesystemOfAnotherTypeIsMountedAsItIsNeverReformatted) {
  mounter_.fs = "ext4";
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  EXPECT_EQ(mounter_.formats, 0);
  EXPECT_EQ(mounter_.calls.front(), "mount ext4 /var/lib/datera-agent/staging/vol-1");
}

TEST_F(ManagerTest, ALoginFailureRollsBackTheAclAndTheJournal) {
  initiator_.connect_error = Error{"no such LUN"};
  auto r = call("mount", pod_, opts("vol-1"));
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("failed at login: no such LUN"), std::string::npos)
      << r.dump();
  const auto& c = arrays_.array.calls;
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(c.back(), "acl- vol-1") << "the node leaves the ACL it joined";
  EXPECT_TRUE(manager_->volumes().empty());
  EXPECT_TRUE(journal_.load_all(nullptr).empty());
}

TEST_F(ManagerTest, AStagingPathHoldingAnotherDeviceIsRefused) {
  mounter_.fs = "xfs";
  mounter_.table.push_back(
      {"/dev/sdq", "/var/lib/datera-agent/staging/vol-1", "xfs", "/", "rw", false, 65, 0});
  auto r = call("mount", pod_, opts("vol-1"));
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("holds device 65:0"), std::string::npos)
      << r.dump();
  EXPECT_EQ(std::count(mounter_.calls.begin(), mounter_.calls.end(), "bind " + pod_), 0);
}

TEST_F(ManagerTest, AnUnknownButMountedPodDirIsNotGuessedAt) {
  mounter_.table.push_back({"/dev/sdq", pod_, "xfs", "/", "rw", false, 65, 0});
  auto r = call("unmount", pod_);
  EXPECT_EQ(r["status"], "Failure");
  EXPECT_EQ(mounter_.table.size(), 1u) << "nothing unmounted";
  mounter_.table.clear();
  EXPECT_EQ(call("unmount", pod_)["status"], "Success") << "not mounted: nothing to do";
}

TEST_F(ManagerTest, MountOptionsAreHonouredAndUnsafeOnesRefusedBeforeAnything) {
  auto bad = opts("vol-1");
  bad["mountOptions"] = "noatime,exec";
  auto r = call("mount", pod_, bad);
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("mountOptions"), std::string::npos) << r.dump();
  EXPECT_TRUE(arrays_.array.calls.empty()) << "refused before the array was touched";
  auto good = opts("vol-1");
  good["mountOptions"] = "noatime,discard";
  ASSERT_EQ(call("mount", pod_, good)["status"], "Success");
  EXPECT_EQ(mounter_.last_options, (std::vector<std::string>{"noatime", "discard"}));
}

TEST_F(ManagerTest, RetainPolicyNeverDeletesTheVolumeAfterTheLastPod) {
  mounter_.fs = "xfs";
  auto o = opts("vol-1");
  o["retainPolicy"] = "never";
  ASSERT_EQ(call("mount", pod_, o)["status"], "Success");
  const std::string pod2 = "/var/lib/kubelet/pods/u2/volumes/datera~iscsi/pv";
  ASSERT_EQ(call("mount", pod2, o)["status"], "Success");
  ASSERT_EQ(call("unmount", pod_)["status"], "Success");
  EXPECT_EQ(std::count(arrays_.array.calls.begin(), arrays_.array.calls.end(), "delete vol-1"), 0);
  ASSERT_EQ(call("unmount", pod2)["status"], "Success");
  EXPECT_EQ(arrays_.array.calls.back(), "delete vol-1");
  EXPECT_EQ(initiator_.calls.back(), "disconnect uuid-1");
}

}  // namespace
}  // namespace datera::volume

// The volume manager's decisions with fakes for the array, the initiator and the mounter. The
// real path (shim, agent, simulator, loop devices, xfs) is tests/integration/volume_test.cpp.

#include "agent/volume/manager.h"

#include <algorithm>
#include <map>
#include <set>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "agent/flexvolume/volume_adapter.h"
#include "agent/ownership/lease.h"
#include "tests/agent/volume/fakes.h"
#include "tests/testing/fake_array.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

namespace datera::volume {
namespace {

namespace asio = boost::asio;

using testing::FakeArray;
using testing::FakeArrays;

class ManagerTest : public ::testing::Test {
 protected:
  ManagerTest() : journal_(dir_ / "journal", pool_, null_logger()) {
    manager_ = std::make_unique<Manager>(base_options(), arrays_, initiator_, mounter_, journal_,
                                         metrics_, null_logger());
    (void)testing::run_async(ioc_, manager_->reconcile());
  }
  static ManagerOptions base_options() { return base_manager_options(); }
  flex::Json call(const std::string& command, const std::string& pod,
                  flex::Json options = flex::Json::object()) {
    flex::Request r;
    r.command = command;
    r.args = {pod};
    r.options = std::move(options);
    flexvolume::VolumeAdapter flex(*manager_, metrics_);
    return testing::run_async(ioc_, command == "mount" ? flex.mount(r) : flex.unmount(r));
  }
  static flex::Json opts(const std::string& vol) {
    return {{"volumeID", vol}, {"kubernetes.io/fsType", "xfs"}};
  }
  const std::string pod_ = "/var/lib/kubelet/pods/u1/volumes/datera~iscsi/pv";

  testing::TempDir dir_{"dt-mgr"};
  asio::io_context ioc_;
  asio::thread_pool pool_{1};
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  FakeArrays arrays_;
  FakeInitiator initiator_;
  FakeMounter mounter_;
  Journal journal_;
  std::unique_ptr<Manager> manager_;
};

// Issue 14 item 6: the default array is recorded as a reference (its password is the agent's
// current one at each use); a volume's own secret is refreshed by each mount that carries it.
TEST_F(ManagerTest, TheDefaultArrayIsJournaledAsAReferenceWithoutThePassword) {
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  const auto records = journal_.load_all(nullptr);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(records[0].backend.is_default);
  EXPECT_TRUE(records[0].backend.credentials.password.empty());
  ASSERT_FALSE(arrays_.targets.empty());
  EXPECT_TRUE(arrays_.targets.back().is_default);
}

TEST_F(ManagerTest, ALaterMountWithNewSecretValuesRefreshesTheRecordsCredentials) {
  auto with_secret = [](const char* password_b64) {
    auto o = opts("vol-1");
    o["kubernetes.io/secret/username"] = "b3Bz";  // ops
    o["kubernetes.io/secret/password"] = password_b64;
    return o;
  };
  const std::string pod2 = "/var/lib/kubelet/pods/u2/volumes/datera~iscsi/pv";
  ASSERT_EQ(call("mount", pod_, with_secret("cHctMQ=="))["status"], "Success");  // pw-1
  ASSERT_EQ(call("mount", pod2, with_secret("cHctMg=="))["status"], "Success");  // pw-2
  const auto records = journal_.load_all(nullptr);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_FALSE(records[0].backend.is_default);
  EXPECT_EQ(records[0].backend.credentials.password, "pw-2");
  arrays_.targets.clear();
  ASSERT_EQ(call("unmount", pod_)["status"], "Success");
  ASSERT_EQ(call("unmount", pod2)["status"], "Success");
  ASSERT_FALSE(arrays_.targets.empty()) << "the release reached the array";
  for (const auto& t : arrays_.targets) {
    EXPECT_EQ(t.credentials.user, "ops");
    EXPECT_EQ(t.credentials.password, "pw-2") << "the release used the old secret";
  }
}

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

// The array's formatted record (issue 20): written after mkfs and on a filesystem found without
// it; a blank device whose record says formatted is refused, never formatted.
double counter_value(const prometheus::Registry& registry, const std::string& name,
                     const std::string& label = "", const std::string& value = "") {
  for (const auto& f : registry.Collect()) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      if (label.empty() || std::any_of(m.label.begin(), m.label.end(), [&](const auto& l) {
            return l.name == label && l.value == value;
          })) {
        return m.counter.value;
      }
    }
  }
  return -1;
}

TEST_F(ManagerTest, ABlankVolumeIsFormattedAndTheArrayRecordsIt) {
  mounter_.fs = std::nullopt;
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  EXPECT_EQ(mounter_.formats, 1);
  EXPECT_EQ(arrays_.array.md["vol-1"]["formatted"], "true");
  EXPECT_EQ(
      counter_value(registry_, "datera_agent_volume_filesystems_created_total", "fstype", "xfs"),
      1);
  EXPECT_EQ(
      counter_value(registry_, "datera_agent_volume_format_records_total", "result", "written"), 1);
}

TEST_F(ManagerTest, ABlankDeviceTheArraySaysIsFormattedIsRefusedNeverFormatted) {
  arrays_.array.names.insert("vol-1");
  arrays_.array.md["vol-1"]["formatted"] = "true";
  mounter_.fs = std::nullopt;
  auto r = call("mount", pod_, opts("vol-1"));
  ASSERT_EQ(r["status"], "Failure") << r.dump();
  EXPECT_EQ(mounter_.formats, 0) << "mkfs over a volume the array says holds a filesystem";
  const std::string message = r["message"].get<std::string>();
  for (const char* says : {"failed at format: refusing mkfs", "/dev/sdz reads blank",
                           "app instance vol-1's metadata says formatted: \"true\"", "wrong device",
                           "delete the key by hand"}) {
    EXPECT_NE(message.find(says), std::string::npos) << says << " in " << message;
  }
  EXPECT_EQ(counter_value(registry_, "datera_agent_volume_format_refused_total"), 1);
  EXPECT_EQ(
      counter_value(registry_, "datera_agent_volume_filesystems_created_total", "fstype", "xfs"),
      0);
  EXPECT_TRUE(mounter_.table.empty()) << "nothing mounted";
  EXPECT_TRUE(journal_.load_all(nullptr).empty()) << "rolled back like any failed mount";
  EXPECT_EQ(arrays_.array.md["vol-1"]["formatted"], "true") << "the record stays";
}

TEST_F(ManagerTest, AFilesystemFoundWithoutTheRecordGetsItAndIsNotFormatted) {
  mounter_.fs = "xfs";  // formatted through FlexVolume before the record existed, or migrated
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  EXPECT_EQ(mounter_.formats, 0);
  EXPECT_EQ(arrays_.array.md["vol-1"]["formatted"], "true");
  ASSERT_EQ(call("unmount", pod_)["status"], "Success");
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  EXPECT_EQ(
      counter_value(registry_, "datera_agent_volume_format_records_total", "result", "written"), 1)
      << "a recorded volume is not written again";
}

/// An array that takes every metadata write but the formatted record's.
struct UnrecordableArray : FakeArray {
  asio::awaitable<Status> put_metadata(const std::string& name,
                                       const edf::Metadata& keys) override {
    if (keys.count("formatted")) co_return Error{"metadata is full", http_status(400)};
    co_return co_await FakeArray::put_metadata(name, keys);
  }
};
struct UnrecordableArrays : volume::Arrays {
  UnrecordableArray array;
  Result<volume::Array*> get(const edf::BackendTarget&) override { return &array; }
};

TEST_F(ManagerTest, AFailedRecordAfterMkfsIsAWarningNotAFailedMount) {
  UnrecordableArrays arrays;
  manager_ = std::make_unique<Manager>(base_options(), arrays, initiator_, mounter_, journal_,
                                       metrics_, null_logger());
  (void)testing::run_async(ioc_, manager_->reconcile());
  mounter_.fs = std::nullopt;
  auto r = call("mount", pod_, opts("vol-1"));
  EXPECT_EQ(r["status"], "Success") << r.dump();
  EXPECT_EQ(mounter_.formats, 1);
  EXPECT_EQ(arrays.array.md["vol-1"].count("formatted"), 0u);
  EXPECT_EQ(
      counter_value(registry_, "datera_agent_volume_format_records_total", "result", "failed"), 1);
  ASSERT_EQ(call("unmount", pod_)["status"], "Success");
  manager_.reset();  // before `arrays` goes
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

TEST_F(ManagerTest, AFailedMountIsRolledBackWithoutEverDeletingTheVolume) {
  // retainPolicy: never deletes after the last pod here, never on a mount that failed: the
  // volume may be another node's (or hold data from an earlier life).
  initiator_.connect_error = Error{"no such LUN"};
  auto o = opts("vol-1");
  o["retainPolicy"] = "never";
  ASSERT_EQ(call("mount", pod_, o)["status"], "Failure");
  const auto& c = arrays_.array.calls;
  EXPECT_EQ(std::count(c.begin(), c.end(), "delete vol-1"), 0);
  EXPECT_EQ(c.back(), "acl- vol-1");
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

TEST_F(ManagerTest, GiveUpKeepsAVolumePodsMountAndReleasesItOnceTheirBindsAreGone) {
  mounter_.fs = "xfs";
  auto o = opts("vol-1");
  o["retainPolicy"] = "never";
  ASSERT_EQ(call("mount", pod_, o)["status"], "Success");
  const size_t array_calls = arrays_.array.calls.size();
  auto kept = testing::run_async(ioc_, manager_->give_up("vol-1", true));
  EXPECT_EQ(kept.outcome, GiveUp::Outcome::in_use);
  EXPECT_EQ(kept.pods, std::vector<std::string>{pod_});
  EXPECT_NE(kept.message.find(pod_), std::string::npos) << kept.message;
  EXPECT_NE(kept.message.find("kubectl drain"), std::string::npos) << kept.message;
  EXPECT_EQ(mounter_.calls.back(), "bind " + pod_) << "nothing unmounted";
  EXPECT_EQ(arrays_.array.calls.size(), array_calls) << "the array was not touched";

  // The pod's bind was removed behind kubelet's back: nothing uses the volume any more.
  std::erase_if(mounter_.table, [&](const mount::MountEntry& m) { return m.target == pod_; });
  auto done = testing::run_async(ioc_, manager_->give_up("vol-1", false));
  EXPECT_EQ(done.outcome, GiveUp::Outcome::released) << done.message;
  EXPECT_TRUE(mounter_.table.empty());
  EXPECT_EQ(initiator_.calls.back(), "disconnect uuid-1");
  EXPECT_EQ(arrays_.array.calls.back(), "acl- vol-1");
  EXPECT_EQ(std::count(arrays_.array.calls.begin(), arrays_.array.calls.end(), "delete vol-1"), 0)
      << "giving a volume up is not its last pod's unmount: the retain policy does not apply";
  EXPECT_TRUE(journal_.load_all(nullptr).empty());
  EXPECT_TRUE(manager_->volumes().empty());

  EXPECT_EQ(testing::run_async(ioc_, manager_->give_up("vol-1", false)).outcome,
            GiveUp::Outcome::not_here)
      << "idempotent";
  auto bad = testing::run_async(ioc_, manager_->give_up("../etc", false));
  EXPECT_EQ(bad.outcome, GiveUp::Outcome::not_here);
  EXPECT_NE(bad.message.find("not a Datera volume name"), std::string::npos);
}

TEST_F(ManagerTest, DrainReleasesWhatNoPodUsesAndListsWhatItKept) {
  mounter_.fs = "xfs";
  const std::string pod2 = "/var/lib/kubelet/pods/u2/volumes/datera~iscsi/pv";
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  ASSERT_EQ(call("mount", pod2, opts("vol-2"))["status"], "Success");
  std::erase_if(mounter_.table, [&](const mount::MountEntry& m) { return m.target == pod2; });
  // Two volumes are two devices (the fakes hand both the same one): vol-1's pod mount must not
  // count as a user of vol-2.
  for (auto& m : mounter_.table) {
    if (m.target == "/var/lib/datera-agent/staging/vol-2") m.minor = 48;
  }
  auto results = testing::run_async(ioc_, manager_->drain(false));
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].volume, "vol-1");
  EXPECT_EQ(results[0].outcome, GiveUp::Outcome::in_use);
  EXPECT_EQ(results[1].volume, "vol-2");
  EXPECT_EQ(results[1].outcome, GiveUp::Outcome::released) << results[1].message;
  EXPECT_EQ(results[1].to_json()["result"], "released");
  ASSERT_EQ(manager_->volumes().size(), 1u);
  EXPECT_EQ(manager_->volumes()[0]["volume"], "vol-1");
  EXPECT_EQ(arrays_.array.calls.back(), "acl- vol-2");
}

// The keeper's periodic check of many volumes: one listing of the array (not a GET per volume),
// and only a volume whose export changed gets the full check.
TEST_F(ManagerTest, ThePeriodicAccessCheckOfManyVolumesListsTheArrayOnce) {
  mounter_.fs = "xfs";
  std::vector<std::string> names;
  for (int i = 1; i <= 3; ++i) {
    const std::string v = "vol-" + std::to_string(i);
    const std::string pod =
        "/var/lib/kubelet/pods/u" + std::to_string(i) + "/volumes/datera~iscsi/pv";
    ASSERT_EQ(call("mount", pod, opts(v))["status"], "Success");
    names.push_back(v);
  }
  auto access = [&](const std::string& result) {
    for (const auto& f : registry_.Collect()) {
      if (f.name != "datera_agent_volume_access_checks_total") continue;
      for (const auto& m : f.metric) {
        for (const auto& l : m.label) {
          if (l.name == "result" && l.value == result) return m.counter.value;
        }
      }
    }
    return -1.0;
  };
  const auto lists = [&] {
    return std::count(arrays_.array.calls.begin(), arrays_.array.calls.end(), "list");
  };
  const double unchanged = access("unchanged");
  testing::run_async(ioc_, manager_->check_access_all(names));
  EXPECT_EQ(lists(), 1);
  EXPECT_EQ(access("unchanged"), unchanged + 3);
  // The array moved them: each gets the full check (on the raw disk: deferred, not moved).
  arrays_.array.ips = {"172.28.0.9"};
  const double deferred = access("deferred");
  testing::run_async(ioc_, manager_->check_access_all(names));
  EXPECT_EQ(lists(), 2);
  EXPECT_EQ(access("deferred"), deferred + 3);
  // One volume: one GET is fewer requests than a listing.
  testing::run_async(ioc_, manager_->check_access_all({"vol-1"}));
  EXPECT_EQ(lists(), 2);
}

}  // namespace
}  // namespace datera::volume

namespace datera::volume {
namespace {

constexpr const char* kUuid = "7f5c3a5e-89ab-4cde-8f01-23456789abcd";
const std::string kMap = std::string("datera-") + kUuid;

class MultipathManagerTest : public ManagerTest {
 protected:
  MultipathManagerTest() {
    arrays_.array.uuid = kUuid;
    initiator_.shared = &log_;
    multipath_.shared = &log_;
    ManagerOptions o;
    o.node_name = "node-a";
    o.staging_dir = "/var/lib/datera-agent/staging";
    o.default_backend.host = "10.0.0.1";
    o.default_backend.credentials = {"admin", "password"};
    manager_ = std::make_unique<Manager>(o, arrays_, initiator_, mounter_, journal_, metrics_,
                                         null_logger(), &multipath_);
    (void)testing::run_async(ioc_, manager_->reconcile());
    mounter_.fs = "xfs";
  }
  Access check() { return testing::run_async(ioc_, manager_->check_access("vol-1", "test")); }

  CallLog log_;
  FakeMultipath multipath_;
};

TEST_F(MultipathManagerTest, TheFilesystemIsMountedOnTheVolumesMapWhichGoesBeforeLogout) {
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  ASSERT_EQ(multipath_.maps.count(kMap), 1u);
  EXPECT_EQ(multipath_.maps[kMap].paths, std::vector<std::string>{"8:16"});
  EXPECT_EQ(mounter_.table.front().source, "/dev/dm-0") << "staged on the map, not on /dev/sdz";
  EXPECT_EQ(manager_->volumes()[0]["map"], kMap);
  EXPECT_EQ(journal_.load_all(nullptr).at(0).map, kMap) << "journaled, for reconcile";
  log_.clear();
  ASSERT_EQ(call("unmount", pod_)["status"], "Success");
  EXPECT_TRUE(multipath_.maps.empty());
  ASSERT_FALSE(log_.empty());
  EXPECT_EQ(log_.front(), "map remove") << "the map goes before the session it sits on";
  EXPECT_EQ(initiator_.calls.back(), std::string("disconnect ") + kUuid);
}

TEST_F(MultipathManagerTest, AnAccessIpChangeMovesTheSessionInTheSafeOrder) {
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  EXPECT_EQ(check(), Access::unchanged);
  log_.clear();
  arrays_.array.ips = {"172.28.0.9"};
  EXPECT_EQ(check(), Access::moved);
  // New path verified first; I/O held while the old session goes; the map then swapped onto the
  // new disk, which ends the queueing.
  EXPECT_EQ(log_, (CallLog{"login 172.28.0.9", "queue on", "logout old", "map over 8:32"}));
  EXPECT_FALSE(multipath_.maps[kMap].queueing);
  ASSERT_EQ(initiator_.live.size(), 1u);
  EXPECT_EQ(initiator_.live[0].portal, "172.28.0.9:3260");
  const auto rec = journal_.load_all(nullptr).at(0);
  EXPECT_EQ(rec.target.portals, std::vector<std::string>{"172.28.0.9"});
  EXPECT_EQ(mounter_.table.front().source, "/dev/dm-0") << "the mount never moved";
  log_.clear();
  EXPECT_EQ(check(), Access::unchanged) << "idempotent";
  EXPECT_TRUE(log_.empty());
}

// An outage longer than the replacement timeout fails the map's only path; the session comes
// back but the path stays failed (every I/O fails) until reinstated. Nothing moved, so no login,
// queueing or logout: the path is reinstated, once the session is logged in and its disk running.
TEST_F(MultipathManagerTest, AFailedPathIsReinstatedOnceItsSessionIsBackAndNothingMoves) {
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  multipath_.maps[kMap].failed = {"8:16"};
  initiator_.live.at(0).state = "FAILED";
  initiator_.live.at(0).device_state = "transport-offline";
  log_.clear();
  EXPECT_EQ(check(), Access::unchanged) << "its session is still down";
  EXPECT_TRUE(log_.empty());
  EXPECT_EQ(multipath_.maps[kMap].failed, std::vector<std::string>{"8:16"});

  initiator_.live.at(0).state = "LOGGED_IN";
  initiator_.live.at(0).device_state = "running";
  EXPECT_EQ(check(), Access::reinstated);
  EXPECT_EQ(log_, (CallLog{"reinstate 8:16", "map over 8:16"})) << "no login, queueing or logout";
  EXPECT_TRUE(multipath_.maps[kMap].failed.empty());
  EXPECT_EQ(mounter_.table.front().source, "/dev/dm-0");
  log_.clear();
  EXPECT_EQ(check(), Access::unchanged) << "idempotent";
  EXPECT_TRUE(log_.empty());
}

// initiator.io_hold: a map that queues is in its standing mode, not left over from a move; and a
// failed path under a queue that still holds (or one an expired hold turned off) is reinstated in
// place. (The kernel tier's 10-agent looped "moving" a volume to the portals it was on.)
TEST_F(MultipathManagerTest, AQueueingMapIsRightWhenMapsHoldIOAndItsFailedPathIsReinstated) {
  multipath_.hold = true;
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  ASSERT_TRUE(multipath_.maps[kMap].queueing);
  log_.clear();
  EXPECT_EQ(check(), Access::unchanged);
  EXPECT_TRUE(log_.empty()) << "nothing to move";
  testing::run_async(ioc_, manager_->check_access_all({"vol-1"}));
  EXPECT_TRUE(log_.empty()) << "the periodic check agrees";

  multipath_.maps[kMap].failed = {"8:16"};  // the disk went offline; the map holds the I/O
  EXPECT_EQ(check(), Access::reinstated);
  EXPECT_EQ(log_, (CallLog{"reinstate 8:16", "map over 8:16"})) << "no login, queueing or logout";
  log_.clear();
  multipath_.maps[kMap].failed = {"8:16"};
  multipath_.maps[kMap].queueing = false;  // the hold expired
  EXPECT_EQ(check(), Access::reinstated);
  EXPECT_TRUE(multipath_.maps[kMap].queueing) << "the standing mode is back";
  log_.clear();
  multipath_.hold = false;
  EXPECT_EQ(check(), Access::moved) << "without a hold, a queueing map is a move left half done";
}

TEST_F(MultipathManagerTest, AFailedLoginOnTheNewPortalLeavesTheOldPathAlone) {
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  arrays_.array.ips = {"172.28.0.9"};
  initiator_.connect_error = Error{"login refused"};
  log_.clear();
  EXPECT_EQ(check(), Access::failed);
  EXPECT_EQ(log_, CallLog{"login 172.28.0.9"}) << "no queueing, no logout, no swap";
  EXPECT_EQ(multipath_.maps[kMap].paths, std::vector<std::string>{"8:16"});
  ASSERT_EQ(initiator_.live.size(), 1u);
  EXPECT_EQ(initiator_.live[0].portal, "172.28.0.1:3260");
  initiator_.connect_error.reset();
  EXPECT_EQ(check(), Access::moved) << "the next check finishes the move";
}

TEST_F(MultipathManagerTest, AVolumeWhoseUuidChangedOnTheArrayIsNotFollowed) {
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  arrays_.array.uuid = "0000aaaa-89ab-4cde-8f01-23456789abcd";
  arrays_.array.ips = {"172.28.0.9"};
  log_.clear();
  EXPECT_EQ(check(), Access::refused);
  EXPECT_TRUE(log_.empty());
}

TEST_F(MultipathManagerTest, WithoutMultipathAChangeIsDeferredNotDone) {
  multipath_.usable = false;
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  EXPECT_TRUE(multipath_.maps.empty());
  EXPECT_EQ(mounter_.table.front().source, "/dev/sdz");
  arrays_.array.ips = {"172.28.0.9"};
  log_.clear();
  EXPECT_EQ(check(), Access::deferred);
  EXPECT_TRUE(log_.empty()) << "a raw disk under a mount is never swapped";
  ASSERT_EQ(initiator_.live.size(), 1u);
  EXPECT_EQ(initiator_.live[0].portal, "172.28.0.1:3260");
}

TEST_F(MultipathManagerTest, ReconcileNeverLogsOutTheDiskBeneathAMapItHasNoRecordOf) {
  const std::string other = "0000aaaa-89ab-4cde-8f01-23456789abcd";
  const std::string third = "0000bbbb-89ab-4cde-8f01-23456789abcd";
  initiator_.live.push_back({"iqn.x:a", "172.28.0.5:3260", "LOGGED_IN", 7,
                             initiator::Device{"/dev/sdk", other, 8, 160}, "running"});
  initiator_.live.push_back({"iqn.x:b", "172.28.0.6:3260", "LOGGED_IN", 8,
                             initiator::Device{"/dev/sdl", third, 8, 176}, "running"});
  multipath_.maps["datera-" + other] = multipath::Map{};  // e.g. a lost journal record
  initiator_.calls.clear();
  (void)testing::run_async(ioc_, manager_->reconcile());
  EXPECT_EQ(initiator_.calls, std::vector<std::string>{"disconnect " + third})
      << "the session under a map stays; the truly leaked one goes";
}

TEST_F(MultipathManagerTest, AVolumeNotMountedHereIsNotChecked) {
  arrays_.array.ips = {"172.28.0.9"};
  EXPECT_EQ(check(), Access::unchanged);
  EXPECT_TRUE(log_.empty());
  EXPECT_TRUE(arrays_.array.calls.empty());
}

// ---------------------------------------------------------------------------------------------
// Hostile paths, restarts on real node layouts, and start-up that never blocks or crash-loops
// ---------------------------------------------------------------------------------------------

/// An array that cannot be reached: every call fails, and each is counted.
struct DownArray : volume::Array {
  int calls = 0;
  Error down() {
    ++calls;
    return Error{"connecting to EDF at 10.0.0.1:7717 failed: connection refused",
                 edf::Errc::transport};
  }
  asio::awaitable<Result<edf::AppInstance>> ensure_volume(const edf::VolumeSpec&) override {
    co_return down();
  }
  asio::awaitable<Result<std::optional<edf::AppInstance>>> find_volume(
      const std::string&) override {
    co_return down();
  }
  asio::awaitable<Status> ensure_initiator(const std::string&, const std::string&) override {
    co_return down();
  }
  asio::awaitable<Result<std::vector<edf::InitiatorInfo>>> initiators() override {
    co_return down();
  }
  asio::awaitable<Result<std::vector<std::string>>> volume_names() override { co_return down(); }
  asio::awaitable<Result<std::vector<edf::AppInstance>>> list_volumes() override {
    co_return down();
  }
  asio::awaitable<Status> acl_add(const std::string&, const std::string&) override {
    co_return down();
  }
  asio::awaitable<Status> acl_remove(const std::string&, const std::string&) override {
    co_return down();
  }
  asio::awaitable<Result<std::vector<std::string>>> acl(const std::string&) override {
    co_return down();
  }
  asio::awaitable<Result<edf::Metadata>> metadata(const std::string&) override { co_return down(); }
  asio::awaitable<Status> put_metadata(const std::string&, const edf::Metadata&) override {
    co_return down();
  }
  asio::awaitable<Result<edf::AppInstance>> bring_online(const std::string&,
                                                         std::chrono::milliseconds) override {
    co_return down();
  }
  asio::awaitable<Status> resize(const std::string&, int64_t) override { co_return down(); }
  asio::awaitable<Status> delete_volume(const std::string&) override { co_return down(); }
  asio::awaitable<Result<edf::Snapshot>> create_snapshot(const std::string&,
                                                         const std::string&) override {
    co_return down();
  }
  asio::awaitable<Result<std::vector<edf::Snapshot>>> snapshots(const std::string&) override {
    co_return down();
  }
  asio::awaitable<Status> delete_snapshot(const std::string&, const std::string&) override {
    co_return down();
  }
};
struct DownArrays : volume::Arrays {
  DownArray array;
  Result<volume::Array*> get(const edf::BackendTarget&) override { return &array; }
};

class StartUpTest : public ManagerTest {
 protected:
  ManagerOptions options() const {
    ManagerOptions o = base_options();
    o.release_attempts = 3;
    o.release_retry_delay = std::chrono::milliseconds(1);
    return o;
  }
  /// A restart: a new manager over the same journal and host; yields reconcile's summary.
  std::string restart(ManagerOptions o, volume::Arrays& arrays) {
    manager_ = std::make_unique<Manager>(std::move(o), arrays, initiator_, mounter_, journal_,
                                         metrics_, null_logger());
    return testing::run_async(ioc_, manager_->reconcile());
  }
  /// A journal record as an agent left it (checksummed, so only its content can be wrong).
  Record leftover(const std::string& volume) {
    Record r;
    r.volume = volume;
    r.phase = Phase::detaching;
    r.backend.host = "10.0.0.1";
    r.initiator_iqn = "iqn.1993-08.org.debian:01:node-a";
    r.acl_added = true;
    r.staging = "/var/lib/datera-agent/staging/" + volume;
    return r;
  }
  void save(Record r) { ASSERT_TRUE(testing::run_async(ioc_, journal_.save(r))); }
  int acl_removals() const {
    return static_cast<int>(
        std::count(arrays_.array.calls.begin(), arrays_.array.calls.end(), "acl- vol-1"));
  }
  double metric(const std::string& name) {
    for (const auto& f : registry_.Collect()) {
      if (f.name == name && !f.metric.empty()) return f.metric[0].gauge.value;
    }
    return -1;
  }
};

TEST_F(StartUpTest, ASymlinkedKubeletRootNeverReleasesAVolumeUnderItsPodsOnRestart) {
  // /var/lib/kubelet -> /data/kubelet: mountinfo shows /data/kubelet/..., kubelet passes
  // /var/lib/kubelet/... An older agent journaled kubelet's form; its restart compared strings,
  // found "no pod", and released the volume (ACL, lease, session) under the running pod.
  mounter_.fs = "xfs";
  auto o = options();
  o.kubelet_root_real = "/data/kubelet";
  restart(o, arrays_);
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  const std::string real_pod = "/data/kubelet/pods/u1/volumes/datera~iscsi/pv";
  EXPECT_EQ(mounter_.calls.back(), "bind " + real_pod) << "bound at the canonical path";
  EXPECT_EQ(journal_.load_all(nullptr).at(0).pods.at(0).dir, real_pod);

  // The record as the older agent wrote it: kubelet's (symlinked) form.
  auto old = journal_.load_all(nullptr).at(0);
  old.pods[0].dir = pod_;
  save(old);
  const auto summary = restart(o, arrays_);
  EXPECT_NE(summary.find("reconciled: 1 volume(s) in use"), std::string::npos) << summary;
  EXPECT_EQ(acl_removals(), 0) << "the node stays in the ACL";
  EXPECT_EQ(std::count(mounter_.calls.begin(), mounter_.calls.end(),
                       "unmount /var/lib/datera-agent/staging/vol-1"),
            0);
  EXPECT_EQ(journal_.load_all(nullptr).at(0).pods.at(0).dir, real_pod) << "canonical from now on";

  // kubelet's unmount names the symlinked path: it is the same pod mount.
  ASSERT_EQ(call("unmount", pod_)["status"], "Success");
  EXPECT_EQ(acl_removals(), 1);
  EXPECT_TRUE(journal_.load_all(nullptr).empty());
}

TEST_F(StartUpTest, AMountOfTheVolumeTheJournalDoesNotNameKeepsTheVolume) {
  mounter_.fs = "xfs";
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  // The journal names a pod path that is not mounted, while the volume's filesystem is mounted at
  // another (a lost journal update, a path spelled another way): a string mismatch.
  const std::string other = "/var/lib/kubelet/pods/u7/volumes/datera~iscsi/pv";
  for (auto& m : mounter_.table) {
    if (m.target == pod_) m.target = other;
  }
  restart(options(), arrays_);
  EXPECT_EQ(acl_removals(), 0) << "never released while its filesystem is mounted";
  const auto rec = journal_.load_all(nullptr).at(0);
  ASSERT_EQ(rec.pods.size(), 1u);
  EXPECT_EQ(rec.pods[0].dir, other) << "the mount is adopted as the volume's user";
}

TEST_F(StartUpTest, PathsWithSymlinksOtherLayoutsOrControlCharactersAreRefusedBeforeAnything) {
  mounter_.symlinks = {"/var/lib/kubelet/pods/u9/volumes"};
  auto r = call("mount", "/var/lib/kubelet/pods/u9/volumes/datera~iscsi/pv", opts("vol-1"));
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("symbolic link"), std::string::npos) << r.dump();
  for (const std::string& bad :
       {std::string("/var/lib/kubelet/pods/u1/volumes/other~driver/pv"),
        std::string("/var/lib/kubelet/pods/u1/pv"),
        std::string("/var/lib/kubelet/pods/u1/volumes/datera~iscsi/pv/deeper"),
        std::string("/var/lib/kubelet/pods/u1/volumes/datera~iscsi/pv\nFAKE"),
        std::string("/var/lib/kubelet/pods/u1/volumes/datera~iscsi/pv") + '\0' + "/../../../etc"}) {
    auto refused = call("mount", bad, opts("vol-1"));
    EXPECT_EQ(refused["status"], "Failure") << bad;
    EXPECT_EQ(call("unmount", bad)["status"], "Failure") << bad;
  }
  EXPECT_TRUE(arrays_.array.calls.empty());
  EXPECT_TRUE(initiator_.calls.empty());
  EXPECT_TRUE(mounter_.calls.empty());
}

TEST_F(StartUpTest, AFailedMountThatNeverReachedTheAclNeedsNoArrayToRollBack) {
  // The array is down from the start: the mount fails at its first array call, and its rollback
  // used to need that same array to leave an ACL it never joined, leaving a detaching record for
  // every start-up to retry (minutes each) before serving.
  DownArrays down;
  restart(options(), down);
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Failure");
  EXPECT_EQ(down.array.calls, 1) << "only the call that failed";
  EXPECT_TRUE(journal_.load_all(nullptr).empty()) << "nothing left to undo";
  EXPECT_TRUE(manager_->volumes().empty());
}

TEST_F(StartUpTest, LeftoverReleasesRunAfterReconcileAndAreSetAsideAfterRepeatedFailures) {
  save(leftover("vol-1"));
  Record nothing = leftover("vol-2");
  nothing.acl_added = false;  // failed before the ACL: dropped without the array
  save(nothing);
  DownArrays down;
  const auto summary = restart(options(), down);
  EXPECT_EQ(down.array.calls, 0) << "reconcile never waits for the array: " << summary;
  EXPECT_NE(summary.find("1 to release in the background"), std::string::npos) << summary;
  EXPECT_NE(summary.find("1 record(s) with nothing to undo dropped"), std::string::npos) << summary;

  testing::run_async(ioc_, manager_->release_leftovers());
  EXPECT_EQ(down.array.calls, 3) << "release_attempts";
  const auto v = manager_->volumes();
  ASSERT_EQ(v.size(), 1u) << v.dump();
  EXPECT_EQ(v[0]["volume"], "vol-1");
  EXPECT_EQ(v[0]["set_aside"], true);
  EXPECT_EQ(v[0]["release_failures"], 3);
  EXPECT_NE(v[0]["last_error"].get<std::string>().find("connection refused"), std::string::npos);
  EXPECT_EQ(metric("datera_agent_volumes_set_aside"), 1);
  EXPECT_EQ(journal_.load_all(nullptr).size(), 1u) << "kept: the node may still be in its ACL";

  // An operator's release once the array is back: released, no longer set aside.
  restart(options(), arrays_);
  testing::run_async(ioc_, manager_->release_leftovers());
  EXPECT_EQ(acl_removals(), 1);
  EXPECT_TRUE(manager_->volumes().empty());
  EXPECT_EQ(metric("datera_agent_volumes_set_aside"), 0);
}

TEST_F(StartUpTest, AVolumeWhosePodMountACrashRemovedIsReleasedAfterStartUp) {
  // Killed right after the unbind of its last pod: the record still says attached.
  mounter_.fs = "xfs";
  ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  std::erase_if(mounter_.table, [&](const mount::MountEntry& m) { return m.target == pod_; });
  ASSERT_EQ(journal_.load_all(nullptr).at(0).phase, Phase::attached);
  restart(options(), arrays_);
  testing::run_async(ioc_, manager_->release_leftovers());
  EXPECT_EQ(acl_removals(), 1) << "released like a last unmount";
  EXPECT_TRUE(mounter_.table.empty());
  EXPECT_TRUE(journal_.load_all(nullptr).empty());
  EXPECT_EQ(call("unmount", pod_)["status"], "Success") << "kubelet's retry finds it done";
}

TEST_F(StartUpTest, ARecordWhoseReleaseKeepsCrashingTheAgentIsSetAside) {
  save(leftover("vol-1"));
  // Three starts died while releasing it (the count note_attempt() leaves behind).
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(testing::run_async(ioc_, journal_.note_attempt("vol-1")));
  EXPECT_EQ(journal_.attempts("vol-1"), 3);
  restart(options(), arrays_);
  testing::run_async(ioc_, manager_->release_leftovers());
  EXPECT_TRUE(arrays_.array.calls.empty()) << "not handled again";
  EXPECT_TRUE(journal_.load_all(nullptr).empty()) << "moved out of the journal";
  const auto v = manager_->volumes();
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0]["phase"], "set_aside");
  EXPECT_NE(v[0]["record"].get<std::string>().find("vol-1.json.set-aside-"), std::string::npos);
  EXPECT_EQ(metric("datera_agent_volumes_set_aside"), 1);

  // Two deaths are not yet a loop: it is released as usual, and the count cleared.
  save(leftover("vol-1"));
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(testing::run_async(ioc_, journal_.note_attempt("vol-1")));
  restart(options(), arrays_);
  testing::run_async(ioc_, manager_->release_leftovers());
  EXPECT_EQ(acl_removals(), 1);
  EXPECT_EQ(journal_.attempts("vol-1"), 0);
}

TEST_F(StartUpTest, ARecordFailingTheRequestChecksIsSetAsideNeverActedOn) {
  Record outside = leftover("vol-1");
  outside.staging = "/etc";  // checksummed, yet not a path this agent would ever mount at
  save(outside);
  Record pod_outside = leftover("vol-2");
  pod_outside.phase = Phase::attached;
  pod_outside.pods.push_back({"/var/lib/kubelet/../../etc", false});
  save(pod_outside);
  restart(options(), arrays_);
  testing::run_async(ioc_, manager_->release_leftovers());
  EXPECT_TRUE(mounter_.calls.empty()) << "nothing unmounted";
  EXPECT_TRUE(arrays_.array.calls.empty());
  EXPECT_TRUE(journal_.load_all(nullptr).empty());
  EXPECT_EQ(manager_->volumes().size(), 2u);
}

// Controller mode (attach: true): the node logs in once the controller granted it the volume, and
// never touches the ACL or the lease itself.
class ControllerModeTest : public ManagerTest {
 protected:
  ControllerModeTest() {
    ManagerOptions o;
    o.node_name = "node-a";
    o.kubelet_root = "/var/lib/kubelet";
    o.default_backend.host = "10.0.0.1";
    o.default_backend.credentials = {"admin", "password"};
    o.controller_attach = true;
    manager_ = std::make_unique<Manager>(o, arrays_, initiator_, mounter_, journal_, metrics_,
                                         null_logger());
    (void)testing::run_async(ioc_, manager_->reconcile());
    arrays_.array.names.insert("vol-1");
  }
  void grant(const std::string& node, uint64_t epoch) {
    ownership::Lease l;
    l.owner = node;
    l.owner_iqn = node == "node-a" ? kIqn : "iqn.1993-08.org.debian:01:" + node;
    l.epoch = epoch;
    arrays_.array.md["vol-1"] = ownership::encode(l);
  }
  flex::Json node_call(const std::string& command, std::vector<std::string> args,
                       flex::Json options = flex::Json::object()) {
    flex::Request r;
    r.command = command;
    r.args = std::move(args);
    r.options = std::move(options);
    flexvolume::VolumeAdapter flex(*manager_, metrics_);
    if (command == "waitforattach") return testing::run_async(ioc_, flex.waitforattach(r));
    if (command == "mountdevice") return testing::run_async(ioc_, flex.mountdevice(r));
    return testing::run_async(ioc_, flex.unmountdevice(r));
  }
  /// waitforattach, mountdevice and mount, as kubelet runs them.
  void bring_up() {
    ASSERT_EQ(node_call("waitforattach", {""}, opts("vol-1"))["status"], "Success");
    ASSERT_EQ(node_call("mountdevice", {kDeviceMount, "/dev/sdz"}, opts("vol-1"))["status"],
              "Success");
    ASSERT_EQ(call("mount", pod_, opts("vol-1"))["status"], "Success");
  }
  /// The node's writes to the array but its formatted record (written after its mkfs).
  size_t array_writes() const {
    const auto all = std::count_if(
        arrays_.array.calls.begin(), arrays_.array.calls.end(), [](const std::string& c) {
          return c.rfind("acl", 0) == 0 || c.rfind("metadata", 0) == 0 || c.rfind("delete", 0) == 0;
        });
    return static_cast<size_t>(all) -
           static_cast<size_t>(counter_value(registry_, "datera_agent_volume_format_records_total",
                                             "result", "written"));
  }
  static constexpr const char* kIqn = "iqn.1993-08.org.debian:01:node-a";
  const std::string kDeviceMount =
      "/var/lib/kubelet/plugins/kubernetes.io/flexvolume/datera/iscsi/mounts/pv-1";
};

TEST_F(ControllerModeTest, WaitForAttachWaitsForTheControllersGrantToThisNode) {
  auto r = node_call("waitforattach", {""}, opts("vol-1"));
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("not attached to this node (node-a) yet"),
            std::string::npos)
      << r.dump();
  grant("node-b", 1);
  r = node_call("waitforattach", {""}, opts("vol-1"));
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("names node node-b"), std::string::npos);
  EXPECT_TRUE(initiator_.calls.empty()) << "no login before the grant";
  EXPECT_TRUE(journal_.load_all(nullptr).empty());

  grant("node-a", 2);
  r = node_call("waitforattach", {""}, opts("vol-1"));
  ASSERT_EQ(r["status"], "Success") << r.dump();
  EXPECT_EQ(r["device"], "/dev/sdz");
  EXPECT_EQ(journal_.load_all(nullptr).at(0).epoch, 2u);
}

TEST_F(ControllerModeTest, KubeletsSplitFlowStagesBindsAndUnstagesWithoutTouchingTheGrant) {
  grant("node-a", 1);
  mounter_.fs = std::nullopt;
  bring_up();
  EXPECT_EQ(mounter_.formats, 1);
  EXPECT_EQ(mounter_.calls,
            (std::vector<std::string>{"mount xfs " + kDeviceMount, "bind " + pod_}));
  ASSERT_EQ(call("unmount", pod_)["status"], "Success");
  EXPECT_TRUE(initiator_.calls.back().rfind("connect", 0) == 0)
      << "the last pod leaving does not log out: unmountdevice does";
  ASSERT_EQ(node_call("unmountdevice", {kDeviceMount})["status"], "Success");
  EXPECT_EQ(mounter_.calls.back(), "unmount " + kDeviceMount);
  EXPECT_EQ(initiator_.calls.back(), "disconnect uuid-1");
  EXPECT_TRUE(journal_.load_all(nullptr).empty());
  EXPECT_EQ(node_call("unmountdevice", {kDeviceMount})["status"], "Success") << "idempotent";
  EXPECT_EQ(array_writes(), 0u) << "the ACL and the lease are the controller's";
  EXPECT_EQ(arrays_.array.md["vol-1"]["formatted"], "true");
  EXPECT_EQ(ownership::decode(arrays_.array.md["vol-1"]).owner, "node-a") << "the grant stays";
}

TEST_F(ControllerModeTest, MountBeforeMountDeviceAndUnmountDeviceUnderAPodAreRefused) {
  grant("node-a", 1);
  mounter_.fs = "xfs";
  auto r = call("mount", pod_, opts("vol-1"));
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("not staged on this node"), std::string::npos);
  bring_up();
  r = node_call("unmountdevice", {kDeviceMount});
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("still use it"), std::string::npos);
  EXPECT_TRUE(mounter_.calls.back() == "bind " + pod_) << "nothing unmounted";
  r = node_call("mountdevice", {"/etc/evil", "/dev/sdz"}, opts("vol-1"));
  EXPECT_EQ(r["status"], "Failure") << "paths outside kubelet_root are refused";
}

TEST_F(ControllerModeTest, AVolumeTheControllerGaveToAnotherNodeIsSelfFencedHere) {
  grant("node-a", 1);
  mounter_.fs = "xfs";
  bring_up();
  testing::run_async(ioc_, manager_->renew_leases());
  EXPECT_EQ(manager_->volumes().size(), 1u) << "still granted: kept";
  grant("node-b", 2);  // force-detached from node-a and attached to node-b
  testing::run_async(ioc_, manager_->renew_leases());
  EXPECT_TRUE(mounter_.table.empty()) << "pod bind and staging mount are gone";
  EXPECT_EQ(initiator_.calls.back(), "disconnect uuid-1");
  EXPECT_TRUE(manager_->volumes().empty());
  EXPECT_EQ(array_writes(), 0u);
}

TEST_F(ControllerModeTest, DetachedWhileOnlyLoggedInJustLogsOut) {
  grant("node-a", 1);
  ASSERT_EQ(node_call("waitforattach", {""}, opts("vol-1"))["status"], "Success");
  arrays_.array.md["vol-1"] = ownership::encode(ownership::Lease{"", "", 1, 0, "", ""});
  testing::run_async(ioc_, manager_->renew_leases());
  EXPECT_EQ(initiator_.calls.back(), "disconnect uuid-1");
  EXPECT_TRUE(journal_.load_all(nullptr).empty());
}

TEST_F(ControllerModeTest, ReconcileKeepsKubeletsDeviceMountAndDropsAMereLogin) {
  grant("node-a", 1);
  mounter_.fs = "xfs";
  ASSERT_EQ(node_call("waitforattach", {""}, opts("vol-1"))["status"], "Success");
  ASSERT_EQ(node_call("mountdevice", {kDeviceMount, "/dev/sdz"}, opts("vol-1"))["status"],
            "Success");
  // A restart: a second manager over the same journal and host.
  ManagerOptions o;
  o.node_name = "node-a";
  o.default_backend.host = "10.0.0.1";
  o.default_backend.credentials = {"admin", "password"};
  o.controller_attach = true;
  Manager again(o, arrays_, initiator_, mounter_, journal_, metrics_, null_logger());
  (void)testing::run_async(ioc_, again.reconcile());
  EXPECT_EQ(again.volumes().size(), 1u) << "staged, no pod yet: kubelet's, kept";
  EXPECT_EQ(mounter_.table.size(), 1u);
  EXPECT_EQ(array_writes(), 0u);
}

TEST_F(ControllerModeTest, GiveUpKeepsKubeletsDeviceMountUnlessForcedAndNeverTouchesTheGrant) {
  grant("node-a", 1);
  mounter_.fs = "xfs";
  bring_up();
  ASSERT_EQ(call("unmount", pod_)["status"], "Success");
  auto kept = testing::run_async(ioc_, manager_->give_up("vol-1", false));
  EXPECT_EQ(kept.outcome, GiveUp::Outcome::staged);
  EXPECT_NE(kept.message.find(kDeviceMount), std::string::npos) << kept.message;
  EXPECT_NE(kept.message.find("--force"), std::string::npos) << kept.message;
  EXPECT_EQ(mounter_.table.size(), 1u) << "kubelet's device mount is kept";

  auto forced = testing::run_async(ioc_, manager_->give_up("vol-1", true));
  EXPECT_EQ(forced.outcome, GiveUp::Outcome::released) << forced.message;
  EXPECT_NE(forced.message.find("stays the controller's"), std::string::npos) << forced.message;
  EXPECT_TRUE(mounter_.table.empty());
  EXPECT_EQ(initiator_.calls.back(), "disconnect uuid-1");
  EXPECT_EQ(array_writes(), 0u) << "the ACL and the ownership record are the controller's";
  EXPECT_EQ(node_call("unmountdevice", {kDeviceMount})["status"], "Success")
      << "kubelet's later unmountdevice finds nothing to do";
}

TEST_F(ControllerModeTest, GiveUpLogsOutAVolumeOnlyLoggedInForAWaitForAttach) {
  grant("node-a", 1);
  ASSERT_EQ(node_call("waitforattach", {""}, opts("vol-1"))["status"], "Success");
  auto done = testing::run_async(ioc_, manager_->give_up("vol-1", false));
  EXPECT_EQ(done.outcome, GiveUp::Outcome::released) << done.message;
  EXPECT_EQ(initiator_.calls.back(), "disconnect uuid-1");
  EXPECT_TRUE(journal_.load_all(nullptr).empty());
  EXPECT_EQ(array_writes(), 0u);
}

}  // namespace
}  // namespace datera::volume

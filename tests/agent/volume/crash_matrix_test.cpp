// The unit tier's crash matrix: for every crash point of the step table (volume::crash_points()),
// run the operation with a hook that throws there (the process dying between two steps), then
// start a fresh Manager over the same host fakes, array and journal directory, reconcile and
// release the leftovers as the agent does at start-up, and check that nothing is left behind:
// no mount, session, map, ACL entry, lease or journal record. Where the crash came after the
// operation's work was done (the volume is in use), the state must be consistent instead, the
// kubelet's retried call must succeed, and tearing it down must leave nothing.
//
// The host tier (tests/integration/volume_test.cpp) kills the real agent at a sample of them.

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "agent/ownership/lease.h"
#include "agent/volume/manager.h"
#include "tests/agent/volume/fakes.h"
#include "tests/testing/fake_array.h"
#include "tests/testing/run_async.h"

namespace datera::volume {
namespace {

using namespace std::chrono_literals;

/// The agent dying at a crash point.
struct Crash : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr const char* kIqn = "iqn.1993-08.org.debian:01:node-a";
const std::string kPod = "/var/lib/kubelet/pods/u1/volumes/datera~iscsi/pv";
const std::string kDeviceMount =
    "/var/lib/kubelet/plugins/kubernetes.io/flexvolume/datera/iscsi/mounts/pv-1";
const std::string kCsiTarget = "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/pv/mount";
const std::string kCsiStaging =
    "/var/lib/kubelet/plugins/kubernetes.io/csi/agent.iscsi.datera.io/h1/globalmount";

/// A private directory on tmpfs when there is one: the matrix writes a few thousand journal
/// records, and each is fsync'd.
class ScratchDir {
 public:
  ScratchDir() {
    for (const char* base : {"/dev/shm", "/tmp"}) {
      std::string tmpl = std::string(base) + "/dt-crash-XXXXXX";
      if (::mkdtemp(tmpl.data()) != nullptr) {
        path_ = tmpl;
        return;
      }
    }
    throw std::runtime_error("mkdtemp failed");
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// "mount:after_logout" -> {"mount", "logout"}.
std::pair<std::string, std::string> split(const std::string& point) {
  const auto colon = point.find(':');
  return {point.substr(0, colon), point.substr(colon + std::string(":after_").size())};
}

class CrashMatrix : public ::testing::TestWithParam<std::string> {
 protected:
  CrashMatrix() : journal_(dir_ / "journal", pool_, null_logger()) {
    arrays_.array.uuid = "7f5c3a5e-89ab-4cde-8f01-23456789abcd";
  }

  /// A (re)start of the agent: a new Manager (and lease coordinator) over the same host, array and
  /// journal, crashing at `crash_at` ("" = nowhere); yields reconcile's summary.
  void start(const std::string& crash_at) {
    ManagerOptions o = base_manager_options();
    // CSI volumes are granted whatever FlexVolume's mode: here beside FlexVolume's agent mode,
    // with its lease coordinator (the usual node DaemonSet).
    o.controller_attach = controller_ && !csi_;
    o.release_attempts = 1;
    o.release_retry_delay = 1ms;
    o.crash_point = [this, crash_at](const std::string& point) {
      fired_.push_back(point);
      if (point == crash_at) throw Crash(point);
    };
    manager_.reset();
    coordinator_.reset();
    if (!controller_ || csi_) {
      ownership::Options oo;
      oo.node = "node-a";
      oo.iqn = kIqn;
      oo.ttl = 1s;
      oo.settle = 4ms;
      oo.write_bound = 2ms;
      oo.poll = 1ms;
      coordinator_ =
          std::make_unique<ownership::Coordinator>(ioc_.get_executor(), oo, null_logger());
    }
    manager_ = std::make_unique<Manager>(o, arrays_, initiator_, mounter_, journal_, metrics_,
                                         null_logger(), &multipath_, coordinator_.get());
    (void)testing::run_async(ioc_, manager_->reconcile());
  }
  /// What the agent runs after its start-up reconcile, while it serves.
  void release_leftovers() { testing::run_async(ioc_, manager_->release_leftovers()); }

  edf::VolumeOptions volume() const {
    auto vo = edf::parse_volume_options({{"volumeID", "vol-1"}, {"kubernetes.io/fsType", "xfs"}},
                                        manager_->options().default_backend);
    return *vo;
  }
  template <typename T>
  static void expect_ok(const VolumeResult<T>& r, const char* what) {
    EXPECT_TRUE(r.ok()) << what << ": " << (r ? std::string() : r.error().message());
  }
  // kubelet's calls, in the core's words.
  void mount() {
    PublishRequest req{"vol-1", pod(), false, std::nullopt, mode()};
    if (!controller_) req.stage = StageRequest{volume(), {}, "", true};
    expect_ok(testing::run_async(ioc_, manager_->publish(req)), "mount");
  }
  void unmount() {
    expect_ok(testing::run_async(ioc_, manager_->unpublish(pod(), mode())), "unmount");
  }
  Mode mode() const { return csi_ ? Mode::csi : controller_ ? Mode::controller : Mode::agent; }
  const std::string& pod() const { return csi_ ? kCsiTarget : kPod; }
  const std::string& staging() const { return csi_ ? kCsiStaging : kDeviceMount; }
  void waitforattach() {
    if (csi_) return;  // CSI stages in one call (NodeStageVolume logs in itself)
    StageRequest req{volume(), {}, "", false, Mode::controller};
    expect_ok(testing::run_async(ioc_, manager_->stage(req)), "waitforattach");
  }
  void mountdevice() {
    StageRequest req{volume(), {}, staging(), true, mode()};
    expect_ok(testing::run_async(ioc_, manager_->stage(req)), "mountdevice");
  }
  void unmountdevice() {
    expect_ok(testing::run_async(ioc_, manager_->unstage(staging(), mode())), "unmountdevice");
  }
  /// The controller's attach (or its move of the volume to another node).
  void grant(const std::string& node, uint64_t epoch) {
    arrays_.array.names.insert("vol-1");
    ownership::Lease l;
    l.owner = node;
    l.owner_iqn = node == "node-a" ? kIqn : "iqn.1993-08.org.debian:01:" + node;
    l.epoch = epoch;
    arrays_.array.md["vol-1"] = ownership::encode(l);
  }
  /// The pod's bind removed behind kubelet's back (or by a crash mid-unmount).
  void lose_bind() {
    std::erase_if(mounter_.table, [this](const mount::MountEntry& m) { return m.target == pod(); });
  }

  /// Runs the operation that crosses crash point `op:after_<step>`, with a failure late enough
  /// that the operation's rollback crosses it when `rollback`. False: no scenario for `op`.
  bool drive(const std::string& op, bool rollback) {
    controller_ = op == "waitforattach" || op == "mountdevice" || op == "unmountdevice" ||
                  op == "detached" || op == "self_fence";
    start("");
    if (controller_) grant("node-a", 1);
    if (op == "move") mounter_.fs = "xfs";
    // Set up without the hook, then crash in the operation itself.
    auto crash_in = [&](auto&& operation) {
      start(GetParam());
      operation();
    };
    if (op == "mount") {
      if (rollback) mounter_.bind_error = Error{"bind refused"};
      crash_in([&] { mount(); });
    } else if (op == "unmount") {
      mount();
      crash_in([&] { unmount(); });
    } else if (op == "waitforattach") {
      if (rollback) multipath_.ensure_error = Error{"device-mapper refused"};
      crash_in([&] { waitforattach(); });
    } else if (op == "mountdevice") {
      waitforattach();
      if (rollback) mounter_.mount_error = Error{"mount refused"};
      crash_in([&] { mountdevice(); });
    } else if (op == "unmountdevice") {
      waitforattach();
      mountdevice();
      crash_in([&] { unmountdevice(); });
    } else if (op == "reconcile") {
      mount();
      lose_bind();
      start(GetParam());
      release_leftovers();
    } else if (op == "release") {
      mount();
      lose_bind();
      crash_in([&] { (void)testing::run_async(ioc_, manager_->give_up("vol-1", false)); });
    } else if (op == "detached") {
      waitforattach();
      grant("node-b", 2);
      crash_in([&] { testing::run_async(ioc_, manager_->renew_leases()); });
    } else if (op == "self_fence") {
      waitforattach();
      mountdevice();
      mount();
      grant("node-b", 2);
      crash_in([&] { testing::run_async(ioc_, manager_->renew_leases()); });
    } else if (op == "move") {
      mount();
      arrays_.array.ips = {"172.28.0.2"};
      crash_in([&] { (void)testing::run_async(ioc_, manager_->check_access("vol-1", "test")); });
    } else {
      return false;
    }
    return true;
  }

  /// Nothing of the volume is left on the host, the array or in the journal.
  void expect_nothing_left(const std::string& when) {
    SCOPED_TRACE(when);
    for (const auto& m : mounter_.table) ADD_FAILURE() << "mount left at " << m.target;
    EXPECT_TRUE(initiator_.live.empty()) << initiator_.live.size() << " session(s) left";
    for (const auto& [name, _] : multipath_.maps) ADD_FAILURE() << "map left: " << name;
    EXPECT_TRUE(journal_.load_all(nullptr).empty()) << "journal record left";
    EXPECT_TRUE(manager_->volumes().empty()) << manager_->volumes().dump();
    if (!controller_) {  // the ACL and the lease are the controller's in controller mode
      EXPECT_TRUE(arrays_.array.acl_iqns.empty()) << "ACL entry left";
      EXPECT_TRUE(ownership::decode(arrays_.array.md["vol-1"]).free()) << "lease left";
    }
  }

  /// The volume is in use after the restart: pods mounted on its staging mount, its session
  /// and (agent mode) this node in the ACL holding the lease.
  void expect_consistent() {
    SCOPED_TRACE("in use after the restart");
    const auto records = journal_.load_all(nullptr);
    ASSERT_EQ(records.size(), 1u);
    const Record& rec = records[0];
    EXPECT_EQ(rec.phase, Phase::attached);
    const auto table = std::make_shared<const mount::MountTable>(mounter_.table);
    EXPECT_NE(table->at(rec.staging), nullptr) << "staging mount gone";
    for (const auto& p : rec.pods) EXPECT_NE(table->at(p.dir), nullptr) << p.dir;
    EXPECT_FALSE(initiator_.live.empty()) << "no session";
    if (!controller_) {
      EXPECT_EQ(arrays_.array.acl_iqns, std::vector<std::string>{kIqn});
      EXPECT_EQ(ownership::decode(arrays_.array.md["vol-1"]).owner, "node-a");
    }
  }

  /// The whole check for the crash point GetParam().
  void run_point();

  ScratchDir dir_;
  boost::asio::io_context ioc_;
  boost::asio::thread_pool pool_{1};
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  testing::FakeArrays arrays_;
  FakeInitiator initiator_;
  FakeMounter mounter_;
  FakeMultipath multipath_;
  Journal journal_;
  std::unique_ptr<ownership::Coordinator> coordinator_;
  std::unique_ptr<Manager> manager_;
  bool controller_ = false;
  bool csi_ = false;  ///< the grant-based operations as CSI runs them (CsiCrashMatrix)
  std::vector<std::string> fired_;  ///< every crash point reached, in order
};

void CrashMatrix::run_point() {
  const std::string point = GetParam();
  const auto [op, after] = split(point);
  // Operations that fail after login (or after staging) roll back through release's points.
  const bool rollback = (op == "mount" || op == "waitforattach" || op == "mountdevice") &&
                        (after == "staging_unmount" || after == "logout");
  bool crashed = false;
  try {
    ASSERT_TRUE(drive(op, rollback)) << "no scenario drives operation '" << op << "'";
  } catch (const Crash&) {
    crashed = true;
  }
  ASSERT_TRUE(crashed) << "the scenario for '" << op << "' never reached " << point;
  for (const auto& p : fired_) {
    const auto& all = crash_points();
    EXPECT_NE(std::find(all.begin(), all.end(), p), all.end()) << p << " is not in the table";
  }
  // The agent comes back with the host as the crash left it.
  mounter_.bind_error.reset();
  mounter_.mount_error.reset();
  multipath_.ensure_error.reset();
  start("");
  release_leftovers();
  if (journal_.load_all(nullptr).empty() || (controller_ && mounter_.table.empty())) {
    expect_nothing_left("after the restart");
    return;
  }
  expect_consistent();
  // kubelet's retry of the interrupted call succeeds, and tearing the volume down leaves nothing.
  if (op == "move") {
    const Access a = testing::run_async(ioc_, manager_->check_access("vol-1", "retry"));
    EXPECT_TRUE(a == Access::moved || a == Access::unchanged) << to_string(a);
    EXPECT_EQ(initiator_.live.size(), 1u) << "the old portal's session is left";
  } else {
    mount();
  }
  unmount();
  expect_nothing_left("after the retry and the teardown");
}

TEST_P(CrashMatrix, ARestartAfterACrashHereLeavesNothingBehindOrAConsistentVolume) {
  run_point();
}

/// The same over CSI's records (Mode::csi: kubelet's CSI staging and target paths) in an agent
/// whose FlexVolume side runs in agent mode: the operations CSI's node calls run.
class CsiCrashMatrix : public CrashMatrix {
 protected:
  CsiCrashMatrix() { csi_ = true; }
};

TEST_P(CsiCrashMatrix, ARestartAfterACrashHereLeavesNothingBehindOrAConsistentVolume) {
  run_point();
}

std::vector<std::string> csi_points() {
  std::vector<std::string> out;
  for (const auto& p : crash_points()) {
    for (const char* op : {"mountdevice:", "unmountdevice:", "self_fence:"}) {
      if (p.rfind(op, 0) == 0) out.push_back(p);
    }
  }
  return out;
}

std::string point_name(const ::testing::TestParamInfo<std::string>& param) {
  std::string name = param.param;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(EveryPoint, CrashMatrix, ::testing::ValuesIn(crash_points()), point_name);
INSTANTIATE_TEST_SUITE_P(CsiPoints, CsiCrashMatrix, ::testing::ValuesIn(csi_points()), point_name);

TEST(CrashPoints, TheHostTiersNamesAreInTheTable) {
  // tests/integration and operators' DATERA_AGENT_TEST_CRASH_AT use these spellings.
  const auto& all = crash_points();
  for (const char* p :
       {"mount:after_intent", "mount:after_array", "mount:after_target", "mount:after_login",
        "mount:after_map", "mount:after_bind", "mount:after_format", "mount:after_staging",
        "mountdevice:after_format", "mountdevice:after_staging", "unmount:after_unbind",
        "unmount:after_staging_unmount", "reconcile:after_staging_unmount", "unmount:after_logout",
        "unmount:after_array", "move:after_login", "move:after_prune"}) {
    EXPECT_NE(std::find(all.begin(), all.end(), p), all.end()) << p;
  }
}

}  // namespace
}  // namespace datera::volume

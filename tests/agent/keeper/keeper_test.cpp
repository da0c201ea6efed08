#include "agent/keeper/keeper.h"

#include <map>
#include <memory>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "tests/testing/run_async.h"
#include "tests/testing/virtual_clock.h"

namespace datera::keeper {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

const std::string kTarget = "iqn.2013-05.com.daterainc:tc:01:sn:1";

struct ScriptedInitiator : initiator::Initiator {
  std::vector<initiator::Session> now;
  int logouts = 0;
  Clock* clock = nullptr;                 ///< when set, each listing's time goes to `looked`
  std::vector<Clock::time_point> looked;  ///< when the keeper looked (listed the sessions)
  std::string kind() const override { return "scripted"; }
  Result<std::string> initiator_iqn() const override { return std::string("iqn.x"); }
  asio::awaitable<Result<initiator::Device>> connect(const initiator::Target&,
                                                     std::chrono::milliseconds) override {
    co_return Error{"not used"};
  }
  asio::awaitable<Status> disconnect(const initiator::Target&) override {
    ++logouts;
    co_return ok_status();
  }
  asio::awaitable<Status> prune(const initiator::Target&) override { co_return ok_status(); }
  asio::awaitable<Status> refresh(const initiator::Target&) override { co_return ok_status(); }
  asio::awaitable<Result<std::vector<initiator::Session>>> sessions() override {
    if (clock) looked.push_back(clock->now());
    co_return now;
  }
};

initiator::Session session(const std::string& state, const std::string& disk, int sid = 1,
                           const std::string& portal = "10.99.0.10:3260") {
  initiator::Session s;
  s.target_iqn = kTarget;
  s.portal = portal;
  s.state = state;
  s.id = sid;
  s.device = initiator::Device{"/dev/sda", "uuid-1", 8, 0};
  s.device_state = disk;
  return s;
}

class KeeperTest : public ::testing::Test {
 protected:
  KeeperTest()
      : keeper_(
            ioc_.get_executor(), KeeperOptions{}, clock_, initiator_, [this] { return watched_; },
            nullptr, metrics_, null_logger(), hooks()) {}

  KeeperHooks hooks() {
    KeeperHooks h;
    h.fs_failure = [this](const std::string& device) -> std::optional<std::string> {
      auto it = fs_failed_.find(device);
      if (it == fs_failed_.end()) return std::nullopt;
      return it->second;
    };
    return h;
  }

  /// One look at `t` of virtual time after the test's start.
  void look_at(std::chrono::milliseconds t) {
    clock_.advance_to(t0_ + t);
    testing::run_async(ioc_, keeper_.observe());
  }
  double value(const std::string& name) {
    for (const auto& f : registry_.Collect()) {
      if (f.name != name || f.metric.empty()) continue;
      const auto& m = f.metric.front();
      return f.type == prometheus::MetricType::Histogram ? double(m.histogram.sample_count)
                                                         : m.counter.value;
    }
    return -1;
  }

  asio::io_context ioc_;
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  ScriptedInitiator initiator_;
  std::vector<Watched> watched_{{"vol-1", {"vol-1", kTarget, {"10.99.0.10"}, "uuid-1", 0}, "dm-0"}};
  std::map<std::string, std::string> fs_failed_;  ///< device -> the kernel's line
  testing::VirtualClock clock_;
  const Clock::time_point t0_ = clock_.now();
  Keeper keeper_;
};

TEST(Classify, TheBestSessionWins) {
  auto ok = session("LOGGED_IN", "running");
  auto failed = session("FAILED", "blocked");
  auto offline = session("FREE", "transport-offline");
  EXPECT_EQ(classify({}), Health::missing);
  EXPECT_EQ(classify({&ok}), Health::healthy);
  EXPECT_EQ(classify({&failed}), Health::recovering);
  EXPECT_EQ(classify({&offline}), Health::device_offline);
  EXPECT_EQ(classify({&failed, &ok}), Health::healthy) << "one working path is enough";
  auto blocked = session("LOGGED_IN", "blocked");
  EXPECT_EQ(classify({&blocked}), Health::recovering);
  auto offline_logged = session("LOGGED_IN", "offline");
  EXPECT_EQ(classify({&offline_logged}), Health::device_offline);
}

// An outage longer than the replacement timeout ends in a failed filesystem: the session comes
// back, the disk runs, and the pod still gets EIO on every access. The keeper says fs_failed from
// the kernel's line until the volume is mounted afresh, and never counts it as a recovery.
TEST_F(KeeperTest, AFailedFilesystemIsReportedWhateverTheSessionSaysAndIsNoRecovery) {
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(1000ms);
  initiator_.now = {session("FAILED", "transport-offline")};
  look_at(2000ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::device_offline);
  const std::string line =
      "XFS (dm-0): Log I/O error (0x2) detected at xlog_ioend_work+0x6e/0x70 [xfs] "
      "(fs/xfs/xfs_log.c:1400).  Shutting down filesystem.";
  fs_failed_["dm-0"] = line;
  look_at(3000ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::fs_failed);
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(10000ms);
  look_at(12000ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::fs_failed) << "the session is back; the fs is not";
  auto st = keeper_.state("vol-1");
  EXPECT_EQ(st["state"], "fs_failed");
  EXPECT_EQ(st["degraded"], true);
  EXPECT_EQ(st["fs_failure"], line);
  EXPECT_EQ(st["recoveries"], 0);
  EXPECT_DOUBLE_EQ(st["io_blocked_seconds"].get<double>(), 1.0) << "only while it was offline";
  EXPECT_EQ(value("datera_agent_session_recoveries_total"), 0);

  fs_failed_.erase("dm-0");  // the pod restarted: unmounted, and mounted afresh
  look_at(20000ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::healthy);
  st = keeper_.state("vol-1");
  EXPECT_EQ(st["recoveries"], 0) << "a failed filesystem is never a recovery";
  EXPECT_EQ(st["fs_failure"], "");
  EXPECT_EQ(value("datera_agent_session_recoveries_total"), 0);
  ASSERT_EQ(st["transitions"].size(), 3u);
  EXPECT_EQ(st["transitions"][1]["to"], "fs_failed");
  EXPECT_EQ(st["transitions"][2]["to"], "healthy");
}

TEST_F(KeeperTest, AStallThatRecoversIsMeasuredCountedAndNeverLoggedOut) {
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(1000ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::healthy);
  initiator_.now = {session("FAILED", "blocked")};
  look_at(1500ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::recovering);
  look_at(3000ms);
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(4200ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::healthy);
  const auto st = keeper_.state("vol-1");
  EXPECT_EQ(st["recoveries"], 1);
  EXPECT_DOUBLE_EQ(st["last_recovery_seconds"].get<double>(), 2.7);
  EXPECT_DOUBLE_EQ(st["io_blocked_seconds"].get<double>(), 2.7);
  EXPECT_EQ(st["session"], 1);
  ASSERT_EQ(st["transitions"].size(), 2u);
  EXPECT_EQ(st["transitions"][0]["to"], "recovering");
  EXPECT_EQ(st["transitions"][1]["to"], "healthy");
  EXPECT_EQ(value("datera_agent_session_recoveries_total"), 1);
  EXPECT_EQ(value("datera_agent_session_recovery_duration_seconds"), 1);
  EXPECT_EQ(initiator_.logouts, 0);
}

TEST_F(KeeperTest, AnOfflineDiskIsDegradedAndAlertedButLeftAlone) {
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(0ms);
  initiator_.now = {session("FAILED", "transport-offline")};
  look_at(1000ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::device_offline);
  EXPECT_TRUE(keeper_.state("vol-1")["degraded"].get<bool>());
  EXPECT_EQ(value("datera_agent_session_device_offline_total"), 1);
  EXPECT_EQ(initiator_.logouts, 0) << "never log out a failed session that has a mount";
}

TEST_F(KeeperTest, AMissingSessionIsReportedAndADetachedVolumeIsForgotten) {
  initiator_.now = {};
  look_at(0ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::missing);
  watched_.clear();
  look_at(1000ms);
  EXPECT_FALSE(keeper_.health("vol-1").has_value());
  EXPECT_EQ(keeper_.state("vol-1")["state"], "unknown");
}

TEST_F(KeeperTest, SessionsOfOtherTargetsAreNotOurs) {
  auto other = session("LOGGED_IN", "running");
  other.target_iqn = "iqn.2013-05.com.daterainc:tc:01:sn:2";
  initiator_.now = {other};
  look_at(0ms);
  EXPECT_EQ(keeper_.health("vol-1"), Health::missing);
}

}  // namespace
}  // namespace datera::keeper

namespace datera::keeper {
namespace {

/// The keeper asks for access checks: at the first look, every array_poll_interval, and at once
/// (but not in a loop) when a session fails; one at a time per volume.
class KeeperCheckTest : public ::testing::Test {
 protected:
  KeeperCheckTest() {
    KeeperOptions o;
    o.array_poll_interval = std::chrono::milliseconds(60'000);
    o.min_check_gap = std::chrono::milliseconds(5'000);
    o.io_hold = std::chrono::milliseconds(10'000);
    KeeperHooks h;
    h.check = [this](std::vector<std::string> vs, std::string why) -> asio::awaitable<void> {
      ++calls_;
      for (const auto& v : vs) checks_.push_back(v + " " + why);
      co_return;
    };
    h.fs_failure = [this](const std::string& device) -> std::optional<std::string> {
      if (!fs_failed_.count(device)) return std::nullopt;
      return fs_failed_.at(device);
    };
    h.silent_since = [this](int sid, std::chrono::steady_clock::time_point after)
        -> std::optional<std::chrono::steady_clock::time_point> {
      // As kmsg::Silences: a verdict older than `after` belongs to an earlier stall.
      auto it = silences_.find(sid);
      if (it == silences_.end() || it->second.first < after) return std::nullopt;
      return it->second.second;
    };
    h.paths_active = [this](std::string) -> asio::awaitable<std::optional<bool>> {
      co_return paths_active_;
    };
    h.release_held = [this](std::string v) -> asio::awaitable<bool> {
      released_.push_back(v);
      co_return true;
    };
    keeper_ = std::make_unique<Keeper>(
        ioc_.get_executor(), o, clock_, initiator_, [this] { return watched_; }, nullptr, metrics_,
        null_logger(), std::move(h));
  }
  /// `ms` of virtual time after the test's start.
  Clock::time_point at(int ms) const { return t0_ + std::chrono::milliseconds(ms); }
  double value(const std::string& name) {
    for (const auto& f : registry_.Collect()) {
      if (f.name != name || f.metric.empty()) continue;
      const auto& m = f.metric.front();
      return f.type == prometheus::MetricType::Histogram ? m.histogram.sample_sum : m.counter.value;
    }
    return -1;
  }
  void look_at(std::chrono::milliseconds t) {
    clock_.advance_to(t0_ + t);
    testing::run_async(ioc_, keeper_->observe());
    ioc_.restart();
    ioc_.poll();  // the detached checks
  }

  asio::io_context ioc_;
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  ScriptedInitiator initiator_;
  std::vector<Watched> watched_{{"vol-1", {"vol-1", kTarget, {"10.99.0.10"}, "uuid-1", 0}, "dm-0"}};
  std::map<std::string, std::string> fs_failed_;
  testing::VirtualClock clock_;
  const Clock::time_point t0_ = clock_.now();
  std::vector<std::string> checks_;
  int calls_ = 0;
  /// sid -> (when the kernel declared it silent, since when it was silent)
  std::map<int,
           std::pair<std::chrono::steady_clock::time_point, std::chrono::steady_clock::time_point>>
      silences_;
  std::optional<bool> paths_active_ = true;
  std::vector<std::string> released_;
  std::unique_ptr<Keeper> keeper_;
};

// A portal that goes dark under writes: the kernel declares the session dead 10 s (noop 5/5) after
// it last heard from the target. The pod stalled from then, so the keeper's stall, its recovery
// duration and io_blocked_seconds count from then too, not from when it saw the session fail.
TEST_F(KeeperCheckTest, AStallIsTimedFromWhenTheSessionLastHeardFromTheTarget) {
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(1'000));
  look_at(std::chrono::milliseconds(3'000));
  silences_[1] = {at(12'800), at(2'800)};  // declared at 12.8 s: silent since 2.8 s
  initiator_.now = {session("FAILED", "blocked")};
  look_at(std::chrono::milliseconds(13'000));
  EXPECT_EQ(keeper_->health("vol-1"), Health::recovering);
  EXPECT_NEAR(keeper_->state("vol-1")["io_blocked_seconds"].get<double>(), 10.2, 1e-6)
      << "the detection time is blocked time";
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(20'000));
  EXPECT_EQ(keeper_->health("vol-1"), Health::healthy);
  EXPECT_NEAR(keeper_->state("vol-1")["last_recovery_seconds"].get<double>(), 17.2, 1e-6);
  EXPECT_NEAR(keeper_->state("vol-1")["io_blocked_seconds"].get<double>(), 17.2, 1e-6);
  EXPECT_NEAR(value("datera_agent_session_recovery_duration_seconds"), 17.2, 1e-6);

  // The next stall, without a new verdict (a TCP reset fails the session at once): the old
  // silence belongs to the first stall and is not used again.
  look_at(std::chrono::milliseconds(30'000));
  initiator_.now = {session("FAILED", "blocked")};
  look_at(std::chrono::milliseconds(31'000));
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(33'000));
  EXPECT_NEAR(keeper_->state("vol-1")["last_recovery_seconds"].get<double>(), 2.0, 1e-6);
}

// The session is back after its disk went offline, but I/O failed the map's only path, which
// stays failed until reinstated: the pod's I/O still waits (or fails). Not healthy, and not a
// recovery, until the path is active; meanwhile the volume is checked (the check reinstates).
TEST_F(KeeperCheckTest, AVolumeIsHealthyOnlyOnceItsMapPathIsActiveAgain) {
  watched_.front().map = true;
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(1'000));
  initiator_.now = {session("FREE", "transport-offline")};
  look_at(std::chrono::milliseconds(2'000));
  EXPECT_EQ(keeper_->health("vol-1"), Health::device_offline);
  paths_active_ = false;
  initiator_.now = {session("LOGGED_IN", "running")};
  checks_.clear();
  look_at(std::chrono::milliseconds(8'000));
  EXPECT_EQ(keeper_->health("vol-1"), Health::recovering);
  EXPECT_TRUE(keeper_->state("vol-1")["map_path_failed"].get<bool>());
  EXPECT_EQ(checks_, (std::vector<std::string>{"vol-1 session recovered"}));
  EXPECT_EQ(value("datera_agent_session_recoveries_total"), 0);
  look_at(std::chrono::milliseconds(9'000));
  EXPECT_EQ(keeper_->health("vol-1"), Health::recovering) << "still failed: still waiting";
  look_at(std::chrono::milliseconds(14'000));
  EXPECT_EQ(checks_.size(), 2u) << "a path that stays failed is checked again, min_check_gap apart";
  paths_active_ = true;
  look_at(std::chrono::milliseconds(14'500));
  EXPECT_EQ(keeper_->health("vol-1"), Health::healthy);
  EXPECT_FALSE(keeper_->state("vol-1")["map_path_failed"].get<bool>());
  EXPECT_NEAR(keeper_->state("vol-1")["last_recovery_seconds"].get<double>(), 12.5, 1e-6);
  // Once active, the map is not asked again on every look.
  paths_active_ = false;
  look_at(std::chrono::milliseconds(15'000));
  EXPECT_EQ(keeper_->health("vol-1"), Health::healthy);
}

// multipathd's no_path_retry, done by the keeper: a map without a usable path holds I/O for
// io_hold (10 s here), then its I/O is failed, once; the next outage is held again.
TEST_F(KeeperCheckTest, AMapHoldsIOForIoHoldThenFailsItOnce) {
  watched_.front().map = true;
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(1'000));
  initiator_.now = {session("FAILED", "blocked")};
  look_at(std::chrono::milliseconds(2'000));
  look_at(std::chrono::milliseconds(20'000));
  EXPECT_TRUE(released_.empty()) << "recovering: iscsid's replacement_timeout still holds I/O";
  initiator_.now = {session("FREE", "transport-offline")};
  look_at(std::chrono::milliseconds(21'000));
  EXPECT_TRUE(keeper_->state("vol-1")["io_held"].get<bool>());
  look_at(std::chrono::milliseconds(30'900));
  EXPECT_TRUE(released_.empty()) << "9.9 s of hold";
  look_at(std::chrono::milliseconds(31'000));
  EXPECT_EQ(released_, (std::vector<std::string>{"vol-1"}));
  EXPECT_EQ(value("datera_agent_io_hold_expired_total"), 1);
  EXPECT_TRUE(keeper_->state("vol-1")["io_hold_expired"].get<bool>());
  look_at(std::chrono::milliseconds(45'000));
  EXPECT_EQ(released_.size(), 1u) << "failed once";
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(50'000));
  EXPECT_EQ(keeper_->health("vol-1"), Health::healthy);
  EXPECT_FALSE(keeper_->state("vol-1")["io_hold_expired"].get<bool>());
  initiator_.now = {session("FREE", "transport-offline")};
  look_at(std::chrono::milliseconds(60'000));
  look_at(std::chrono::milliseconds(70'000));
  EXPECT_EQ(released_.size(), 2u) << "the next outage is held, and failed, again";
}

TEST_F(KeeperCheckTest, AVolumeOnTheRawDiskHoldsNothingAndHasNoMapToAsk) {
  watched_.front().map = false;
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(1'000));
  initiator_.now = {session("FREE", "transport-offline")};
  look_at(std::chrono::milliseconds(2'000));
  look_at(std::chrono::milliseconds(60'000));
  EXPECT_TRUE(released_.empty());
  EXPECT_FALSE(keeper_->state("vol-1")["io_held"].get<bool>());
  paths_active_ = false;
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(61'000));
  EXPECT_EQ(keeper_->health("vol-1"), Health::healthy);
}

TEST_F(KeeperCheckTest, ChecksAtFirstSightOnFailureAndOnThePollInterval) {
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(1'000));
  EXPECT_EQ(checks_, std::vector<std::string>{"vol-1 poll"});
  look_at(std::chrono::milliseconds(2'000));
  EXPECT_EQ(checks_.size(), 1u) << "nothing due";
  initiator_.now = {session("FAILED", "blocked")};
  look_at(std::chrono::milliseconds(7'000));
  ASSERT_EQ(checks_.size(), 2u);
  EXPECT_EQ(checks_[1], "vol-1 session recovering") << "a failing session is checked at once";
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(8'000));
  initiator_.now = {session("FAILED", "blocked")};
  look_at(std::chrono::milliseconds(9'000));
  EXPECT_EQ(checks_.size(), 2u) << "failure checks are at least min_check_gap apart";
  look_at(std::chrono::milliseconds(67'001));
  EXPECT_EQ(checks_.size(), 3u) << "the poll interval";
}

// A session back after a stall is checked at once: the kernel may have failed the volume's map
// path during the stall, and only the check reinstates it (not the next periodic one, a minute on).
TEST_F(KeeperCheckTest, ARecoveredSessionIsCheckedAtOnce) {
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(1'000));
  initiator_.now = {session("FAILED", "transport-offline")};
  look_at(std::chrono::milliseconds(7'000));
  ASSERT_EQ(checks_.size(), 2u);
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(30'000));
  ASSERT_EQ(checks_.size(), 3u);
  EXPECT_EQ(checks_[2], "vol-1 session recovered");
  look_at(std::chrono::milliseconds(32'000));
  EXPECT_EQ(checks_.size(), 3u) << "once";
}

// A session back less than min_check_gap after another check (here the periodic one) still gets
// its check, once the gap has passed: held back, never dropped (the kernel tier lost the path
// reinstatement that way).
TEST_F(KeeperCheckTest, ACheckHeldBackByTheGapIsMadeOnceTheGapHasPassed) {
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(1'000));
  initiator_.now = {session("FAILED", "transport-offline")};
  look_at(std::chrono::milliseconds(20'000));  // checked at once
  look_at(std::chrono::milliseconds(81'000));  // the periodic check
  ASSERT_EQ(checks_.size(), 3u);
  EXPECT_EQ(checks_[2], "vol-1 poll");
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(83'000));
  EXPECT_EQ(checks_.size(), 3u) << "within the gap";
  look_at(std::chrono::milliseconds(85'000));
  EXPECT_EQ(checks_.size(), 3u);
  look_at(std::chrono::milliseconds(87'000));
  ASSERT_EQ(checks_.size(), 4u);
  EXPECT_EQ(checks_.back(), "vol-1 session recovered");
  look_at(std::chrono::milliseconds(89'000));
  EXPECT_EQ(checks_.size(), 4u) << "once";
}

// The same when the filesystem failed during the stall: the volume stays fs_failed, but its
// session is back and the map's path needs reinstating all the same.
TEST_F(KeeperCheckTest, ASessionBackUnderAFailedFilesystemIsCheckedAtOnceToo) {
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(1'000));
  initiator_.now = {session("FAILED", "transport-offline")};
  look_at(std::chrono::milliseconds(7'000));
  fs_failed_["dm-0"] = "XFS (dm-0): Log I/O Error. Shutting down filesystem.";
  look_at(std::chrono::milliseconds(9'000));
  ASSERT_EQ(keeper_->health("vol-1"), Health::fs_failed);
  const size_t before = checks_.size();
  initiator_.now = {session("LOGGED_IN", "running")};
  look_at(std::chrono::milliseconds(30'000));
  EXPECT_EQ(keeper_->health("vol-1"), Health::fs_failed);
  ASSERT_EQ(checks_.size(), before + 1);
  EXPECT_EQ(checks_.back(), "vol-1 session recovered");
}

// The periodic checks due in one look are one call (the manager lists the array once for them);
// a failing session still gets its own, at once.
TEST_F(KeeperCheckTest, PeriodicChecksOfManyVolumesComeAsOneCall) {
  watched_.clear();
  for (int i = 0; i < 50; ++i) {
    const std::string v = "vol-" + std::to_string(i);
    watched_.push_back({v, {v, kTarget + std::to_string(i), {"10.99.0.10"}, "uuid-" + v, 0}, ""});
    auto s = session("LOGGED_IN", "running", i + 1);
    s.target_iqn = kTarget + std::to_string(i);
    initiator_.now.push_back(s);
  }
  look_at(std::chrono::milliseconds(1'000));
  EXPECT_EQ(calls_, 1);
  EXPECT_EQ(checks_.size(), 50u);
  look_at(std::chrono::milliseconds(61'000));
  EXPECT_EQ(calls_, 2);
  EXPECT_EQ(checks_.size(), 100u);
}

// Volumes first seen at different times (a mount storm) fall due at different times; the periodic
// checks still converge on one call per interval, not one per look.
TEST_F(KeeperCheckTest, StaggeredVolumesConvergeOnOneCheckPerInterval) {
  watched_.clear();
  initiator_.now.clear();
  for (int i = 0; i < 40; ++i) {
    const std::string v = "vol-" + std::to_string(i);
    watched_.push_back({v, {v, kTarget + std::to_string(i), {"10.99.0.10"}, "uuid-" + v, 0}, ""});
    auto s = session("LOGGED_IN", "running", i + 1);
    s.target_iqn = kTarget + std::to_string(i);
    initiator_.now.push_back(s);
    look_at(std::chrono::milliseconds(1'000 * (i + 1)));  // one more volume every second
  }
  const int during = calls_;
  EXPECT_EQ(during, 40) << "each new volume is checked at first sight";
  // Five minutes of looks every 2 s: without alignment 40 staggered volumes make a call on almost
  // every look (about 40 a minute); aligned, about one a minute.
  for (int t = 42; t <= 340; t += 2) look_at(std::chrono::milliseconds(1'000 * t));
  EXPECT_LE(calls_ - during, 10);
  EXPECT_GE(calls_ - during, 4);
}

}  // namespace
}  // namespace datera::keeper

namespace datera::keeper {
namespace {

/// A udev monitor whose events the test fires (at a virtual time of its choosing).
struct FiredMonitor : udev::Monitor {
  explicit FiredMonitor(const asio::any_io_executor& ex)
      : event(ex, std::chrono::steady_clock::time_point::max()) {}
  asio::awaitable<void> wait(std::chrono::milliseconds) override {
    boost::system::error_code ec;  // the keeper's own clock bounds the wait
    co_await event.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  void on_event(std::function<void(const udev::Event&)>) override {}
  bool degraded() const override { return false; }
  void fire() { event.cancel(); }
  asio::steady_timer event;
};

/// The keeper's own loop, run(), in virtual time: when it looks, and what ends its wait. Every
/// wait goes through the clock, so minutes of polls take no wall time.
class KeeperLoopTest : public ::testing::Test {
 protected:
  KeeperLoopTest() {
    initiator_.clock = &clock_;
    initiator_.now = {session("LOGGED_IN", "running")};
  }
  void start(udev::Monitor* monitor = nullptr) {
    KeeperOptions o;
    o.poll_interval = std::chrono::milliseconds(2'000);
    o.stall_poll_interval = std::chrono::milliseconds(500);
    keeper_ = std::make_unique<Keeper>(
        ioc_.get_executor(), o, clock_, initiator_, [this] { return watched_; }, monitor, metrics_,
        null_logger());
    asio::co_spawn(ioc_, keeper_->run(), [this](const std::exception_ptr& e) {
      error_ = e;
      ended_ = true;
    });
  }
  /// Runs until the keeper has looked `n` times in all.
  void run_until_looks(size_t n) {
    clock_.run_until(ioc_, [&] { return initiator_.looked.size() >= n; });
  }
  /// When it looked, in ms after the test's start.
  std::vector<int64_t> looks() const {
    std::vector<int64_t> out;
    for (auto t : initiator_.looked) {
      out.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(t - t0_).count());
    }
    return out;
  }

  asio::io_context ioc_;
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  ScriptedInitiator initiator_;
  std::vector<Watched> watched_{{"vol-1", {"vol-1", kTarget, {"10.99.0.10"}, "uuid-1", 0}, "dm-0"}};
  testing::VirtualClock clock_;
  const Clock::time_point t0_ = clock_.now();
  std::unique_ptr<Keeper> keeper_;
  bool ended_ = false;
  std::exception_ptr error_;
};

TEST_F(KeeperLoopTest, ItLooksEveryPollIntervalAndEveryStallPollIntervalWhileAVolumeStalls) {
  start();
  run_until_looks(3);
  initiator_.now = {session("FAILED", "blocked")};  // seen at the 4th look
  run_until_looks(6);
  initiator_.now = {session("LOGGED_IN", "running")};  // seen at the 7th
  run_until_looks(8);
  EXPECT_EQ(looks(), (std::vector<int64_t>{0, 2'000, 4'000, 6'000, 6'500, 7'000, 7'500, 9'500}))
      << "every poll_interval; every stall_poll_interval while the volume stalls";
  EXPECT_EQ(keeper_->health("vol-1"), Health::healthy);
  EXPECT_DOUBLE_EQ(keeper_->state("vol-1")["last_recovery_seconds"].get<double>(), 1.5);
  keeper_->stop();
  clock_.run_until(ioc_, [&] { return ended_; });
  EXPECT_FALSE(error_);
}

TEST_F(KeeperLoopTest, AUdevEventWakesItBeforeThePoll) {
  FiredMonitor monitor(ioc_.get_executor());
  start(&monitor);
  run_until_looks(1);
  asio::co_spawn(
      ioc_,
      [&]() -> asio::awaitable<void> {
        co_await clock_.sleep(std::chrono::milliseconds(300));
        monitor.fire();
      },
      asio::detached);
  run_until_looks(3);
  EXPECT_EQ(looks(), (std::vector<int64_t>{0, 300, 2'300}))
      << "at the event, then a poll interval after it";
  keeper_->stop();
  clock_.run_until(ioc_, [&] { return ended_; });
}

TEST_F(KeeperLoopTest, StopEndsItsWaitAtOnceWithOrWithoutAMonitor) {
  for (bool with_monitor : {false, true}) {
    SCOPED_TRACE(with_monitor ? "udev monitor" : "poll only");
    FiredMonitor monitor(ioc_.get_executor());
    initiator_.looked.clear();
    ended_ = false;
    start(with_monitor ? &monitor : nullptr);
    run_until_looks(1);
    const auto before = clock_.now();
    keeper_->stop();
    clock_.run_until(ioc_, [&] { return ended_; });
    EXPECT_EQ(clock_.now(), before) << "no poll interval passed: the wait ended at stop()";
    EXPECT_EQ(initiator_.looked.size(), 1u) << "and no look after stop()";
  }
}

}  // namespace
}  // namespace datera::keeper

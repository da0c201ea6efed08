#include "plugins/initiator/open_iscsi.h"

#include <fcntl.h>
#include <fstream>
#include <functional>
#include <sys/file.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gtest/gtest.h>

#include "tests/plugins/initiator/fake_sysfs.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

namespace datera::initiator {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using datera::testing::run_async;
using datera::testing::TempDir;
using process::Command;
using process::Outcome;
using testing::FakeSysfs;

constexpr const char* kIqn = "iqn.2013-05.com.daterainc:tc:01:sn:0123456789abcdef";
constexpr const char* kSerial = "7f5c3a5e-89ab-4cde-8f01-23456789abcd";
constexpr const char* kIscsiadm = "/usr/sbin/iscsiadm";

Outcome exited(int code, std::string err = "") {
  Outcome o;
  o.exit_code = code;
  o.err = std::move(err);
  return o;
}

/// Records every Command and answers it through `reply`, which plays iscsiadm: it returns the
/// recorded exit code and output and may change the fake sysfs tree as the kernel would.
class ScriptedIscsiadm : public process::ProcessRunner {
 public:
  std::function<Result<Outcome>(const Command&)> reply;
  std::vector<Command> commands;

  asio::awaitable<Result<Outcome>> run(Command cmd) override {
    commands.push_back(cmd);
    Result<Outcome> r = reply ? reply(commands.back()) : Result<Outcome>(exited(0));
    co_return r;
  }
  std::vector<std::string> argvs() const {
    std::vector<std::string> out;
    for (const auto& c : commands) out.push_back(line(c));
    return out;
  }
  static std::string line(const Command& c) {
    std::string s;
    for (const auto& a : c.args) s += (s.empty() ? "" : " ") + a;
    return s;
  }
  static bool has(const Command& c, const std::string& arg) {
    return std::find(c.args.begin(), c.args.end(), arg) != c.args.end();
  }
};

class OpenIscsiTest : public ::testing::Test {
 protected:
  OpenIscsiTest() : tree(dir.path() + "/root") {
    options.root = tree.root();
    options.lock_file = dir / "iscsiadm.lock";
    options.initiator_name_file = dir / "initiatorname.iscsi";
    options.require_block_device = false;  // the fake /dev holds regular files
    options.retry_delay = 1ms;
    options.device_poll = 5ms;
    options.logout_settle = 30ms;
  }

  OpenIscsi& make() {
    initiator = std::make_unique<OpenIscsi>(runner, pool, options, nullptr);
    return *initiator;
  }

  Target target(std::vector<std::string> portals = {"10.0.0.5"}) const {
    Target t;
    t.volume = "pvc-1";
    t.iqn = kIqn;
    t.portals = std::move(portals);
    t.serial = kSerial;
    t.lun = 0;
    return t;
  }

  Result<Device> connect(const Target& t, std::chrono::milliseconds timeout = 2s) {
    return run_async(ioc, initiator->connect(t, timeout));
  }
  Status disconnect(const Target& t) { return run_async(ioc, initiator->disconnect(t)); }

  /// A hook standing in for the udev monitor: counts waits, runs `on_wait` before each.
  void hook_events(std::function<void(int)> on_wait) {
    options.wait_for_event = [this, on_wait](std::chrono::milliseconds) -> asio::awaitable<void> {
      ++event_waits;
      on_wait(event_waits);
      co_return;
    };
  }

  /// iscsiadm --login creates session 3 on host 5 from `address` and exits with `rc`.
  void login_creates_session(int rc = 0, std::string address = "10.0.0.5") {
    runner.reply = [this, rc, address](const Command& c) -> Result<Outcome> {
      if (ScriptedIscsiadm::has(c, "--login")) {
        tree.add_session(3, 5, kIqn, address);
        return exited(rc);
      }
      return exited(0);
    };
  }

  bool lock_is_free() const {
    const int fd = ::open(options.lock_file.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;
    const bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
    ::close(fd);
    return free;
  }

  TempDir dir{"iscsi"};
  FakeSysfs tree;
  asio::io_context ioc;
  asio::thread_pool pool{1};
  ScriptedIscsiadm runner;
  OpenIscsiOptions options;
  std::unique_ptr<OpenIscsi> initiator;
  int event_waits = 0;
};

std::string node(const std::string& rest) {
  return std::string("-m node -T ") + kIqn + " -p 10.0.0.5:3260 -I default " + rest;
}

TEST_F(OpenIscsiTest, ConnectCreatesRecordUpdatesLogsInScansAndVerifiesTheDevice) {
  options.replacement_timeout = 150;
  options.noop_out_interval = 4;
  options.noop_out_timeout = 9;
  login_creates_session();
  // The disk shows up only after a few waits, as it would while udev settles.
  hook_events([this](int n) {
    if (n == 3) tree.add_lun(3, 5, 0, "sdc", 8, 32, kSerial);
  });
  make();

  auto dev = connect(target());
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  EXPECT_EQ(dev->path, tree.root() + "/dev/sdc");
  EXPECT_EQ(dev->serial, kSerial);
  EXPECT_EQ(dev->major, 8u);
  EXPECT_EQ(dev->minor, 32u);
  EXPECT_EQ(event_waits, 3);

  const std::vector<std::string> expected = {
      node("-o new"),
      node("-o update -n node.startup -v manual"),
      node("-o update -n node.session.scan -v manual"),
      node("-o update -n node.session.timeo.replacement_timeout -v 150"),
      node("-o update -n node.conn[0].timeo.noop_out_interval -v 4"),
      node("-o update -n node.conn[0].timeo.noop_out_timeout -v 9"),
      node("--login"),
  };
  EXPECT_EQ(runner.argvs(), expected);
  for (const auto& c : runner.commands) {
    EXPECT_EQ(c.program, kIscsiadm);
    EXPECT_EQ(c.timeout, ScriptedIscsiadm::has(c, "--login") ? 120s : 30s) << runner.line(c);
  }
  // scan=manual: the one LUN was asked for explicitly.
  EXPECT_EQ(tree.scan_written(5), "0 0 0");
  EXPECT_TRUE(lock_is_free());
}

TEST_F(OpenIscsiTest, ConnectWithSessionUpReturnsItsDeviceWithoutRunningIscsiadm) {
  tree.add_session(3, 5, kIqn, "10.0.0.5");
  tree.add_lun(3, 5, 0, "sdc", 8, 32, "", std::string("t10.DATERA IBLOCK ") + kSerial);
  make();
  auto dev = connect(target({"10.0.0.5:3260"}));
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  EXPECT_EQ(dev->path, tree.root() + "/dev/sdc");
  EXPECT_EQ(dev->serial, kSerial);  // from the t10 wwid: this LUN has no vpd_pg80
  EXPECT_TRUE(runner.commands.empty());
  EXPECT_EQ(tree.scan_written(5), "");  // the LUN was there: no scan
}

TEST_F(OpenIscsiTest, LoginExitCode15IsSuccessWhenTheSessionIsOurs) {
  login_creates_session(15);
  tree.add_lun(3, 5, 0, "sdc", 8, 32, kSerial);  // appears with the session's device dir
  make();
  auto dev = connect(target());
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  EXPECT_EQ(dev->path, tree.root() + "/dev/sdc");
  EXPECT_EQ(runner.commands.size(), 7u);
}

TEST_F(OpenIscsiTest, LoginExitCode15IsRefusedWhenNoSessionFromThisPortalExists) {
  login_creates_session(15, "10.0.0.9");  // a session to the target, but from another portal
  make();
  auto dev = connect(target());
  ASSERT_FALSE(dev.ok());
  EXPECT_NE(dev.error().message.find("SESS_EXISTS"), std::string::npos) << dev.error().message;
  EXPECT_NE(dev.error().message.find("not ours"), std::string::npos);
  EXPECT_NE(dev.error().message.find("10.0.0.5:3260"), std::string::npos);
  EXPECT_EQ(tree.scan_written(5), "");
}

TEST_F(OpenIscsiTest, DatabaseErrorsAreRetriedAndBounded) {
  options.max_attempts = 3;
  runner.reply = [](const Command& c) -> Result<Outcome> {
    if (ScriptedIscsiadm::has(c, "new")) return exited(6, "iscsiadm: Could not lock DB\n");
    return exited(0);
  };
  make();
  auto dev = connect(target());
  ASSERT_FALSE(dev.ok());
  const std::string& msg = dev.error().message;
  EXPECT_NE(msg.find("creating the node record for target " + std::string(kIqn) +
                     " at portal 10.0.0.5:3260 (volume pvc-1)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("code 6 (IDBM)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Could not lock DB"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gave up after 3 attempts"), std::string::npos) << msg;
  ASSERT_EQ(runner.commands.size(), 3u);  // three tries of `-o new`, nothing after it
  for (const auto& c : runner.commands) EXPECT_EQ(runner.line(c), node("-o new"));
  EXPECT_TRUE(lock_is_free());
}

TEST_F(OpenIscsiTest, TransientFailuresAreRetriedThenSucceed) {
  int news = 0, updates = 0;
  runner.reply = [&](const Command& c) -> Result<Outcome> {
    if (ScriptedIscsiadm::has(c, "new") && ++news == 1) return exited(29);
    if (ScriptedIscsiadm::has(c, "update") && ++updates == 2) {
      return exited(1, "iscsiadm: encountered iSCSI database failure\n");
    }
    if (ScriptedIscsiadm::has(c, "--login")) tree.add_session(3, 5, kIqn, "10.0.0.5");
    return exited(0);
  };
  tree.add_lun(3, 5, 0, "sdc", 8, 32, kSerial);
  make();
  auto dev = connect(target());
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  EXPECT_EQ(news, 2);
  EXPECT_EQ(updates, 6);  // five settings, one of them twice
  EXPECT_EQ(runner.commands.size(), 9u);
}

TEST_F(OpenIscsiTest, OtherFailuresAreNotRetriedAndSayWhatToDo) {
  runner.reply = [](const Command& c) -> Result<Outcome> {
    if (ScriptedIscsiadm::has(c, "--login")) {
      return exited(24,
                    "iscsiadm: Could not login to [iface: default, target: x, portal: "
                    "10.0.0.5,3260].\niscsiadm: initiator reported error (24 - iSCSI login "
                    "failed due to authorization failure)\n");
    }
    return exited(0);
  };
  make();
  auto dev = connect(target());
  ASSERT_FALSE(dev.ok());
  const std::string& msg = dev.error().message;
  EXPECT_NE(msg.find("logging in to target " + std::string(kIqn) + " at portal 10.0.0.5:3260"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("code 24 (LOGIN_AUTH_FAILED)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("authorization failure"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ACL"), std::string::npos) << msg;
  EXPECT_EQ(dev.error().code, errno_code(EACCES));
  EXPECT_EQ(runner.commands.size(), 7u);  // one login
}

TEST_F(OpenIscsiTest, LoginTimeoutIsReportedNotRetried) {
  options.login_timeout = 150s;
  runner.reply = [](const Command& c) -> Result<Outcome> {
    if (ScriptedIscsiadm::has(c, "--login")) {
      Outcome o;
      o.timed_out = true;
      o.signal = 15;
      return o;
    }
    return exited(0);
  };
  make();
  auto dev = connect(target());
  ASSERT_FALSE(dev.ok());
  EXPECT_EQ(dev.error().code, errno_code(ETIMEDOUT));
  EXPECT_NE(dev.error().message.find("did not finish within 150s"), std::string::npos)
      << dev.error().message;
  EXPECT_NE(dev.error().message.find("10.0.0.5:3260"), std::string::npos);
  ASSERT_EQ(runner.commands.size(), 7u);
  EXPECT_EQ(runner.commands.back().timeout, 150s);
}

TEST_F(OpenIscsiTest, ExitCodeTimeoutsMapToEtimedout) {
  runner.reply = [](const Command& c) -> Result<Outcome> {
    return ScriptedIscsiadm::has(c, "--login") ? exited(8) : exited(0);
  };
  make();
  auto dev = connect(target());
  ASSERT_FALSE(dev.ok());
  EXPECT_EQ(dev.error().code, errno_code(ETIMEDOUT));
  EXPECT_NE(dev.error().message.find("TRANS_TIMEOUT"), std::string::npos);
  EXPECT_NE(dev.error().message.find("network path"), std::string::npos);
}

TEST_F(OpenIscsiTest, MissingIscsiadmSaysSo) {
  runner.reply = [](const Command&) -> Result<Outcome> {
    return Error{"cannot start /usr/sbin/iscsiadm: No such file or directory", errno_code(ENOENT)};
  };
  make();
  auto dev = connect(target());
  ASSERT_FALSE(dev.ok());
  EXPECT_EQ(dev.error().code, errno_code(ENOENT));
  EXPECT_NE(dev.error().message.find("is open-iscsi installed"), std::string::npos);
  EXPECT_EQ(runner.commands.size(), 1u);
}

TEST_F(OpenIscsiTest, ADeviceWithAnotherSerialIsRefusedAtOnce) {
  login_creates_session();
  tree.add_lun(3, 5, 0, "sdc", 8, 32, "0b1e2d3c-0000-4000-8000-000000000000");
  hook_events([](int) {});
  make();
  auto dev = connect(target(), 10s);
  ASSERT_FALSE(dev.ok());
  const std::string& msg = dev.error().message;
  EXPECT_NE(msg.find("'0b1e2d3c-0000-4000-8000-000000000000'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::string("'") + kSerial + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nothing was mounted"), std::string::npos) << msg;
  EXPECT_EQ(event_waits, 0);  // refused on first sight, not after the timeout
}

TEST_F(OpenIscsiTest, ASerialDifferingOnlyByDashesIsStillRefused) {
  tree.add_session(3, 5, kIqn, "10.0.0.5");
  tree.add_lun(3, 5, 0, "sdc", 8, 32, "7f5c3a5e89ab4cde8f0123456789abcd");
  make();
  auto dev = connect(target());
  ASSERT_FALSE(dev.ok());
  EXPECT_NE(dev.error().message.find("refusing"), std::string::npos);
}

TEST_F(OpenIscsiTest, SerialCaseIsIgnored) {
  tree.add_session(3, 5, kIqn, "10.0.0.5");
  tree.add_lun(3, 5, 0, "sdc", 8, 32, "7F5C3A5E-89AB-4CDE-8F01-23456789ABCD");
  make();
  auto dev = connect(target());
  ASSERT_TRUE(dev.ok()) << dev.error().message;
}

TEST_F(OpenIscsiTest, WaitsForTheDevNodeAndTheSerialBeforeAnswering) {
  tree.add_session(3, 5, kIqn, "10.0.0.5");
  tree.add_lun(3, 5, 0, "sdc", 8, 32, "", "", /*dev_node=*/false);
  hook_events([this](int n) {
    if (n == 2) tree.add_dev_node("sdc");
    if (n == 4)
      FakeSysfs::write(
          tree.root() + "/sys/devices/platform/host5/session3/target5:0:0/5:0:0:0/vpd_pg80",
          FakeSysfs::vpd_pg80(kSerial));
  });
  make();
  auto dev = connect(target());
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  EXPECT_EQ(event_waits, 4);
}

TEST_F(OpenIscsiTest, NoDeviceWithinTheTimeoutIsAnError) {
  login_creates_session();  // session up, but the LUN never appears; default timer wait
  make();
  auto dev = connect(target(), 60ms);
  ASSERT_FALSE(dev.ok());
  EXPECT_EQ(dev.error().code, errno_code(ETIMEDOUT));
  EXPECT_NE(dev.error().message.find("no usable device for LUN 0"), std::string::npos)
      << dev.error().message;
  EXPECT_NE(dev.error().message.find("no SCSI device for LUN 0 in session 3"), std::string::npos)
      << dev.error().message;
  EXPECT_EQ(tree.scan_written(5), "0 0 0");
}

TEST_F(OpenIscsiTest, LogsInToEveryPortalAndUsesOneThatWorks) {
  runner.reply = [this](const Command& c) -> Result<Outcome> {
    if (!ScriptedIscsiadm::has(c, "--login")) return exited(0);
    if (ScriptedIscsiadm::has(c, "10.0.0.5:3260")) return exited(8);
    tree.add_session(4, 6, kIqn, "fd00::6", 3260);
    tree.add_lun(4, 6, 0, "sdd", 8, 48, kSerial);
    return exited(0);
  };
  make();
  auto dev = connect(target({"10.0.0.5", "[fd00::6]:3260", "10.0.0.5:3260"}));
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  EXPECT_EQ(dev->path, tree.root() + "/dev/sdd");
  std::vector<std::string> logins;
  for (const auto& c : runner.commands) {
    if (ScriptedIscsiadm::has(c, "--login")) logins.push_back(c.args[5]);
  }
  EXPECT_EQ(logins, (std::vector<std::string>{"10.0.0.5:3260", "[fd00::6]:3260"}));  // deduplicated
}

TEST_F(OpenIscsiTest, WithoutMultipathOnlyOnePortalIsLoggedInSoOneLunIsOneDevice) {
  login_creates_session(0, "10.0.0.5");
  tree.add_lun(3, 5, 0, "sdc", 8, 32, kSerial);
  make();
  auto dev = connect(target({"10.0.0.5", "10.0.0.6"}));
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  int logins = 0;
  for (const auto& c : runner.commands) logins += ScriptedIscsiadm::has(c, "--login") ? 1 : 0;
  EXPECT_EQ(logins, 1) << "a second session would show the LUN as a second sdX";
}

TEST_F(OpenIscsiTest, AnExistingSessionOnTheSecondPortalIsReusedNotDoubled) {
  tree.add_session(3, 5, kIqn, "10.0.0.6");
  tree.add_lun(3, 5, 0, "sdc", 8, 32, kSerial);
  make();
  auto dev = connect(target({"10.0.0.5", "10.0.0.6"}));
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  EXPECT_EQ(dev->path, tree.root() + "/dev/sdc");
  EXPECT_TRUE(runner.commands.empty()) << runner.argvs().front();
}

TEST_F(OpenIscsiTest, WithMultipathEveryPortalIsLoggedIn) {
  options.all_portals = true;
  runner.reply = [this](const Command& c) -> Result<Outcome> {
    if (!ScriptedIscsiadm::has(c, "--login")) return exited(0);
    if (ScriptedIscsiadm::has(c, "10.0.0.5:3260")) {
      tree.add_session(3, 5, kIqn, "10.0.0.5");
      tree.add_lun(3, 5, 0, "sdc", 8, 32, kSerial);
    } else {
      tree.add_session(4, 6, kIqn, "10.0.0.6");
      tree.add_lun(4, 6, 0, "sdd", 8, 48, kSerial);
    }
    return exited(0);
  };
  make();
  auto dev = connect(target({"10.0.0.5", "10.0.0.6"}));
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  int logins = 0;
  for (const auto& c : runner.commands) logins += ScriptedIscsiadm::has(c, "--login") ? 1 : 0;
  EXPECT_EQ(logins, 2);
}

TEST_F(OpenIscsiTest, LoginFailingOnEveryPortalListsEachFailure) {
  runner.reply = [](const Command& c) -> Result<Outcome> {
    return ScriptedIscsiadm::has(c, "--login") ? exited(19, "iscsiadm: target not found\n")
                                               : exited(0);
  };
  make();
  auto dev = connect(target({"10.0.0.5", "10.0.0.6"}));
  ASSERT_FALSE(dev.ok());
  const std::string& msg = dev.error().message;
  EXPECT_NE(msg.find("login failed on every portal"), std::string::npos) << msg;
  EXPECT_NE(msg.find("10.0.0.5:3260"), std::string::npos) << msg;
  EXPECT_NE(msg.find("10.0.0.6:3260"), std::string::npos) << msg;
  EXPECT_NE(msg.find("FATAL_LOGIN"), std::string::npos) << msg;
}

TEST_F(OpenIscsiTest, InvalidInputIsRejectedBeforeAnythingRuns) {
  make();
  std::vector<Target> bad;
  auto t = target();
  t.iqn = "-o delete";
  bad.push_back(t);
  t = target();
  t.iqn = "iqn.2013-05.com.daterainc:tc;reboot";
  bad.push_back(t);
  bad.push_back(target({}));
  bad.push_back(target({"10.0.0.5:99999"}));
  bad.push_back(target({"storage.example.com"}));
  bad.push_back(target({"10.0.0.5", "10.0.0.6 --login"}));
  t = target();
  t.lun = -1;
  bad.push_back(t);
  t = target();
  t.serial = "";
  bad.push_back(t);
  for (const auto& b : bad) {
    auto dev = connect(b);
    ASSERT_FALSE(dev.ok());
    EXPECT_EQ(dev.error().code, errno_code(EINVAL)) << dev.error().message;
    EXPECT_NE(dev.error().message.find("connecting target"), std::string::npos)
        << dev.error().message;
  }
  t = target();
  t.iqn = "iqn.2013-05.com.daterainc:a b";
  EXPECT_FALSE(disconnect(t).ok());
  EXPECT_TRUE(runner.commands.empty());
  EXPECT_FALSE(std::filesystem::exists(options.lock_file));
}

TEST_F(OpenIscsiTest, ALockHeldElsewhereIsAwaitedThenReported) {
  options.lock_timeout = 40ms;
  options.lock_poll = 5ms;
  const int fd = ::open(options.lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  make();
  auto dev = connect(target());
  ASSERT_FALSE(dev.ok());
  EXPECT_EQ(dev.error().code, errno_code(ETIMEDOUT));
  EXPECT_NE(dev.error().message.find("still held"), std::string::npos) << dev.error().message;
  EXPECT_TRUE(runner.commands.empty());

  // Released: the same call goes through.
  ::close(fd);
  login_creates_session();
  tree.add_lun(3, 5, 0, "sdc", 8, 32, kSerial);
  dev = connect(target());
  EXPECT_TRUE(dev.ok()) << dev.error().message;
}

TEST_F(OpenIscsiTest, DisconnectLogsOutByIqnDeletesRecordsAndConfirms) {
  tree.add_session(3, 5, kIqn, "10.0.0.5");
  tree.add_session(4, 6, kIqn, "10.0.0.99");  // an old portal EDF no longer lists
  tree.add_session(7, 8, "iqn.2013-05.com.daterainc:tc:01:sn:other", "10.0.0.5");
  runner.reply = [this](const Command& c) -> Result<Outcome> {
    if (ScriptedIscsiadm::has(c, "--logout")) {
      tree.remove_session(3);
      tree.remove_session(4);
    }
    return exited(0);
  };
  make();
  auto st = disconnect(target({"10.0.0.5"}));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(runner.argvs(), (std::vector<std::string>{
                                std::string("-m node -T ") + kIqn + " -I default --logout",
                                std::string("-m node -T ") + kIqn + " -I default -o delete",
                            }));
  EXPECT_TRUE(lock_is_free());
}

TEST_F(OpenIscsiTest, PruneLogsOutOnlyThePortalsTheTargetNoLongerLists) {
  tree.add_session(3, 5, kIqn, "10.0.0.5");
  tree.add_session(4, 6, kIqn, "10.0.0.99", 3260, "FAILED");  // EDF moved the volume away
  tree.add_session(7, 8, "iqn.2013-05.com.daterainc:tc:01:sn:other", "10.0.0.99");
  make();
  auto st = run_async(ioc, initiator->prune(target({"10.0.0.5"})));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(runner.argvs(),
            (std::vector<std::string>{
                "-m session -r 4 --logout",
                std::string("-m node -T ") + kIqn + " -p 10.0.0.99:3260 -I default -o delete",
            }));
  EXPECT_TRUE(lock_is_free());
}

TEST_F(OpenIscsiTest, DisconnectWithNothingLoggedInIsSuccess) {
  runner.reply = [](const Command&) -> Result<Outcome> {
    return exited(21, "iscsiadm: No matching sessions found\n");
  };
  make();
  auto st = disconnect(target());
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(runner.commands.size(), 2u);
}

TEST_F(OpenIscsiTest, DisconnectReportsASessionThatWillNotGo) {
  tree.add_session(3, 5, kIqn, "10.0.0.5", 3260, "FAILED");
  make();  // iscsiadm "succeeds", but the session stays
  auto st = disconnect(target());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, errno_code(EBUSY));
  EXPECT_NE(st.error().message.find("session3 at 10.0.0.5:3260 (FAILED)"), std::string::npos)
      << st.error().message;
  // After the by-IQN logout and delete, the left-over session was logged out by its sid once.
  ASSERT_EQ(runner.commands.size(), 3u);
  EXPECT_EQ(runner.line(runner.commands[2]), "-m session -r 3 --logout");
}

TEST_F(OpenIscsiTest, DisconnectRefusedByIscsiadmStopsBeforeDeletingRecords) {
  runner.reply = [](const Command& c) -> Result<Outcome> {
    return ScriptedIscsiadm::has(c, "--logout") ? exited(32) : exited(0);
  };
  make();
  auto st = disconnect(target());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("SESSION_NOT_CONNECTED"), std::string::npos);
  EXPECT_NE(st.error().message.find("reconnecting"), std::string::npos);
  EXPECT_EQ(runner.commands.size(), 1u);
}

TEST_F(OpenIscsiTest, AnotherIfacesSessionsAreNeverListedPrunedOrLoggedOut) {
  tree.add_session(3, 5, kIqn, "10.0.0.5");
  FakeSysfs::write(tree.root() + "/sys/class/iscsi_session/session3/ifacename", "default\n");
  tree.add_session(4, 6, kIqn, "10.0.0.99");  // the same target through another initiator
  FakeSysfs::write(tree.root() + "/sys/class/iscsi_session/session4/ifacename", "node-b\n");
  make();
  auto list = run_async(ioc, initiator->sessions());
  ASSERT_TRUE(list.ok()) << list.error().message;
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, 3);
  ASSERT_TRUE(run_async(ioc, initiator->prune(target({"10.0.0.5"}))).ok());
  EXPECT_TRUE(runner.commands.empty()) << "session 4 is node-b's: " << runner.argvs().front();
  runner.reply = [this](const Command& c) -> Result<Outcome> {
    if (ScriptedIscsiadm::has(c, "--logout")) tree.remove_session(3);
    return exited(0);
  };
  ASSERT_TRUE(disconnect(target({"10.0.0.5"})).ok());
  for (const auto& line : runner.argvs()) {
    EXPECT_EQ(line.find("-r 4"), std::string::npos) << line;
    EXPECT_NE(line.find("-I default"), std::string::npos) << "not scoped to the iface: " << line;
  }
}

TEST_F(OpenIscsiTest, SessionsListsDateraSessionsFromSysfsIncludingFailedOnes) {
  tree.add_session(3, 5, kIqn, "10.0.0.5");
  tree.add_lun(3, 5, 0, "sdc", 8, 32, kSerial);
  tree.add_session(9, 11, "iqn.2013-05.com.daterainc:tc:01:sn:feed", "fd00::6", 3261, "FAILED");
  tree.add_lun(9, 11, 0, "sdf", 8, 80, "", "t10.DATERA IBLOCK other-serial");
  tree.add_session(4, 6, "iqn.2003-01.org.linux-iscsi.other:x", "10.9.9.9");  // not ours
  tree.add_session(5, 7, "iqn.2013-05.com.daterainc:tc:01:sn:new", "10.0.0.7", 3260, "FREE");
  make();
  auto list = run_async(ioc, initiator->sessions());
  ASSERT_TRUE(list.ok()) << list.error().message;
  ASSERT_EQ(list->size(), 3u);
  const Session& a = (*list)[0];
  EXPECT_EQ(a.id, 3);
  EXPECT_EQ(a.target_iqn, kIqn);
  EXPECT_EQ(a.portal, "10.0.0.5:3260");
  EXPECT_EQ(a.state, "LOGGED_IN");
  ASSERT_TRUE(a.device.has_value());
  EXPECT_EQ(a.device->path, tree.root() + "/dev/sdc");
  EXPECT_EQ(a.device->serial, kSerial);
  EXPECT_EQ(a.device->minor, 32u);
  const Session& b = (*list)[1];
  EXPECT_EQ(b.id, 5);
  EXPECT_EQ(b.state, "FREE");
  EXPECT_FALSE(b.device.has_value());
  const Session& c = (*list)[2];
  EXPECT_EQ(c.id, 9);
  EXPECT_EQ(c.state, "FAILED");
  EXPECT_EQ(c.portal, "[fd00::6]:3261");
  ASSERT_TRUE(c.device.has_value());
  EXPECT_EQ(c.device->serial, "other-serial");

  options.session_prefix = "";
  make();
  auto all = run_async(ioc, initiator->sessions());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 4u);
}

// The keeper looks every 2 s: between full looks a session costs two state reads, yet every
// change that matters still shows at the next look.
TEST_F(OpenIscsiTest, RepeatedLooksSeeStateChangesNewSessionsAndANewDisk) {
  tree.add_session(3, 5, kIqn, "10.0.0.5");
  tree.add_lun(3, 5, 0, "sdc", 8, 32, kSerial);
  make();
  auto first = run_async(ioc, initiator->sessions());
  ASSERT_TRUE(first.ok() && first->size() == 1u);
  // A session that fails, and its disk blocked: states are read at every look.
  tree.set_state(3, "FAILED");
  const std::string lun_dir =
      tree.root() + "/sys/class/iscsi_session/session3/device/target5:0:0/5:0:0:0";
  std::ofstream(lun_dir + "/state") << "blocked\n";
  auto second = run_async(ioc, initiator->sessions());
  ASSERT_TRUE(second.ok() && second->size() == 1u);
  EXPECT_EQ((*second)[0].state, "FAILED");
  EXPECT_EQ((*second)[0].device_state, "blocked");
  EXPECT_EQ((*second)[0].device->serial, kSerial);
  // A new session: seen at the next look.
  tree.add_session(7, 9, "iqn.2013-05.com.daterainc:tc:01:sn:beef", "10.0.0.6");
  tree.add_lun(7, 9, 0, "sdd", 8, 48, "beef-serial");
  auto third = run_async(ioc, initiator->sessions());
  ASSERT_TRUE(third.ok());
  ASSERT_EQ(third->size(), 2u);
  EXPECT_EQ((*third)[1].device->serial, "beef-serial");
  // The disk under session 3 replaced by another (a rescan gave it a new number): re-read.
  std::filesystem::remove_all(lun_dir + "/block/sdc");
  std::filesystem::create_directories(lun_dir + "/block/sde");
  std::ofstream(lun_dir + "/block/sde/dev") << "8:64\n";
  auto fourth = run_async(ioc, initiator->sessions());
  ASSERT_TRUE(fourth.ok() && fourth->size() == 2u);
  EXPECT_EQ((*fourth)[0].device->path, tree.root() + "/dev/sde");
  EXPECT_EQ((*fourth)[0].device->minor, 64u);
  // A session gone.
  tree.remove_session(7);
  auto fifth = run_async(ioc, initiator->sessions());
  ASSERT_TRUE(fifth.ok());
  EXPECT_EQ(fifth->size(), 1u);
}

TEST_F(OpenIscsiTest, InitiatorIqnComesFromTheFileUnlessConfigured) {
  make();
  auto missing = initiator->initiator_iqn();
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, errno_code(ENOENT));
  EXPECT_NE(missing.error().message.find("initiatorname.iscsi"), std::string::npos);

  FakeSysfs::write(options.initiator_name_file,
                   "## DO NOT EDIT\nInitiatorName=iqn.1993-08.org.debian:01:8f3c2a1b9d7e\n");
  auto from_file = initiator->initiator_iqn();
  ASSERT_TRUE(from_file.ok()) << from_file.error().message;
  EXPECT_EQ(*from_file, "iqn.1993-08.org.debian:01:8f3c2a1b9d7e");

  FakeSysfs::write(options.initiator_name_file, "InitiatorName=garbage here\n");
  EXPECT_FALSE(initiator->initiator_iqn().ok());

  options.initiator_iqn = "iqn.2024-01.io.example:node-1";
  make();
  auto configured = initiator->initiator_iqn();
  ASSERT_TRUE(configured.ok());
  EXPECT_EQ(*configured, "iqn.2024-01.io.example:node-1");
  options.initiator_iqn = "not-an-iqn";
  make();
  EXPECT_FALSE(initiator->initiator_iqn().ok());
}

TEST(IscsiadmCodes, NamesAndAdvice) {
  EXPECT_STREQ(iscsiadm_rc_name(15), "SESS_EXISTS");
  EXPECT_STREQ(iscsiadm_rc_name(21), "NO_OBJS_FOUND");
  EXPECT_STREQ(iscsiadm_rc_name(99), "UNKNOWN");
  EXPECT_NE(std::string(iscsiadm_rc_advice(12)).find("iscsi_tcp"), std::string::npos);
  EXPECT_NE(std::string(iscsiadm_rc_advice(20)).find("iscsid"), std::string::npos);
}

}  // namespace
}  // namespace datera::initiator

#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "agent/multipath/dmsetup.h"
#include "base/fs.h"
#include "base/logging.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

namespace datera::multipath {
namespace {

namespace asio = boost::asio;
using datera::testing::run_async;
using datera::testing::TempDir;

const std::string kUuid = "7f5c3a5e-89ab-4cde-8f01-23456789abcd";

TEST(MultipathTable, EncodesOnePathWithoutQueueing) {
  EXPECT_EQ(encode_table(Table{2097152, {"8:16"}, false}),
            "0 2097152 multipath 0 0 1 1 round-robin 0 1 1 8:16 1");
  EXPECT_EQ(encode_table(Table{8, {"8:16", "8:32"}, true}),
            "0 8 multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1 8:16 1 8:32 1");
}

TEST(MultipathTable, DecodesWhatItEncodesAndForeignLayouts) {
  const Table t{4096, {"8:0", "65:16"}, true};
  auto back = decode_table(encode_table(t));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->sectors, 4096u);
  EXPECT_EQ(back->paths, t.paths);
  EXPECT_TRUE(back->queue);
  // multipathd's layout: two path groups, a hardware handler, service-time with path args.
  auto mp = decode_table(
      "0 1048576 multipath 2 queue_if_no_path retain_attached_hw_handler 1 alua 2 1 "
      "service-time 0 1 2 8:16 1 1 service-time 0 1 2 8:32 1 1");
  ASSERT_TRUE(mp) << mp.error().message;
  EXPECT_EQ(mp->paths, (std::vector<std::string>{"8:16", "8:32"}));
  EXPECT_TRUE(mp->queue);
}

TEST(MultipathTable, RefusesOtherTargetsAndTruncation) {
  EXPECT_FALSE(decode_table("0 2048 linear 8:16 0"));
  EXPECT_FALSE(decode_table("0 2048 multipath 0 0 1 1 round-robin 0 2 1 8:16 1"));  // 1 of 2 paths
  EXPECT_FALSE(decode_table("0 2048 multipath 0 0 1 1 round-robin 0 1 1 8:16 1 extra"));
  EXPECT_FALSE(decode_table(""));
}

TEST(MultipathNames, AreDerivedFromTheUuidOnly) {
  EXPECT_EQ(*map_name(kUuid), "datera-" + kUuid);
  EXPECT_EQ(map_uuid(kUuid), "DATERA-" + kUuid);
  EXPECT_FALSE(map_name("../../etc"));
  EXPECT_FALSE(map_name(""));
  EXPECT_FALSE(map_name(std::string(65, 'a')));
}

/// Plays dmsetup against an in-memory device-mapper: maps by name with their table.
class FakeDmsetup : public process::ProcessRunner {
 public:
  struct Live {
    std::string uuid;
    std::string table;
    unsigned minor = 0;
    std::set<std::string> failed;  ///< paths the "kernel" failed
  };
  bool stuck = false;               ///< reinstate_path is accepted but the path fails again at once
  std::function<void()> on_create;  ///< e.g. multipathd claiming the disk meanwhile

  /// `dmsetup status` of a map: round-robin, one group, each path A or F.
  static std::string status_of(const Live& m) {
    auto t = *decode_table(m.table);
    std::string out = "0 " + std::to_string(t.sectors) + " multipath 2 " + (t.queue ? "1" : "0") +
                      " 0 0 1 1 A 0 " + std::to_string(t.paths.size()) + " 0";
    for (const auto& p : t.paths) out += " " + p + (m.failed.count(p) ? " F 1" : " A 0");
    return out;
  }
  std::map<std::string, Live> maps;
  std::vector<std::string> log;  ///< every command line, without --noudevsync
  std::string pending;           ///< a reloaded, not yet resumed table
  bool open = false;             ///< remove fails as when mounted

  asio::awaitable<Result<process::Outcome>> run(process::Command cmd) override {
    std::vector<std::string> a = cmd.args;
    EXPECT_EQ(a.front(), "--noudevsync");
    a.erase(a.begin());
    std::string line;
    for (const auto& w : a) line += (line.empty() ? "" : " ") + w;
    log.push_back(line);
    process::Outcome o;
    o.exit_code = 0;
    const std::string& op = a.at(0);
    const std::string& name = a.back();
    if (op == "info" && name == "name,major,minor,uuid") {  // every map, as find_all() asks
      for (const auto& [n, m] : maps) {
        o.out += n + " 254 " + std::to_string(m.minor) + " " + m.uuid + "\n";
      }
    } else if (op == "table" && name == "multipath") {  // table --target multipath
      for (const auto& [n, m] : maps) o.out += n + ": " + m.table + "\n";
    } else if (op == "status" && name == "multipath") {  // status --target multipath
      for (const auto& [n, m] : maps) {
        if (decode_table(m.table)) o.out += n + ": " + status_of(m) + "\n";
      }
    } else if (op == "status") {
      o.out = status_of(maps.at(name)) + "\n";
    } else if (op == "info") {
      auto it = maps.find(name);
      if (it == maps.end()) {
        o.exit_code = 1;
        o.err = "Device does not exist.\nCommand failed.\n";
      } else {
        o.out = "254 " + std::to_string(it->second.minor) + " " + it->second.uuid + "\n";
      }
    } else if (op == "table") {
      o.out = maps.at(name).table + "\n";
    } else if (op == "create") {
      maps[a.at(1)] = Live{a.at(3), a.at(5), static_cast<unsigned>(maps.size()), {}};
      if (on_create) on_create();
    } else if (op == "reload") {
      pending = a.at(3);
    } else if (op == "resume") {
      maps.at(name).table = pending;
    } else if (op == "message" && a.at(3) == "reinstate_path") {
      if (!stuck) maps.at(a.at(1)).failed.erase(a.at(4));
    } else if (op == "message") {
      auto& t = maps.at(a.at(1)).table;
      auto parsed = *decode_table(t);
      parsed.queue = a.at(3) == "queue_if_no_path";
      t = encode_table(parsed);
    } else if (op == "remove") {
      if (open) {
        o.exit_code = 1;
        o.err = "device-mapper: remove ioctl on " + name + " failed: Device or resource busy\n";
      } else if (!maps.erase(name)) {
        o.exit_code = 1;
        o.err = "device-mapper: remove ioctl on " + name + " failed: No such device or address\n";
      }
    }
    co_return o;
  }
};

class DmsetupTest : public ::testing::Test {
 protected:
  DmsetupTest() {
    for (const auto& [dev, size] : {std::pair{"8:16", "2097152"}, std::pair{"8:32", "2097152"},
                                    std::pair{"8:48", "4194304"}}) {
      const std::string d = tmp_.path() + "/sys/dev/block/" + dev;
      EXPECT_TRUE(fs::ensure_dir(d, 0755));
      std::ofstream(d + "/size") << size << "\n";
    }
    DmsetupOptions o;
    o.root = tmp_.path();
    o.dmsetup = "/sbin/dmsetup";
    o.require_block_device = false;
    dm_ = std::make_unique<Dmsetup>(runner_, pool_, o, metrics_, null_logger());
  }
  Result<Map> ensure(std::vector<PathDevice> paths) {
    return run_async(ioc_, dm_->ensure("datera-" + kUuid, "DATERA-" + kUuid, paths));
  }

  TempDir tmp_;
  asio::io_context ioc_;
  asio::thread_pool pool_{1};
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  FakeDmsetup runner_;
  std::unique_ptr<Dmsetup> dm_;
};

TEST_F(DmsetupTest, DetectNamesWhatIsMissing) {
  std::string why;
  EXPECT_FALSE(dm_->detect(&why));
  EXPECT_NE(why.find("dm_multipath"), std::string::npos) << why;
  EXPECT_FALSE(dm_->available());
}

TEST_F(DmsetupTest, CreatesOnceThenDoesNothing) {
  auto m = ensure({{"/dev/sdb", 8, 16}});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->paths, std::vector<std::string>{"8:16"});
  EXPECT_EQ(m->sectors, 2097152u);
  EXPECT_FALSE(m->queueing);
  EXPECT_EQ(m->device, tmp_.path() + "/dev/dm-0");
  EXPECT_EQ(runner_.maps.begin()->second.table,
            "0 2097152 multipath 0 0 1 1 round-robin 0 1 1 8:16 1");
  runner_.log.clear();
  ASSERT_TRUE(ensure({{"/dev/sdb", 8, 16}}));
  for (const auto& l : runner_.log) {
    EXPECT_TRUE(l.rfind("info", 0) == 0 || l.rfind("table", 0) == 0 || l.rfind("status", 0) == 0)
        << "changed something: " << l;
  }
}

// After an outage longer than the session's replacement timeout the kernel fails the map's path,
// and it stays failed with the session back: ensure() (attach, reconcile, the access check after
// a session recovers) reinstates it, and says so when the disk still refuses.
TEST_F(DmsetupTest, ReinstatesAFailedPathOfAnUnchangedMapAndSaysWhenItStaysFailed) {
  ASSERT_TRUE(ensure({{"/dev/sdb", 8, 16}}));
  const std::string name = "datera-" + kUuid;
  runner_.maps.at(name).failed = {"8:16"};
  auto seen = run_async(ioc_, dm_->find(name));
  ASSERT_TRUE(seen && *seen);
  EXPECT_EQ((*seen)->failed, std::vector<std::string>{"8:16"});
  runner_.log.clear();
  auto m = ensure({{"/dev/sdb", 8, 16}});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_TRUE(m->failed.empty());
  std::vector<std::string> changes;
  for (const auto& l : runner_.log) {
    if (l.rfind("info", 0) != 0 && l.rfind("table", 0) != 0 && l.rfind("status", 0) != 0) {
      changes.push_back(l);
    }
  }
  EXPECT_EQ(changes, std::vector<std::string>{"message " + name + " 0 reinstate_path 8:16"});

  runner_.maps.at(name).failed = {"8:16"};
  runner_.stuck = true;
  m = ensure({{"/dev/sdb", 8, 16}});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("8:16 is still failed"), std::string::npos) << m.error().message;
}

TEST(MultipathStatus, FailedPathsOfAnyLayout) {
  EXPECT_EQ(*decode_failed_paths("0 2097152 multipath 2 0 0 0 1 1 A 0 1 0 8:16 A 0"),
            std::vector<std::string>{});
  EXPECT_EQ(*decode_failed_paths("0 2097152 multipath 2 1 0 0 1 1 E 0 1 0 8:16 F 3"),
            std::vector<std::string>{"8:16"});
  // Two groups, a selector with status and per-path info (service-time: 2 info args).
  EXPECT_EQ(*decode_failed_paths("0 8 multipath 2 0 0 1 alua 2 1 A 1 7 2 2 8:16 A 0 0 1 8:32 F "
                                 "2 0 1 E 0 1 2 8:48 F 1 0 1"),
            (std::vector<std::string>{"8:32", "8:48"}));
  EXPECT_FALSE(decode_failed_paths("0 8 linear 8:16 0"));
  EXPECT_FALSE(decode_failed_paths("0 2097152 multipath 2 0 0 0 1 1 A 0 1 0 8:16 X 0"));
  EXPECT_FALSE(decode_failed_paths("0 2097152 multipath 2 0 0 0 1 1 A 0 1 0 8:16 A"));
  EXPECT_FALSE(decode_failed_paths("0 2097152 multipath 2 0 0 0 1 1 A 0 1 0 8:16 A 0 extra"));
}

// The access poll's view of every map: two commands whatever their number, and each map exactly
// as find() reads it; absent and foreign maps are left out.
TEST_F(DmsetupTest, FindAllListsOurMapsWithTwoCommandsAsFindReadsThem) {
  ASSERT_TRUE(ensure({{"/dev/sdb", 8, 16}}));
  const std::string other = "7f5c3a5e-89ab-4cde-8f01-000000000002";
  ASSERT_TRUE(
      run_async(ioc_, dm_->ensure("datera-" + other, "DATERA-" + other, {{"/dev/sdc", 8, 32}})));
  ASSERT_TRUE(run_async(ioc_, dm_->set_queueing("datera-" + other, true)));
  runner_.maps.at("datera-" + other).failed = {"8:32"};
  runner_.maps["foreign"] = FakeDmsetup::Live{"LVM-xyz", "0 8 linear 8:64 0", 9, {}};
  runner_.log.clear();
  auto all = run_async(
      ioc_, dm_->find_all({"datera-" + kUuid, "datera-" + other, "foreign", "datera-absent"}));
  ASSERT_TRUE(all) << all.error().message;
  EXPECT_EQ(runner_.log.size(), 3u);
  ASSERT_EQ(all->size(), 2u);
  for (const auto& name : {"datera-" + kUuid, "datera-" + other}) {
    auto one = run_async(ioc_, dm_->find(name));
    ASSERT_TRUE(one && *one) << name;
    const Map& listed = all->at(name);
    EXPECT_EQ(listed.paths, (*one)->paths) << name;
    EXPECT_EQ(listed.sectors, (*one)->sectors) << name;
    EXPECT_EQ(listed.queueing, (*one)->queueing) << name;
    EXPECT_EQ(listed.device, (*one)->device) << name;
    EXPECT_EQ(listed.minor, (*one)->minor) << name;
    EXPECT_EQ(listed.failed, (*one)->failed) << name;
  }
  EXPECT_TRUE(all->at("datera-" + other).queueing);
  EXPECT_EQ(all->at("datera-" + other).failed, std::vector<std::string>{"8:32"});
}

TEST_F(DmsetupTest, SwapsPathsWithNoflushResumeAndEndsWithoutQueueing) {
  ASSERT_TRUE(ensure({{"/dev/sdb", 8, 16}}));
  runner_.log.clear();
  auto m = ensure({{"/dev/sdc", 8, 32}});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->paths, std::vector<std::string>{"8:32"});
  EXPECT_FALSE(m->queueing);
  std::vector<std::string> changes;
  for (const auto& l : runner_.log) {
    if (l.rfind("info", 0) != 0 && l.rfind("table", 0) != 0 && l.rfind("status", 0) != 0) {
      changes.push_back(l);
    }
  }
  const std::string name = "datera-" + kUuid;
  ASSERT_EQ(changes.size(), 3u);
  // The swap table queues, so I/O failing on the old path during the swap is held, not failed.
  EXPECT_EQ(changes[0], "reload " + name +
                            " --table 0 2097152 multipath 1 queue_if_no_path 0 1 1 round-robin 0 "
                            "1 1 8:32 1");
  EXPECT_EQ(changes[1], "resume --noflush --nolockfs " + name);
  EXPECT_EQ(changes[2], "message " + name + " 0 fail_if_no_path");
}

// initiator.io_hold: maps queue when no path is usable; the keeper failed the queue when the hold
// expired, and once the path is reinstated the map holds the next outage again. A swap keeps the
// queueing of its table.
TEST_F(DmsetupTest, MapsThatHoldIOQueueAndGetTheirQueueBackWithTheirPath) {
  DmsetupOptions o;
  o.root = tmp_.path();
  o.dmsetup = "/sbin/dmsetup";
  o.require_block_device = false;
  o.hold_io = true;
  dm_ = std::make_unique<Dmsetup>(runner_, pool_, o, metrics_, null_logger());
  EXPECT_TRUE(dm_->holds_io());
  const std::string name = "datera-" + kUuid;
  auto m = ensure({{"/dev/sdb", 8, 16}});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_TRUE(m->queueing);
  EXPECT_NE(runner_.maps.at(name).table.find(" 1 queue_if_no_path "), std::string::npos);

  ASSERT_TRUE(run_async(ioc_, dm_->set_queueing(name, false)));  // the hold expired
  runner_.maps.at(name).failed = {"8:16"};
  runner_.log.clear();
  m = ensure({{"/dev/sdb", 8, 16}});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_TRUE(m->queueing);
  EXPECT_TRUE(m->failed.empty());
  std::vector<std::string> changes;
  for (const auto& l : runner_.log) {
    if (l.rfind("info", 0) != 0 && l.rfind("table", 0) != 0 && l.rfind("status", 0) != 0) {
      changes.push_back(l);
    }
  }
  EXPECT_EQ(changes, (std::vector<std::string>{"message " + name + " 0 reinstate_path 8:16",
                                               "message " + name + " 0 queue_if_no_path"}))
      << "the path first: queueing again on a failed path would hold the pod's I/O for nothing";

  runner_.log.clear();
  m = ensure({{"/dev/sdc", 8, 32}});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_TRUE(m->queueing);
  EXPECT_EQ(runner_.log.back().rfind("message", 0), std::string::npos) << runner_.log.back();
  runner_.log.clear();
  ASSERT_TRUE(ensure({{"/dev/sdc", 8, 32}}));
  for (const auto& l : runner_.log) EXPECT_EQ(l.rfind("message", 0), std::string::npos) << l;
}

// A node where multipathd claimed the session disk first: dmsetup create would only say "Device or
// resource busy". The agent says who holds it and what to do, and runs no dmsetup command; a disk
// held by the volume's own map is fine.
TEST_F(DmsetupTest, ADiskHeldByMultipathdIsRefusedWithWhatToDo) {
  const std::string holders = tmp_.path() + "/sys/dev/block/8:16/holders/dm-2";
  ASSERT_TRUE(fs::ensure_dir(holders, 0755));
  ASSERT_TRUE(fs::ensure_dir(tmp_.path() + "/sys/block/dm-2/dm", 0755));
  std::ofstream(tmp_.path() + "/sys/block/dm-2/dm/uuid") << "mpath-36001405abcdef\n";
  std::ofstream(tmp_.path() + "/sys/block/dm-2/dm/name") << "mpatha\n";
  auto m = ensure({{"/dev/sdb", 8, 16}});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("/dev/sdb (8:16) is held by multipathd's map mpatha (dm-2)"),
            std::string::npos)
      << m.error().message;
  EXPECT_NE(m.error().message.find("systemd/datera-agent-multipath.conf"), std::string::npos);
  EXPECT_NE(m.error().message.find("multipath -f mpatha"), std::string::npos);
  for (const auto& l : runner_.log) EXPECT_EQ(l.rfind("create", 0), std::string::npos) << l;

  std::ofstream(tmp_.path() + "/sys/block/dm-2/dm/uuid") << "DATERA-" << kUuid << "\n";
  m = ensure({{"/dev/sdb", 8, 16}});
  EXPECT_TRUE(m) << "held by the volume's own map: " << m.error().message;
}

// The kernel lets two maps share a disk (dm claims every disk for all maps alike), so multipathd
// claiming the disk while the agent makes its map gives two maps over one LUN, silently (seen on
// the kernel tier). ensure() looks again after the create, and takes its new map back.
TEST_F(DmsetupTest, ADiskMultipathdClaimedDuringTheCreateIsGivenUp) {
  runner_.on_create = [this] {
    ASSERT_TRUE(fs::ensure_dir(tmp_.path() + "/sys/dev/block/8:16/holders/dm-5", 0755));
    ASSERT_TRUE(fs::ensure_dir(tmp_.path() + "/sys/block/dm-5/dm", 0755));
    std::ofstream(tmp_.path() + "/sys/block/dm-5/dm/uuid") << "mpath-36001405abcdef\n";
    std::ofstream(tmp_.path() + "/sys/block/dm-5/dm/name") << "mpathb\n";
  };
  auto m = ensure({{"/dev/sdb", 8, 16}});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("held by multipathd's map mpathb (dm-5)"), std::string::npos)
      << m.error().message;
  EXPECT_EQ(runner_.maps.count("datera-" + kUuid), 0u) << "the map just made is removed again";
}

struct RecordingRunner : process::ProcessRunner {
  std::vector<std::string> ran;
  int exit_code = 0;
  asio::awaitable<Result<process::Outcome>> run(process::Command cmd) override {
    std::string line = cmd.program;
    for (const auto& a : cmd.args) line += " " + a;
    ran.push_back(line);
    process::Outcome o;
    o.exit_code = exit_code;
    if (exit_code != 0) o.err = "modprobe: FATAL: Module dm_round_robin not found.\n";
    co_return o;
  }
};

// initiator.multipath auto/on on a node that never loaded the modules (no multipathd there):
// modprobe what /sys/module lacks, nothing else; a failure is logged, not fatal.
TEST(MultipathModules, LoadsOnlyWhatIsMissing) {
  TempDir root;
  ASSERT_TRUE(fs::ensure_dir(root.path() + "/sys/module/dm_multipath", 0755));
  asio::io_context ioc;
  RecordingRunner runner;
  run_async(ioc, load_modules(runner, root.path() + "/", "/sbin/modprobe", null_logger()));
  EXPECT_EQ(runner.ran, std::vector<std::string>{"/sbin/modprobe dm_round_robin"});
  runner.ran.clear();
  runner.exit_code = 1;
  run_async(ioc, load_modules(runner, root.path() + "/", "/sbin/modprobe", null_logger()));
  EXPECT_EQ(runner.ran.size(), 1u) << "a failure is retried at the next start only";
  runner.ran.clear();
  ASSERT_TRUE(fs::ensure_dir(root.path() + "/sys/module/dm_round_robin", 0755));
  run_async(ioc, load_modules(runner, root.path() + "/", "/sbin/modprobe", null_logger()));
  EXPECT_TRUE(runner.ran.empty());
}

TEST(MultipathModules, MultipathdIsSeenByItsSocketOrItsProcess) {
  TempDir root;
  const std::string r = root.path() + "/";
  ASSERT_TRUE(fs::ensure_dir(r + "proc/net", 0755));
  std::ofstream(r + "proc/net/unix")
      << "Num       RefCount Protocol Flags    Type St Inode Path\n"
         "0000000000000000: 00000002 00000000 00010000 0001 01 20917 /run/udev/control\n";
  ASSERT_TRUE(fs::ensure_dir(r + "proc/42", 0755));
  std::ofstream(r + "proc/42/comm") << "iscsid\n";
  EXPECT_FALSE(multipathd_present(r));
  std::ofstream(r + "proc/net/unix", std::ios::app)
      << "0000000000000000: 00000002 00000000 00010000 0001 01 21000 "
         "@/org/kernel/linux/storage/multipathd\n";
  EXPECT_TRUE(multipathd_present(r)) << "its socket (systemd may hold it for activation)";
  std::ofstream(r + "proc/net/unix") << "";
  ASSERT_TRUE(fs::ensure_dir(r + "proc/77", 0755));
  std::ofstream(r + "proc/77/comm") << "multipathd\n";
  EXPECT_TRUE(multipathd_present(r)) << "its process";
}

TEST_F(DmsetupTest, RefusesPathsOfDifferentSizesAndForeignMaps) {
  auto m = ensure({{"/dev/sdb", 8, 16}, {"/dev/sdd", 8, 48}});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("differ in size"), std::string::npos) << m.error().message;
  EXPECT_TRUE(runner_.maps.empty());
  runner_.maps["datera-" + kUuid] = {"mpath-3600a", "0 8 linear 8:16 0", 0, {}};
  m = ensure({{"/dev/sdb", 8, 16}});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("not the agent's"), std::string::npos) << m.error().message;
}

TEST_F(DmsetupTest, RemoveIsIdempotentButNeverForcesAnOpenMap) {
  ASSERT_TRUE(ensure({{"/dev/sdb", 8, 16}}));
  runner_.open = true;
  auto st = run_async(ioc_, dm_->remove("datera-" + kUuid));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, errno_code(EBUSY));
  EXPECT_EQ(runner_.maps.size(), 1u);
  runner_.open = false;
  EXPECT_TRUE(run_async(ioc_, dm_->remove("datera-" + kUuid)));
  EXPECT_TRUE(run_async(ioc_, dm_->remove("datera-" + kUuid)));  // already gone
  EXPECT_TRUE(runner_.maps.empty());
}

}  // namespace
}  // namespace datera::multipath

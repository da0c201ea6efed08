// The whole data path on the host tier: the installed shim -> datera-agent -> datera-sim (file
// backend, ACL enforced) -> loop device -> real xfs mounts under a private kubelet root. Also the
// crash tests: the agent is killed (SIGKILL) between every two steps of mount and unmount, then
// restarted; nothing may leak and the data must survive.

#include <cctype>
#include <chrono>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <sys/statvfs.h>
#include <thread>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/host_node.h"

namespace datera {
namespace {

using nlohmann::json;
using testing::AgentProcess;
using testing::loops_under;
using testing::mount_at;
using testing::mountinfo;
using testing::read_file;
using testing::SimProcess;
using testing::write_file;

/// One node on one datera-sim (tests/testing/host_node.h); the tests below talk to its agent.
class VolumeTest : public testing::HostNodeTest {
 protected:
  void start_agent(const std::string& crash_at = "") { node_.start(crash_at); }

  std::string pod_dir(const std::string& uid, const std::string& vol = "pv1") {
    return node_.pod_dir(uid, vol);
  }

  static std::string options(const std::string& volume, bool read_only = false) {
    return testing::flex_options(volume, read_only);
  }

  json shim(const std::vector<std::string>& args) {
    auto r = node_.shim_exec(args);
    if (r.output.find("\"Success\"") == std::string::npos) {
      std::cerr << "shim " << args.front() << " answered: " << r.output << "\n";
    }
    auto j = testing::HostNode::reply_of(r);
    EXPECT_EQ(r.exit_code, j.value("status", "") == "Success" ? 0 : 1) << r.output;
    return j;
  }

  json sim_get(const std::string& path) { return testing::sim_get(sim_, path); }

  /// The volume's ACL as the simulator holds it; the volume must exist.
  std::vector<std::string> acl_of(const std::string& volume) {
    const auto all = sim_get("/_sim/exports");
    for (const auto& e : all["exports"]) {
      if (e["app_instance"] == volume) return e["acl"].get<std::vector<std::string>>();
    }
    ADD_FAILURE() << "datera-sim has no export of " << volume << ": " << all.dump();
    return {};
  }

  /// The node the volume's ownership lease names on the array ("" when free).
  std::string owner_of(const std::string& volume) {
    const auto state = sim_get("/_sim/state");
    for (const auto& [_, tenant] : state["tenants"].items()) {
      for (const auto& ai : tenant["app_instances"]) {
        if (ai.value("name", "") == volume) {
          return ai["metadata"].value("datera-agent.owner", "");
        }
      }
    }
    ADD_FAILURE() << "datera-sim has no app instance " << volume;
    return "?";
  }

  /// Nothing of `volume` is left on this node: no mount under the agent's tree, no loop device,
  /// no journal record, and the node is out of the ACL.
  void expect_released(const std::string& volume) {
    for (const auto& m : mountinfo()) {
      EXPECT_NE(m.target.rfind(agent_.root, 0), 0u) << "left mounted: " << m.target;
    }
    EXPECT_TRUE(loops_under(sim_.dir().path()).empty()) << "loop device left attached";
    EXPECT_FALSE(std::ifstream(agent_.root + "/state/journal/" + volume + ".json").good())
        << "journal record left";
    const auto acl = acl_of(volume);
    EXPECT_EQ(std::count(acl.begin(), acl.end(), kIqn), 0) << "node left in the ACL";
  }

  /// Leftovers are released after the API serves (in the background): waits until /v1/volumes no
  /// longer lists `volume`, then checks that nothing of it is left.
  void expect_released_after_start(const std::string& volume) {
    const std::string body = node_.wait_volumes([&](const std::string& b) {
      return !b.empty() && b.find("\"" + volume + "\"") == std::string::npos;
    });
    EXPECT_EQ(body.find("\"" + volume + "\""), std::string::npos) << "still listed: " << body;
    expect_released(volume);
  }

  double metric(const std::string& line_prefix) { return node_.metric(line_prefix); }

  AgentProcess& agent_ = node_.agent;
};

TEST_F(VolumeTest, MountWriteUnmountMountAgainReadsTheSameData) {
  const auto pod = pod_dir("uid-1");
  auto r = shim({"mount", pod, options("vol-data")});
  ASSERT_EQ(r["status"], "Success") << r.dump() << agent_.log_text();
  const auto m = mount_at(pod);
  ASSERT_TRUE(m) << "the pod dir is not a mount point";
  EXPECT_FALSE(m->read_only);
  EXPECT_TRUE(mount_at(agent_.root + "/state/staging/vol-data")) << "no staging mount";
  EXPECT_EQ(acl_of("vol-data"), std::vector<std::string>{kIqn});
  write_file(pod + "/hello.txt", "written by pod 1\n");

  r = shim({"mount", pod, options("vol-data")});
  EXPECT_EQ(r["status"], "Success") << "a repeated mount is idempotent: " << r.dump();

  r = shim({"unmount", pod});
  ASSERT_EQ(r["status"], "Success") << r.dump();
  expect_released("vol-data");
  r = shim({"unmount", pod});
  EXPECT_EQ(r["status"], "Success") << "a repeated unmount is idempotent: " << r.dump();

  const auto pod2 = pod_dir("uid-2");
  r = shim({"mount", pod2, options("vol-data")});
  ASSERT_EQ(r["status"], "Success") << r.dump();
  EXPECT_EQ(read_file(pod2 + "/hello.txt"), "written by pod 1\n");
  EXPECT_EQ(shim({"unmount", pod2})["status"], "Success");
  expect_released("vol-data");

  EXPECT_EQ(metric("datera_agent_volume_operations_total{operation=\"mount\",result=\"success\"}"),
            3);
  EXPECT_EQ(
      metric("datera_agent_volume_operations_total{operation=\"unmount\",result=\"success\"}"), 3);
  // The ACL log shows the node added twice and removed twice, in order.
  std::vector<std::string> ops;
  const auto log =
      sim_get("/_sim/acl_log");  // named: a range-for over a temporary's member dangles
  for (const auto& e : log["entries"]) ops.push_back(e["op"]);
  EXPECT_EQ(ops, (std::vector<std::string>{"add", "remove", "add", "remove"}));
}

TEST_F(VolumeTest, AgentctlReleaseAndDrainGiveUpOnlyWhatNoPodUses) {
  const auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {DATERA_AGENTCTL_PATH, "-s", agent_.socket});
    return testing::exec_capture(args);
  };
  const auto pod1 = pod_dir("uid-rel-1");
  ASSERT_EQ(shim({"mount", pod1, options("vol-rel-a")})["status"], "Success") << agent_.log_text();
  write_file(pod1 + "/kept.txt", "still here\n");

  auto r = ctl({"release", "vol-rel-a"});
  EXPECT_EQ(r.exit_code, 1) << "a pod uses it: kept. " << r.output;
  EXPECT_NE(r.output.find("in_use"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("uid-rel-1"), std::string::npos) << r.output;
  EXPECT_TRUE(mount_at(pod1)) << "the pod's mount is untouched";
  EXPECT_EQ(acl_of("vol-rel-a"), std::vector<std::string>{kIqn});

  // The pod's bind goes behind kubelet's back (its pod dir cleaned while the agent was away):
  // the volume stays staged, logged in, in the ACL and leased, used by nothing.
  ASSERT_EQ(testing::exec_capture({"/usr/bin/umount", pod1}).exit_code, 0);
  const auto pod2 = pod_dir("uid-rel-2");
  ASSERT_EQ(shim({"mount", pod2, options("vol-rel-b")})["status"], "Success") << agent_.log_text();

  const auto t0 = std::chrono::steady_clock::now();
  r = ctl({"-o", "json", "drain"});
  std::cout << "[ measure ] datera-agentctl drain (one volume released, one kept): "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
            << " s\n";
  EXPECT_EQ(r.exit_code, 0) << "nothing failed: " << r.output;
  const auto j = json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_array()) << r.output;
  std::map<std::string, std::string> result;
  for (const auto& v : j) result[v.value("volume", "")] = v.value("result", "");
  EXPECT_EQ(result["vol-rel-a"], "released") << r.output << agent_.log_text();
  EXPECT_EQ(result["vol-rel-b"], "in_use") << r.output;
  EXPECT_FALSE(mount_at(agent_.root + "/state/staging/vol-rel-a")) << "staging left mounted";
  EXPECT_TRUE(mount_at(agent_.root + "/state/staging/vol-rel-b"));
  EXPECT_TRUE(mount_at(pod2));
  EXPECT_TRUE(acl_of("vol-rel-a").empty()) << "node left in the ACL";
  EXPECT_EQ(acl_of("vol-rel-b"), std::vector<std::string>{kIqn});
  EXPECT_FALSE(std::ifstream(agent_.root + "/state/journal/vol-rel-a.json").good());
  EXPECT_EQ(loops_under(sim_.dir().path()).size(), 1u) << "only vol-rel-b's device is attached";
  EXPECT_EQ(owner_of("vol-rel-a"), "") << "lease released";
  EXPECT_EQ(owner_of("vol-rel-b"), "it-node");

  r = ctl({"release", "vol-rel-a"});
  EXPECT_EQ(r.exit_code, 0) << "nothing here is nothing to do: " << r.output;
  EXPECT_NE(r.output.find("not_here"), std::string::npos) << r.output;
  r = ctl({"release", "../etc"});
  EXPECT_EQ(r.exit_code, 3) << "refused by the agent: " << r.output;

  // The volume was given up, not deleted: a pod mounting it again reads its data.
  const auto pod3 = pod_dir("uid-rel-3");
  ASSERT_EQ(shim({"mount", pod3, options("vol-rel-a")})["status"], "Success") << agent_.log_text();
  EXPECT_EQ(read_file(pod3 + "/kept.txt"), "still here\n");
  EXPECT_EQ(shim({"unmount", pod3})["status"], "Success");
  EXPECT_EQ(shim({"unmount", pod2})["status"], "Success");
  expect_released("vol-rel-a");
  expect_released("vol-rel-b");
  EXPECT_EQ(metric("datera_agent_volume_releases_total{result=\"released\"}"), 1);
  EXPECT_EQ(metric("datera_agent_volume_releases_total{result=\"in_use\"}"), 2);
  EXPECT_EQ(metric("datera_agent_volume_releases_total{result=\"not_here\"}"), 1);
}

TEST_F(VolumeTest, TwoPodsShareOneStagingMountAndReadOnlyIsEnforced) {
  const auto writer = pod_dir("uid-w");
  const auto reader = pod_dir("uid-r");
  ASSERT_EQ(shim({"mount", writer, options("vol-shared")})["status"], "Success");
  ASSERT_EQ(shim({"mount", reader, options("vol-shared", true)})["status"], "Success");
  const auto w = mount_at(writer);
  const auto r = mount_at(reader);
  ASSERT_TRUE(w && r);
  EXPECT_EQ(w->source_dev, r->source_dev) << "both pods see the same filesystem";
  EXPECT_TRUE(r->read_only);
  write_file(writer + "/shared.txt", "from the writer\n");
  EXPECT_EQ(read_file(reader + "/shared.txt"), "from the writer\n");
  errno = 0;
  EXPECT_EQ(::open((reader + "/nope").c_str(), O_CREAT | O_WRONLY, 0644), -1);
  EXPECT_EQ(errno, EROFS) << "a read-only pod must not write";
  EXPECT_EQ(loops_under(sim_.dir().path()).size(), 1u) << "one device for both pods";

  ASSERT_EQ(shim({"unmount", writer})["status"], "Success");
  EXPECT_TRUE(mount_at(reader)) << "the other pod keeps its mount";
  EXPECT_EQ(read_file(reader + "/shared.txt"), "from the writer\n");
  EXPECT_EQ(acl_of("vol-shared"), std::vector<std::string>{kIqn}) << "still in use here";
  ASSERT_EQ(shim({"unmount", reader})["status"], "Success");
  expect_released("vol-shared");
}

TEST_F(VolumeTest, ExpandFsGrowsTheArrayVolumeTheDeviceAndTheFilesystem) {
  const auto pod = pod_dir("uid-grow");
  ASSERT_EQ(shim({"mount", pod, options("vol-grow")})["status"], "Success");
  write_file(pod + "/keep.txt", "kept across the resize\n");
  struct statvfs before {};
  ASSERT_EQ(::statvfs(pod.c_str(), &before), 0);
  const std::string two_gib = std::to_string(2LL << 30);
  // kubelet: expandfs <json> <device> <deviceMountPath> <newSize> <oldSize>
  auto r = shim({"expandfs", options("vol-grow"), "", "", two_gib, std::to_string(1LL << 30)});
  ASSERT_EQ(r["status"], "Success") << r.dump() << agent_.log_text();
  EXPECT_EQ(r["volumeNewSize"], 2LL << 30);
  struct statvfs after {};
  ASSERT_EQ(::statvfs(pod.c_str(), &after), 0);
  const double grew = static_cast<double>(after.f_blocks * after.f_frsize) /
                      static_cast<double>(before.f_blocks * before.f_frsize);
  EXPECT_GT(grew, 1.8) << "the pod must see about twice the space";
  EXPECT_EQ(read_file(pod + "/keep.txt"), "kept across the resize\n");
  for (const auto& e : sim_get("/_sim/exports")["exports"].get<std::vector<json>>()) {
    if (e["app_instance"] == "vol-grow") {
      EXPECT_EQ(e["size_gib"], 2);
    }
  }
  // Repeating it changes nothing and still succeeds (kubelet retries).
  EXPECT_EQ(shim({"expandfs", options("vol-grow"), "", "", two_gib, two_gib})["status"], "Success");
  ASSERT_EQ(shim({"unmount", pod})["status"], "Success");
  expect_released("vol-grow");
}

TEST_F(VolumeTest, ADeviceWhoseSerialIsNotTheVolumesIsRefused) {
  // vol-b exists with a filesystem; then the array misroutes vol-a's export to vol-b's data.
  const auto pod_b = pod_dir("uid-b");
  ASSERT_EQ(shim({"mount", pod_b, options("vol-b")})["status"], "Success");
  write_file(pod_b + "/owner", "b\n");
  ASSERT_EQ(shim({"unmount", pod_b})["status"], "Success");
  const auto pod_a = pod_dir("uid-a");
  // Create vol-a first (a mount that works), so the misroute has both exports.
  ASSERT_EQ(shim({"mount", pod_a, options("vol-a")})["status"], "Success");
  ASSERT_EQ(shim({"unmount", pod_a})["status"], "Success");
  ASSERT_NE(testing::tcp_json(sim_.port, "POST", "/_sim/misroute",
                              R"({"app_instance":"vol-a","to_app_instance":"vol-b"})")
                .find("200 OK"),
            std::string::npos);

  auto r = shim({"mount", pod_a, options("vol-a")});
  EXPECT_EQ(r["status"], "Failure");
  const std::string msg = r.value("message", "");
  EXPECT_NE(msg.find("serial"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vol-a"), std::string::npos) << msg;
  EXPECT_FALSE(mount_at(pod_a)) << "the wrong device was mounted";
  expect_released("vol-a");
  EXPECT_EQ(metric("datera_agent_volume_failures_total{operation=\"mount\",reason=\"login\"}"), 1);
}

TEST_F(VolumeTest, AgentKilledWhileMountedLeavesTheMountAndTheRestartedAgentServesIt) {
  const auto pod = pod_dir("uid-1");
  ASSERT_EQ(shim({"mount", pod, options("vol-restart")})["status"], "Success");
  write_file(pod + "/before.txt", "before the crash\n");
  agent_.stop(SIGKILL);
  EXPECT_TRUE(mount_at(pod)) << "the pod's mount must outlive the agent";
  start_agent();
  // Start-up reconciliation kept the one mounted volume (it runs before the agent serves).
  EXPECT_EQ(metric("datera_agent_volume_reconcile_actions_total{action=\"kept\"}"), 1)
      << agent_.metrics() << agent_.log_text();
  auto vols = json::parse(testing::body_of(agent_.api(testing::http_get("/v1/volumes"))));
  ASSERT_EQ(vols["volumes"].size(), 1u) << vols.dump();
  EXPECT_EQ(vols["volumes"][0]["phase"], "attached");
  EXPECT_EQ(vols["volumes"][0]["backend"].dump().find(sim_.password), std::string::npos);
  EXPECT_EQ(vols.dump().find(sim_.password), std::string::npos) << "credentials in /v1/volumes";
  EXPECT_EQ(read_file(pod + "/before.txt"), "before the crash\n");
  ASSERT_EQ(shim({"unmount", pod})["status"], "Success");
  expect_released("vol-restart");
}

/// The volume's session state as /v1/volumes reports it (the keeper's view).
static json session_of(const AgentProcess& agent, const std::string& volume) {
  auto vols =
      json::parse(testing::body_of(agent.api(testing::http_get("/v1/volumes"))), nullptr, false);
  if (!vols.is_object()) return json();
  for (const auto& v : vols["volumes"]) {
    if (v.value("volume", "") == volume) return v.value("session", json());
  }
  return json();
}

// The end of an outage longer than the replacement timeout, on a real kernel: the filesystem is
// shut down under the pod while the session (here a loop device) is fine. The agent must say
// fs_failed, with the kernel's line, after a restart too, and never "healthy" or "recovered"; the
// pod's restart (unmount, mount) brings the volume back with what was synced before.
TEST_F(VolumeTest, AShutDownFilesystemIsReportedFailedUntilThePodMountsItAfresh) {
  if (::access("/dev/kmsg", R_OK) != 0) GTEST_SKIP() << "SKIPPED: /dev/kmsg is not readable";
  const std::string xfs_io = "/usr/sbin/xfs_io";
  if (::access(xfs_io.c_str(), X_OK) != 0) GTEST_SKIP() << "SKIPPED: no xfs_io (xfsprogs)";
  const auto pod = pod_dir("uid-1");
  ASSERT_EQ(shim({"mount", pod, options("vol-fsfail")})["status"], "Success");
  write_file(pod + "/synced.txt", "synced before the failure\n");
  testing::exec_capture({"/bin/sync"});
  auto wait_state = [&](const std::string& want) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    json s;
    while (std::chrono::steady_clock::now() < deadline) {
      s = session_of(agent_, "vol-fsfail");
      if (s.value("state", "") == want) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return s;
  };
  EXPECT_EQ(wait_state("healthy").value("state", ""), "healthy");

  // What a failed log write does to xfs, done on purpose (the same shutdown path).
  const std::string staging = agent_.root + "/state/staging/vol-fsfail";
  auto down = testing::exec_capture({xfs_io, "-x", "-c", "shutdown", staging});
  ASSERT_EQ(down.exit_code, 0) << down.output;
  EXPECT_NE(testing::exec_capture({"/bin/cat", pod + "/synced.txt"}).exit_code, 0)
      << "the pod's reads fail now";
  auto s = wait_state("fs_failed");
  EXPECT_EQ(s.value("state", ""), "fs_failed") << s.dump() << agent_.log_text();
  EXPECT_NE(s.value("fs_failure", "").find("Shutting down filesystem"), std::string::npos)
      << s.dump();
  EXPECT_EQ(s.value("degraded", false), true);
  EXPECT_EQ(metric("datera_agent_sessions{state=\"fs_failed\"}"), 1);
  EXPECT_NE(agent_.log_text().find("DEGRADED: its filesystem on loop"), std::string::npos)
      << agent_.log_text();

  // An agent restart still knows: the kernel log is read from its start.
  agent_.stop(SIGKILL);
  start_agent();
  s = wait_state("fs_failed");
  EXPECT_EQ(s.value("state", ""), "fs_failed") << "after a restart: " << s.dump();

  // The pod restarts: unmount (of a dead filesystem) and mount again.
  ASSERT_EQ(shim({"unmount", pod})["status"], "Success") << agent_.log_text();
  const auto pod2 = pod_dir("uid-2");
  ASSERT_EQ(shim({"mount", pod2, options("vol-fsfail")})["status"], "Success") << agent_.log_text();
  EXPECT_EQ(read_file(pod2 + "/synced.txt"), "synced before the failure\n");
  write_file(pod2 + "/after.txt", "writable again\n");
  s = wait_state("healthy");
  EXPECT_EQ(s.value("state", ""), "healthy") << s.dump();
  EXPECT_EQ(s.value("recoveries", -1), 0) << "a failed filesystem is never a recovery";
  EXPECT_EQ(metric("datera_agent_session_recoveries_total"), 0);
  ASSERT_EQ(shim({"unmount", pod2})["status"], "Success");
}

/// SIGKILL between every two steps of mount: after a restart, either the pod is served (the
/// crash came after the bind) or nothing at all is left; kubelet's retry then works, data intact.
TEST_F(VolumeTest, KilledBetweenEveryStepOfMountThenRestartedLeaksNothing) {
  // A volume with data on it first, so "data intact" means something.
  const auto seed_pod = pod_dir("uid-seed");
  ASSERT_EQ(shim({"mount", seed_pod, options("vol-crash")})["status"], "Success");
  write_file(seed_pod + "/data.txt", "survives crashes\n");
  ASSERT_EQ(shim({"unmount", seed_pod})["status"], "Success");

  for (const std::string point : {"mount:after_intent", "mount:after_array", "mount:after_target",
                                  "mount:after_login", "mount:after_staging", "mount:after_bind"}) {
    SCOPED_TRACE(point);
    agent_.stop(SIGKILL);
    start_agent(point);
    const auto pod = pod_dir("uid-" + point.substr(point.find(':') + 1));
    auto r = agent_.shim({"mount", pod, options("vol-crash")});
    EXPECT_EQ(r.exit_code, 1) << "the agent died mid-call: " << r.output;
    EXPECT_TRUE(agent_.wait_exit() >= 0) << "the crash point was not reached";
    EXPECT_NE(agent_.log_text().find("crash point " + point + " reached"), std::string::npos);
    start_agent();
    if (point == "mount:after_bind") {
      // The bind was made: the restart finishes the mount, and kubelet's retry finds it done.
      EXPECT_TRUE(mount_at(pod));
    } else {
      expect_released_after_start("vol-crash");
    }
    auto retry = shim({"mount", pod, options("vol-crash")});
    ASSERT_EQ(retry["status"], "Success") << retry.dump() << agent_.log_text();
    EXPECT_EQ(read_file(pod + "/data.txt"), "survives crashes\n");
    ASSERT_EQ(shim({"unmount", pod})["status"], "Success");
    expect_released("vol-crash");
  }
}

/// SIGKILL between every two steps of unmount; kubelet retries the unmount after the restart.
TEST_F(VolumeTest, KilledBetweenEveryStepOfUnmountThenRestartedLeaksNothing) {
  for (const std::string point : {"unmount:after_unbind", "unmount:after_staging_unmount",
                                  "unmount:after_logout", "unmount:after_array"}) {
    SCOPED_TRACE(point);
    const auto pod = pod_dir("uid-" + point.substr(point.find(':') + 1));
    ASSERT_EQ(shim({"mount", pod, options("vol-ucrash")})["status"], "Success");
    write_file(pod + "/data.txt", point + "\n");
    agent_.stop(SIGKILL);
    start_agent(point);
    auto r = agent_.shim({"unmount", pod});
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(agent_.wait_exit() >= 0) << "the crash point was not reached";
    start_agent();
    EXPECT_EQ(shim({"unmount", pod})["status"], "Success");
    expect_released("vol-ucrash");
    // The data is intact on the array: mount it again and read it.
    ASSERT_EQ(shim({"mount", pod, options("vol-ucrash")})["status"], "Success");
    EXPECT_EQ(read_file(pod + "/data.txt"), point + "\n");
    ASSERT_EQ(shim({"unmount", pod})["status"], "Success");
    agent_.stop(SIGKILL);
    start_agent();
  }
}

// ---------------------------------------------------------------------------------------------
// Real node layouts and start-up that neither blocks on the array nor crash-loops
// ---------------------------------------------------------------------------------------------

/// A common layout: the kubelet dir moved to a data disk and linked back. kubelet passes paths
/// through the link, mountinfo shows the resolved ones. An agent that compared the two as strings
/// decided at every restart that the pod's mount was gone and released the volume under the pod.
TEST_F(VolumeTest, ASymlinkedKubeletRootKeepsTheVolumeAcrossAgentRestarts) {
  agent_.stop(SIGKILL);
  const std::string data = agent_.root + "/data-disk/kubelet";
  testing::exec_capture({"/bin/mkdir", "-p", data});
  testing::exec_capture({"/bin/rm", "-rf", agent_.root + "/kubelet"});
  ASSERT_EQ(::symlink(data.c_str(), (agent_.root + "/kubelet").c_str()), 0);
  start_agent();

  const auto pod = pod_dir("uid-1");  // through the link, as kubelet names it
  ASSERT_EQ(shim({"mount", pod, options("vol-link")})["status"], "Success");
  const std::string real_pod = data + "/pods/uid-1/volumes/datera~iscsi/pv1";
  EXPECT_TRUE(mount_at(real_pod)) << "mountinfo shows the resolved path";
  write_file(pod + "/data.txt", "still here\n");

  for (int restart = 0; restart < 2; ++restart) {
    agent_.stop(restart == 0 ? SIGKILL : SIGTERM);
    start_agent();
    EXPECT_EQ(metric("datera_agent_volume_reconcile_actions_total{action=\"kept\"}"), 1)
        << agent_.metrics() << agent_.log_text();
    const auto acl = acl_of("vol-link");
    EXPECT_EQ(std::count(acl.begin(), acl.end(), kIqn), 1) << "released under the running pod";
    EXPECT_EQ(owner_of("vol-link"), "it-node") << "the lease was given up";
    EXPECT_TRUE(mount_at(real_pod));
    EXPECT_EQ(read_file(pod + "/data.txt"), "still here\n");
  }
  // kubelet's unmount names the linked path: the same pod mount, released once.
  ASSERT_EQ(shim({"unmount", pod})["status"], "Success");
  expect_released("vol-link");
}

/// A symlink planted under pods/ (a pod author with a hostPath, or a compromised container)
/// must not move a bind mount outside kubelet's tree.
TEST_F(VolumeTest, ASymlinkBelowKubeletRootIsNeverFollowed) {
  const std::string outside = agent_.root + "/outside";
  testing::exec_capture(
      {"/bin/mkdir", "-p", outside + "/volumes/datera~iscsi/pv1", agent_.root + "/kubelet/pods"});
  ASSERT_EQ(::symlink(outside.c_str(), (agent_.root + "/kubelet/pods/uid-evil").c_str()), 0);
  const std::string pod = agent_.root + "/kubelet/pods/uid-evil/volumes/datera~iscsi/pv1";
  auto r = shim({"mount", pod, options("vol-evil")});
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r.value("message", "").find("symbolic link"), std::string::npos) << r.dump();
  EXPECT_FALSE(mount_at(outside + "/volumes/datera~iscsi/pv1")) << "bound outside kubelet_root";
  EXPECT_TRUE(loops_under(sim_.dir().path()).empty());
}

/// A leftover from a crash whose release needs an array that does not answer: the API serves at
/// once (only that volume waits), and the release goes on in the background.
TEST_F(VolumeTest, AnUnreachableArrayNeverHoldsUpStartUp) {
  const auto pod = pod_dir("uid-1");
  agent_.stop(SIGKILL);
  start_agent("mount:after_array");  // dies after the node joined the ACL
  (void)agent_.shim({"mount", pod, options("vol-stuck")});
  ASSERT_GE(agent_.wait_exit(), 0) << "the crash point was not reached";
  // The array accepts connections and never answers (stopped, not gone: no quick refusal). One
  // request is bounded to 1 s here; at the default 30 s an older agent waited minutes.
  sim_.signal(SIGSTOP);
  std::ifstream in(agent_.config);
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  config.replace(config.find("backend: {"), 10, "backend: {request_timeout: 1s, ");
  std::ofstream(agent_.config, std::ios::trunc) << config;

  ASSERT_TRUE(agent_.start());
  const auto t0 = std::chrono::steady_clock::now();
  const std::string volumes = node_.wait_volumes(
      [](const std::string& body) { return body.find("vol-stuck") != std::string::npos; });
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ measure ] start to the API serving, array not answering, one leftover: " << took
            << " s\n";
  EXPECT_LT(took, 4.0) << "the API waited for the array: " << agent_.log_text();
  EXPECT_NE(volumes.find("vol-stuck"), std::string::npos) << volumes;
  // The release is tried, and its failure is shown where an operator looks.
  const auto shown = [](const std::string& body) {
    auto v = json::parse(body, nullptr, false);
    return v.is_object() && !v["volumes"].empty() &&
           v["volumes"][0].value("release_failures", 0) >= 1;
  };
  const bool failure_shown = shown(node_.wait_volumes(shown));
  EXPECT_TRUE(failure_shown) << agent_.log_text();
  sim_.signal(SIGCONT);
}

/// A record whose handling kills the agent at every start (here a crash point inside the release
/// that reconcile starts) would crash-loop it for ever: after three deaths it is set aside, and
/// the agent serves.
TEST_F(VolumeTest, ARecordThatKeepsCrashingTheAgentIsSetAsideAndTheAgentServes) {
  const auto pod = pod_dir("uid-1");
  agent_.stop(SIGKILL);
  start_agent("mount:after_array");
  (void)agent_.shim({"mount", pod, options("vol-loop")});
  ASSERT_GE(agent_.wait_exit(), 0);
  for (int death = 1; death <= 3; ++death) {
    SCOPED_TRACE(death);
    agent_.extra_env = {"DATERA_AGENT_TEST_CRASH_AT=reconcile:after_staging_unmount"};
    ASSERT_TRUE(agent_.start());
    EXPECT_GE(agent_.wait_exit(std::chrono::seconds(20)), 0) << "it did not die this time";
  }
  // The same crash point stays armed: the record is no longer handled, so it is not reached.
  ASSERT_TRUE(agent_.start());
  ASSERT_TRUE(agent_.wait_ready()) << agent_.log_text();
  auto v = json::parse(testing::body_of(agent_.api(testing::http_get("/v1/volumes"))));
  ASSERT_EQ(v["volumes"].size(), 1u) << v.dump();
  EXPECT_EQ(v["volumes"][0]["phase"], "set_aside") << v.dump();
  EXPECT_EQ(metric("datera_agent_volumes_set_aside"), 1);
  EXPECT_NE(agent_.log_text().find("set aside"), std::string::npos);
  agent_.stop(SIGTERM);
  EXPECT_EQ(agent_.exit_status, 0);
}

// ---------------------------------------------------------------------------------------------
// Issue 14 item 1: the agent's own credentials go only to its own array. A second datera-sim
// plays "another server" a PV names through backstoreServer.
// ---------------------------------------------------------------------------------------------

std::string base64(const std::string& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -6;
  for (const unsigned char c : in) {
    val = (val << 8) + c;
    bits += 8;
    while (bits >= 0) {
      out.push_back(k[(val >> bits) & 0x3f]);
      bits -= 6;
    }
  }
  if (bits > -6) out.push_back(k[((val << 8) >> (bits + 8)) & 0x3f]);
  while (out.size() % 4) out.push_back('=');
  return out;
}

class SecondArrayTest : public VolumeTest {
 protected:
  void SetUp() override {
    VolumeTest::SetUp();
    if (IsSkipped()) return;
    other_.password = "other_Pass2";
    ASSERT_TRUE(other_.start()) << other_.log();
  }

  /// The agent restarted with `extra` inside its backend mapping.
  void restart_with_backend(const std::string& extra) {
    agent_.stop();
    std::string text = read_file(agent_.config);
    const std::string end = "/password'}";
    const auto at = text.find(end);
    ASSERT_NE(at, std::string::npos) << text;
    text.replace(at, end.size(), "/password'" + extra + "}");
    write_file(agent_.config, text);
    start_agent();
  }

  json other_logins() {
    const auto raw = testing::tcp_get(other_.port, "/_sim/logins");
    auto j = json::parse(testing::body_of(raw), nullptr, false);
    EXPECT_TRUE(j.is_object()) << raw;
    return j;
  }

  json options_on_other(const std::string& volume, json extra = json::object()) {
    json o = json::parse(options(volume));
    o["backstoreServer"] = other_.server();
    for (const auto& [k, v] : extra.items()) o[k] = v;
    return o;
  }

  SimProcess other_{DATERA_SIM_PATH, {"--backend", "memory"}};
};

TEST_F(SecondArrayTest, AServerNotAllowedOrWithoutItsOwnCredentialsIsRefusedBeforeAnyConnection) {
  const auto pod = pod_dir("uid-other");
  // Not in backend.allowed_servers: refused, with or without credentials of its own.
  for (const json& creds :
       {json::object(), json{{"serverUser", "admin"}, {"serverPasswd", other_.password}}}) {
    auto r = shim({"mount", pod, options_on_other("vol-other", creds).dump()});
    EXPECT_EQ(r["status"], "Failure") << r.dump();
    const std::string msg = r.value("message", "");
    EXPECT_NE(msg.find("'backstoreServer'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("backend.allowed_servers"), std::string::npos) << msg;
    EXPECT_EQ(msg.find(sim_.password), std::string::npos) << msg;
  }
  // Allowed, but without credentials of its own: the agent's are not lent to it.
  restart_with_backend(", allowed_servers: ['" + other_.server() + "']");
  auto r = shim({"mount", pod, options_on_other("vol-other").dump()});
  EXPECT_EQ(r["status"], "Failure") << r.dump();
  EXPECT_NE(r.value("message", "").find("own credentials"), std::string::npos) << r.dump();
  EXPECT_FALSE(mount_at(pod));
  // The other server never saw a login attempt: the agent's password never left for it.
  const auto seen = other_logins();
  EXPECT_EQ(seen["requests"], 0) << seen.dump();
  EXPECT_EQ(other_.log().find(sim_.password), std::string::npos);
}

TEST_F(SecondArrayTest, AnAllowedServerIsReachedWithTheVolumesOwnCredentials) {
  restart_with_backend(", allowed_servers: ['" + other_.server() + "']");
  const auto pod = pod_dir("uid-other-ok");
  const json secret{{"kubernetes.io/secret/username", base64("admin")},
                    {"kubernetes.io/secret/password", base64(other_.password)}};
  auto r = agent_.shim({"mount", pod, options_on_other("vol-other2", secret).dump()});
  // The array half runs on the other server with the volume's credentials: the app instance is
  // created there and this node enters its ACL. The host tier's loop initiator reads exports
  // only from the agent's default datera-sim, so the login step cannot find this volume, and
  // the mount is rolled back (the node leaves the other array's ACL with the same credentials).
  const auto seen = other_logins();
  EXPECT_GE(seen["users"]["admin"].value("accepted", 0), 1) << seen.dump() << r.output;
  EXPECT_EQ(seen["users"]["admin"].value("refused", 0), 0) << seen.dump();
  const auto acl_log =
      json::parse(testing::body_of(testing::tcp_get(other_.port, "/_sim/acl_log")), nullptr, false);
  std::vector<std::string> ops;
  for (const auto& e : acl_log["entries"]) {
    if (e.value("initiator", "") == "/initiators/" + kIqn) ops.push_back(e["op"]);
  }
  EXPECT_EQ(ops, (std::vector<std::string>{"add", "remove"})) << acl_log.dump() << r.output;
  EXPECT_EQ(r.output.find("allowed_servers"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("own credentials"), std::string::npos) << r.output;
}

// ---------------------------------------------------------------------------------------------
// Issue 14 item 6: rotating the agent's password must not strand mounted volumes.
// ---------------------------------------------------------------------------------------------

TEST_F(VolumeTest, APasswordRotationDoesNotStrandAMountedVolume) {
  agent_.stop();
  // Renewals every 2 s, so a refused one shows within the test.
  std::ofstream(agent_.config, std::ios::app) << "handoff: {lease_ttl: 6s}\n";
  start_agent();
  const auto pod = pod_dir("uid-rot");
  ASSERT_EQ(shim({"mount", pod, options("vol-rot")})["status"], "Success") << agent_.log_text();
  EXPECT_EQ(read_file(agent_.root + "/state/journal/vol-rot.json").find(sim_.password),
            std::string::npos)
      << "the journal holds a copy of the agent's password";

  // The array's password changes; until the agent's password_file follows, renewals are refused
  // and counted as such.
  const std::string rotated = "rotated_Pass9";
  const auto changed = testing::tcp_json(sim_.port, "POST", "/_sim/password",
                                         json{{"name", "admin"}, {"password", rotated}}.dump());
  ASSERT_EQ(changed.rfind("HTTP/1.1 200", 0), 0u) << changed;
  const std::string unauthorized =
      "datera_agent_lease_renewal_failures_total{reason=\"unauthorized\"}";
  node_.wait_metric(unauthorized, [](double v) { return v >= 1; });
  EXPECT_GE(metric(unauthorized), 1) << agent_.metrics();

  // The operator rotates the agent's secret and restarts it; the volume unmounts cleanly.
  write_file(agent_.root + "/password", rotated);
  agent_.stop();
  const size_t log_before = agent_.log_text().size();
  start_agent();
  auto r = shim({"unmount", pod});
  EXPECT_EQ(r["status"], "Success") << r.dump() << agent_.log_text();
  expect_released("vol-rot");
  EXPECT_EQ(metric(unauthorized), 0) << agent_.metrics();
  const std::string after = agent_.log_text().substr(log_before);
  EXPECT_EQ(after.find("(HTTP 401)"), std::string::npos) << after;
}

}  // namespace
}  // namespace datera

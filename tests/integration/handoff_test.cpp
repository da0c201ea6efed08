// Volumes moving between nodes on the host tier: three real agents as three "nodes", each in its
// own network namespace (reaching datera-sim over its own veth link, which a test can cut), with
// distinct node names, initiator IQNs, state dirs, kubelet roots and sockets, against one
// datera-sim (file backend, ACL enforced), each through its own installed shim, with the loop
// initiator.
//
// What the host tier cannot show: a loop device does not feel an ACL change, so "the array ends
// the fenced node's session" is emulated where a test needs it (the fenced node's loop devices
// are set read-only, as a cut session would be); the kernel tier is where LIO really ends it.

#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
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
using testing::read_file;
using testing::SimProcess;
using testing::write_file;
using Clock = std::chrono::steady_clock;

struct Node {
  std::string name;
  std::string iqn;
  std::unique_ptr<testing::NetNamespace> net;
  std::unique_ptr<testing::HostNode> host;  ///< the node (tests/testing/host_node.h)
  AgentProcess* agent = nullptr;            ///< its agent
};

class HandoffTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto why = testing::host_node_unavailable(); !why.empty()) GTEST_SKIP() << why;
    sim_.listen = "0.0.0.0:0";  // reached from every node's namespace over its veth link
    ASSERT_TRUE(sim_.start()) << sim_.log();
    int index = 0;
    for (const char* n : {"node-a", "node-b", "node-c"}) {
      Node node;
      node.name = n;
      node.iqn = std::string("iqn.1993-08.org.debian:01:handoff-") + test_tag() + "-" + n;
      node.net = std::make_unique<testing::NetNamespace>(std::string(1, n[5]), index++);
      if (!node.net->ok) {
        GTEST_SKIP() << "SKIPPED: cannot make a network namespace for " << n << " ("
                     << node.net->error << "); the handoff tests need one per node";
      }
      node.host = std::make_unique<testing::HostNode>();
      node.host->join(sim_, node.iqn, node.net.get());
      node.host->add_config("handoff: {lease_ttl: " + std::to_string(kTtlSeconds) +
                            "s, claim_settle: 300ms, claim_write_bound: 200ms}\n" +
                            (attach_ ? "attach: true\n" : ""));
      node.host->set_node_name(node.name);
      node.agent = &node.host->agent;
      nodes_[n] = std::move(node);
      start(n);
    }
  }

  void TearDown() override {
    for (auto& [_, n] : nodes_) {
      if (n.agent) n.agent->stop(SIGKILL);
    }
    // The read-only flag outlives the loop device's attachment; the next user must not inherit it.
    for (const auto& dev : read_only_) testing::exec_capture({"/sbin/blockdev", "--setrw", dev});
    for (auto& [_, n] : nodes_) {
      if (n.host) n.host->teardown();
    }
    testing::detach_loops_under(sim_.dir().path());
  }

  static std::string test_tag() {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::string out;
    for (char c : name) {
      if (std::isupper(static_cast<unsigned char>(c))) out += static_cast<char>(std::tolower(c));
    }
    return out.substr(0, 20);
  }

  void start(const std::string& n) { nodes_[n].host->start(); }

  std::string pod_dir(const std::string& n, const std::string& uid) {
    return nodes_[n].host->pod_dir(uid, "pv");
  }

  static std::string options(const std::string& volume) { return testing::flex_options(volume); }

  json shim(const std::string& n, const std::vector<std::string>& args) {
    return nodes_[n].host->shim(args);
  }

  json sim_get(const std::string& path) { return testing::sim_get(sim_, path); }

  /// Replays the simulator's ACL log for `volume`: never two initiators at once, and returns
  /// the sequence ("+node-a", "-node-a", ...).
  std::vector<std::string> acl_history(const std::string& volume) {
    std::map<std::string, std::string> by_iqn;
    for (auto& [n, node] : nodes_) by_iqn["/initiators/" + node.iqn] = n;
    std::set<std::string> granted;
    std::vector<std::string> seq;
    const auto log = sim_get("/_sim/acl_log");  // named: a range-for over a temporary dangles
    for (const auto& e : log["entries"]) {
      if (e["app_instance"] != volume) continue;
      const std::string who =
          by_iqn.count(e["initiator"]) ? by_iqn[e["initiator"]] : e["initiator"].get<std::string>();
      if (e["op"] == "add") {
        granted.insert(who);
        seq.push_back("+" + who);
      } else {
        granted.erase(who);
        seq.push_back("-" + who);
      }
      EXPECT_LE(granted.size(), 1u)
          << "two nodes granted " << volume << " at once after " << e.dump();
    }
    return seq;
  }

  double metric(const std::string& n, const std::string& prefix) {
    return nodes_[n].host->metric(prefix);
  }

  /// Successful reads of app instance metadata (where the lease lives) node `n` made.
  double lease_reads(const std::string& n) {
    std::istringstream ss(nodes_[n].agent->metrics());
    std::string line;
    double sum = 0;
    while (std::getline(ss, line)) {
      if (line.rfind("datera_agent_backend_requests_total{", 0) == 0 &&
          line.find(R"(endpoint="/app_instances/:id/metadata")") != std::string::npos &&
          line.find(R"(method="GET")") != std::string::npos &&
          line.find(R"(status="200")") != std::string::npos) {
        sum += std::stod(line.substr(line.rfind(' ') + 1));
      }
    }
    return sum;
  }

  static constexpr int kTtlSeconds = 3;
  SimProcess sim_{DATERA_SIM_PATH, testing::file_backend_args()};
  std::map<std::string, Node> nodes_;
  std::vector<std::string> read_only_;  ///< loop devices a test set read-only
  bool attach_ = false;                 ///< controller mode on every agent
};

TEST_F(HandoffTest, AVolumeInUseIsRefusedNamingTheOwnerThenMovesOnceItsPodIsGone) {
  const auto pod_a = pod_dir("node-a", "uid-a");
  auto r = shim("node-a", {"mount", pod_a, options("vol-move")});
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-a"].agent->log_text();
  write_file(pod_a + "/owner.txt", "written on node-a\n");

  const auto pod_b = pod_dir("node-b", "uid-b");
  r = shim("node-b", {"mount", pod_b, options("vol-move")});
  ASSERT_EQ(r["status"], "Failure") << r.dump();
  const std::string msg = r["message"];
  EXPECT_NE(msg.find("in use on node node-a"), std::string::npos) << msg;
  EXPECT_NE(msg.find("uid-a"), std::string::npos) << "names the pod: " << msg;
  EXPECT_FALSE(testing::is_mounted(pod_b));
  EXPECT_TRUE(testing::is_mounted(pod_a)) << "the owner keeps serving its pod";

  ASSERT_EQ(shim("node-a", {"unmount", pod_a})["status"], "Success");
  const auto t0 = Clock::now();
  r = shim("node-b", {"mount", pod_b, options("vol-move")});  // kubelet's retry
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-b"].agent->log_text();
  std::cout << "[ measure ] graceful handoff: node-b mounted " << took
            << " s after node-a's unmount\n";
  EXPECT_LT(took, 5.0) << "goal: graceful handoff within 5 s of the old owner's unmount";
  EXPECT_EQ(read_file(pod_b + "/owner.txt"), "written on node-a\n");
  EXPECT_EQ(acl_history("vol-move"), (std::vector<std::string>{"+node-a", "-node-a", "+node-b"}));
  EXPECT_EQ(metric("node-b", "datera_agent_handoffs_total{result=\"refused\"}"), 1);
  EXPECT_EQ(metric("node-b", "datera_agent_handoffs_total{result=\"claimed\"}"), 1);
}

TEST_F(HandoffTest, ADeadOwnerIsFencedOutOfTheAclAndTakenOverAfterItsLease) {
  const auto pod_a = pod_dir("node-a", "uid-a");
  ASSERT_EQ(shim("node-a", {"mount", pod_a, options("vol-dead")})["status"], "Success");
  write_file(pod_a + "/before.txt", "before the crash\n");
  // The node dies: its agent, and with its kernel its mounts and devices.
  nodes_["node-a"].agent->stop(SIGKILL);
  testing::unmount_under(nodes_["node-a"].agent->root);
  testing::detach_loops_under(sim_.dir().path());

  const auto pod_b = pod_dir("node-b", "uid-b");
  const auto t0 = Clock::now();
  auto r = shim("node-b", {"mount", pod_b, options("vol-dead")});
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-b"].agent->log_text();
  std::cout << "[ measure ] dead-node takeover: " << took << " s (lease TTL " << kTtlSeconds
            << " s)\n";
  EXPECT_GE(took, kTtlSeconds - 0.5) << "never before the owner's lease could expire";
  EXPECT_LT(took, kTtlSeconds + 10.0) << "goal: lease TTL + 10 s";
  EXPECT_EQ(acl_history("vol-dead"), (std::vector<std::string>{"+node-a", "-node-a", "+node-b"}))
      << "node-a fenced out of the ACL before node-b was let in";
  EXPECT_EQ(metric("node-b", "datera_agent_fencing_actions_total{kind=\"fenced_expired_owner\"}"),
            1);
  EXPECT_EQ(metric("node-b", "datera_agent_handoffs_total{result=\"taken_over\"}"), 1);
  EXPECT_EQ(read_file(pod_b + "/before.txt"), "before the crash\n");
}

// ext4 here: xfs refuses a second mount of the same filesystem on one kernel (duplicate UUID),
// and both "nodes" share this host's kernel.
TEST_F(HandoffTest, AnOwnerCutOffAndTakenOverSelfFencesWhenThePartitionHeals) {
  auto opts = json::parse(options("vol-cut"));
  opts["kubernetes.io/fsType"] = "ext4";
  const auto pod_a = pod_dir("node-a", "uid-a");
  ASSERT_EQ(shim("node-a", {"mount", pod_a, opts.dump()})["status"], "Success");
  write_file(pod_a + "/before.txt", "before the partition\n");
  const auto a_loops = loops_under(sim_.dir().path());
  ASSERT_EQ(a_loops.size(), 1u);
  // Steady state first: node-a has renewed twice (each renewal reads the lease), so its renewal
  // client is logged in (a first login during the cut would spend its bounded attempts on version
  // discovery and login, and could still be retrying when the link comes back).
  const double reads = lease_reads("node-a");
  const auto renewing = Clock::now() + std::chrono::seconds(10);
  while (lease_reads("node-a") < reads + 2 && Clock::now() < renewing) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(lease_reads("node-a"), reads + 2) << nodes_["node-a"].agent->metrics();
  // Node A's link to the array goes down; its agent runs on and its renewals fail. The array
  // ending its session when it leaves the ACL is emulated: its device refuses writes from here on.
  ASSERT_TRUE(nodes_["node-a"].net->cut());
  for (const auto& dev : a_loops) {
    testing::exec_capture({"/sbin/blockdev", "--setro", dev});
    read_only_.push_back(dev);
  }

  const auto pod_b = pod_dir("node-b", "uid-b");
  auto r = shim("node-b", {"mount", pod_b, opts.dump()});
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-b"].agent->log_text();
  EXPECT_EQ(read_file(pod_b + "/before.txt"), "before the partition\n");
  EXPECT_TRUE(testing::is_mounted(pod_a)) << "node-a cannot know yet";

  ASSERT_TRUE(nodes_["node-a"].net->heal());
  const auto deadline = Clock::now() + std::chrono::seconds(kTtlSeconds * 5);
  const auto staging_a = nodes_["node-a"].agent->root + "/state/staging/vol-cut";
  // The self-fence unmounts the pod's bind, then the staging mount: wait for both, not just the
  // first (checking the second right after the first raced about once in ten runs).
  while ((testing::is_mounted(pod_a) || testing::is_mounted(staging_a)) &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_FALSE(testing::is_mounted(pod_a))
      << "node-a still serves a volume it lost: " << nodes_["node-a"].agent->log_text();
  EXPECT_FALSE(testing::is_mounted(staging_a));
  EXPECT_EQ(metric("node-a", "datera_agent_fencing_actions_total{kind=\"self_fenced\"}"), 1)
      << nodes_["node-a"].agent->log_text();
  EXPECT_GE(metric("node-a", "datera_agent_lease_renewal_failures_total{reason=\"unreachable\"}"),
            1)
      << "its renewals failed while it was cut off: " << nodes_["node-a"].agent->log_text();
  // The self-fence detaches node-a's device after its unmounts: waited for, not raced (the
  // check right after the unmount failed about once in six runs).
  while (loops_under(sim_.dir().path()).size() > 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(loops_under(sim_.dir().path()).size(), 1u)
      << "node-a's device is detached, node-b's kept";
  write_file(pod_b + "/after.txt", "node-b owns it\n");
  EXPECT_EQ(read_file(pod_b + "/after.txt"), "node-b owns it\n");
  const auto h = acl_history("vol-cut");
  EXPECT_EQ(h, (std::vector<std::string>{"+node-a", "-node-a", "+node-b"}))
      << "node-a never re-entered the ACL";
}

TEST_F(HandoffTest, OfThreeNodesClaimingAFreeVolumeAtOnceExactlyOneWins) {
  std::map<std::string, json> answers;
  std::vector<std::thread> threads;
  std::map<std::string, std::string> pods;
  for (const char* n : {"node-a", "node-b", "node-c"}) pods[n] = pod_dir(n, "uid-race");
  std::mutex mu;
  for (const char* n : {"node-a", "node-b", "node-c"}) {
    threads.emplace_back([&, n] {
      auto r = nodes_[n].agent->shim({"mount", pods[n], options("vol-race")});
      std::lock_guard<std::mutex> lock(mu);
      answers[n] = json::parse(r.output, nullptr, false);
    });
  }
  for (auto& t : threads) t.join();
  int winners = 0;
  std::string winner;
  for (auto& [n, a] : answers) {
    if (a.value("status", "") == "Success") {
      ++winners;
      winner = n;
    }
  }
  ASSERT_EQ(winners, 1) << json(answers).dump();
  for (auto& [n, a] : answers) {
    if (n == winner) continue;
    EXPECT_NE(a.value("message", "").find(winner), std::string::npos)
        << n << " was not told who holds it: " << a.dump();
    EXPECT_FALSE(testing::is_mounted(pods[n]));
  }
  EXPECT_TRUE(testing::is_mounted(pods[winner]));
  const auto h = acl_history("vol-race");
  EXPECT_EQ(h, std::vector<std::string>{"+" + winner});
}

// Controller mode (attach: true) on every agent: node-c plays the control plane, where
// kube-controller-manager's attach-detach controller runs the driver (attach, isattached,
// detach); node-a and node-b run kubelet's half (waitforattach, mountdevice, mount, unmount,
// unmountdevice). Every call goes through the installed shim of the agent it names.
class ControllerModeTest : public HandoffTest {
 protected:
  ControllerModeTest() { attach_ = true; }

  std::string device_mount(const std::string& n, const std::string& pv) {
    const std::string dir = nodes_[n].agent->root +
                            "/kubelet/plugins/kubernetes.io/flexvolume/datera/iscsi/mounts/" + pv;
    testing::exec_capture({"/bin/mkdir", "-p", dir});
    return dir;
  }
  /// kubelet's calls on node `n` for a pod, as its volume manager makes them.
  json bring_up(const std::string& n, const std::string& opts, const std::string& pod) {
    auto w = shim(n, {"waitforattach", "", opts});
    if (w["status"] != "Success") return w;
    auto m = shim(n, {"mountdevice", device_mount(n, "pv-ctl"), w.value("device", ""), opts});
    if (m["status"] != "Success") return m;
    return shim(n, {"mount", pod, opts});
  }
  bool attached(const std::string& n, const std::string& opts) {
    auto r = shim("node-c", {"isattached", opts, n});
    EXPECT_EQ(r["status"], "Success") << r.dump();
    return r.value("attached", false);
  }
};

TEST_F(ControllerModeTest, TheControllerMovesAVolumeBetweenNodesAndNodesOnlyUseWhatItGranted) {
  auto opts = json::parse(options("vol-ctl"));
  opts["kubernetes.io/pvOrVolumeName"] = "pv-ctl";
  const std::string o = opts.dump();
  EXPECT_EQ(shim("node-a", {"init"})["capabilities"]["attach"], true);

  // Before the controller attached it, the node may not log in.
  auto r = shim("node-a", {"waitforattach", "", o});
  ASSERT_EQ(r["status"], "Failure") << r.dump();
  EXPECT_NE(r["message"].get<std::string>().find("not attached to this node"), std::string::npos);

  r = shim("node-c", {"attach", o, "node-a"});
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-c"].agent->log_text();
  EXPECT_TRUE(attached("node-a", o));
  EXPECT_FALSE(attached("node-b", o));
  r = shim("node-b", {"waitforattach", "", o});
  EXPECT_EQ(r["status"], "Failure") << "granted to node-a only: " << r.dump();
  r = shim("node-c", {"attach", o, "node-b"});
  EXPECT_EQ(r["status"], "Failure") << "a multi-attach is refused: " << r.dump();
  EXPECT_TRUE(attached("node-a", o));

  const auto pod_a = pod_dir("node-a", "uid-a");
  r = bring_up("node-a", o, pod_a);
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-a"].agent->log_text();
  EXPECT_TRUE(testing::is_mounted(device_mount("node-a", "pv-ctl")));
  write_file(pod_a + "/owner.txt", "written on node-a\n");

  // The pod moves: kubelet on node-a tears down, then the controller detaches and attaches.
  ASSERT_EQ(shim("node-a", {"unmount", pod_a})["status"], "Success");
  ASSERT_EQ(shim("node-a", {"unmountdevice", device_mount("node-a", "pv-ctl")})["status"],
            "Success");
  EXPECT_FALSE(testing::is_mounted(device_mount("node-a", "pv-ctl")));
  const auto t0 = Clock::now();
  r = shim("node-c", {"detach", "pv-ctl", "node-a"});
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-c"].agent->log_text();
  EXPECT_FALSE(attached("node-a", o));
  ASSERT_EQ(shim("node-c", {"attach", o, "node-b"})["status"], "Success");
  const auto pod_b = pod_dir("node-b", "uid-b");
  r = bring_up("node-b", o, pod_b);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-b"].agent->log_text();
  std::cout << "[ measure ] controller mode: detach, attach and node-b's waitforattach, "
               "mountdevice and mount took "
            << took << " s\n";
  EXPECT_EQ(read_file(pod_b + "/owner.txt"), "written on node-a\n");
  EXPECT_EQ(acl_history("vol-ctl"), (std::vector<std::string>{"+node-a", "-node-a", "+node-b"}));
  EXPECT_EQ(metric("node-c",
                   "datera_agent_controller_operations_total{operation=\"attach\","
                   "result=\"success\"}"),
            2);
  EXPECT_EQ(metric("node-c", "datera_agent_controller_refusals_total"), 1);
  EXPECT_EQ(metric("node-a", "datera_agent_fencing_actions_total{kind=\"self_fenced\"}"), 0);
}

// ext4: node-a's stale mount and node-b's are up at once on this one kernel (xfs would refuse the
// duplicate UUID).
TEST_F(ControllerModeTest, ANodeForceDetachedByTheControllerSelfFences) {
  auto opts = json::parse(options("vol-ctl"));
  opts["kubernetes.io/pvOrVolumeName"] = "pv-ctl";
  opts["kubernetes.io/fsType"] = "ext4";
  const std::string o = opts.dump();
  ASSERT_EQ(shim("node-c", {"attach", o, "node-a"})["status"], "Success");
  const auto pod_a = pod_dir("node-a", "uid-a");
  auto r = bring_up("node-a", o, pod_a);
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-a"].agent->log_text();
  write_file(pod_a + "/before.txt", "before the force-detach\n");

  // Kubernetes gave up on node-a (unhealthy for 6 minutes, or out-of-service): it detaches
  // without node-a's unmount, then attaches to node-b. node-a's agent is alive and sees it.
  ASSERT_EQ(shim("node-c", {"detach", "pv-ctl", "node-a"})["status"], "Success");
  ASSERT_EQ(shim("node-c", {"attach", o, "node-b"})["status"], "Success");
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::seconds(kTtlSeconds * 3);
  while (testing::is_mounted(pod_a) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_FALSE(testing::is_mounted(pod_a))
      << "node-a still serves a volume it lost: " << nodes_["node-a"].agent->log_text();
  std::cout << "[ measure ] controller mode: node-a self-fenced " << took
            << " s after the force-detach (checks every " << kTtlSeconds << "/3 s)\n";
  EXPECT_FALSE(testing::is_mounted(device_mount("node-a", "pv-ctl")));
  EXPECT_EQ(metric("node-a", "datera_agent_fencing_actions_total{kind=\"self_fenced\"}"), 1);

  const auto pod_b = pod_dir("node-b", "uid-b");
  r = bring_up("node-b", o, pod_b);
  ASSERT_EQ(r["status"], "Success") << r.dump() << nodes_["node-b"].agent->log_text();
  EXPECT_EQ(read_file(pod_b + "/before.txt"), "before the force-detach\n");
  EXPECT_EQ(acl_history("vol-ctl"), (std::vector<std::string>{"+node-a", "-node-a", "+node-b"}));
}

}  // namespace
}  // namespace datera

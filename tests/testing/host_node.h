#pragma once

// One host-tier node, set up the one way every host test sets it up: the real datera-agent in a
// private temp tree (socket, plugin dir, state dir, kubelet root), configured for a datera-sim as
// its default array and with the loop initiator (the simulator's file backend through loop
// devices); the calls a test makes on it (the installed FlexVolume shim, /v1/volumes, the
// metrics, and bounded waits on those); and a teardown that leaves no mount behind.
//
// HostNode is the node alone (a test with several nodes makes several against one simulator);
// HostNodeTest is the gtest fixture for the common case: one simulator, one node, started.
// Front ends added later (CSI) add their config with add_config() and find the agent's trees
// with state_dir() and kubelet_root().

#include <cctype>
#include <chrono>
#include <csignal>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/agent_process.h"
#include "tests/testing/host_mounts.h"
#include "tests/testing/loop_node.h"
#include "tests/testing/netns.h"
#include "tests/testing/sim_process.h"

namespace datera::testing {

/// Why this machine cannot run a loop-initiator node ("" when it can): the tests mount
/// filesystems (root) on loop devices.
inline std::string host_node_unavailable() {
  if (::geteuid() != 0) return "SKIPPED: host-tier node tests mount filesystems and need root";
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) {
    return "SKIPPED: no /dev/loop-control; the loop initiator cannot run here";
  }
  return "";
}

/// FlexVolume mount options for a 1 GiB xfs volume, as kubelet passes them.
inline std::string flex_options(const std::string& volume, bool read_only = false) {
  return nlohmann::json{{"volumeID", volume},
                        {"size", "1"},
                        {"kubernetes.io/fsType", "xfs"},
                        {"kubernetes.io/readwrite", read_only ? "ro" : "rw"},
                        {"kubernetes.io/pvOrVolumeName", "pv-" + volume}}
      .dump();
}

/// GET `path` from the simulator (its /_sim/ control endpoints), parsed; expects a JSON object.
inline nlohmann::json sim_get(const SimProcess& sim, const std::string& path) {
  const auto raw = tcp_get(sim.port, path);
  auto j = nlohmann::json::parse(body_of(raw), nullptr, false);
  EXPECT_TRUE(j.is_object()) << "GET " << path << " from datera-sim: " << raw;
  return j;
}

/// Writes `text` and syncs, as a pod's write that must reach the volume.
inline void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  ::sync();
}
inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A simulator with the file export backend: what the loop initiator attaches.
inline std::vector<std::string> file_backend_args() {
  return {"--backend", "file", "--file-dir", "{dir}/volumes"};
}

/// Reads until `done(value)` or `limit` passed (a poll: the value is another process's); returns
/// the last value read.
template <typename Read, typename Done>
auto poll_until(std::chrono::milliseconds limit, Read read, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  auto value = read();
  while (!done(value) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    value = read();
  }
  return value;
}

class HostNode {
 public:
#ifdef DATERA_AGENT_PATH
  /// `extra_yaml` goes into the agent's config (more can follow with add_config()).
  explicit HostNode(std::string extra_yaml = "") : agent(std::move(extra_yaml)) {}
#endif
  HostNode(std::string agent_binary, std::string extra_yaml)
      : agent(std::move(agent_binary), std::move(extra_yaml)) {}
  ~HostNode() {
    teardown();
  }
  HostNode(const HostNode&) = delete;
  HostNode& operator=(const HostNode&) = delete;

  /// Makes `sim` the node's default array and the loop initiator its initiator, with `iqn` (one
  /// per node: a real node never shares its IQN, and the loop initiator tells devices apart by
  /// it). With `net`, the agent runs in that namespace: it reaches the simulator over the link
  /// and serves its metrics on the namespace's address.
  void join(const SimProcess& sim, const std::string& iqn, const NetNamespace* net = nullptr) {
    iqn_ = iqn;
    std::string server;
    if (net) {
      agent.launcher = net->enter();
      agent.listen_metrics_on(net->node_ip);
      server = net->host_ip + ":" + std::to_string(sim.port);
    }
    make_loop_node(agent, sim, iqn, server);
  }
  /// Appends to the agent's config; read at the next start().
  void add_config(const std::string& yaml) {
    std::ofstream(agent.config, std::ios::app) << yaml;
  }
  /// The node's name (DATERA_AGENT_NODE_NAME); unset, the config's "it-node".
  void set_node_name(const std::string& name) {
    node_name_ = name;
  }

  /// Starts the agent and waits until it is ready; `crash_at` arms the agent's test crash point
  /// (DATERA_AGENT_TEST_CRASH_AT). A fatal failure (ASSERT) when it does not come up.
  void start(const std::string& crash_at = "") {
    agent.extra_env.clear();
    if (!node_name_.empty()) agent.extra_env.push_back("DATERA_AGENT_NODE_NAME=" + node_name_);
    if (!crash_at.empty()) agent.extra_env.push_back("DATERA_AGENT_TEST_CRASH_AT=" + crash_at);
    ASSERT_TRUE(agent.start());
    ASSERT_TRUE(agent.wait_ready()) << agent.log_text();
  }
  int stop(int sig = SIGTERM) {
    return agent.stop(sig);
  }

  /// Kills the agent and unmounts everything under its tree (the node's "kernel" state that a
  /// test, or a crash it provoked, left behind). Loop devices belong to the simulator's files:
  /// detach_loops_under() its dir once every node is down.
  void teardown() {
    agent.stop(SIGKILL);
    unmount_under(agent.root);
  }

  const std::string& root() const {
    return agent.root;
  }
  std::string state_dir() const {
    return agent.root + "/state";
  }
  std::string kubelet_root() const {
    return agent.root + "/kubelet";
  }
  const std::string& iqn() const {
    return iqn_;
  }

  /// A pod's volume dir under the kubelet root, made as kubelet makes it before a mount.
  std::string pod_dir(const std::string& uid, const std::string& volume = "pv1") const {
    const std::string dir = kubelet_root() + "/pods/" + uid + "/volumes/datera~iscsi/" + volume;
    exec_capture({"/bin/mkdir", "-p", dir});
    return dir;
  }

  /// Execs the installed shim as kubelet would.
  Exec shim_exec(const std::vector<std::string>& args) const {
    return agent.shim(args);
  }
  /// The shim's one JSON object; expects that it printed exactly one.
  static nlohmann::json reply_of(const Exec& r) {
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not one JSON object: " << r.output;
    return j;
  }
  nlohmann::json shim(const std::vector<std::string>& args) const {
    return reply_of(shim_exec(args));
  }

  /// GET /v1/volumes's body ("" when the agent does not answer).
  std::string volumes_body() const {
    return body_of(agent.api(http_get("/v1/volumes")));
  }
  /// Waits (bounded) until /v1/volumes's body satisfies `done`; returns the last body read.
  std::string wait_volumes(const std::function<bool(const std::string& body)>& done,
                           std::chrono::milliseconds limit = std::chrono::seconds(30)) const {
    return poll_until(
        limit, [&] { return volumes_body(); }, done);
  }

  /// The value of the first metrics sample whose name and labels are `line_prefix` (0 when
  /// absent), e.g. `datera_agent_handoffs_total{result="claimed"}`.
  double metric(const std::string& line_prefix) const {
    std::istringstream ss(agent.metrics());
    std::string line;
    while (std::getline(ss, line)) {
      if (line.rfind(line_prefix + " ", 0) == 0) return std::stod(line.substr(line_prefix.size()));
    }
    return 0;
  }
  /// Waits (bounded) until the sample satisfies `done`; returns its last value.
  double wait_metric(const std::string& line_prefix, const std::function<bool(double)>& done,
                     std::chrono::milliseconds limit = std::chrono::seconds(15)) const {
    return poll_until(
        limit, [&] { return metric(line_prefix); }, done);
  }

  AgentProcess agent;

 private:
  std::string iqn_;
  std::string node_name_;
};

/// One IQN per test: tests run in parallel and every agent is a node of its own.
inline std::string test_iqn() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? info->name() : "none";
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return "iqn.1993-08.org.debian:01:" + name.substr(0, 60);
}

#if defined(DATERA_SIM_PATH) && defined(DATERA_AGENT_PATH)
/// The common case: one simulator (file backend) and one node on it, started; skipped where a
/// loop-initiator node cannot run. Subclasses add config before the start by overriding
/// extra_config().
class HostNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto why = host_node_unavailable(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(sim_.start()) << sim_.log();
    node_.join(sim_, kIqn);
    if (const auto extra = extra_config(); !extra.empty()) node_.add_config(extra);
    node_.start();
  }
  void TearDown() override {
    // Never leave mounts or loop devices behind, whatever the test did.
    node_.teardown();
    detach_loops_under(sim_.dir().path());
  }
  virtual std::string extra_config() { return ""; }

  const std::string kIqn = test_iqn();
  SimProcess sim_{DATERA_SIM_PATH, file_backend_args()};
  HostNode node_;
};
#endif

}  // namespace datera::testing

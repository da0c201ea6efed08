#pragma once

// A network namespace joined to the host's by a veth pair with a /30 of its own: a host-tier
// "node" whose agent reaches the simulator over a link that a test can cut (partition) and
// restore (heal). Only the network is separate: mounts, loop devices and Unix sockets stay shared,
// as they must for the test to look at them. Agents enter it with nsenter --net (no new mount
// namespace, unlike `ip netns exec`, whose remount of /sys would hide their mounts from the test).

#include <string>
#include <unistd.h>
#include <vector>

#include "tests/testing/agent_process.h"

namespace datera::testing {

class NetNamespace {
 public:
  /// `index` picks the /30 inside 10.231.0.0/16, distinct per node and per test process.
  NetNamespace(const std::string& tag, int index) {
    const int block = ((static_cast<int>(::getpid()) % 4000) * 4 + index) * 4;
    const std::string net = "10.231." + std::to_string((block >> 8) & 255) + ".";
    host_ip = net + std::to_string((block & 255) | 1);
    node_ip = net + std::to_string((block & 255) | 2);
    name = "dt" + std::to_string(::getpid()) + tag;
    host_if = "vh" + std::to_string(::getpid()) + tag;
    const std::vector<std::vector<std::string>> steps = {
        {kIp, "netns", "add", name},
        {kIp, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", name},
        {kIp, "addr", "add", host_ip + "/30", "dev", host_if},
        {kIp, "link", "set", host_if, "up"},
        {kIp, "-n", name, "addr", "add", node_ip + "/30", "dev", "eth0"},
        {kIp, "-n", name, "link", "set", "eth0", "up"},
        {kIp, "-n", name, "link", "set", "lo", "up"}};
    for (const auto& s : steps) {
      auto r = exec_capture(s);
      if (r.exit_code != 0) {
        error = s[1] + " " + s[2] + ": " + r.output;
        return;
      }
    }
    ok = true;
  }
  ~NetNamespace() {
    exec_capture({kIp, "link", "del", host_if});
    exec_capture({kIp, "netns", "del", name});
  }
  NetNamespace(const NetNamespace&) = delete;
  NetNamespace& operator=(const NetNamespace&) = delete;

  /// argv prefix that runs a program inside the namespace.
  std::vector<std::string> enter() const {
    return {"/usr/bin/nsenter", "--net=/run/netns/" + name, "--"};
  }
  /// The link goes down: nothing in the namespace reaches the host, nor the host it.
  bool cut() const { return exec_capture({kIp, "link", "set", host_if, "down"}).exit_code == 0; }
  bool heal() const { return exec_capture({kIp, "link", "set", host_if, "up"}).exit_code == 0; }

  std::string name, host_if, host_ip, node_ip, error;
  bool ok = false;

 private:
  static constexpr const char* kIp = "/usr/sbin/ip";
};

}  // namespace datera::testing

#pragma once

// A host-tier "node": an agent whose default array is a datera-sim and whose initiator is the
// loop initiator (the simulator's file backend through loop devices).

#include <fstream>
#include <string>

#include "tests/testing/agent_process.h"
#include "tests/testing/host_mounts.h"
#include "tests/testing/sim_process.h"

namespace datera::testing {

/// Appends to `agent`'s config: `sim` as the default array (its password in a file beside the
/// config) and the loop initiator with `iqn`. `server` is where the agent reaches the simulator
/// (default: its loopback address; a node in a network namespace uses its link's).
inline void make_loop_node(AgentProcess& agent, const SimProcess& sim, const std::string& iqn,
                           const std::string& server = "") {
  std::ofstream(agent.root + "/password") << sim.password;
  std::ofstream(agent.config, std::ios::app)
      << "backend: {server: '" << (server.empty() ? sim.server() : server)
      << "', username: admin, password_file: '" << agent.root << "/password'}\n"
      << "initiator: {kind: loop, iqn: '" << iqn << "'}\n";
}

/// Detaches every loop device whose backing file lives under `dir` (a simulator's volume files):
/// what a test or a benchmark leaves behind, whatever happened.
inline void detach_loops_under(const std::string& dir) {
  for (const auto& dev : loops_under(dir)) exec_capture({"/usr/sbin/losetup", "-d", dev});
}

}  // namespace datera::testing

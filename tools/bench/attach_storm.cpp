// Attach storm: N volumes mounted at once through the real installed shim, against the real
// agent (loop initiator) and datera-sim (file backend), with real xfs mounts. Compares the wall
// time of the storm with one volume mounted alone. Needs root.
//
//   build/bin/attach-storm [--volumes 100] [--agent build/bin/datera-agent]
//                          [--sim build/bin/datera-sim] [--rounds 3]

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <poll.h>
#include <spawn.h>
#include <sstream>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "tests/testing/agent_process.h"
#include "tests/testing/host_mounts.h"
#include "tests/testing/loop_node.h"
#include "tests/testing/sim_process.h"

namespace {

using Clock = std::chrono::steady_clock;
using datera::testing::AgentProcess;
using datera::testing::SimProcess;

struct Child {
  pid_t pid = 0;
  int out = -1;
  std::string output;
};

/// Starts the shim with argv; stdout+stderr into a pipe.
Child spawn(const std::vector<std::string>& argv) {
  Child c;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return c;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_adddup2(&fa, p[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char env0[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  char* envp[] = {env0, nullptr};
  posix_spawn(&c.pid, argv[0].c_str(), &fa, nullptr, args.data(), envp);
  posix_spawn_file_actions_destroy(&fa);
  ::close(p[1]);
  c.out = p[0];
  return c;
}

/// Runs every argv at once; returns the wall time and how many replied Success.
std::pair<double, int> storm(const std::vector<std::vector<std::string>>& calls,
                             std::string* first_failure) {
  const auto start = Clock::now();
  std::vector<Child> kids;
  kids.reserve(calls.size());
  for (const auto& argv : calls) kids.push_back(spawn(argv));
  for (auto& k : kids) {
    char buf[4096];
    for (ssize_t n; (n = ::read(k.out, buf, sizeof buf)) > 0;) k.output.append(buf, n);
    ::close(k.out);
    int status = 0;
    ::waitpid(k.pid, &status, 0);
  }
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  int ok = 0;
  for (const auto& k : kids) {
    auto j = nlohmann::json::parse(k.output, nullptr, false);
    if (!j.is_discarded() && j.value("status", "") == "Success") {
      ++ok;
    } else if (first_failure && first_failure->empty()) {
      *first_failure = k.output;
    }
  }
  return {ms, ok};
}

/// Whatever a failed run left behind: mounts under the agent's tree, then loop devices on the
/// simulator's files (the temp dirs are removed when the harness exits).
void cleanup(const std::string& agent_root, const std::string& sim_dir) {
  datera::testing::unmount_under(agent_root);
  datera::testing::detach_loops_under(sim_dir);
}

}  // namespace

int main(int argc, char** argv) {
  int volumes = 100;
  int rounds = 3;
  std::string agent_bin = "build/bin/datera-agent";
  std::string sim_bin = "build/bin/datera-sim";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--volumes") == 0 && i + 1 < argc)
      volumes = std::max(1, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = std::max(1, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--agent") == 0 && i + 1 < argc)
      agent_bin = argv[++i];
    else if (std::strcmp(argv[i], "--sim") == 0 && i + 1 < argc)
      sim_bin = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--volumes N] [--rounds R] [--agent PATH] [--sim PATH]\n",
                   argv[0]);
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "attach-storm mounts filesystems: run it as root\n");
    return 2;
  }
  SimProcess sim(sim_bin, {"--backend", "file", "--file-dir", "{dir}/volumes"});
  if (!sim.start()) {
    std::fprintf(stderr, "datera-sim did not start:\n%s\n", sim.log().c_str());
    return 1;
  }
  AgentProcess agent(agent_bin, "");
  datera::testing::make_loop_node(agent, sim, "iqn.1993-08.org.debian:01:bench-node");
  std::ofstream(agent.config, std::ios::app) << "log_level: warn\n";
  if (!agent.start() || !agent.wait_ready()) {
    std::fprintf(stderr, "datera-agent did not become ready:\n%s\n", agent.log_text().c_str());
    return 1;
  }
  const std::string shim = agent.installed_shim();
  auto pod = [&](int round, int i) {
    const std::string dir = agent.root + "/kubelet/pods/r" + std::to_string(round) + "-" +
                            std::to_string(i) + "/volumes/datera~iscsi/pv";
    datera::testing::exec_capture({"/bin/mkdir", "-p", dir});
    return dir;
  };
  auto opts = [](const std::string& vol) {
    return nlohmann::json{{"volumeID", vol}, {"size", "1"}, {"kubernetes.io/fsType", "xfs"}}.dump();
  };

  std::printf("| round | case | volumes | mount wall ms | unmount wall ms | ok |\n");
  std::printf("|---|---|---|---|---|---|\n");
  int failures = 0;
  for (int round = 0; round < rounds; ++round) {
    // Fresh volumes every round: creation and mkfs are part of a first mount.
    for (const int n : {1, volumes}) {
      std::vector<std::vector<std::string>> mounts, unmounts;
      for (int i = 0; i < n; ++i) {
        const std::string vol =
            "storm-r" + std::to_string(round) + "-n" + std::to_string(n) + "-" + std::to_string(i);
        const std::string dir = pod(round * 1000 + n, i);
        mounts.push_back({shim, "mount", dir, opts(vol)});
        unmounts.push_back({shim, "unmount", dir});
      }
      std::string failure;
      auto [mount_ms, mounted] = storm(mounts, &failure);
      auto [unmount_ms, unmounted] = storm(unmounts, &failure);
      std::printf("| %d | %s | %d | %.0f | %.0f | %d/%d |\n", round + 1,
                  n == 1 ? "one volume alone" : "storm", n, mount_ms, unmount_ms,
                  std::min(mounted, unmounted), n);
      if (mounted != n || unmounted != n) {
        ++failures;
        std::fprintf(stderr, "failure: %s\n", failure.c_str());
      }
    }
  }
  agent.stop();
  cleanup(agent.root, sim.dir().path());
  return failures == 0 ? 0 : 1;
}

// Whole-process benchmark of the FlexVolume shim as kubelet runs it: fork/exec the installed
// driver, read its combined output to EOF, reap it. Starts a real datera-agent in a temp tree.
//
//   build/bin/shim-bench [--agent build/bin/datera-agent] [--iterations 2000]
//
// Cases: a static no-op binary (the exec floor of this machine: no driver can be faster), `init`
// (answered locally from the info file), `getvolumename` (a round trip through the agent's Unix
// socket), and the same round trip from inside this process with the shim's own client, which is
// the agent's share without any exec.

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "plugins/flex/unix_http_client.h"
#include "tests/testing/agent_process.h"

namespace {

using datera::testing::AgentProcess;
using datera::testing::exec_capture;
using Clock = std::chrono::steady_clock;

struct Stats {
  std::string name;
  std::vector<double> us;
  int failures = 0;
};

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[i];
}

Stats measure(const std::string& name, const std::vector<std::string>& argv, int iterations,
              const char* expect) {
  Stats s{name, {}, 0};
  const std::vector<std::string> env{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  for (int i = 0; i < iterations + iterations / 10; ++i) {
    const auto t0 = Clock::now();
    const auto r = exec_capture(argv, env);
    const auto t1 = Clock::now();
    if (r.exit_code != 0 || (expect != nullptr && r.output.find(expect) == std::string::npos))
      ++s.failures;
    if (i >= iterations / 10) {  // the first 10% warm caches and are not counted
      s.us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
  }
  return s;
}

Stats measure_socket(const std::string& socket, int iterations) {
  Stats s{"socket round trip, no exec (agent share)", {}, 0};
  const std::string body =
      R"({"command":"getvolumename","args":[],"options":{"volumeID":"bench"}})";
  for (int i = 0; i < iterations + iterations / 10; ++i) {
    const auto t0 = Clock::now();
    auto r = datera::flex::post_json(socket, "/v1/flexvolume", body, "shim-bench",
                                     std::chrono::seconds(2), std::chrono::seconds(10));
    const auto t1 = Clock::now();
    if (!r || r->body.find("\"volumeName\":\"bench\"") == std::string::npos) ++s.failures;
    if (i >= iterations / 10)
      s.us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string agent_bin;
  int iterations = 2000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--agent") == 0 && i + 1 < argc)
      agent_bin = argv[++i];
    else if (std::strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
      iterations = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--agent PATH] [--iterations N]\n", argv[0]);
      return 2;
    }
  }
  if (agent_bin.empty()) {
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    agent_bin = std::string(self, n > 0 ? static_cast<size_t>(n) : 0);
    agent_bin = agent_bin.substr(0, agent_bin.find_last_of('/')) + "/datera-agent";
  }
  if (iterations < 10) iterations = 10;

  AgentProcess agent(agent_bin, "log_level: warn\n");
  if (!agent.start() || !agent.wait_ready()) {
    std::fprintf(stderr, "agent did not become ready:\n%s\n", agent.log_text().c_str());
    return 1;
  }
  const std::string shim = agent.installed_shim();
  std::vector<Stats> all;
  const std::string bin_dir = agent_bin.substr(0, agent_bin.find_last_of('/'));
  all.push_back(
      measure("exec static no-op (floor)", {bin_dir + "/bench-noop"}, iterations, nullptr));
  all.push_back(measure("shim init (local)", {shim, "init"}, iterations, "\"Success\""));
  all.push_back(measure("shim getvolumename (via agent)",
                        {shim, "getvolumename", R"({"kubernetes.io/pvOrVolumeName":"bench-pv"})"},
                        iterations, "\"volumeName\":\"bench-pv\""));
  all.push_back(measure_socket(agent.socket, iterations));
  // Prior art (Longhorn's flex driver) was a shell script around curl: the same call that way.
  const std::string script = agent.root + "/curl-shim.sh";
  std::ofstream(script) << "#!/bin/bash\nexec curl -sS --unix-socket '" << agent.socket
                        << "' -d \"{\\\"command\\\":\\\"$1\\\",\\\"options\\\":$2}\" "
                        << "http://agent/v1/flexvolume\n";
  ::chmod(script.c_str(), 0755);
  if (::access("/usr/bin/curl", X_OK) == 0) {
    all.push_back(
        measure("bash + curl script (prior-art shape)",
                {script, "getvolumename", R"({"kubernetes.io/pvOrVolumeName":"bench-pv"})"},
                std::max(10, iterations / 10), "\"volumeName\":\"bench-pv\""));
  }
  const int stopped = agent.stop(SIGTERM);

  std::printf("| case | n | p50 ms | p90 ms | p99 ms | max ms | mean ms | failures |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  int failures = 0;
  for (const auto& s : all) {
    const double mean =
        std::accumulate(s.us.begin(), s.us.end(), 0.0) / static_cast<double>(s.us.size());
    std::printf("| %s | %zu | %.3f | %.3f | %.3f | %.3f | %.3f | %d |\n", s.name.c_str(),
                s.us.size(), pct(s.us, 0.5) / 1000, pct(s.us, 0.9) / 1000, pct(s.us, 0.99) / 1000,
                *std::max_element(s.us.begin(), s.us.end()) / 1000, mean / 1000, s.failures);
    failures += s.failures;
  }
  if (stopped != 0) std::fprintf(stderr, "agent exited with %d on SIGTERM\n", stopped);
  return failures == 0 && stopped == 0 ? 0 : 1;
}

// Node scale: what one agent costs a node that serves N volumes (issue #15). Runs the real agent
// (loop initiator) against datera-sim (file backend) with real xfs mounts, as kubelet would:
//
//   1. one volume mounted alone (the single-mount time), then unmounted;
//   2. the mount storm: N volumes through the installed shim, `--callers` at a time (kubelet's
//      concurrent operations), each call timed;
//   3. `--idle` seconds of nothing: the agent's CPU (utime+stime from /proc), its RSS, and the EDF
//      requests it sent (datera_agent_backend_requests_total, by method and endpoint);
//   4. kill -9 and restart: time to /readyz 200, every pod mount still there and every volume
//      listed as attached, then the idle measurement again;
//   5. the unmount storm, and nothing of the volumes left mounted.
//
// Prints one markdown table. Needs root. Exit 0 when every volume was correct at every step.
//
//   build/bin/node-scale [--volumes 500] [--callers 16] [--idle 20] [--agent PATH] [--sim PATH]
//                        [--config-extra YAML]

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/testing/agent_process.h"
#include "tests/testing/host_mounts.h"
#include "tests/testing/loop_node.h"
#include "tests/testing/sim_process.h"

namespace {

using Clock = std::chrono::steady_clock;
using datera::testing::AgentProcess;
using datera::testing::SimProcess;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

/// utime + stime of `pid`, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  // Fields after the command: state(3) ... utime(14) stime(15).
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// A "Name:   123 kB" line of /proc/<pid>/status, in MiB (VmRSS, RssAnon, RssFile).
double status_mib(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024.0;
  }
  return 0;
}

/// datera_agent_backend_requests_total by "METHOD endpoint", from the agent's /metrics.
std::map<std::string, double> edf_requests(const AgentProcess& agent) {
  std::map<std::string, double> out;
  std::istringstream in(agent.metrics());
  const std::string name = "datera_agent_backend_requests_total{";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0) continue;
    auto label = [&](const std::string& key) {
      const auto at = line.find(key + "=\"");
      if (at == std::string::npos) return std::string();
      const auto from = at + key.size() + 2;
      return line.substr(from, line.find('"', from) - from);
    };
    const auto space = line.rfind(' ');
    out[label("method") + " " + label("endpoint")] += std::stod(line.substr(space + 1));
  }
  return out;
}

struct Idle {
  double cpu_percent = 0;
  double rss = 0;
  double anon = 0;  ///< the heap and stacks; the rest is the binary's and libraries' pages
  double edf_per_minute = 0;
  std::map<std::string, double> by_endpoint;  ///< requests per minute
};

Idle measure_idle(const AgentProcess& agent, int seconds) {
  const auto before = edf_requests(agent);
  const double cpu0 = cpu_seconds(agent.pid);
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const double wall = ms_since(t0) / 1000.0;
  Idle r;
  r.cpu_percent = 100.0 * (cpu_seconds(agent.pid) - cpu0) / wall;
  r.rss = status_mib(agent.pid, "VmRSS");
  r.anon = status_mib(agent.pid, "RssAnon");
  for (const auto& [k, v] : edf_requests(agent)) {
    const double n = v - (before.count(k) ? before.at(k) : 0.0);
    if (n <= 0) continue;
    r.by_endpoint[k] = n * 60.0 / wall;
    r.edf_per_minute += n * 60.0 / wall;
  }
  return r;
}

struct Storm {
  double wall_ms = 0;
  std::vector<double> each_ms;
  int ok = 0;
  std::string first_failure;
};

/// Runs every argv, `callers` at a time, timing each.
Storm storm(const std::vector<std::vector<std::string>>& calls, int callers) {
  Storm s;
  s.each_ms.assign(calls.size(), 0);
  std::atomic<size_t> next{0};
  std::atomic<int> ok{0};
  std::mutex mu;
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&] {
      for (size_t i; (i = next++) < calls.size();) {
        const auto t = Clock::now();
        auto r = datera::testing::exec_capture(calls[i], {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"});
        s.each_ms[i] = ms_since(t);
        auto j = nlohmann::json::parse(r.output, nullptr, false);
        if (!j.is_discarded() && j.is_object() && j.value("status", "") == "Success") {
          ++ok;
        } else {
          std::lock_guard lock(mu);
          if (s.first_failure.empty()) s.first_failure = r.output;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  s.wall_ms = ms_since(t0);
  s.ok = ok;
  return s;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t at = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[at];
}

/// Whatever a failed run left behind: mounts under the agent's tree, then loop devices on the
/// simulator's files (the temp dirs are removed when the harness exits).
void cleanup(const std::string& agent_root, const std::string& sim_dir) {
  datera::testing::unmount_under(agent_root);
  datera::testing::detach_loops_under(sim_dir);
}

int count_mounted(const std::vector<std::string>& dirs) {
  int n = 0;
  for (const auto& d : dirs) n += datera::testing::is_mounted(d) ? 1 : 0;
  return n;
}

/// Volumes /v1/volumes lists as attached (staging mounted).
int count_attached(const AgentProcess& agent) {
  auto body = datera::testing::body_of(agent.api(datera::testing::http_get("/v1/volumes")));
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded()) return -1;
  const auto& list = j.is_object() && j.contains("volumes") ? j["volumes"] : j;
  int n = 0;
  for (const auto& v : list) {
    if (v.is_object() && v.value("phase", "") == "attached") ++n;
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  int volumes = 500;
  int callers = 16;
  int idle = 20;
  std::string agent_bin = "build/bin/datera-agent";
  std::string sim_bin = "build/bin/datera-sim";
  std::string extra;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool more = i + 1 < argc;
    if (a == "--volumes" && more)
      volumes = std::max(1, std::atoi(argv[++i]));
    else if (a == "--callers" && more)
      callers = std::max(1, std::atoi(argv[++i]));
    else if (a == "--idle" && more)
      idle = std::max(1, std::atoi(argv[++i]));
    else if (a == "--agent" && more)
      agent_bin = argv[++i];
    else if (a == "--sim" && more)
      sim_bin = argv[++i];
    else if (a == "--config-extra" && more)
      extra = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: %s [--volumes N] [--callers C] [--idle SECONDS] [--agent PATH] "
                   "[--sim PATH] [--config-extra YAML]\n",
                   argv[0]);
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "node-scale mounts filesystems: run it as root\n");
    return 2;
  }
  SimProcess sim(sim_bin, {"--backend", "file", "--file-dir", "{dir}/volumes"});
  if (!sim.start()) {
    std::fprintf(stderr, "datera-sim did not start:\n%s\n", sim.log().c_str());
    return 1;
  }
  AgentProcess agent(agent_bin, "");
  datera::testing::make_loop_node(agent, sim, "iqn.1993-08.org.debian:01:scale-node");
  std::ofstream(agent.config, std::ios::app) << "log_level: warn\n" << extra << "\n";
  if (!agent.start() || !agent.wait_ready()) {
    std::fprintf(stderr, "datera-agent did not become ready:\n%s\n", agent.log_text().c_str());
    return 1;
  }
  const std::string shim = agent.installed_shim();
  auto pod_dir = [&](const std::string& pod) {
    const std::string dir = agent.root + "/kubelet/pods/" + pod + "/volumes/datera~iscsi/pv";
    datera::testing::exec_capture({"/bin/mkdir", "-p", dir});
    return dir;
  };
  auto opts = [](const std::string& vol) {
    return nlohmann::json{{"volumeID", vol}, {"size", "1"}, {"kubernetes.io/fsType", "xfs"}}.dump();
  };
  std::vector<std::string> problems;

  // 1. One volume alone.
  const std::string lone_dir = pod_dir("lone");
  auto lone = storm({{shim, "mount", lone_dir, opts("scale-lone")}}, 1);
  auto lone_off = storm({{shim, "unmount", lone_dir}}, 1);
  if (lone.ok != 1 || lone_off.ok != 1) {
    problems.push_back("single volume: " + lone.first_failure + lone_off.first_failure);
  }

  // 2. The mount storm.
  std::vector<std::vector<std::string>> mounts, unmounts;
  std::vector<std::string> dirs;
  for (int i = 0; i < volumes; ++i) {
    const std::string dir = pod_dir("p" + std::to_string(i));
    dirs.push_back(dir);
    mounts.push_back({shim, "mount", dir, opts("scale-" + std::to_string(i))});
    unmounts.push_back({shim, "unmount", dir});
  }
  std::fprintf(stderr, "node-scale: mounting %d volumes, %d at a time\n", volumes, callers);
  auto up = storm(mounts, callers);
  if (up.ok != volumes) {
    problems.push_back("mount storm: " + std::to_string(up.ok) + "/" + std::to_string(volumes) +
                       " succeeded; first failure: " + up.first_failure);
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // let the last replies' work settle

  // 3. Idle.
  std::fprintf(stderr, "node-scale: %d s idle\n", idle);
  const Idle before = measure_idle(agent, idle);

  // 4. kill -9, restart.
  agent.stop(SIGKILL);
  const auto t_restart = Clock::now();
  if (!agent.start() || !agent.wait_ready(std::chrono::seconds(120))) {
    problems.push_back("the agent did not become ready after kill -9");
  }
  const double restart_ms = ms_since(t_restart);
  const int mounted_after = count_mounted(dirs);
  const int attached_after = count_attached(agent);
  if (mounted_after != volumes || attached_after != volumes) {
    problems.push_back("after the restart: " + std::to_string(mounted_after) + " pod mounts, " +
                       std::to_string(attached_after) + " attached volumes of " +
                       std::to_string(volumes));
  }
  std::fprintf(stderr, "node-scale: %d s idle after the restart\n", idle);
  const Idle after = measure_idle(agent, idle);

  // 5. The unmount storm.
  std::fprintf(stderr, "node-scale: unmounting\n");
  auto down = storm(unmounts, callers);
  if (down.ok != volumes) {
    problems.push_back("unmount storm: " + std::to_string(down.ok) + "/" + std::to_string(volumes) +
                       " succeeded; first failure: " + down.first_failure);
  }
  if (const int left = count_mounted(dirs); left != 0) {
    problems.push_back(std::to_string(left) + " pod mounts left after the unmount storm");
  }

  std::printf("| what | value |\n|---|---|\n");
  std::printf("| volumes | %d (%d concurrent callers) |\n", volumes, callers);
  std::printf("| single mount (one volume alone, new) | %.0f ms |\n", lone.wall_ms);
  std::printf("| mount storm wall | %.1f s |\n", up.wall_ms / 1000);
  std::printf("| per-mount p50 / p99 / max | %.0f / %.0f / %.0f ms |\n",
              percentile(up.each_ms, 0.5), percentile(up.each_ms, 0.99),
              percentile(up.each_ms, 1.0));
  std::printf("| agent idle CPU (%d s) | %.2f %% of one core |\n", idle, before.cpu_percent);
  std::printf("| agent RSS before restart (anonymous) | %.1f MiB (%.1f) |\n", before.rss,
              before.anon);
  std::printf("| EDF requests at idle | %.0f /min |\n", before.edf_per_minute);
  for (const auto& [k, v] : before.by_endpoint) std::printf("| … %s | %.0f /min |\n", k.c_str(), v);
  std::printf("| kill -9 → restart → /readyz 200 | %.2f s |\n", restart_ms / 1000);
  std::printf("| after restart: pod mounts / attached | %d / %d |\n", mounted_after,
              attached_after);
  std::printf("| agent idle CPU after restart (%d s) | %.2f %% of one core |\n", idle,
              after.cpu_percent);
  std::printf("| agent RSS after restart (anonymous) | %.1f MiB (%.1f) |\n", after.rss, after.anon);
  std::printf("| EDF requests at idle after restart | %.0f /min |\n", after.edf_per_minute);
  std::printf("| unmount storm wall | %.1f s |\n", down.wall_ms / 1000);
  std::printf("| per-unmount p50 / p99 | %.0f / %.0f ms |\n", percentile(down.each_ms, 0.5),
              percentile(down.each_ms, 0.99));
  for (const auto& p : problems) std::fprintf(stderr, "PROBLEM: %s\n", p.c_str());
  agent.stop();
  cleanup(agent.root, sim.dir().path());
  return problems.empty() ? 0 : 1;
}

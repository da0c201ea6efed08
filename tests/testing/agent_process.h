#pragma once

// Starts the real datera-agent in a private temp tree (socket, plugin dir, state, kubelet root),
// on a free loopback metrics port, and offers the calls a test needs: exec the installed shim,
// talk HTTP to the socket and the metrics port, send signals, read the agent's log.

#include <arpa/inet.h>
#include <chrono>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/testing/temp_dir.h"
#include "tests/testing/unix_client.h"

extern char** environ;

namespace datera::testing {

struct Exec {
  int exit_code = -1;
  std::string output;  ///< stdout and stderr together, as kubelet reads them
};

/// Runs argv with stdout+stderr captured together and a bounded wait.
inline Exec exec_capture(const std::vector<std::string>& argv, std::vector<std::string> env = {}) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return {};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, args.data(),
                             env.empty() ? environ : envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  Exec r;
  if (rc != 0) {
    ::close(out[0]);
    r.output = "spawn failed";
    return r;
  }
  char buf[4096];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;)
    r.output.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

inline unsigned short free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

/// One raw HTTP exchange over TCP with host:port; returns "" when nothing answers.
inline std::string tcp_exchange(unsigned short port, const std::string& req,
                                const std::string& host = "127.0.0.1") {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) < 0) {
    ::close(fd);
    return "";
  }
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

/// GET over TCP to host:port; returns "" when nothing answers.
inline std::string tcp_get(unsigned short port, const std::string& target,
                           const std::string& host = "127.0.0.1") {
  return tcp_exchange(port, http_get(target), host);
}

/// Any method with a JSON body, Connection: close.
inline std::string tcp_json(unsigned short port, const std::string& method,
                            const std::string& target, const std::string& body) {
  return tcp_exchange(port, method + " " + target +
                                " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                                "Content-Type: application/json\r\nContent-Length: " +
                                std::to_string(body.size()) + "\r\n\r\n" + body);
}

inline std::string body_of(const std::string& http) {
  const auto p = http.find("\r\n\r\n");
  return p == std::string::npos ? "" : http.substr(p + 4);
}

class AgentProcess {
 public:
#ifdef DATERA_AGENT_PATH
  explicit AgentProcess(std::string extra_yaml = "")
      : AgentProcess(DATERA_AGENT_PATH, std::move(extra_yaml)) {}
#endif
  AgentProcess(std::string agent_binary, std::string extra_yaml) : binary(std::move(agent_binary)) {
    socket = root + "/run/agent.sock";
    plugin_dir = root + "/plugins";
    config = root + "/config.yaml";
    log = root + "/agent.log";
    port = free_port();
    std::ofstream(config) << "node_name: it-node\n"
                          << "socket_path: " << socket << "\n"
                          << "plugin_dir: " << plugin_dir << "\n"
                          << "kubelet_root: " << root << "/kubelet\n"
                          << "state_dir: " << root << "/state\n"
                          << "shutdown_grace: 3s\n"
                          << "metrics: {listen: '127.0.0.1:" << port << "'}\n"
                          << extra_yaml;
  }
  ~AgentProcess() {
    stop(SIGKILL);
  }

  /// Starts the agent; args after the binary default to --config <config>.
  bool start(std::vector<std::string> args = {}) {
    if (args.empty()) args = {"--config", config};
    args.insert(args.begin(), binary);
    args.insert(args.begin(), launcher.begin(), launcher.end());
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (char** e = environ; *e; ++e) envp.push_back(*e);
    for (auto& e : extra_env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0;
  }

  /// Waits (bounded) until /readyz answers 200.
  bool wait_ready(std::chrono::milliseconds limit = std::chrono::seconds(15)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (tcp_get(port, "/readyz", host).rfind("HTTP/1.1 200", 0) == 0) return true;
      if (exited()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  bool exited() {
    if (pid <= 0) return true;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid = 0;
      return true;
    }
    return false;
  }

  /// Sends `sig` and waits up to `limit` for exit; returns the exit code (or -1 if still running).
  int stop(int sig = SIGTERM, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    if (pid <= 0) return exit_status;
    ::kill(pid, sig);
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (exited()) return exit_status;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

  /// Waits for the process to exit by itself (e.g. a start-up failure).
  int wait_exit(std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (exited()) return exit_status;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

  std::string installed_shim() const {
    return plugin_dir + "/datera~iscsi/iscsi";
  }

  /// Execs the installed shim as kubelet would (bare environment).
  Exec shim(std::vector<std::string> args) const {
    args.insert(args.begin(), installed_shim());
    return exec_capture(args, {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"});
  }

  std::string api(const std::string& request) const {
    return raw_exchange(socket, request);
  }
  nlohmann::json status() const {
    return nlohmann::json::parse(body_of(api(http_get("/v1/status"))));
  }
  std::string metrics() const {
    return body_of(tcp_get(port, "/metrics", host));
  }
  std::string log_text() const {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string binary;
  /// Serves metrics on `address` instead of the loopback (an agent in a network namespace).
  void listen_metrics_on(const std::string& address) {
    std::ifstream in(config);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    const std::string from = "listen: '127.0.0.1:";
    if (auto at = text.find(from); at != std::string::npos) {
      text.replace(at, from.size(), "listen: '" + address + ":");
    }
    std::ofstream(config, std::ios::trunc) << text;
    host = address;
  }

  /// Adds metrics.probe_listen on a free loopback port (before start()); returns that port.
  unsigned short serve_probes_on_loopback() {
    std::ifstream in(config);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    probe_port = free_port();
    const std::string line = "metrics: {listen: '";
    if (auto at = text.find(line); at != std::string::npos) {
      const auto end = text.find("'}", at);
      text.insert(end + 1, ", probe_listen: '127.0.0.1:" + std::to_string(probe_port) + "'");
    }
    std::ofstream(config, std::ios::trunc) << text;
    return probe_port;
  }
  unsigned short probe_port = 0;  ///< metrics.probe_listen's port, when serve_probes_on_loopback()

  std::vector<std::string> extra_env;  ///< "K=V" added to the agent's environment at start()
  std::vector<std::string> launcher;   ///< argv before the binary (nsenter into a namespace)
  std::string host = "127.0.0.1";      ///< where the metrics port answers
  TempDir dir{"dt-it"};
  std::string root = dir.path();
  std::string socket, plugin_dir, config, log;
  unsigned short port = 0;
  pid_t pid = 0;
  int exit_status = -1;
};

}  // namespace datera::testing

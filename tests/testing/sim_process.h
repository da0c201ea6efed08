#pragma once

// Starts the real datera-sim on a free loopback port in a temp dir and stops it with the test.
// Waits for its "datera-sim listening on http://HOST:PORT" line, bounded (the https line, when
// asked for with --tls-listen, comes before it).

#include <chrono>
#include <fcntl.h>
#include <fstream>
#include <regex>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "tests/testing/temp_dir.h"

extern char** environ;

namespace datera::testing {

class SimProcess {
 public:
  explicit SimProcess(std::string binary, std::vector<std::string> extra = {})
      : binary_(std::move(binary)), extra_(std::move(extra)) {}
  ~SimProcess() { stop(SIGKILL); }

  bool start() {
    std::vector<std::string> args = {binary_,   "--listen",          listen,
                                     "--state", dir_ / "state.json", "--user",
                                     "admin",   "--password",        password};
    for (auto a : extra_) {
      // "{dir}" stands for the simulator's own temp dir (e.g. --file-dir {dir}/volumes).
      if (auto p = a.find("{dir}"); p != std::string::npos) a.replace(p, 5, dir_.path());
      args.push_back(a);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return false;
    const std::regex listening(R"(listening on http://([0-9.]+):([0-9]+))");
    const std::regex tls(R"(listening on https://([0-9.]+):([0-9]+))");
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < end) {
      std::smatch m;
      const auto text = log();
      if (std::regex_search(text, m, listening)) {
        port = static_cast<unsigned short>(std::stoi(m[2]));
        if (std::regex_search(text, m, tls))
          tls_port = static_cast<unsigned short>(std::stoi(m[2]));
        return true;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  /// Sends `sig` without waiting (SIGSTOP: an array that accepts connections and never answers).
  void signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
  }

  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return 0;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::string log() const {
    std::ifstream in(log_path());
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  std::string log_path() const { return dir_ / "sim.log"; }
  std::string server() const { return "127.0.0.1:" + std::to_string(port); }
  const TempDir& dir() const { return dir_; }

  std::string listen = "127.0.0.1:0";  ///< set before start(); "0.0.0.0:0" for netns nodes
  unsigned short port = 0;
  unsigned short tls_port = 0;  ///< with --tls-listen
  std::string password = "sim-Passw0rd";

 private:
  std::string binary_;
  std::vector<std::string> extra_;
  TempDir dir_{"dt-sim"};
  pid_t pid_ = 0;
};

}  // namespace datera::testing

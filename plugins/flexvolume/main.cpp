// datera-flexvolume: the executable kubelet runs as <plugin-dir>/datera~iscsi/iscsi.
// It prints exactly one JSON object (kubelet reads stdout and stderr together) and exits 0 for
// Success / Not supported and 1 for Failure. Nothing else may ever reach stdout or stderr.

#include <cstdlib>
#include <cstring>
#include <signal.h>
#include <string>
#include <unistd.h>
#include <vector>

#include "agent/common/json.h"
#include "agent/common/version.h"
#include "plugins/flexvolume/shim.h"

namespace {

const char kInterrupted[] =
    "{\"message\":\"datera/iscsi: interrupted by a signal before the agent replied; kubelet will "
    "retry\",\"status\":\"Failure\"}\n";

extern "C" void on_signal(int /*sig*/) {
  // Async-signal-safe: one write of a preformatted reply, then leave.
  ssize_t ignored = ::write(STDOUT_FILENO, kInterrupted, sizeof kInterrupted - 1);
  (void)ignored;
  ::_exit(1);
}

std::string dir_of(const std::string& path) {
  const auto pos = path.find_last_of('/');
  return pos == std::string::npos ? "." : path.substr(0, pos);
}

datera::Result<datera::flex::DriverInfo> load_info(const char* argv0) {
  using datera::Error;
  std::string path;
  if (const char* env = std::getenv("DATERA_FLEXVOLUME_INFO"); env != nullptr && *env != '\0') {
    path = env;  // development: run the shim from a build tree against a local agent
  } else {
    char exe[4096];
    const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    const std::string self = n > 0 ? std::string(exe, static_cast<size_t>(n)) : std::string(argv0);
    path = dir_of(self) + "/" + datera::flex::kDriverInfoFile;
  }
  FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return Error{"cannot open " + path + ": " + std::strerror(errno)};
  std::string text;
  char buf[4096];
  size_t got = 0;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < (1u << 20))
    text.append(buf, got);
  std::fclose(f);
  auto json = datera::json::parse_bounded(text);
  if (!json) return Error{path + ": " + json.error().message};
  auto info = datera::flex::DriverInfo::from_json(*json);
  if (!info) return info.error().wrap(path);
  return info;
}

}  // namespace

int main(int argc, char** argv) {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::vector<std::string> args(argv + 1, argv + argc);
  const auto info = load_info(argv[0]);
  const auto result = datera::flex::run_shim(
      args, info,
      datera::flex::unix_transport(std::string("datera-flexvolume/") + datera::version::kVersion));
  const std::string out = result.reply.dump() + "\n";
  // From here on a signal must not add a second object to the output.
  sigset_t block;
  sigemptyset(&block);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&block, sig);
  ::sigprocmask(SIG_BLOCK, &block, nullptr);
  // One write so the reply is never interleaved or split.
  ssize_t ignored = ::write(STDOUT_FILENO, out.data(), out.size());
  (void)ignored;
  return result.exit_code;
}

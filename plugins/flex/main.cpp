// datera-flexvolume: the executable kubelet runs as <plugin-dir>/datera~iscsi/iscsi.
// It prints exactly one JSON object (kubelet reads stdout and stderr together) and exits 0 for
// Success / Not supported and 1 for Failure. Nothing else may ever reach stdout or stderr.

#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "base/json.h"
#include "base/version.h"
#include "plugins/flex/shim.h"

namespace {

const char kInterrupted[] =
    "{\"message\":\"datera/iscsi: interrupted by a signal before the agent replied; kubelet will "
    "retry\",\"status\":\"Failure\"}\n";

const char kBug[] =
    "{\"message\":\"datera/iscsi: the driver failed unexpectedly (a bug; please report it with "
    "the arguments kubelet passed); kubelet will retry\",\"status\":\"Failure\"}\n";

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
  // O_NONBLOCK: a FIFO planted there must not hang kubelet's call until its timeout.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return Error{"cannot open " + path + ": " + std::strerror(errno)};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error{path + " is not a regular file"};
  }
  std::string text;
  char buf[4096];
  for (ssize_t got; text.size() < (1u << 20) && (got = ::read(fd, buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<size_t>(got));
  ::close(fd);
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

  std::string out = kBug;
  int exit_code = 1;
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    const auto info = load_info(argv[0]);
    const auto result =
        datera::flex::run_shim(args, info,
                               datera::flex::unix_transport(std::string("datera-flexvolume/") +
                                                            datera::version::kVersion));
    // replace: whatever bytes a message quotes, the output is one valid UTF-8 JSON object.
    out = result.reply.dump(-1, ' ', false, datera::flex::Json::error_handler_t::replace) + "\n";
    exit_code = result.exit_code;
  } catch (...) {
    // Only a bug (or std::bad_alloc) gets here; kubelet still gets its one object.
  }
  // From here on a signal must not add a second object to the output.
  sigset_t block;
  sigemptyset(&block);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&block, sig);
  ::sigprocmask(SIG_BLOCK, &block, nullptr);
  // One write so the reply is never interleaved or split.
  ssize_t ignored = ::write(STDOUT_FILENO, out.data(), out.size());
  (void)ignored;
  return exit_code;
}

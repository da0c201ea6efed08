#pragma once

// Runs external programs (iscsiadm, mkfs, blkid, the installed shim) without a shell and without
// blocking the event loop: argv only, bounded time, bounded output, stdin closed or fed, and the
// whole process group killed on timeout so a stuck grandchild cannot outlive the call.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "base/logging.h"
#include "base/result.h"

namespace datera::process {

struct Command {
  std::string program;                          ///< absolute path; never interpreted by a shell
  std::vector<std::string> args;                ///< argv[1..]; argv[0] is `program`
  std::optional<std::vector<std::string>> env;  ///< "K=V" entries; nullopt inherits the agent's
  std::chrono::milliseconds timeout{30'000};
  size_t max_output = 1 << 20;  ///< per stream; the excess is dropped and `truncated` set
  std::string stdin_data;       ///< written to stdin, then closed; empty means /dev/null
};

struct Outcome {
  int exit_code = -1;  ///< valid when the program exited by itself
  int signal = 0;      ///< non-zero when it was killed by a signal
  bool timed_out = false;
  bool truncated = false;
  std::string out;
  std::string err;
  std::chrono::milliseconds elapsed{0};

  bool success() const { return !timed_out && signal == 0 && exit_code == 0; }
  /// "exit code 3", "killed by signal 9", "timed out after 10s (killed)".
  std::string describe() const;
};

/// Lifecycle: one per io_context; run() may be called concurrently from many coroutines.
class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  /// Returns an Error only when the program could not be started (ENOENT, EACCES...); a program
  /// that ran and failed is a successful Result whose Outcome says how it failed.
  virtual boost::asio::awaitable<Result<Outcome>> run(Command cmd) = 0;
};

using ProcessRunnerPtr = std::unique_ptr<ProcessRunner>;

/// The Linux implementation: posix_spawn, pidfd and pipes watched on the given executor.
ProcessRunnerPtr make_process_runner(boost::asio::any_io_executor executor, LoggerPtr log);

}  // namespace datera::process

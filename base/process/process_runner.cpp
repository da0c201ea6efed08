#include "base/process/process_runner.h"

#include <string>

namespace datera::process {

namespace {

// Whole seconds from one second up ("10s"), milliseconds below ("250ms"). Elapsed time is never an
// exact number of seconds, so this rounds down rather than using format_duration's exact units.
std::string rough_duration(std::chrono::milliseconds d) {
  if (d >= std::chrono::seconds(1)) {
    return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count()) + "s";
  }
  return std::to_string(d.count()) + "ms";
}

}  // namespace

std::string Outcome::describe() const {
  if (timed_out) return "timed out after " + rough_duration(elapsed) + " (killed)";
  if (signal != 0) return "killed by signal " + std::to_string(signal);
  if (exit_code >= 0) return "exit code " + std::to_string(exit_code);
  return "no exit status";
}

}  // namespace datera::process

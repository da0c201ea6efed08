#pragma once

// One named spdlog logger per component, all writing to one sink. The loggers are created here and
// handed to components by constructor injection; nothing is registered in spdlog's global registry,
// so tests can build as many independent agents as they like.

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/common.h>
#include <spdlog/logger.h>

#include "base/log_format.h"
#include "base/result.h"

namespace datera {

using LoggerPtr = std::shared_ptr<spdlog::logger>;

Result<spdlog::level::level_enum> parse_log_level(std::string_view text);

class LogFactory {
 public:
  /// Logs to stderr (journald and kubectl logs both capture it).
  explicit LogFactory(spdlog::level::level_enum level, LogFormat format = LogFormat::text);
  /// Logs to a caller-provided sink (tests capture lines this way).
  LogFactory(spdlog::level::level_enum level, spdlog::sink_ptr sink,
             LogFormat format = LogFormat::text);

  /// Returns the logger for `component`, creating it on first use.
  LoggerPtr get(const std::string& component);
  /// Applies to every logger made so far and every later one (SIGHUP reload).
  void set_level(spdlog::level::level_enum level);
  spdlog::level::level_enum level() const { return level_; }

 private:
  std::mutex mu_;
  spdlog::level::level_enum level_;
  spdlog::sink_ptr sink_;
  std::vector<LoggerPtr> loggers_;
};

/// A logger that drops everything, for components built without one (unit tests).
LoggerPtr null_logger();

}  // namespace datera

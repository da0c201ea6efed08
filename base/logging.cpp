#include "base/logging.h"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace datera {

Result<spdlog::level::level_enum> parse_log_level(std::string_view text) {
  using spdlog::level::level_enum;
  if (text == "trace") return level_enum::trace;
  if (text == "debug") return level_enum::debug;
  if (text == "info") return level_enum::info;
  if (text == "warn" || text == "warning") return level_enum::warn;
  if (text == "error") return level_enum::err;
  if (text == "critical") return level_enum::critical;
  if (text == "off") return level_enum::off;
  return Error{"unknown log level '" + std::string(text) +
               "' (use trace, debug, info, warn, error, critical or off)"};
}

LogFactory::LogFactory(spdlog::level::level_enum level, LogFormat format)
    : LogFactory(level, std::make_shared<spdlog::sinks::stderr_sink_mt>(), format) {}

LogFactory::LogFactory(spdlog::level::level_enum level, spdlog::sink_ptr sink, LogFormat format)
    : level_(level), sink_(std::move(sink)) {
  // Both formats escape the message: outside data in it can neither start a line of its own nor
  // put bytes that are not UTF-8 into the log.
  sink_->set_formatter(format == LogFormat::json ? make_json_formatter() : make_text_formatter());
}

LoggerPtr LogFactory::get(const std::string& component) {
  std::lock_guard lock(mu_);
  for (auto& l : loggers_) {
    if (l->name() == component) return l;
  }
  auto logger = std::make_shared<spdlog::logger>(component, sink_);
  logger->set_level(level_);
  logger->flush_on(spdlog::level::warn);
  loggers_.push_back(logger);
  return logger;
}

void LogFactory::set_level(spdlog::level::level_enum level) {
  std::lock_guard lock(mu_);
  level_ = level;
  for (auto& l : loggers_) l->set_level(level);
}

LoggerPtr null_logger() {
  return std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>());
}

}  // namespace datera

#include "agent/common/logging.h"

#include <sstream>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

namespace datera {
namespace {

TEST(Logging, ParsesLevels) {
  EXPECT_EQ(*parse_log_level("debug"), spdlog::level::debug);
  EXPECT_EQ(*parse_log_level("warning"), spdlog::level::warn);
  EXPECT_FALSE(parse_log_level("loud").ok());
}

TEST(Logging, OneLoggerPerComponentAndLevelReload) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  LogFactory logs(spdlog::level::info, sink);
  auto api = logs.get("api");
  EXPECT_EQ(api, logs.get("api"));
  api->debug("hidden");
  api->info("shown");
  logs.set_level(spdlog::level::debug);
  api->debug("now shown");
  logs.get("installer")->debug("new logger follows the level");
  const auto text = out.str();
  EXPECT_EQ(text.find("hidden"), std::string::npos);
  EXPECT_NE(text.find("[api] shown"), std::string::npos);
  EXPECT_NE(text.find("now shown"), std::string::npos);
  EXPECT_NE(text.find("[installer] new logger follows the level"), std::string::npos);
}

}  // namespace
}  // namespace datera

#include "agent/common/logging.h"

#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
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

TEST(Logging, JsonLinesCarryTheVolumeAndEscapeEverything) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  LogFactory logs(spdlog::level::info, sink, LogFormat::json);
  logs.get("volume")->warn("volume pvc-1: mount failed at \"login\": a\tb\nc");
  logs.get("flexvolume")->info("mount volume=vol-7 failed: x");
  logs.get("agent")->info("no volume here");
  std::istringstream lines(out.str());
  std::vector<nlohmann::json> parsed;
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "not one JSON object: " << line;
    parsed.push_back(j);
  }
  ASSERT_EQ(parsed.size(), 3u);
  EXPECT_EQ(parsed[0]["volume"], "pvc-1");
  EXPECT_EQ(parsed[0]["level"], "warning");
  EXPECT_EQ(parsed[0]["logger"], "volume");
  EXPECT_EQ(parsed[0]["msg"], "volume pvc-1: mount failed at \"login\": a\tb\nc");
  EXPECT_EQ(parsed[1]["volume"], "vol-7");
  EXPECT_FALSE(parsed[2].contains("volume"));
  EXPECT_EQ(parsed[0]["time"].get<std::string>().back(), 'Z');
}

TEST(Logging, VolumeOfMessage) {
  EXPECT_EQ(volume_of_message("volume a.b-c_1: x"), "a.b-c_1");
  EXPECT_EQ(volume_of_message("volume a b"), "") << "no colon: prose, not a volume";
  EXPECT_EQ(volume_of_message("unmount volume=- failed"), "");
  EXPECT_EQ(volume_of_message("x volume=v1 y"), "v1");
  EXPECT_EQ(volume_of_message("logged in to target iqn.x:y (volume v2) (session 3)"), "v2");
  EXPECT_EQ(volume_of_message("a (volume v3 and more)"), "") << "not the initiator's form";
  EXPECT_FALSE(parse_log_format("yaml").ok());
  EXPECT_EQ(*parse_log_format("json"), LogFormat::json);
}

}  // namespace
}  // namespace datera

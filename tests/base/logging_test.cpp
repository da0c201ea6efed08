#include "base/logging.h"

#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "base/utf8.h"

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

// Outside data (a volumeID, a pod dir, an array's error text) reaches log messages. It must not
// be able to forge a line, and JSON lines must stay valid UTF-8 for log pipelines.
const std::string kHostile =
    "volume pvc-9: bad path /pods/x\nFAKE LINE level=error \xff\xfe end\r\x1b[2J";

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(Logging, TextLinesEscapeLineBreaksControlsAndInvalidUtf8) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  LogFactory logs(spdlog::level::info, sink, LogFormat::text);
  logs.get("volume")->warn("{}", kHostile);
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 1u) << "outside data forged a line: " << out.str();
  EXPECT_TRUE(utf8::valid(lines[0])) << lines[0];
  EXPECT_NE(lines[0].find(R"(/pods/x\nFAKE LINE level=error \xff\xfe end\r\x1b[2J)"),
            std::string::npos)
      << lines[0];
  EXPECT_EQ(lines[0].find('\r'), std::string::npos);
  EXPECT_EQ(lines[0].find('\x1b'), std::string::npos);
  EXPECT_NE(lines[0].find("[volume] volume pvc-9: "), std::string::npos) << lines[0];
}

TEST(Logging, JsonLinesStayValidUtf8WhateverTheMessageHolds) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  LogFactory logs(spdlog::level::info, sink, LogFormat::json);
  logs.get("volume")->warn("{}", kHostile);
  logs.get("volume")->info("truncated sequence at the end \xe2\x82");
  logs.get("volume")->info("fine: ä € 😀");
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 3u) << out.str();
  std::vector<nlohmann::json> parsed;
  for (const auto& line : lines) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "not one valid JSON object: " << line;
    parsed.push_back(j);
  }
  EXPECT_EQ(parsed[0]["volume"], "pvc-9");
  EXPECT_EQ(parsed[0]["msg"],
            "volume pvc-9: bad path /pods/x\nFAKE LINE level=error \ufffd\ufffd end\r\x1b[2J");
  EXPECT_EQ(parsed[1]["msg"], "truncated sequence at the end \ufffd\ufffd");
  EXPECT_EQ(parsed[2]["msg"], "fine: ä € 😀") << "valid UTF-8 is kept as it is";
}

TEST(Utf8, ValidatesStrictlyAndEscapesForOneLine) {
  EXPECT_TRUE(utf8::valid("plain ä € 😀"));
  EXPECT_FALSE(utf8::valid("\xff"));
  EXPECT_FALSE(utf8::valid("\xc0\xaf")) << "overlong";
  EXPECT_FALSE(utf8::valid("\xed\xa0\x80")) << "surrogate";
  EXPECT_FALSE(utf8::valid("\xf4\x90\x80\x80")) << "above U+10FFFF";
  EXPECT_FALSE(utf8::valid("\xe2\x82")) << "truncated";
  EXPECT_EQ(utf8::escaped("a\nb\tc\x01\x7f\xff ä"), R"(a\nb\tc\x01\x7f\xff ä)");
  EXPECT_EQ(utf8::escaped("c1 \xc2\x85 nel"), R"(c1 \xc2\x85 nel)");
  EXPECT_EQ(utf8::find_unprintable("ok ä"), std::string::npos);
  EXPECT_EQ(utf8::find_unprintable("ok\n"), 2u);
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

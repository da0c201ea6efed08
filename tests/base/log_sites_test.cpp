// Every log call in the agent's sources whose format names a volume ("volume {}", "app instance
// {}") writes it in a form volume_of_message() recognises, so the JSON log's `volume` field is on
// every such line. A new call site worded otherwise fails here, not in someone's log pipeline.

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "base/log_format.h"

namespace datera {
namespace {

struct Site {
  std::string file;
  std::string format;
};

std::vector<Site> log_sites(const std::filesystem::path& root) {
  // log_->info("...", ...) and log->warn(\n "..." "..." , ...): the format is the adjacent
  // literals.
  const std::regex call(
      R"re(\blog_?->(trace|debug|info|warn|error|critical)\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+))re");
  const std::regex literal(R"re("((?:[^"\\]|\\.)*)")re");
  std::vector<Site> out;
  for (const char* dir : {"agent", "plugins"}) {
    for (const auto& e : std::filesystem::recursive_directory_iterator(root / dir)) {
      const auto ext = e.path().extension();
      if (!e.is_regular_file() || (ext != ".cpp" && ext != ".h")) continue;
      std::ifstream in(e.path());
      std::stringstream ss;
      ss << in.rdbuf();
      const std::string text = ss.str();
      for (std::sregex_iterator it(text.begin(), text.end(), call), end; it != end; ++it) {
        const std::string literals = (*it)[2];
        std::string format;
        for (std::sregex_iterator l(literals.begin(), literals.end(), literal); l != end; ++l) {
          format += (*l)[1];
        }
        out.push_back({e.path().lexically_relative(root).string(), format});
      }
    }
  }
  return out;
}

/// The format with every replacement field ("{}", "{:.2f}") filled with `value`.
std::string render(const std::string& format, const std::string& value) {
  return std::regex_replace(format, std::regex(R"(\{[^{}]*\})"), value);
}

TEST(LogSites, EveryLineNamingAVolumeCarriesItInARecognisedForm) {
  const auto sites = log_sites(DATERA_SOURCE_DIR);
  ASSERT_GT(sites.size(), 100u) << "the scan found too few log calls; is the pattern broken?";
  const std::regex names_volume(R"((volume|app instance) \{[^{}]*\})");
  int checked = 0;
  for (const auto& s : sites) {
    if (!std::regex_search(s.format, names_volume)) continue;
    ++checked;
    EXPECT_EQ(volume_of_message(render(s.format, "vol-x")), "vol-x")
        << s.file << ": \"" << s.format
        << "\" names a volume but not as \"volume NAME: ...\", \"volume=NAME\" or "
           "\"(volume NAME)\"";
  }
  EXPECT_GT(checked, 40) << "the volume lines the scan should have found";
}

TEST(LogSites, TheCheckRefusesAVolumeNamedInProse) {
  EXPECT_NE(volume_of_message(render("created app instance {} (1 GiB)", "vol-x")), "vol-x");
  EXPECT_NE(volume_of_message(render("release of volume {} requested", "vol-x")), "vol-x");
  EXPECT_EQ(volume_of_message(render("volume {}: session {} is {:.2f}", "vol-x")), "vol-x");
}

}  // namespace
}  // namespace datera

// The start order is written down in one place, phases.h, which Application::start() runs (it
// checks the names at compile time); the documents that quote it must quote that list.

#include "agent/app/phases.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace datera::app {
namespace {

/// The backquoted names after "Start phases:" on the first line that has it.
std::vector<std::string> quoted_phases(const std::string& relative) {
  std::ifstream in(std::string(DATERA_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(in.good()) << "cannot read " << relative;
  std::string line;
  while (std::getline(in, line)) {
    const auto at = line.find("Start phases:");
    if (at == std::string::npos) continue;
    std::vector<std::string> out;
    for (auto open = line.find('`', at); open != std::string::npos;) {
      const auto close = line.find('`', open + 1);
      if (close == std::string::npos) break;
      out.push_back(line.substr(open + 1, close - open - 1));
      open = line.find('`', close + 1);
    }
    return out;
  }
  ADD_FAILURE() << relative << " has no line with \"Start phases:\"";
  return {};
}

TEST(ApplicationPhases, DocumentsQuoteTheCodesStartOrder) {
  const std::vector<std::string> code(kStartPhases.begin(), kStartPhases.end());
  for (const char* doc :
       {"agent/app/README.md", "docs/architecture.md", "agent/app/application.h"}) {
    EXPECT_EQ(quoted_phases(doc), code) << doc << " quotes another start order than phases.h";
  }
}

TEST(ApplicationPhases, ReadmeDescribesEachPhase) {
  std::ifstream in(std::string(DATERA_SOURCE_DIR) + "/agent/app/README.md");
  std::stringstream text;
  text << in.rdbuf();
  for (const auto phase : kStartPhases) {
    EXPECT_NE(text.str().find("- `" + std::string(phase) + "`: "), std::string::npos)
        << "agent/app/README.md does not say what `" << phase << "` does";
  }
}

}  // namespace
}  // namespace datera::app

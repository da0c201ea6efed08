// agent/config/README.md is the configuration reference: its table must describe every key the
// parser accepts, and nothing else, so the reference cannot drift from the schema.

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "agent/config/config.h"

namespace datera::config {
namespace {

std::set<std::string> documented_keys() {
  std::ifstream in(std::string(DATERA_SOURCE_DIR) + "/agent/config/README.md");
  std::set<std::string> out;
  std::string line;
  // A row's first cell names one key or several ("`backend.tls` / `backend.ca_file`"); a name
  // without a dot belongs to the section of the row's first key.
  const std::regex code("`([a-z_.]+)`");
  while (std::getline(in, line)) {
    if (line.rfind("| `", 0) != 0) continue;
    const std::string cell = line.substr(1, line.find('|', 1) - 1);
    std::string section;
    for (std::sregex_iterator it(cell.begin(), cell.end(), code), e; it != e; ++it) {
      std::string key = (*it)[1];
      if (section.empty() && key.find('.') != std::string::npos) {
        section = key.substr(0, key.find('.') + 1);
      }
      if (key.find('.') == std::string::npos && !section.empty()) key = section + key;
      out.insert(key);
    }
  }
  return out;
}

TEST(ConfigReference, DescribesEveryKeyOfTheSchemaAndNoOther) {
  const auto documented = documented_keys();
  ASSERT_FALSE(documented.empty()) << "no key table found in agent/config/README.md";
  const auto schema = known_keys();
  ASSERT_GT(schema.size(), 40u);
  for (const auto& key : schema) {
    EXPECT_TRUE(documented.count(key))
        << "agent/config/README.md does not describe '" << key << "'";
  }
  const std::set<std::string> known(schema.begin(), schema.end());
  for (const auto& key : documented) {
    EXPECT_TRUE(known.count(key)) << "agent/config/README.md describes '" << key
                                  << "', which the agent does not accept";
  }
}

TEST(ConfigReference, EveryDocumentedKeyIsAcceptedByTheParser) {
  // The schema list and the parser agree: a file setting one key (to its documented default
  // type) is not refused as an unknown key.
  for (const auto& key : known_keys()) {
    const auto dot = key.find('.');
    const std::string yaml = dot == std::string::npos
                                 ? key + ": ~\n"
                                 : key.substr(0, dot) + ": {" + key.substr(dot + 1) + ": ~}\n";
    auto r = parse(
        yaml, [](const std::string&) { return std::nullopt; }, "n1");
    if (!r) {
      EXPECT_EQ(r.error().message.find("unknown key"), std::string::npos)
          << key << ": " << r.error().message;
    }
  }
}

}  // namespace
}  // namespace datera::config

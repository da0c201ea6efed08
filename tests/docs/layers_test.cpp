// The written layering rule (docs/architecture.md, "Layers"), checked on every `#include "…"` of
// the product tree: base/ uses nothing of ours; plugins/ use base/ and each other; the agent never
// reaches into tools/ or tests/, nor tools/ (but the benchmarks) into tests/; the volume core
// knows no front end; only the composition root's folder includes it. A new upward edge fails
// here, naming the file and the line.

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

namespace fs = std::filesystem;

bool under(const std::string& path, const std::string& dir) {
  return path.compare(0, dir.size() + 1, dir + "/") == 0;
}

/// Why `file` (a path relative to the source root) may not include `target` (as written), or ""
/// when the edge follows the rule.
std::string upward_edge(const std::string& file, const std::string& target) {
  if (under(file, "base")) {
    if (!under(target, "base")) return "base/ may use nothing outside base/";
    return "";
  }
  if (under(file, "plugins") && (under(target, "agent") || under(target, "tools")))
    return "plugins/ may use only base/ and other plugins";
  if (under(file, "agent") && (under(target, "tools") || under(target, "tests")))
    return "the agent may not use tools/ or tests/";
  if (under(file, "agent/volume")) {
    for (const char* front :
         {"agent/flexvolume", "plugins/flex", "agent/csi", "plugins/csi", "agent/api"})
      if (under(target, front))
        return std::string("the volume core may not use a front end (") + front + ")";
  }
  if (under(target, "agent/app") && !under(file, "agent/app"))
    return "only the composition root (agent/app) includes agent/app";
  // The benchmarks drive the real binaries with the host tier's harness (tests/testing).
  if (under(file, "tools") && !under(file, "tools/bench") && under(target, "tests"))
    return "tools/ may not use tests/ (only tools/bench uses the test harness)";
  return "";
}

struct Edge {
  std::string file;
  int line = 0;
  std::string target;
};

std::vector<Edge> includes_under(const fs::path& root, const std::vector<std::string>& dirs) {
  std::vector<Edge> out;
  const std::regex include(R"(^\s*#\s*include\s+"([^"]+)\")");
  for (const auto& dir : dirs) {
    if (!fs::exists(root / dir)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / dir)) {
      const auto ext = entry.path().extension();
      if (!entry.is_regular_file() || (ext != ".h" && ext != ".cpp")) continue;
      std::ifstream in(entry.path());
      std::string text;
      int n = 0;
      while (std::getline(in, text)) {
        ++n;
        std::smatch m;
        if (std::regex_search(text, m, include))
          out.push_back({fs::relative(entry.path(), root).string(), n, m[1].str()});
      }
    }
  }
  return out;
}

TEST(Layers, TheRuleCatchesEachKindOfUpwardEdge) {
  EXPECT_NE(upward_edge("base/result.h", "agent/volume/manager.h"), "");
  EXPECT_NE(upward_edge("base/fs.cpp", "plugins/edf/client.h"), "");
  EXPECT_NE(upward_edge("plugins/initiator/loop.cpp", "agent/volume/array.h"), "");
  EXPECT_NE(upward_edge("agent/volume/manager.cpp", "agent/flexvolume/service.h"), "");
  EXPECT_NE(upward_edge("agent/volume/manager.cpp", "plugins/flex/protocol.h"), "");
  EXPECT_NE(upward_edge("agent/keeper/keeper.cpp", "agent/app/application.h"), "");
  EXPECT_NE(upward_edge("agent/http/server.cpp", "tools/datera-sim/tls.h"), "");
  EXPECT_EQ(upward_edge("agent/flexvolume/service.cpp", "agent/volume/manager.h"), "");
  EXPECT_EQ(upward_edge("plugins/edf/client.cpp", "base/result.h"), "");
  EXPECT_EQ(upward_edge("agent/app/application.cpp", "agent/app/application.h"), "");
  EXPECT_EQ(upward_edge("tools/datera-sim/api.cpp", "agent/http/server.h"), "");
  EXPECT_NE(upward_edge("tools/datera-sim/api.cpp", "tests/testing/temp_dir.h"), "");
  EXPECT_EQ(upward_edge("tools/bench/node_scale.cpp", "tests/testing/agent_process.h"), "");
}

TEST(Layers, NoProductFileIncludesUpward) {
  const fs::path root = DATERA_SOURCE_DIR;
  const auto edges = includes_under(root, {"base", "plugins", "agent", "tools"});
  ASSERT_GT(edges.size(), 300u) << "found too few includes under " << root;
  for (const auto& e : edges) {
    const std::string why = upward_edge(e.file, e.target);
    EXPECT_EQ(why, "") << e.file << ":" << e.line << " includes \"" << e.target << "\": " << why;
  }
}

}  // namespace

// The Grafana dashboard and the Prometheus rules in metrics/ against a real agent: every metric
// and label they name must be in a running agent's /metrics (after one volume mount through the
// shim, the loop initiator and datera-sim, and one failed mount), and the rules must pass
// `promtool check rules`. A panel or rule on a renamed or never-exported metric fails here, not
// silently at 3 a.m.

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "tests/testing/host_node.h"

namespace datera {
namespace {

using nlohmann::json;

const std::string kSource = DATERA_SOURCE_DIR;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Every PromQL expression in the rules file and the dashboard, with where it came from.
std::vector<std::pair<std::string, std::string>> expressions() {
  std::vector<std::pair<std::string, std::string>> out;
  const YAML::Node rules = YAML::LoadFile(kSource + "/metrics/alerts.yaml");
  for (const auto& g : rules["groups"]) {
    for (const auto& r : g["rules"]) {
      out.emplace_back("rule " + r["alert"].as<std::string>(), r["expr"].as<std::string>());
    }
  }
  const json dash = json::parse(read_file(kSource + "/metrics/dashboard.json"));
  std::function<void(const json&)> walk = [&](const json& panels) {
    for (const auto& p : panels) {
      for (const auto& t : p.value("targets", json::array())) {
        out.emplace_back("panel '" + p.value("title", "") + "'", t.value("expr", ""));
      }
      if (p.contains("panels")) walk(p["panels"]);
    }
  };
  walk(dash["panels"]);
  return out;
}

/// Sample name -> the label names seen on it, from a Prometheus text exposition.
std::map<std::string, std::set<std::string>> samples(const std::string& text) {
  std::map<std::string, std::set<std::string>> out;
  std::istringstream in(text);
  std::string line;
  const std::regex label(R"(([a-zA-Z_][a-zA-Z0-9_]*)=")");
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto end = line.find_first_of("{ ");
    auto& labels = out[line.substr(0, end)];
    if (end != std::string::npos && line[end] == '{') {
      const std::string body = line.substr(end, line.find('}') - end);
      for (std::sregex_iterator it(body.begin(), body.end(), label), e; it != e; ++it) {
        labels.insert((*it)[1]);
      }
    }
  }
  return out;
}

/// One node on one datera-sim (tests/testing/host_node.h), started.
class MetricsAssetsTest : public testing::HostNodeTest {
 protected:
  testing::AgentProcess& agent_ = node_.agent;
};

TEST_F(MetricsAssetsTest, EveryMetricAndLabelTheDashboardAndRulesNameIsExported) {
  const std::string pod = agent_.root + "/kubelet/pods/uid-m/volumes/datera~iscsi/pv-m";
  testing::exec_capture({"/bin/mkdir", "-p", pod});
  const std::string opts = json{
      {"volumeID", "vol-metrics"},
      {"size", "1"},
      {"kubernetes.io/fsType", "xfs"},
      {"kubernetes.io/pvOrVolumeName",
       "pv-m"}}.dump();
  auto r = agent_.shim({"mount", pod, opts});
  ASSERT_NE(r.output.find("\"Success\""), std::string::npos) << r.output << agent_.log_text();
  auto bad = json::parse(opts);
  bad["mountOptions"] = "exec";  // refused: one failed operation, as in real life
  r = agent_.shim({"mount", pod + "-2", bad.dump()});
  ASSERT_NE(r.output.find("\"Failure\""), std::string::npos) << r.output;
  // The session keeper's first look at the new session (it polls every 2 s at the most).
  std::map<std::string, std::set<std::string>> exported;
  for (int i = 0; i < 60 && !exported.count("datera_agent_session_up"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    exported = samples(agent_.metrics());
  }
  ASSERT_FALSE(exported.empty());

  // Names Prometheus itself adds, not the agent.
  const std::set<std::string> from_prometheus = {"up"};
  const std::set<std::string> added_labels = {"instance", "job"};
  const std::regex selector(R"(\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{([^}]*)\})?)");
  const std::regex matcher(R"(([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=))");
  const std::set<std::string> promql_words = {
      "sum",   "by",     "without",      "rate",   "increase", "histogram_quantile",
      "count", "or",     "and",          "unless", "vector",   "max",
      "min",   "avg",    "label_values", "on",     "ignoring", "group_left",
      "bool",  "offset", "absent",       "le"};
  int checked = 0;
  for (const auto& [where, expr] : expressions()) {
    // Strip quoted strings and range selectors first, so their contents are not taken as names.
    std::string bare = std::regex_replace(expr, std::regex(R"("[^"]*")"), "\"\"");
    bare = std::regex_replace(bare, std::regex(R"(\[[^\]]*\])"), "");
    for (std::sregex_iterator it(bare.begin(), bare.end(), selector), e; it != e; ++it) {
      const std::string name = (*it)[1];
      if (promql_words.count(name) || std::isdigit(static_cast<unsigned char>(name[0]))) continue;
      // Only metric names: the words after `by (` and friends are labels, skipped by shape below.
      const auto pos = static_cast<size_t>(it->position(0));
      const auto open = bare.rfind('(', pos);
      if (open != std::string::npos) {
        const std::string before = bare.substr(0, open);
        if (std::regex_search(before, std::regex(R"((by|without|on|ignoring)\s*$)"))) continue;
      }
      // The agent's own names, or the client libraries' standard process_* metrics it exports.
      if (name.rfind("datera_agent_", 0) != 0 && name.rfind("process_", 0) != 0 &&
          !from_prometheus.count(name)) {
        ADD_FAILURE() << where << " names '" << name << "', not a datera-agent metric: " << expr;
        continue;
      }
      if (from_prometheus.count(name)) continue;
      ++checked;
      const auto found = exported.find(name);
      if (found == exported.end()) {
        ADD_FAILURE() << where << " names " << name << ", which the agent does not export";
        continue;
      }
      const std::string body = (*it)[3];
      for (std::sregex_iterator m(body.begin(), body.end(), matcher), me; m != me; ++m) {
        const std::string label = (*m)[1];
        if (added_labels.count(label)) continue;
        EXPECT_TRUE(found->second.count(label))
            << where << " selects label '" << label << "' of " << name << ", which has none";
      }
    }
  }
  EXPECT_GT(checked, 40) << "the dashboard and rules name metrics; the parser must find them";
}

TEST(MetricsRules, PassPromtool) {
  const char* promtool = "/usr/bin/promtool";
  if (::access(promtool, X_OK) != 0) {
    GTEST_SKIP() << "SKIPPED: no " << promtool
                 << " (Debian's prometheus package; tools/setup.sh installs it)";
  }
  auto r = testing::exec_capture({promtool, "check", "rules", kSource + "/metrics/alerts.yaml"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("SUCCESS"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace datera

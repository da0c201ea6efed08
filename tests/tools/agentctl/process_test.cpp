// The real datera-agentctl against a real agent over its Unix socket: tables, JSON and exit codes.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/agent_process.h"

namespace datera {
namespace {

testing::Exec ctl(const std::string& socket, std::vector<std::string> args) {
  args.insert(args.begin(), {DATERA_AGENTCTL_PATH, "-s", socket});
  return testing::exec_capture(args);
}

TEST(AgentctlProcess, ReadsTheRunningAgentAndSaysWhenItCannot) {
  testing::AgentProcess agent("initiator: {iqn: 'iqn.1993-08.org.debian:01:ctl'}\n");
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(agent.wait_ready()) << agent.log_text();

  auto r = ctl(agent.socket, {"status"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("NODE"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("it-node"), std::string::npos) << r.output;

  r = ctl(agent.socket, {"-o", "json", "volumes"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_TRUE(j["volumes"].is_array());

  r = ctl(agent.socket, {"-o", "json", "doctor"});
  j = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_array()) << r.output;
  bool failed = false;
  for (const auto& c : j) {
    EXPECT_TRUE(c.contains("check") && c.contains("result") && c.contains("fix")) << c.dump();
    failed |= c["result"] == "fail";
    if (c["check"] == "agent" || c["check"] == "driver") {
      EXPECT_EQ(c["result"], "pass") << c.dump();
    }
    if (c["check"] == "initiator-name") {
      EXPECT_EQ(c["detail"], "iqn.1993-08.org.debian:01:ctl") << "the agent's, from initiator.iqn";
    }
  }
  EXPECT_EQ(r.exit_code, failed ? 1 : 0) << "exit code follows the checks: " << r.output;

  agent.stop();
  r = ctl(agent.socket, {"status"});
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("is it running?"), std::string::npos) << r.output;
  r = ctl(agent.socket, {"bogus"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
}  // namespace datera

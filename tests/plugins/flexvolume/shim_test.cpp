#include "plugins/flexvolume/shim.h"

#include <gtest/gtest.h>

namespace datera::flex {
namespace {

struct FakeAgent {
  std::vector<std::string> bodies;
  Result<HttpReply> next = HttpReply{200, R"({"status":"Success","volumeName":"v"})"};
  Transport transport() {
    return [this](const DriverInfo&, const std::string& body) {
      bodies.push_back(body);
      return next;
    };
  }
};

DriverInfo info_with(Json caps) {
  DriverInfo i;
  i.socket = "/run/test/agent.sock";
  i.capabilities = std::move(caps);
  return i;
}

TEST(Shim, InitIsAnsweredLocallyFromDriverInfo) {
  FakeAgent agent;
  auto r =
      run_shim({"init"}, info_with(Json{{"attach", false}, {"fsGroup", false}}), agent.transport());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.reply["status"], "Success");
  EXPECT_EQ(r.reply["capabilities"]["fsGroup"], false);
  EXPECT_TRUE(agent.bodies.empty()) << "init must never depend on the agent";
}

TEST(Shim, InitWorksEvenWithoutDriverInfo) {
  FakeAgent agent;
  auto r = run_shim({"init"}, Error{"cannot open .datera-agent.json"}, agent.transport());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.reply["capabilities"]["attach"], false);
}

// Found by tests/fuzz (flexvolume_argv): argv bytes that are not UTF-8 (a pod dir, or an unknown
// command word) cannot go into JSON; nlohmann's dump() threw, the shim died in std::terminate and
// kubelet got no reply at all.
TEST(Shim, ArgvThatIsNotUtf8IsAFailureReplyNotACrash) {
  for (const std::vector<std::string>& argv :
       {std::vector<std::string>{"unmount", "/var/lib/kubelet/pods/3f1c/volumes/d\xe1tera"},
        std::vector<std::string>{"mount\xff", "/p", "{}"}}) {
    FakeAgent agent;
    ShimResult r{Json(), -1};
    ASSERT_NO_THROW(r = run_shim(argv, info_with(Json{{"attach", false}}), agent.transport()));
    std::string printed;
    ASSERT_NO_THROW(printed = r.reply.dump()) << "what main() prints";
    EXPECT_EQ(r.reply["status"], "Failure") << printed;
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(printed.find("UTF-8"), std::string::npos) << printed;
    EXPECT_TRUE(agent.bodies.empty());
  }
}

TEST(Shim, ForwardsCommandsAndPrintsAgentReply) {
  FakeAgent agent;
  auto r = run_shim({"getvolumename", R"({"volumeID":"v"})"},
                    info_with(DriverInfo::default_capabilities()), agent.transport());
  ASSERT_EQ(agent.bodies.size(), 1u);
  const auto sent = Json::parse(agent.bodies[0]);
  EXPECT_EQ(sent["command"], "getvolumename");
  EXPECT_EQ(sent["options"]["volumeID"], "v");
  EXPECT_EQ(r.reply["volumeName"], "v");
  EXPECT_EQ(r.exit_code, 0);
}

TEST(Shim, AgentFailureExitsOne) {
  FakeAgent agent;
  agent.next = HttpReply{200, R"({"status":"Failure","message":"nope"})"};
  auto r = run_shim({"unmount", "/p"}, info_with({}), agent.transport());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.reply["message"], "nope");
}

TEST(Shim, UnreachableAgentIsFailureNamingSocketNeverNotSupported) {
  FakeAgent agent;
  agent.next = Error{"No such file or directory", static_cast<int>(ClientErrc::connect)};
  auto r = run_shim({"mount", "/p", "{}"}, info_with({}), agent.transport());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.reply["status"], "Failure");
  const auto msg = r.reply["message"].get<std::string>();
  EXPECT_NE(msg.find("/run/test/agent.sock"), std::string::npos) << msg;
  EXPECT_NE(msg.find("systemctl status datera-agent"), std::string::npos) << msg;
}

TEST(Shim, TimeoutIsFailureNamingCommand) {
  FakeAgent agent;
  agent.next = Error{"timed out", static_cast<int>(ClientErrc::timeout)};
  auto r = run_shim({"unmount", "/p"}, info_with({}), agent.transport());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.reply["message"].get<std::string>().find("did not answer 'unmount'"),
            std::string::npos);
}

TEST(Shim, GarbageOrNon200RepliesBecomeFailure) {
  FakeAgent agent;
  agent.next = HttpReply{200, "not json"};
  EXPECT_EQ(run_shim({"unmount", "/p"}, info_with({}), agent.transport()).reply["status"],
            "Failure");
  agent.next = HttpReply{200, R"({"status":"Failed"})"};
  EXPECT_EQ(run_shim({"unmount", "/p"}, info_with({}), agent.transport()).reply["status"],
            "Failure");
  agent.next = HttpReply{500, R"({"status":"Success"})"};
  EXPECT_EQ(run_shim({"unmount", "/p"}, info_with({}), agent.transport()).exit_code, 1);
  agent.next = HttpReply{403, R"({"status":"Failure","message":"uid 1000 may not"})"};
  auto r = run_shim({"unmount", "/p"}, info_with({}), agent.transport());
  EXPECT_EQ(r.reply["message"], "uid 1000 may not");
}

TEST(Shim, UnknownCommandIsNotSupportedAndBadArgvIsFailure) {
  FakeAgent agent;
  auto unknown = run_shim({"snapshot"}, info_with({}), agent.transport());
  EXPECT_EQ(unknown.reply["status"], "Not supported");
  EXPECT_EQ(unknown.exit_code, 0);
  auto bad = run_shim({"mount", "/only-dir"}, info_with({}), agent.transport());
  EXPECT_EQ(bad.reply["status"], "Failure");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(agent.bodies.empty());
}

TEST(DriverInfo, RoundTripsAndValidates) {
  DriverInfo i;
  i.socket = "/s.sock";
  i.agent_version = "9.9";
  auto back = DriverInfo::from_json(i.to_json());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->socket, "/s.sock");
  EXPECT_EQ(back->call_timeout, i.call_timeout);
  EXPECT_FALSE(DriverInfo::from_json(Json{{"socket", "relative"}}).ok());
  EXPECT_FALSE(DriverInfo::from_json(Json{{"call_timeout_ms", -1}}).ok());
}

}  // namespace
}  // namespace datera::flex

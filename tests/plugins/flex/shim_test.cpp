#include "plugins/flex/shim.h"

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
  // The first input the flexvolume_argv fuzz target found (tests/fuzz/regressions/).
  FakeAgent agent;
  ShimResult r{Json(), -1};
  ASSERT_NO_THROW(r = run_shim({"unmount", "/var/lib/kubelet/pods/3f1c/volumes/d\xe1tera"},
                               info_with(Json{{"attach", false}}), agent.transport()));
  std::string printed;
  ASSERT_NO_THROW(printed = r.reply.dump()) << "what main() prints";
  EXPECT_EQ(r.reply["status"], "Failure") << printed;
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(printed.find("UTF-8"), std::string::npos) << printed;
  // A command word of such bytes is an unknown command ("Not supported"), printed escaped.
  ShimResult unknown{Json(), -1};
  ASSERT_NO_THROW(unknown = run_shim({"mount\xff", "/p", "{}"}, info_with(Json{{"attach", false}}),
                                     agent.transport()));
  ASSERT_NO_THROW(printed = unknown.reply.dump());
  EXPECT_EQ(unknown.reply["status"], "Not supported") << printed;
  EXPECT_TRUE(agent.bodies.empty());
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
  agent.next = Error{"No such file or directory", ClientErrc::connect};
  auto r = run_shim({"mount", "/p", "{}"}, info_with({}), agent.transport());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.reply["status"], "Failure");
  const auto msg = r.reply["message"].get<std::string>();
  EXPECT_NE(msg.find("/run/test/agent.sock"), std::string::npos) << msg;
  EXPECT_NE(msg.find("systemctl status datera-agent"), std::string::npos) << msg;
}

TEST(Shim, TimeoutIsFailureNamingCommand) {
  FakeAgent agent;
  agent.next = Error{"timed out", ClientErrc::timeout};
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

// kubelet must always get exactly one JSON object. Bytes that are not UTF-8 cannot be carried in
// JSON: dumping them used to throw and abort the shim with no output at all.
bool dumps_strictly(const Json& j) {
  try {
    (void)j.dump();
    return true;
  } catch (const Json::exception&) {
    return false;
  }
}

TEST(Shim, ArgvThatIsNotUtf8IsAClearFailureNeverAnAbort) {
  FakeAgent agent;
  auto r = run_shim({"mount", "/var/lib/kubelet/pods/\xff\xfe/v", "{}"}, info_with({}),
                    agent.transport());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.reply["status"], "Failure");
  EXPECT_TRUE(dumps_strictly(r.reply)) << "the reply itself must be valid UTF-8";
  const auto msg = r.reply["message"].get<std::string>();
  EXPECT_NE(msg.find("podVolumeDir is not valid UTF-8"), std::string::npos) << msg;
  EXPECT_TRUE(agent.bodies.empty()) << "nothing reaches the agent";

  // Raw bytes inside the options JSON: not a JSON string nlohmann accepts.
  auto opts =
      run_shim({"getvolumename", "{\"volumeID\":\"v\xff\"}"}, info_with({}), agent.transport());
  EXPECT_EQ(opts.reply["status"], "Failure");
  EXPECT_TRUE(dumps_strictly(opts.reply));

  // An unknown command word made of such bytes is still "Not supported", and printable.
  auto unknown = run_shim({"\xff\xfe"}, info_with({}), agent.transport());
  EXPECT_EQ(unknown.reply["status"], "Not supported");
  EXPECT_TRUE(dumps_strictly(unknown.reply));
  EXPECT_NE(unknown.reply["message"].get<std::string>().find("\\xff\\xfe"), std::string::npos)
      << unknown.reply["message"];
  EXPECT_TRUE(agent.bodies.empty());
}

TEST(Shim, ControlCharactersInAPathAreAFailureBeforeTheAgent) {
  FakeAgent agent;
  for (const std::string bad : {"/pods/a\nFAKE", "/pods/a\rb", "/pods/a\tb", "/pods/\x1b[31m"}) {
    auto r = run_shim({"unmount", bad}, info_with({}), agent.transport());
    EXPECT_EQ(r.reply["status"], "Failure") << bad;
    const auto msg = r.reply["message"].get<std::string>();
    EXPECT_NE(msg.find("podVolumeDir contains a control character"), std::string::npos) << msg;
    EXPECT_EQ(msg.find_first_of("\n\r\t\x1b"), std::string::npos) << "not echoed raw: " << msg;
  }
  EXPECT_TRUE(agent.bodies.empty());
}

TEST(Shim, UnreadableInfoPathThatIsNotUtf8StillGivesOneObject) {
  FakeAgent agent;
  agent.next = Error{"No such file or directory", ClientErrc::connect};
  auto r = run_shim({"unmount", "/p"}, Error{"cannot open /opt/\xff\xfe/.datera-agent.json"},
                    agent.transport());
  EXPECT_EQ(r.reply["status"], "Failure");
  EXPECT_TRUE(dumps_strictly(r.reply)) << "the info path is echoed in the message";
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

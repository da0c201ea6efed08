#include "plugins/flex/protocol.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace datera::flex {
namespace {

const std::string kOpts =
    R"({"kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"rw","volumeID":"v1"})";

// Every command exactly as kubelet / the controller manager pass it: `<driver> <command>
// [args...]`.
struct ArgvCase {
  std::vector<std::string> argv;
  std::vector<std::string> positional;
  bool has_options;
};

class ParseArgv : public ::testing::TestWithParam<ArgvCase> {};

TEST_P(ParseArgv, SplitsPositionalAndOptions) {
  const auto& c = GetParam();
  auto req = parse_argv(c.argv);
  ASSERT_TRUE(req.ok()) << req.error().message;
  EXPECT_EQ(req->command, c.argv[0]);
  EXPECT_EQ(req->args, c.positional);
  if (c.has_options) {
    EXPECT_EQ(req->options.value("volumeID", ""), "v1");
  } else {
    EXPECT_TRUE(req->options.empty());
  }
  // The wire form round-trips through the agent-side validator unchanged.
  auto back = request_from_json(req->to_json());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->args, req->args);
  EXPECT_EQ(back->options, req->options);
}

INSTANTIATE_TEST_SUITE_P(
    AllCommands, ParseArgv,
    ::testing::Values(
        ArgvCase{{"init"}, {}, false}, ArgvCase{{"getvolumename", kOpts}, {}, true},
        ArgvCase{{"attach", kOpts, "node-1"}, {"node-1"}, true},
        ArgvCase{{"isattached", kOpts, "node-1"}, {"node-1"}, true},
        ArgvCase{{"detach", "pv-1", "node-1"}, {"pv-1", "node-1"}, false},
        ArgvCase{{"waitforattach", "/dev/sdb", kOpts}, {"/dev/sdb"}, true},
        ArgvCase{{"mountdevice", "/var/lib/kubelet/plugins/m/pv-1", "/dev/sdb", kOpts},
                 {"/var/lib/kubelet/plugins/m/pv-1", "/dev/sdb"},
                 true},
        ArgvCase{{"unmountdevice", "/var/lib/kubelet/plugins/m/pv-1"},
                 {"/var/lib/kubelet/plugins/m/pv-1"},
                 false},
        ArgvCase{{"mount", "/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv-1", kOpts},
                 {"/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv-1"},
                 true},
        ArgvCase{{"unmount", "/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv-1"},
                 {"/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv-1"},
                 false},
        ArgvCase{{"expandvolume", kOpts, "/m/pv-1", "2147483648", "1073741824"},
                 {"/m/pv-1", "2147483648", "1073741824"},
                 true},
        ArgvCase{{"expandfs", kOpts, "/dev/sdb", "/m/pv-1", "2147483648", "1073741824"},
                 {"/dev/sdb", "/m/pv-1", "2147483648", "1073741824"},
                 true}));

TEST(ParseArgvErrors, UnknownCommandIsNotSupportedCode) {
  auto r = parse_argv({"frobnicate"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errno_code(ENOTSUP));
}

TEST(ParseArgvErrors, WrongArityShowsUsage) {
  auto r = parse_argv({"mount", "/dir"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("usage: mount <podVolumeDir> <json options>"), std::string::npos)
      << r.error().message;
  EXPECT_FALSE(parse_argv({}).ok());
}

TEST(ParseArgvErrors, OptionsMustBeObjectOfStrings) {
  EXPECT_FALSE(parse_argv({"mount", "/d", "not json"}).ok());
  EXPECT_FALSE(parse_argv({"mount", "/d", "[1,2]"}).ok());
  auto r = parse_argv({"mount", "/d", R"({"size": 5})"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("'size' must be a string"), std::string::npos);
}

TEST(Request, NamedArgs) {
  auto r = parse_argv({"mountdevice", "/m", "/dev/sdc", "{}"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->arg("deviceMountPath"), "/m");
  EXPECT_EQ(r->arg("device"), "/dev/sdc");
  EXPECT_EQ(r->arg("podVolumeDir"), std::nullopt);
}

TEST(RequestFromJson, RejectsBadBodies) {
  EXPECT_FALSE(request_from_json(Json::array()).ok());
  EXPECT_FALSE(request_from_json(Json{{"args", Json::array()}}).ok());
  EXPECT_FALSE(request_from_json(Json{{"command", "mount"}, {"args", {1}}}).ok());
  EXPECT_FALSE(request_from_json(Json{{"command", "mount"}, {"args", Json::array()}}).ok());
  EXPECT_EQ(request_from_json(Json{{"command", "nope"}}).error().code, errno_code(ENOTSUP));
}

// The agent reads argv the same way the shim does: a path with a line break in it is refused, so
// it never reaches a mount call or a log line (curl on the socket skips the shim).
TEST(RequestFromJson, RefusesControlCharactersInPositionalArguments) {
  auto r = request_from_json(Json{{"command", "unmount"}, {"args", {"/pods/a\nFAKE LINE"}}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("podVolumeDir contains a control character"), std::string::npos)
      << r.error().message;
  EXPECT_TRUE(request_from_json(Json{{"command", "unmount"}, {"args", {"/pods/ä b"}}}).ok())
      << "non-ASCII and spaces are fine";
}

TEST(Reply, StatusesAndExitCodes) {
  EXPECT_EQ(exit_code_for(success()), 0);
  EXPECT_EQ(exit_code_for(not_supported("x")), 0);
  EXPECT_EQ(exit_code_for(failure("x")), 1);
  EXPECT_EQ(exit_code_for(Json{{"status", "Failed"}}), 1);  // exact match only, like kubelet
  EXPECT_FALSE(validate_reply(Json{{"status", "success"}}).ok());
  EXPECT_FALSE(validate_reply(Json::array()).ok());
  EXPECT_TRUE(validate_reply(failure("m")).ok());
}

}  // namespace
}  // namespace datera::flex

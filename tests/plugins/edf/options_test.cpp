#include "plugins/edf/options.h"

#include <gtest/gtest.h>

namespace datera::edf {
namespace {

const BackendTarget kDefaults{"edf.example", 7717, {"admin", "default-pw"}};

const std::vector<std::string> kAllowed{"EDF2.example", "[fd00::7]:7718", "10.1.2.3:7718",
                                        "edf2.example:7718"};

Result<VolumeOptions> parse(Json o) {
  return parse_volume_options(o, kDefaults);
}
Result<VolumeOptions> parse_allowed(Json o) {
  return parse_volume_options(o, kDefaults, kAllowed);
}

TEST(VolumeOptions, DefaultsFromTheOriginalDriver) {
  auto v = parse(Json{{"volumeID", "vol-1"}});
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->spec.name, "vol-1");
  EXPECT_EQ(v->spec.size_gib, 16);
  EXPECT_EQ(v->spec.replica_count, 3);
  EXPECT_EQ(v->spec.placement_mode, "hybrid");
  EXPECT_EQ(v->spec.ip_pool, "default");
  EXPECT_EQ(v->fs_type, "xfs");
  EXPECT_FALSE(v->delete_on_release);
  EXPECT_EQ(v->backend.server(), "edf.example:7717");
  EXPECT_EQ(v->backend.credentials.user, "admin");
}

TEST(VolumeOptions, EveryOption) {
  auto v = parse_allowed(Json{{"volumeID", "vol-2"},
                              {"size", "10Gi"},
                              {"replica", "2"},
                              {"template", "basic"},
                              {"retainPolicy", "never"},
                              {"maxIops", "1000"},
                              {"maxBW", "20480"},
                              {"ipPool", "pool_b"},
                              {"placementMode", "all_flash"},
                              {"backstoreServer", "10.1.2.3:7718"},
                              {"serverUser", "ops"},
                              {"serverPasswd", "pw2"},
                              {"kubernetes.io/fsType", "ext4"}});
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->spec.size_gib, 10);
  EXPECT_EQ(v->spec.replica_count, 2);
  EXPECT_EQ(v->spec.template_name, "basic");
  EXPECT_TRUE(v->delete_on_release);
  EXPECT_EQ(v->spec.max_iops, 1000u);
  EXPECT_EQ(v->spec.max_bandwidth, 20480u);
  EXPECT_EQ(v->spec.ip_pool, "pool_b");
  EXPECT_EQ(v->spec.placement_mode, "all_flash");
  EXPECT_EQ(v->backend.server(), "10.1.2.3:7718");
  EXPECT_EQ(v->backend.credentials.user, "ops");
  EXPECT_EQ(v->backend.credentials.password, "pw2");
  EXPECT_EQ(v->fs_type, "ext4");
}

TEST(VolumeOptions, PvNameWhenNoVolumeId) {
  auto v = parse(Json{{"kubernetes.io/pvOrVolumeName", "pvc-0a1b2c3d"}});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->spec.name, "pvc-0a1b2c3d");
}

TEST(VolumeOptions, SecretWinsAndIsDecoded) {
  // base64("secret-user") / base64("p@ss word") / base64("edf2.example:7718")
  auto v = parse_allowed(Json{{"volumeID", "vol-3"},
                              {"serverUser", "ignored"},
                              {"kubernetes.io/secret/username", "c2VjcmV0LXVzZXI="},
                              {"kubernetes.io/secret/password", "cEBzcyB3b3Jk"},
                              {"kubernetes.io/secret/server", "ZWRmMi5leGFtcGxlOjc3MTg="}});
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->backend.credentials.user, "secret-user");
  EXPECT_EQ(v->backend.credentials.password, "p@ss word");
  EXPECT_EQ(v->backend.server(), "edf2.example:7718");
}

TEST(VolumeOptions, ErrorsNameTheOptionAndNeverEchoSecrets) {
  struct Case {
    Json options;
    const char* expect;
  };
  for (const auto& c : std::vector<Case>{
           {Json::object(), "'volumeID': missing"},
           {Json{{"volumeID", "1bad name"}}, "not a valid Datera name"},
           {Json{{"volumeID", "v-1x"}, {"size", "0"}}, "'size': 0 is outside 1..32768"},
           {Json{{"volumeID", "v-1x"}, {"size", "ten"}}, "'size': 'ten' is not a whole number"},
           {Json{{"volumeID", "v-1x"}, {"replica", "9"}}, "'replica': 9 is outside 1..5"},
           {Json{{"volumeID", "v-1x"}, {"placementMode", "tape"}}, "'placementMode'"},
           {Json{{"volumeID", "v-1x"}, {"retainPolicy", "forever"}}, "'retainPolicy'"},
           {Json{{"volumeID", "v-1x"}, {"fsType", "btrfs"}}, "'fsType': 'btrfs' is not supported"},
           {Json{{"volumeID", "v-1x"}, {"backstoreServer", "host:99999"}}, "'backstoreServer'"},
           {Json{{"volumeID", "v-1x"}, {"kubernetes.io/secret/password", "%%%not-base64%%%"}},
            "secret key 'password' is not valid base64"},
       }) {
    auto v = parse(c.options);
    ASSERT_FALSE(v.ok()) << c.options.dump();
    EXPECT_NE(v.error().message.find(c.expect), std::string::npos) << v.error().message;
    EXPECT_EQ(v.error().message.find("%%%not-base64%%%"), std::string::npos);
  }
  auto none = parse_volume_options(Json{{"volumeID", "vol-4"}}, BackendTarget{});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message.find("no Datera EDF server for volume vol-4"), std::string::npos);
}

// Issue 14 item 1: the agent's own credentials go only to its own array; a volume naming another
// server must be allowed (backend.allowed_servers) and bring its own credentials.

TEST(BackendRules, DefaultCredentialsAreNeverSentToAnotherServer) {
  // Allowed, but no credentials of its own: refused before any connection.
  auto v = parse_allowed(Json{{"volumeID", "vol-5"}, {"backstoreServer", "edf2.example"}});
  ASSERT_FALSE(v.ok()) << "default credentials would go to " << v->backend.server();
  EXPECT_NE(v.error().message.find("volume option 'backstoreServer'"), std::string::npos)
      << v.error().message;
  EXPECT_NE(v.error().message.find("secretRef"), std::string::npos) << v.error().message;
  EXPECT_EQ(v.error().message.find("default-pw"), std::string::npos);
  // The secret's server key is the same rule.
  auto s = parse_allowed(Json{
      {"volumeID", "vol-5"}, {"kubernetes.io/secret/server", "ZWRmMi5leGFtcGxl"}});  // edf2.example
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("secret key 'server'"), std::string::npos) << s.error().message;
  // A username alone does not borrow the agent's password.
  auto u = parse_allowed(
      Json{{"volumeID", "vol-5"}, {"backstoreServer", "edf2.example"}, {"serverUser", "ops"}});
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.error().message.find("password"), std::string::npos) << u.error().message;
}

TEST(BackendRules, OnlyAllowedServersAreAccepted) {
  auto v = parse(Json{{"volumeID", "vol-6"},
                      {"backstoreServer", "evil.example:80"},
                      {"serverUser", "u"},
                      {"serverPasswd", "p"}});
  ASSERT_FALSE(v.ok()) << "accepted " << v->backend.server();
  EXPECT_NE(v.error().message.find("volume option 'backstoreServer'"), std::string::npos);
  EXPECT_NE(v.error().message.find("backend.allowed_servers"), std::string::npos)
      << v.error().message;
  auto s = parse(Json{{"volumeID", "vol-6"},
                      {"kubernetes.io/secret/server", "ZXZpbC5leGFtcGxlOjgw"},  // evil.example:80
                      {"kubernetes.io/secret/username", "dQ=="},
                      {"kubernetes.io/secret/password", "cA=="}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("secret key 'server'"), std::string::npos);
  // Allowed and with its own credentials: fine, and not the default.
  auto ok = parse_allowed(Json{{"volumeID", "vol-6"},
                               {"backstoreServer", "edf2.EXAMPLE:7717"},
                               {"serverUser", "u"},
                               {"serverPasswd", "p"}});
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->backend.server(), "edf2.example:7717");
  EXPECT_EQ(ok->backend.credentials.user, "u");
  EXPECT_FALSE(ok->backend.is_default);
  auto v6 = parse_allowed(Json{{"volumeID", "vol-6"},
                               {"backstoreServer", "[FD00::7]:7718"},
                               {"kubernetes.io/secret/username", "dQ=="},
                               {"kubernetes.io/secret/password", "cA=="}});
  ASSERT_TRUE(v6.ok()) << v6.error().message;
}

TEST(BackendRules, TheDefaultServerSpelledDifferentlyIsTheDefault) {
  for (const char* spelling : {"edf.example", "EDF.Example", "edf.example:7717"}) {
    auto v = parse(Json{{"volumeID", "vol-7"}, {"backstoreServer", spelling}});
    ASSERT_TRUE(v.ok()) << spelling << ": " << v.error().message;
    EXPECT_TRUE(v->backend.is_default) << spelling;
    EXPECT_EQ(v->backend.server(), "edf.example:7717");
  }
  auto other_port = parse(Json{{"volumeID", "vol-7"}, {"backstoreServer", "edf.example:7000"}});
  EXPECT_FALSE(other_port.ok()) << "another port is another server";
  auto plain = parse(Json{{"volumeID", "vol-7"}});
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->backend.is_default);
  // The volume's own credentials on the default array are its own, not the agent's.
  auto own = parse(Json{{"volumeID", "vol-7"}, {"serverUser", "ops"}, {"serverPasswd", "pw3"}});
  ASSERT_TRUE(own.ok());
  EXPECT_FALSE(own->backend.is_default);
  EXPECT_EQ(own->backend.credentials.password, "pw3");
}

TEST(BackendRules, SameServerIgnoresCaseAndTheDefaultPort) {
  EXPECT_TRUE(same_server(*parse_server("EDF:7717", {}), *parse_server("edf", {})));
  EXPECT_TRUE(same_server(*parse_server("[FD00::1]", {}), *parse_server("[fd00::1]:7717", {})));
  EXPECT_FALSE(same_server(*parse_server("edf", {}), *parse_server("edf:7718", {})));
}

TEST(Server, Forms) {
  EXPECT_EQ(parse_server("edf", {})->server(), "edf:7717");
  EXPECT_EQ(parse_server("edf:7718", {})->server(), "edf:7718");
  EXPECT_EQ(parse_server("[fd00::1]:7718", {})->host, "fd00::1");
  EXPECT_FALSE(parse_server("", {}).ok());
  EXPECT_FALSE(parse_server("a b:1", {}).ok());
}

TEST(Base64, DecodesStandardAndUrlAlphabets) {
  EXPECT_EQ(*base64_decode("aGVsbG8="), "hello");
  EXPECT_EQ(*base64_decode("aGVsbG8"), "hello");
  EXPECT_EQ(*base64_decode("-_8="), std::string("\xfb\xff", 2));
  EXPECT_FALSE(base64_decode("aGV*bG8=").ok());
}

}  // namespace
}  // namespace datera::edf

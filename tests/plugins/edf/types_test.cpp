#include "plugins/edf/types.h"

#include <gtest/gtest.h>

namespace datera::edf {
namespace {

TEST(AppInstance, ParsesTheV21ArrayForm) {
  // Trimmed from a recorded v2.1 reply (v2.1 lists storage instances as an array).
  const auto j = Json::parse(
      R"({"path":"/app_instances/b1ac","id":"b1ac","name":"test-app-1","admin_state":"online",
    "storage_instances":[{"name":"storage-1","admin_state":"online","op_state":"available",
      "acl_policy":{"path":"x","initiators":[{"path":"/initiators/iqn.1993-08.org.debian:01:aa","tenant":"/root"}],
                    "initiator_groups":[]},
      "access":{"path":"y","ips":["172.28.41.43","172.29.41.56"],"iqn":"iqn.2013-05.com.daterainc:tc:01:sn:9b8e220259a8a79f"},
      "volumes":[{"name":"volume-1","size":10,"replica_count":1,"uuid":"6c26abcd"}]}]})");
  auto ai = AppInstance::from_json(j);
  ASSERT_TRUE(ai.ok()) << ai.error().message;
  EXPECT_EQ(ai->name, "test-app-1");
  EXPECT_EQ(ai->op_state, "available");
  EXPECT_EQ(ai->ips, (std::vector<std::string>{"172.28.41.43", "172.29.41.56"}));
  EXPECT_EQ(ai->acl, std::vector<std::string>{"iqn.1993-08.org.debian:01:aa"});
  EXPECT_EQ(ai->size_gib, 10);
  EXPECT_EQ(ai->volume_uuid, "6c26abcd");
}

TEST(AppInstance, ParsesTheV2DictFormAndRejectsGarbage) {
  const auto j =
      Json::parse(R"({"name":"a","storage_instances":{"storage-1":{"op_state":"unavailable",
     "access_control":{"initiators":["/initiators/iqn.1993-08.org.debian:01:bb"]},
     "volumes":{"volume-1":{"size":"5","uuid":"u"}}}}})");
  auto ai = AppInstance::from_json(j);
  ASSERT_TRUE(ai.ok());
  EXPECT_EQ(ai->acl, std::vector<std::string>{"iqn.1993-08.org.debian:01:bb"});
  EXPECT_EQ(ai->size_gib, 5);
  EXPECT_FALSE(AppInstance::from_json(Json::array()).ok());
  EXPECT_FALSE(AppInstance::from_json(Json{{"name", "x"}}).ok());
}

TEST(Names, EdfRules) {
  EXPECT_TRUE(is_valid_name("vol-1"));
  EXPECT_TRUE(is_valid_name("_x1"));
  EXPECT_TRUE(is_valid_name("0c6e2b1c-6f0a-4ef5-8a8a-1c2d3e4f5a6b"));
  EXPECT_FALSE(is_valid_name("ab"));
  EXPECT_FALSE(is_valid_name("1abc"));
  EXPECT_FALSE(is_valid_name("a/b/c"));
  EXPECT_FALSE(is_valid_name(std::string(65, 'a')));
  EXPECT_TRUE(is_valid_name("a" + std::string(63, '.')));
  EXPECT_FALSE(is_valid_name("-abc"));
  EXPECT_FALSE(is_valid_name(".abc"));
  EXPECT_FALSE(is_valid_name("vol-1\n"));
  EXPECT_FALSE(is_valid_name("vol 1"));
  EXPECT_FALSE(is_valid_name(std::string("vol\0x", 5)));
  EXPECT_FALSE(is_valid_name("vol-\xc3\xa9"));
  EXPECT_TRUE(is_valid_name("0C6E2B1C-6F0A-4EF5-8A8A-1C2D3E4F5A6B"));
  EXPECT_FALSE(is_valid_name("0c6e2b1c-6f0a-4ef5-8a8a-1c2d3e4f5a6g"));
  EXPECT_FALSE(is_valid_name("0c6e2b1c-6f0a-4ef5-8a8a1-c2d3e4f5a6b"));
  EXPECT_FALSE(is_valid_name("0c6e2b1c-6f0a-4ef5-8a8a-1c2d3e4f5a6"));
  EXPECT_TRUE(is_valid_iqn("iqn.1993-08.org.debian:01:abcdef"));
  EXPECT_TRUE(is_valid_iqn("eui.0123456789abcdef"));
  EXPECT_FALSE(is_valid_iqn("iqn.1993-08.org/debian:01:abcdef"));
  EXPECT_FALSE(is_valid_iqn("iqn.x"));
}

}  // namespace
}  // namespace datera::edf

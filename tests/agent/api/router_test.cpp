#include "agent/api/router.h"

#include <gtest/gtest.h>

#include "tests/testing/run_async.h"

namespace datera::api {
namespace {

using testing::run_async;

struct FakeStatus : StatusSource {
  nlohmann::json status() override { return {{"node", "n1"}}; }
  nlohmann::json volumes() override { return {{"volumes", nlohmann::json::array()}}; }
};

class RouterTest : public ::testing::Test {
 protected:
  http::Response send(std::string method, std::string target, std::string body = {}) {
    http::Request r;
    r.method = std::move(method);
    r.target = std::move(target);
    r.body = std::move(body);
    return run_async(router_.handle(std::move(r)));
  }
  prometheus::Registry registry_;
  flexvolume::Probe probe_{registry_};
  flexvolume::Service service_{
      flexvolume::ServiceOptions{"datera/iscsi", flex::Json{{"attach", false}},
                                 std::chrono::seconds(5)},
      probe_, null_logger()};
  FakeStatus status_;
  Router router_{service_, status_, null_logger()};
};

TEST_F(RouterTest, FlexVolumeCallReturnsReplyObject) {
  auto r = send("POST", "/v1/flexvolume", R"({"command":"init","args":[]})");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.route, "flexvolume");
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["status"], "Success");
  EXPECT_EQ(j["capabilities"]["attach"], false);
}

TEST_F(RouterTest, FailureRepliesAreStill200) {
  auto r = send("POST", "/v1/flexvolume", R"({"command":"unmount","args":["/p"]})");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(nlohmann::json::parse(r.body)["status"], "Failure");
}

TEST_F(RouterTest, BadBodiesAre400WithFlexShapedError) {
  for (const char* body : {"{", "[]", R"({"command":"mount","args":[]})", R"({"command":7})"}) {
    auto r = send("POST", "/v1/flexvolume", body);
    EXPECT_EQ(r.status, 400u) << body;
    auto j = nlohmann::json::parse(r.body);
    EXPECT_EQ(j["status"], "Failure");
    EXPECT_FALSE(j["message"].get<std::string>().empty());
  }
}

TEST_F(RouterTest, UnknownCommandIsNotSupported) {
  auto r = send("POST", "/v1/flexvolume", R"({"command":"snapshot"})");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(nlohmann::json::parse(r.body)["status"], "Not supported");
}

TEST_F(RouterTest, StatusVolumesMethodsAndUnknownRoutes) {
  EXPECT_EQ(nlohmann::json::parse(send("GET", "/v1/status").body)["node"], "n1");
  EXPECT_TRUE(nlohmann::json::parse(send("GET", "/v1/volumes?x=1").body)["volumes"].is_array());
  EXPECT_EQ(send("GET", "/v1/flexvolume").status, 405u);
  EXPECT_EQ(send("POST", "/v1/status").status, 405u);
  EXPECT_EQ(send("GET", "/v2/nothing").status, 404u);
}

TEST(UidAdmission, AllowsListedUidsOnly) {
  auto admit = uid_admission({0, 1000}, null_logger());
  EXPECT_FALSE(admit(http::PeerCred{1, 0, 0}).has_value());
  EXPECT_FALSE(admit(http::PeerCred{1, 1000, 0}).has_value());
  auto refused = admit(http::PeerCred{1, 65534, 0});
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->status, 403u);
  EXPECT_EQ(refused->route, "peer_uid");
  EXPECT_NE(refused->body.find("65534"), std::string::npos);
  EXPECT_TRUE(admit(std::nullopt).has_value());
}

}  // namespace
}  // namespace datera::api

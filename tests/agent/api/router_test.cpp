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

/// Answers release like the volume manager would, and records what it was asked.
struct FakeMaintenance : Maintenance {
  std::vector<std::pair<std::string, bool>> asked;
  std::string result = "released";
  boost::asio::awaitable<nlohmann::json> release(std::string volume, bool force) override {
    asked.emplace_back(volume, force);
    co_return nlohmann::json{{"volume", volume}, {"result", result}, {"message", "m"}};
  }
  boost::asio::awaitable<nlohmann::json> drain(bool force) override {
    asked.emplace_back("*", force);
    co_return nlohmann::json::array({{{"volume", "a"}, {"result", "failed"}}});
  }
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
  flexvolume::Metrics metrics_{registry_};
  flexvolume::Service service_{
      flexvolume::ServiceOptions{"datera/iscsi", flex::Json{{"attach", false}},
                                 std::chrono::seconds(5)},
      metrics_, null_logger()};
  FakeStatus status_;
  FakeMaintenance maintenance_;
  Router router_{service_, status_, maintenance_, null_logger()};
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

// A target is echoed in the 404 message: bytes that are not UTF-8 made the JSON dump throw (a 500
// from the transport). Such a target is the client's mistake, and every reply still serialises.
TEST_F(RouterTest, NonUtf8OrControlBytesInTheTargetAre400) {
  for (const std::string& target :
       {std::string("/v1/\xff\xfe"), std::string("/v1/status\xc3"), std::string("/v1/a\x01z"),
        std::string("/v1/volumes/\xe9t\xe9/release")}) {
    http::Response r;
    ASSERT_NO_THROW(r = send("POST", target)) << target;
    EXPECT_EQ(r.status, 400u) << target;
    const auto j = nlohmann::json::parse(r.body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r.body;
    EXPECT_EQ(j["status"], "Failure");
    EXPECT_EQ(j["error"], "bad_target");
  }
}

// A status or maintenance reply holding invalid UTF-8 (e.g. a name read from the system) is sent
// with U+FFFD in its place rather than failing the call.
TEST_F(RouterTest, RepliesWithInvalidUtf8StillSerialise) {
  maintenance_.result = "released";
  struct BadStatus : StatusSource {
    nlohmann::json status() override { return {{"node", "n\xff"}}; }
    nlohmann::json volumes() override { return nlohmann::json::object(); }
  } bad;
  Router router{service_, bad, maintenance_, null_logger()};
  http::Request req;
  req.method = "GET";
  req.target = "/v1/status";
  http::Response r;
  ASSERT_NO_THROW(r = run_async(router.handle(std::move(req))));
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(nlohmann::json::parse(r.body)["node"], "n\xef\xbf\xbd");
}

TEST_F(RouterTest, ReleaseMapsEachOutcomeToItsStatusAndReadsForce) {
  auto r = send("POST", "/v1/volumes/pvc-1.a_b/release");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.route, "release");
  EXPECT_EQ(nlohmann::json::parse(r.body)["volume"], "pvc-1.a_b");
  maintenance_.result = "in_use";
  EXPECT_EQ(send("POST", "/v1/volumes/v/release", R"({"force":true})").status, 409u);
  maintenance_.result = "staged";
  EXPECT_EQ(send("POST", "/v1/volumes/v/release", "{}").status, 409u);
  maintenance_.result = "failed";
  EXPECT_EQ(send("POST", "/v1/volumes/v/release").status, 500u);
  maintenance_.result = "not_here";
  EXPECT_EQ(send("POST", "/v1/volumes/v/release").status, 200u);
  const std::vector<std::pair<std::string, bool>> want = {
      {"pvc-1.a_b", false}, {"v", true}, {"v", false}, {"v", false}, {"v", false}};
  EXPECT_EQ(maintenance_.asked, want);
}

TEST_F(RouterTest, ReleaseRefusesBadNamesBodiesAndMethodsWithoutAsking) {
  EXPECT_EQ(send("POST", "/v1/volumes/a%2Fb/release").status, 400u);
  EXPECT_EQ(send("POST", "/v1/volumes/../etc/release").status, 400u);
  EXPECT_EQ(send("POST", "/v1/volumes/" + std::string(65, 'a') + "/release").status, 400u);
  EXPECT_EQ(send("POST", "/v1/volumes//release").status, 404u);
  EXPECT_EQ(send("POST", "/v1/volumes/v/release", R"({"force":"yes"})").status, 400u);
  EXPECT_EQ(send("POST", "/v1/volumes/v/release", "[1]").status, 400u);
  EXPECT_EQ(send("GET", "/v1/volumes/v/release").status, 405u);
  EXPECT_EQ(send("GET", "/v1/drain").status, 405u);
  EXPECT_TRUE(maintenance_.asked.empty());
}

TEST_F(RouterTest, DrainAnswersEveryVolumesResultWith200) {
  auto r = send("POST", "/v1/drain", R"({"force":false})");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.route, "drain");
  const auto j = nlohmann::json::parse(r.body);
  ASSERT_EQ(j["volumes"].size(), 1u);
  EXPECT_EQ(j["volumes"][0]["result"], "failed");
  ASSERT_EQ(maintenance_.asked.size(), 1u);
  EXPECT_EQ(maintenance_.asked[0].first, "*");
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

// The client's protocol behaviour against a scripted transport: login and re-login, retries with
// backoff, lost replies, fallbacks, pagination, and that credentials never leak.

#include "plugins/edf/client.h"

#include <cctype>
#include <deque>
#include <functional>
#include <sstream>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include "tests/testing/run_async.h"
#include "tests/testing/scripted_transport.h"

namespace datera::edf {
namespace {

using namespace std::chrono_literals;
using testing::run_async;
using testing::ScriptedTransport;

HttpResponse json(unsigned status, const Json& body) {
  return {status, body.dump()};
}
HttpResponse envelope(const Json& data) {
  return json(200, Json{{"tenant", "/root"}, {"version", "v2.2"}, {"data", data}});
}
HttpResponse edf_error(unsigned status, const std::string& name, const std::string& msg) {
  return json(status, Json{{"name", name}, {"http", status}, {"message", msg}});
}
Error transport_error(TransportErrc c) {
  return Error{"scripted failure", c};
}

Json ai_json(const std::string& name, const std::string& op_state = "available") {
  return Json{{"id", "0c6e2b1c-6f0a-4ef5-8a8a-1c2d3e4f5a6b"},
              {"name", name},
              {"admin_state", "online"},
              {"path", "/app_instances/" + name},
              {"storage_instances",
               {{{"name", "storage-1"},
                 {"op_state", op_state},
                 {"access",
                  {{"iqn", "iqn.2013-05.com.daterainc:tc:01:sn:9b8e220259a8a79f"},
                   {"ips", {"172.28.41.43", "172.29.41.56"}}}},
                 {"acl_policy",
                  {{"initiators", {{{"path", "/initiators/iqn.1993-08.org.debian:01:aaa"}}}}}},
                 {"volumes",
                  {{{"name", "volume-1"},
                    {"size", 16},
                    {"replica_count", 3},
                    {"uuid", "6c26e5a1-0b39-4a4c-9dc1-2a1f3b0c9d8e"}}}}}}}};
}

/// Routes the always-present discovery and login, then defers to `rest`.
std::function<Result<HttpResponse>(const HttpRequest&)> edf(
    std::function<Result<HttpResponse>(const HttpRequest&)> rest) {
  return [rest = std::move(rest)](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.target == "/api_versions")
      return json(200, Json{{"api_versions", {"v2", "v2.1", "v2.2"}}});
    if (r.target == "/v2.2/login") return json(200, Json{{"key", "k-1"}, {"version", "v2.2"}});
    return rest(r);
  };
}

class ClientTest : public ::testing::Test {
 protected:
  ClientTest() {
    sink_ = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text_);
    logger_ = std::make_shared<spdlog::logger>("edf", sink_);
    logger_->set_level(spdlog::level::trace);
  }
  Client& client() {
    if (!client_) {
      ClientOptions o;
      o.server = "edf.test:7717";
      o.credentials = {"admin", "s3cret-Pa55"};
      o.retry = RetryPolicy{6, 1ms, 4ms};
      o.seed = 42;
      client_ = std::make_unique<Client>(ioc_.get_executor(), transport_, o, metrics_, logger_);
    }
    return *client_;
  }
  template <typename T>
  T run(boost::asio::awaitable<T> task) {
    return run_async(ioc_, std::move(task));
  }
  double metric(const std::string& name, const std::string& label = "",
                const std::string& value = "") {
    for (const auto& f : registry_.Collect()) {
      if (f.name != name) continue;
      for (const auto& m : f.metric) {
        bool match = label.empty();
        for (const auto& l : m.label) match |= l.name == label && l.value == value;
        if (match) return m.counter.value;
      }
    }
    return 0;
  }

  boost::asio::io_context ioc_;
  ScriptedTransport transport_;
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  std::ostringstream log_text_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
  LoggerPtr logger_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, DiscoversVersionLogsInLazilyAndSendsHeaders) {
  transport_.handler = edf([](const HttpRequest&) { return envelope(ai_json("vol-1")); });
  auto ai = run(client().get_app_instance("vol-1"));
  ASSERT_TRUE(ai.ok()) << ai.error().message;
  EXPECT_EQ(ai->iqn, "iqn.2013-05.com.daterainc:tc:01:sn:9b8e220259a8a79f");
  EXPECT_EQ(ai->ips.size(), 2u);
  EXPECT_EQ(ai->volume_uuid, "6c26e5a1-0b39-4a4c-9dc1-2a1f3b0c9d8e");
  EXPECT_EQ(transport_.lines(), (std::vector<std::string>{"GET /api_versions", "PUT /v2.2/login",
                                                          "GET /v2.2/app_instances/vol-1"}));
  const auto login = Json::parse(transport_.log[1].body);
  EXPECT_EQ(login["name"], "admin");
  const auto& h = transport_.log[2].headers;
  auto header = [&](const std::string& k) {
    for (const auto& [n, v] : h) {
      if (n == k) return v;
    }
    return std::string();
  };
  EXPECT_EQ(header("Auth-Token"), "k-1");
  EXPECT_EQ(header("tenant"), "/root");
  // A second call reuses version and key.
  ASSERT_TRUE(run(client().get_app_instance("vol-1")).ok());
  EXPECT_EQ(transport_.log.size(), 4u);
}

TEST_F(ClientTest, VersionFallbacks) {
  transport_.handler = [](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.target == "/api_versions") return json(200, Json{{"api_versions", {"v2", "v2.1"}}});
    if (r.target == "/v2.1/login") return json(200, Json{{"key", "k"}});
    return envelope(ai_json("vol-1"));
  };
  EXPECT_EQ(*run(client().version()), "v2.1");
  client_.reset();
  transport_.handler = [](const HttpRequest&) -> Result<HttpResponse> {
    return json(404, Json::object());
  };
  EXPECT_EQ(*run(client().version()), "v2.2");
  client_.reset();
  transport_.handler = [](const HttpRequest&) -> Result<HttpResponse> {
    return json(200, Json{{"api_versions", {"v2"}}});
  };
  auto v = run(client().version());
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code, Errc::unsupported);
}

TEST_F(ClientTest, ExpiredKeyMeansOneReloginAndRetry) {
  int gets = 0;
  transport_.handler = edf([&](const HttpRequest&) -> Result<HttpResponse> {
    if (++gets == 1)
      return edf_error(401, "AuthFailedError",
                       "The key provided with the request does not "
                       "correspond to a valid session.");
    return envelope(ai_json("vol-1"));
  });
  ASSERT_TRUE(run(client().get_app_instance("vol-1")).ok());
  EXPECT_EQ(transport_.lines(),
            (std::vector<std::string>{"GET /api_versions", "PUT /v2.2/login",
                                      "GET /v2.2/app_instances/vol-1", "PUT /v2.2/login",
                                      "GET /v2.2/app_instances/vol-1"}));
  EXPECT_EQ(metric("datera_agent_backend_relogins_total"), 1);
}

TEST_F(ClientTest, PersistentAuthFailureIsReportedOnceWithoutLooping) {
  transport_.handler =
      edf([](const HttpRequest&) { return edf_error(401, "AuthFailedError", "nope"); });
  auto r = run(client().get_app_instance("vol-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, http_status(401));
  EXPECT_LE(transport_.log.size(), 6u);
}

TEST_F(ClientTest, RefusedLoginNamesUserButNeverThePassword) {
  transport_.handler = [](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.target == "/api_versions") return json(200, Json{{"api_versions", {"v2.2"}}});
    return edf_error(401, "AuthFailedError", "Invalid credentials");
  };
  auto r = run(client().get_app_instance("vol-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("user 'admin'"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("AuthFailedError (HTTP 401)"), std::string::npos);
  EXPECT_EQ(r.error().message.find("s3cret-Pa55"), std::string::npos);
  EXPECT_EQ(log_text_.str().find("s3cret-Pa55"), std::string::npos);
}

TEST_F(ClientTest, UnavailableIsRetriedWithBackoffThenSucceeds) {
  int calls = 0;
  transport_.handler = edf([&](const HttpRequest&) -> Result<HttpResponse> {
    if (++calls <= 2) return json(503, Json{{"message", "overloaded"}});
    if (calls == 3) return transport_error(TransportErrc::connect);
    return envelope(ai_json("vol-1"));
  });
  ASSERT_TRUE(run(client().get_app_instance("vol-1")).ok());
  EXPECT_EQ(metric("datera_agent_backend_retries_total", "reason", "unavailable"), 2);
  EXPECT_EQ(metric("datera_agent_backend_retries_total", "reason", "connect"), 1);
}

TEST_F(ClientTest, RetriesAreBoundedAndTheErrorSaysWhat) {
  transport_.handler = edf([](const HttpRequest&) {
    return json(503, Json{{"message", "overloaded"}});
  });
  auto r = run(client().get_app_instance("vol-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, http_status(503));
  EXPECT_EQ(transport_.log.size(), 2u + 6u);
  const auto& m = r.error().message;
  EXPECT_NE(m.find("getting app instance for volume vol-1 failed"), std::string::npos) << m;
  EXPECT_NE(m.find("HTTP 503"), std::string::npos) << m;
  EXPECT_NE(m.find("overloaded"), std::string::npos) << m;
}

TEST_F(ClientTest, TimedOutGetIsRepeated) {
  int calls = 0;
  transport_.handler = edf([&](const HttpRequest&) -> Result<HttpResponse> {
    if (++calls == 1) return transport_error(TransportErrc::timeout);
    return envelope(ai_json("vol-1"));
  });
  ASSERT_TRUE(run(client().get_app_instance("vol-1")).ok());
  EXPECT_EQ(metric("datera_agent_backend_retries_total", "reason", "timeout"), 1);
}

TEST_F(ClientTest, CreateWhoseReplyWasLostIsResolvedBy409ThenGet) {
  int posts = 0;
  transport_.handler = edf([&](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.method == "POST") {
      // The first POST takes effect on the array but its reply never arrives.
      if (++posts == 1) return transport_error(TransportErrc::timeout);
      return edf_error(409, "ConflictError", "app instance vol-9 already exists");
    }
    return envelope(ai_json("vol-9"));
  });
  VolumeSpec spec;
  spec.name = "vol-9";
  auto ai = run(client().create_app_instance(spec));
  ASSERT_TRUE(ai.ok()) << ai.error().message;
  EXPECT_EQ(ai->name, "vol-9");
  EXPECT_EQ(
      transport_.lines(),
      (std::vector<std::string>{"GET /api_versions", "PUT /v2.2/login", "POST /v2.2/app_instances",
                                "POST /v2.2/app_instances", "GET /v2.2/app_instances/vol-9"}));
  EXPECT_EQ(metric("datera_agent_backend_retries_total", "reason", "lost_reply"), 1);
}

TEST_F(ClientTest, CreateBodyFollowsTheApi) {
  Json sent;
  transport_.handler = edf([&](const HttpRequest& r) {
    sent = Json::parse(r.body);
    return envelope(ai_json("vol-2"));
  });
  VolumeSpec spec;
  spec.name = "vol-2";
  spec.size_gib = 20;
  spec.replica_count = 2;
  spec.max_iops = 500;
  ASSERT_TRUE(run(client().create_app_instance(spec)).ok());
  EXPECT_EQ(sent["name"], "vol-2");
  EXPECT_EQ(sent["access_control_mode"], "deny_all");
  const auto& vol = sent["storage_instances"][0]["volumes"][0];
  EXPECT_EQ(sent["storage_instances"][0]["name"], "storage-1");
  EXPECT_EQ(sent["storage_instances"][0]["ip_pool"]["path"], "/access_network_ip_pools/default");
  EXPECT_EQ(vol["name"], "volume-1");
  EXPECT_EQ(vol["size"], 20);
  EXPECT_EQ(vol["replica_count"], 2);
  EXPECT_EQ(vol["performance_policy"]["total_iops_max"], 500);
  spec.template_name = "basic";
  ASSERT_TRUE(run(client().create_app_instance(spec)).ok());
  EXPECT_EQ(sent["app_template"]["path"], "/app_templates/basic");
  EXPECT_EQ(
      sent["template_override"]["storage_instances"]["storage-1"]["volumes"]["volume-1"]["size"],
      "20");
}

TEST_F(ClientTest, EnsureCreatesWhenMissingAndToleratesARace) {
  int gets = 0;
  transport_.handler = edf([&](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.method == "GET" && ++gets == 1)
      return edf_error(404, "NotFoundError", "no such app instance");
    if (r.method == "POST") return edf_error(409, "ConflictError", "exists");  // another node won
    return envelope(ai_json("vol-3"));
  });
  VolumeSpec spec;
  spec.name = "vol-3";
  auto ai = run(client().ensure_app_instance(spec));
  ASSERT_TRUE(ai.ok()) << ai.error().message;
  EXPECT_EQ(gets, 2);
}

TEST_F(ClientTest, InvalidInputIsRefusedBeforeAnyRequest) {
  transport_.handler = edf([](const HttpRequest&) { return envelope(Json::object()); });
  EXPECT_EQ(run(client().get_app_instance("../etc")).error().code, Errc::invalid_arg);
  VolumeSpec spec;
  spec.name = "ok-name";
  spec.size_gib = 0;
  EXPECT_EQ(run(client().create_app_instance(spec)).error().code, Errc::invalid_arg);
  spec.size_gib = 1;
  spec.placement_mode = "tape";
  EXPECT_EQ(run(client().create_app_instance(spec)).error().code, Errc::invalid_arg);
  EXPECT_EQ(run(client().acl_add("vol-1", "not-an-iqn")).error().code, Errc::invalid_arg);
  EXPECT_EQ(run(client().resize("vol-1", 40000)).error().code, Errc::invalid_arg);
  Metadata big{{"k", std::string(3000, 'x')}};
  EXPECT_EQ(run(client().put_metadata("vol-1", big)).error().code, Errc::invalid_arg);
  EXPECT_TRUE(transport_.log.empty());
}

TEST_F(ClientTest, DeleteOfflinesFirstAndTreatsMissingAsDone) {
  transport_.handler = edf([](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.method == "DELETE") return json(200, Json::object());
    return envelope(ai_json("vol-4"));
  });
  ASSERT_TRUE(run(client().delete_app_instance("vol-4")).ok());
  EXPECT_EQ(Json::parse(transport_.log[2].body),
            (Json{{"admin_state", "offline"}, {"force", true}}));
  EXPECT_EQ(transport_.lines().back(), "DELETE /v2.2/app_instances/vol-4");
  transport_.log.clear();
  transport_.handler =
      edf([](const HttpRequest&) { return edf_error(404, "NotFoundError", "gone"); });
  ASSERT_TRUE(run(client().delete_app_instance("vol-4")).ok());
  EXPECT_EQ(transport_.lines(), (std::vector<std::string>{"PUT /v2.2/app_instances/vol-4"}));
}

TEST_F(ClientTest, AclUsesTheAtomicOpEndpoint) {
  transport_.handler = edf([](const HttpRequest&) { return envelope(Json::object()); });
  ASSERT_TRUE(run(client().acl_add("vol-5", "iqn.1993-08.org.debian:01:node-b")).ok());
  EXPECT_EQ(transport_.lines().back(),
            "PUT /v2.2/app_instances/vol-5/storage_instances/storage-1/acl_policy/initiators");
  EXPECT_EQ(Json::parse(transport_.log.back().body),
            (Json{{"op", "add"}, {"path", "/initiators/iqn.1993-08.org.debian:01:node-b"}}));
}

TEST_F(ClientTest, AclFallsBackToReadModifyWriteKeepingOnlyPaths) {
  Json written;
  transport_.handler = edf([&](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.target.ends_with("/acl_policy/initiators"))
      return edf_error(405, "InvalidRequestError", "no op");
    if (r.method == "GET") {
      return envelope(
          Json{{"initiators",
                {{{"path", "/initiators/iqn.1993-08.org.debian:01:node-a"}, {"tenant", "/root"}}}},
               {"initiator_groups", Json::array()}});
    }
    written = Json::parse(r.body);
    return envelope(written);
  });
  ASSERT_TRUE(run(client().acl_add("vol-6", "iqn.1993-08.org.debian:01:node-b")).ok());
  EXPECT_EQ(written["initiators"],
            (Json{{{"path", "/initiators/iqn.1993-08.org.debian:01:node-a"}},
                  {{"path", "/initiators/iqn.1993-08.org.debian:01:node-b"}}}));
  // Removing an initiator that is not there writes nothing.
  transport_.log.clear();
  ASSERT_TRUE(run(client().acl_remove("vol-6", "iqn.1993-08.org.debian:01:node-z")).ok());
  EXPECT_EQ(transport_.log.back().method, "GET");
}

TEST_F(ClientTest, RepliesOfAnUnexpectedShapeAreErrorsOrSkippedNeverExceptions) {
  // nlohmann's value() throws on a non-object or a mistyped field; a hostile or broken array must
  // not turn a lease renewal or an ACL change into an exception that ends its loop.
  for (const Json& acl : {Json::array({1, 2}), Json{{"initiators", "x"}},
                          Json{{"initiators", {1, {{"path", 5}}, "/initiators/iqn.x:a"}},
                               {"initiator_groups", {{{"path", Json::array()}}, 7}}}}) {
    SCOPED_TRACE(acl.dump());
    transport_.handler = edf([&](const HttpRequest& r) -> Result<HttpResponse> {
      if (r.target.ends_with("/acl_policy/initiators")) return edf_error(405, "E", "no op");
      return envelope(acl);
    });
    auto got = run(client().get_acl("vol-7"));
    ASSERT_TRUE(got.ok()) << got.error().message;
    auto added = run(client().acl_add("vol-7", "iqn.1993-08.org.debian:01:node-b"));
    EXPECT_TRUE(added.ok()) << added.error().message;
  }
  transport_.handler = edf([](const HttpRequest&) -> Result<HttpResponse> {
    return envelope(Json::array({Json{{"id", 5}, {"name", Json::array()}}, "x",
                                 Json{{"id", "iqn.1993-08.org.debian:01:a"}, {"name", "a"}}}));
  });
  auto inits = run(client().list_initiators());
  ASSERT_TRUE(inits.ok()) << inits.error().message;
  EXPECT_EQ(inits->size(), 1u);
  transport_.handler = edf([](const HttpRequest&) -> Result<HttpResponse> {
    return json(200, Json{{"data", Json::array({ai_json("vol-1")})},
                          {"metadata", {{"total_count", "many"}, {"total", Json::object()}}}});
  });
  auto all = run(client().list_app_instances());
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_EQ(all->size(), 1u);
}

TEST_F(ClientTest, InitiatorRegistrationToleratesConflict) {
  transport_.handler = edf([](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.method == "GET") return edf_error(404, "NotFoundError", "no initiator");
    return edf_error(409, "ConflictError", "exists");
  });
  ASSERT_TRUE(run(client().ensure_initiator("iqn.1993-08.org.debian:01:node-a", "node-a")).ok());
  const auto body = Json::parse(transport_.log.back().body);
  EXPECT_EQ(body["id"], "iqn.1993-08.org.debian:01:node-a");
  EXPECT_EQ(body["force"], true);
}

TEST_F(ClientTest, ListFollowsPagination) {
  transport_.handler = edf([](const HttpRequest& r) -> Result<HttpResponse> {
    const auto off = std::stoi(r.target.substr(r.target.find("offset=") + 7));
    Json data = Json::array();
    for (int i = off; i < std::min(off + 100, 250); ++i)
      data.push_back(ai_json("vol-" + std::to_string(i)));
    return json(200, Json{{"data", data},
                          {"metadata", {{"total_count", 250}, {"limit", 100}, {"offset", off}}}});
  });
  auto all = run(client().list_app_instances());
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_EQ(all->size(), 250u);
  EXPECT_EQ(all->back().name, "vol-249");
  EXPECT_EQ(transport_.log.size(), 2u + 3u);
}

TEST_F(ClientTest, WaitAvailablePollsBoundedly) {
  int gets = 0;
  transport_.handler = edf([&](const HttpRequest&) {
    return envelope(ai_json("vol-7", ++gets < 3 ? "unavailable" : "available"));
  });
  ASSERT_TRUE(run(client().wait_available("vol-7", 2s, 1ms)).ok());
  EXPECT_EQ(gets, 3);
  transport_.handler =
      edf([](const HttpRequest&) { return envelope(ai_json("vol-7", "unavailable")); });
  auto r = run(client().wait_available("vol-7", 20ms, 5ms));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::not_ready);
  EXPECT_NE(r.error().message.find("still 'unavailable'"), std::string::npos);
}

TEST_F(ClientTest, MetadataRoundTrip) {
  Json written;
  transport_.handler = edf([&](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.method == "PUT") written = Json::parse(r.body);
    return envelope(Json{{"owner", "node-a"}, {"epoch", "3"}});
  });
  ASSERT_TRUE(
      run(client().put_metadata("vol-8", Metadata{{"owner", "node-a"}, {"stale", ""}})).ok());
  EXPECT_EQ(written, (Json{{"owner", "node-a"}, {"stale", ""}}));
  auto md = run(client().get_metadata("vol-8"));
  ASSERT_TRUE(md.ok());
  EXPECT_EQ(md->at("epoch"), "3");
}

// Issue 14 item 1: whatever a server answers, a FlexVolume message carries at most a short,
// clean excerpt of an EDF error's message, and nothing of any other body.
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80           ? 1
                     : (c >> 5) == 0x6  ? 2
                     : (c >> 4) == 0xe  ? 3
                     : (c >> 3) == 0x1e ? 4
                                        : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

TEST(SafeExcerpt, ShortCleanAndNeverCutMidCharacter) {
  std::string euro;
  for (int i = 0; i < 150; ++i) euro += "\xe2\x82\xac";  // 450 bytes of a 3-byte character
  for (size_t shift = 0; shift < 3; ++shift) {
    const auto e = safe_excerpt(std::string(shift, 'x') + euro);
    EXPECT_LE(e.size(), 200u);
    EXPECT_GT(e.size(), 150u);
    EXPECT_TRUE(valid_utf8(e)) << shift;
  }
  const auto c = safe_excerpt(
      "line1\nline2\r\x1b[31mred\x7f\t\xc2\x85"
      "end");
  for (const char ch : c) {
    EXPECT_FALSE(std::iscntrl(static_cast<unsigned char>(ch))) << c;
  }
  EXPECT_EQ(c.find("\xc2\x85"), std::string::npos) << "a C1 control is a control character";
  EXPECT_NE(c.find("line1"), std::string::npos);
  EXPECT_NE(c.find("end"), std::string::npos);
  EXPECT_TRUE(valid_utf8(safe_excerpt("bad \xff\xfe bytes \xe2\x82")));
  EXPECT_EQ(safe_excerpt("short"), "short");
}

TEST_F(ClientTest, AnEdfErrorMessageIsEchoedOnlyAsAShortCleanExcerpt) {
  std::string long_message = "volume is busy\x1b[2J\r\n";
  for (int i = 0; i < 100; ++i) long_message += "\xc3\xa9t\xc3\xa9 ";
  transport_.handler = edf([&](const HttpRequest&) -> Result<HttpResponse> {
    return edf_error(409, "ConflictError", long_message);
  });
  auto r = run(client().get_app_instance("vol-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, http_status(409));
  const auto& m = r.error().message;
  EXPECT_NE(m.find("ConflictError (HTTP 409)"), std::string::npos) << m;
  EXPECT_NE(m.find("volume is busy"), std::string::npos) << m;
  EXPECT_LT(m.size(), 200u + 120u) << m;
  EXPECT_TRUE(valid_utf8(m)) << m;
  for (const char ch : m) EXPECT_FALSE(std::iscntrl(static_cast<unsigned char>(ch))) << m;
}

TEST_F(ClientTest, AnyOtherBodyIsNeverEchoedOnlyItsStatus) {
  const std::string page =
      "<html><body>internal admin console: token=abc123 db=10.9.8.7</body></html>";
  transport_.handler = [&](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.target == "/api_versions") return json(200, Json{{"api_versions", {"v2.2"}}});
    if (r.target == "/v2.2/login") return json(200, Json{{"key", "k-1"}});
    if (r.target == "/v2.2/system") return HttpResponse{200, page};
    return HttpResponse{502, page};
  };
  auto r = run(client().get_app_instance("vol-1"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("HTTP 502"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find("token=abc123"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find("<html"), std::string::npos) << r.error().message;
  // A success that is not JSON: said so, without the body.
  auto s = run(client().system());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message.find("token=abc123"), std::string::npos) << s.error().message;
  // A JSON body that is not an EDF error is not echoed either.
  transport_.handler = edf([](const HttpRequest&) -> Result<HttpResponse> {
    return json(500, Json{{"debug", "stack trace at /srv/app.py"}});
  });
  auto j = run(client().get_app_instance("vol-1"));
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.error().message.find("stack trace"), std::string::npos) << j.error().message;
}

TEST(ProbeTest, RequestsAreCountedPerMethodEndpointAndStatus) {
  prometheus::Registry registry;
  Metrics probe(registry);
  probe.request("GET", "/app_instances/:id/metadata", "200", std::chrono::milliseconds(2));
  probe.request("GET", "/app_instances/:id/metadata", "200", std::chrono::milliseconds(3));
  probe.request("GET", "/app_instances/:id/metadata", "503", std::chrono::milliseconds(4));
  probe.request("PUT", "/app_instances/:id/metadata", "200", std::chrono::milliseconds(5));
  std::map<std::string, double> counts;
  std::map<std::string, uint64_t> observed;
  for (const auto& f : registry.Collect()) {
    for (const auto& m : f.metric) {
      std::string key;
      for (const auto& l : m.label) key += l.value + " ";
      if (f.name == "datera_agent_backend_requests_total") counts[key] = m.counter.value;
      if (f.name == "datera_agent_backend_request_duration_seconds") {
        observed[key] = m.histogram.sample_count;
      }
    }
  }
  EXPECT_EQ(counts, (std::map<std::string, double>{{"/app_instances/:id/metadata GET 200 ", 2},
                                                   {"/app_instances/:id/metadata GET 503 ", 1},
                                                   {"/app_instances/:id/metadata PUT 200 ", 1}}));
  EXPECT_EQ(observed, (std::map<std::string, uint64_t>{{"/app_instances/:id/metadata GET ", 3},
                                                       {"/app_instances/:id/metadata PUT ", 1}}));
}

TEST(EndpointClass, IdsBecomePlaceholders) {
  EXPECT_EQ(
      endpoint_class("/v2.2/app_instances/vol-1/storage_instances/storage-1/acl_policy/initiators"),
      "/app_instances/:id/storage_instances/:id/acl_policy/initiators");
  EXPECT_EQ(endpoint_class("/v2.1/app_instances?limit=100&offset=0"), "/app_instances");
  EXPECT_EQ(endpoint_class("/api_versions"), "/api_versions");
  EXPECT_EQ(endpoint_class("/v2.2/initiators/iqn.1993-08.org.debian:01:a"), "/initiators/:id");
  EXPECT_EQ(endpoint_class("//v2.2//app_instances//x/"), "/app_instances/:id");
  EXPECT_EQ(endpoint_class("/app_instances/x/snapshots/1.2/y"),
            "/app_instances/:id/snapshots/:id/y");
  EXPECT_EQ(endpoint_class(""), "/");
  EXPECT_EQ(endpoint_class("?x=1"), "/");
}

}  // namespace
}  // namespace datera::edf

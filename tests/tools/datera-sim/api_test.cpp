// The EDF protocol layer: envelopes, sessions, errors, routes, pagination, ACL/metadata endpoints,
// control endpoints and faults. Most tests call the handler directly with a fake clock; the
// lost-reply and drop faults go through the real agent/http Server with a raw socket client.

#include "tools/datera-sim/api.h"

#include <arpa/inet.h>
#include <chrono>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <prometheus/registry.h>

#include "agent/http/server.h"
#include "tests/testing/run_async.h"
#include "tests/tools/datera-sim/fake_clock.h"

namespace datera::sim {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

const char* kExpiredMessage =
    "The key provided with the request does not correspond to a valid session.";

json ai_body(const std::string& name) {
  return {{"name", name},
          {"access_control_mode", "deny_all"},
          {"storage_instances",
           {{{"name", "storage-1"},
             {"volumes", {{{"name", "volume-1"}, {"size", 16}, {"replica_count", 3}}}}}}}};
}

class ApiTest : public ::testing::Test {
 protected:
  static ModelOptions model_options() {
    ModelOptions o;
    o.seed = 3;
    o.op_state_delay = 2s;
    return o;
  }
  void SetUp() override { key_ = login(); }

  std::string login() {
    auto r = call("PUT", "/v2.2/login", R"({"name":"admin","password":"password"})", {}, false);
    EXPECT_EQ(r.status, 200u) << r.body;
    return json::parse(r.body).value("key", "");
  }

  http::Response call(const std::string& method, const std::string& target,
                      const std::string& body = "",
                      std::vector<std::pair<std::string, std::string>> headers = {},
                      bool auth = true) {
    http::Request r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.content_type = "application/json; charset=utf-8";
    r.headers = std::move(headers);
    if (auth) r.headers.emplace_back("Auth-Token", key_);
    return datera::testing::run_async(api_.handle(std::move(r)));
  }
  json call_json(const std::string& method, const std::string& target, const json& body = nullptr,
                 unsigned expect = 200) {
    auto r = call(method, target, body.is_null() ? "" : body.dump());
    EXPECT_EQ(r.status, expect) << method << " " << target << ": " << r.body;
    return json::parse(r.body);
  }

  testing::FakeClock clock_;
  Model model_{model_options(), clock_.clock()};
  Sessions sessions_{clock_.clock(), 15min, {{"admin", "password"}}, 7};
  Api api_{model_, sessions_, null_logger()};
  std::string key_;
};

TEST_F(ApiTest, ApiVersionsNeedsNoKey) {
  auto r = call("GET", "/api_versions", "", {}, false);
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(json::parse(r.body), json::parse(R"({"api_versions":["v2.1","v2.2"]})"));
}

TEST_F(ApiTest, LoginWithJsonAndFormBodies) {
  auto r = call("PUT", "/v2.1/login", R"({"name":"admin","password":"password"})", {}, false);
  ASSERT_EQ(r.status, 200u);
  auto body = json::parse(r.body);
  EXPECT_EQ(body["key"].get<std::string>().size(), 32u);
  EXPECT_EQ(body["version"], "v2.1");
  EXPECT_EQ(body["request_time"], 1'700'000'000);
  EXPECT_FALSE(body.contains("data"));  // top level, no envelope

  http::Request form;
  form.method = "PUT";
  form.target = "/v2.2/login";
  form.content_type = "application/x-www-form-urlencoded";
  form.body = "name=admin&password=password";
  auto fr = datera::testing::run_async(api_.handle(std::move(form)));
  ASSERT_EQ(fr.status, 200u) << fr.body;
  const std::string form_key = json::parse(fr.body)["key"];
  EXPECT_TRUE(sessions_.valid(form_key));

  auto bad = call("PUT", "/v2.2/login", R"({"name":"admin","password":"nope_nope"})", {}, false);
  EXPECT_EQ(bad.status, 401u);
  EXPECT_EQ(json::parse(bad.body)["name"], "AuthFailedError");
  EXPECT_EQ(call("PUT", "/v2.2/login", R"({"name":"admin"})", {}, false).status, 400u);
  EXPECT_EQ(call("GET", "/v2.2/login", "", {}, false).status, 405u);
}

TEST_F(ApiTest, MissingBadAndExpiredKeysAre401) {
  auto check_401 = [&](const http::Response& r) {
    ASSERT_EQ(r.status, 401u) << r.body;
    auto b = json::parse(r.body);
    EXPECT_EQ(b["name"], "AuthFailedError");
    EXPECT_EQ(b["http"], 401);
    EXPECT_EQ(b["message"], kExpiredMessage);
  };
  check_401(call("GET", "/v2.2/app_instances", "", {}, false));
  check_401(call("GET", "/v2.2/app_instances", "", {{"Auth-Token", "0123"}}, false));
  EXPECT_EQ(call("GET", "/v2.2/app_instances", "", {{"auth-token", key_}}, false).status, 200u);

  clock_.advance(15min);
  check_401(call("GET", "/v2.2/app_instances"));
  key_ = login();
  EXPECT_EQ(call("GET", "/v2.2/app_instances").status, 200u);
  auto expired = call("POST", "/_sim/expire_tokens", "", {}, false);
  EXPECT_EQ(expired.status, 200u);
  EXPECT_EQ(json::parse(expired.body)["expired"], 1);  // the SetUp key had already expired
  check_401(call("GET", "/v2.2/app_instances"));
  key_ = login();
  EXPECT_EQ(call("PUT", "/v2.2/logout", "{}").status, 200u);
  check_401(call("GET", "/v2.2/system"));
}

TEST_F(ApiTest, LoginsAreCountedAndAPasswordCanBeRotated) {
  // SetUp logged in once. A refused login is counted too, under the name it tried.
  EXPECT_EQ(
      call("PUT", "/v2.2/login", R"({"name":"admin","password":"wrong_pw"})", {}, false).status,
      401u);
  auto counts = json::parse(call("GET", "/_sim/logins", "", {}, false).body);
  EXPECT_EQ(counts["requests"], 2);
  EXPECT_EQ(counts["users"]["admin"]["accepted"], 1);
  EXPECT_EQ(counts["users"]["admin"]["refused"], 1);

  auto rotated =
      call("POST", "/_sim/password", R"({"name":"admin","password":"new_Pass1"})", {}, false);
  ASSERT_EQ(rotated.status, 200u) << rotated.body;
  EXPECT_EQ(rotated.body.find("new_Pass1"), std::string::npos) << "never echoed";
  // Every key is revoked, the old password is refused, the new one works.
  EXPECT_EQ(call("GET", "/v2.2/app_instances").status, 401u);
  EXPECT_EQ(
      call("PUT", "/v2.2/login", R"({"name":"admin","password":"password"})", {}, false).status,
      401u);
  EXPECT_EQ(
      call("PUT", "/v2.2/login", R"({"name":"admin","password":"new_Pass1"})", {}, false).status,
      200u);
  EXPECT_EQ(
      call("POST", "/_sim/password", R"({"name":"nobody","password":"x_y_z"})", {}, false).status,
      404u);
  EXPECT_EQ(call("POST", "/_sim/password", R"({"name":"admin"})", {}, false).status, 400u);
}

TEST_F(ApiTest, CreateAndGetByNameOrIdWithEnvelopes) {
  auto created = call_json("POST", "/v2.2/app_instances", ai_body("env-a"));
  EXPECT_EQ(created["tenant"], "/root");
  EXPECT_EQ(created["path"], "/app_instances");
  EXPECT_EQ(created["version"], "v2.2");
  EXPECT_TRUE(created["metadata"].is_object());
  const auto& ai = created["data"];
  const std::string id = ai["id"];
  EXPECT_EQ(ai["path"], "/app_instances/" + id);
  const auto& si = ai["storage_instances"][0];
  EXPECT_EQ(si["path"], "/app_instances/" + id + "/storage_instances/storage-1");
  EXPECT_EQ(si["acl_policy"]["path"], si["path"].get<std::string>() + "/acl_policy");
  EXPECT_EQ(si["access"]["ips"].size(), 2u);
  EXPECT_EQ(si["op_state"], "unavailable");  // the 2 s delay
  EXPECT_EQ(si["volumes"][0]["path"], si["path"].get<std::string>() + "/volumes/volume-1");
  EXPECT_EQ(si["volumes"][0]["size"], 16);
  EXPECT_EQ(si["auth"]["type"], "none");

  auto by_name = call_json("GET", "/v2.1/app_instances/env-a");
  EXPECT_EQ(by_name["version"], "v2.1");
  EXPECT_EQ(by_name["path"], "/app_instances/env-a");
  EXPECT_EQ(by_name["data"]["id"], id);
  EXPECT_EQ(call_json("GET", "/v2.2/app_instances/" + id)["data"]["name"], "env-a");
  auto vol =
      call_json("GET", "/v2.2/app_instances/env-a/storage_instances/storage-1/volumes/volume-1");
  EXPECT_EQ(vol["data"]["uuid"], si["volumes"][0]["uuid"]);
  auto access = call_json("GET", "/v2.2/app_instances/env-a/storage_instances/storage-1/access");
  EXPECT_EQ(access["data"]["iqn"], si["access"]["iqn"]);

  // GET bodies are ignored (GOSDK sends {} or {"params":...}).
  EXPECT_EQ(call("GET", "/v2.2/app_instances/env-a", R"({"params":{"x":1}})").status, 200u);

  clock_.advance(2s);
  auto ready = call_json("GET", "/v2.2/app_instances/env-a/storage_instances/storage-1");
  EXPECT_EQ(ready["data"]["op_state"], "available");
  EXPECT_EQ(ready["data"]["volumes"][0]["op_state"], "available");
}

TEST_F(ApiTest, ErrorsCarryTheEdfBody) {
  json bad = ai_body("err-a");
  bad["storage_instances"][0]["volumes"][0]["size"] = 0;
  auto r = call_json("POST", "/v2.2/app_instances", bad, 422);
  EXPECT_EQ(r["name"], "ValidationFailedError");
  EXPECT_EQ(r["http"], 422);
  EXPECT_EQ(r["code"], 0);
  EXPECT_EQ(r["version"], "v2.2");
  EXPECT_EQ(r["tenant"], "/root");
  EXPECT_EQ(r["path"], "/app_instances");
  EXPECT_EQ(r["op"], "POST");
  EXPECT_TRUE(r["message"].get<std::string>().find("1..32768") != std::string::npos);
  for (const char* k : {"ts", "params", "api_req_id", "errors"}) EXPECT_TRUE(r.contains(k)) << k;

  auto notjson = call("POST", "/v2.2/app_instances", "{oops");
  EXPECT_EQ(notjson.status, 400u);
  EXPECT_EQ(json::parse(notjson.body)["name"], "InvalidRequestError");
  call_json("POST", "/v2.2/app_instances", ai_body("err-a"));
  EXPECT_EQ(call_json("POST", "/v2.2/app_instances", ai_body("err-a"), 409)["name"],
            "ConflictError");
  EXPECT_EQ(call_json("GET", "/v2.2/app_instances/nope", nullptr, 404)["name"], "NotFoundError");
  EXPECT_EQ(call_json("GET", "/v2.2/no_such_thing", nullptr, 404)["name"], "NotFoundError");
  EXPECT_EQ(call_json("PATCH", "/v2.2/app_instances/err-a", json::object(), 405)["http"], 405);
  EXPECT_EQ(call_json("GET", "/v2/app_instances", nullptr, 400)["name"], "UnsupportedVersionError");
  EXPECT_EQ(call("GET", "/v2.2/app_instances", "", {{"tenant", "../etc"}}).status, 400u);
}

TEST_F(ApiTest, SnapshotsEndpointsAndClones) {
  call_json("POST", "/v2.2/app_instances", ai_body("snap-src"));
  const std::string vol =
      "/v2.2/app_instances/snap-src/storage_instances/storage-1/volumes/volume-1";
  const std::string uuid = "0f8b2c3e-1d4a-4b5c-9d6e-7f8091a2b3c4";
  auto created = call_json("POST", vol + "/snapshots", {{"uuid", uuid}})["data"];
  const std::string ts = created["utc_ts"];
  EXPECT_EQ(ts, "1700000000.000000000");
  EXPECT_EQ(created["timestamp"], ts);
  EXPECT_EQ(created["uuid"], uuid);
  EXPECT_EQ(created["op_state"], "unavailable") << "op_state_delay is 2 s";
  const std::string path = created["path"];
  EXPECT_EQ(path.substr(path.size() - ts.size() - 11), "/snapshots/" + ts);

  // A second create with the same uuid: 400 InvalidRequestError with EDF code 15.
  auto dup = call_json("POST", vol + "/snapshots", {{"uuid", uuid}}, 400);
  EXPECT_EQ(dup["name"], "InvalidRequestError");
  EXPECT_EQ(dup["code"], 15);
  EXPECT_EQ(call_json("POST", vol + "/snapshots", {{"uuid", "nope"}}, 422)["code"], 0);

  // Listed (paginated like any collection), fetched, and inline in the app instance.
  call_json("POST", vol + "/snapshots");  // no body: the array picks the uuid
  auto page = call_json("GET", vol + "/snapshots?limit=1&offset=1");
  ASSERT_EQ(page["data"].size(), 1u);
  EXPECT_EQ(page["metadata"]["total_count"], 2);
  EXPECT_NE(page["data"][0]["utc_ts"], ts);
  EXPECT_EQ(call_json("GET", vol + "/snapshots/" + ts)["data"]["uuid"], uuid);
  auto inline_snaps = call_json(
      "GET",
      "/v2.2/app_instances/snap-src")["data"]["storage_instances"][0]["volumes"][0]["snapshots"];
  ASSERT_EQ(inline_snaps.size(), 2u);
  EXPECT_EQ(inline_snaps[0]["uuid"], uuid) << "whole snapshot objects, oldest first";
  EXPECT_EQ(
      call_json("GET",
                "/v2.1/app_instances")["data"][0]["storage_instances"][0]["volumes"][0]["snapshots"]
          .size(),
      2u);

  // A clone of the snapshot: refused while it is unavailable, made once it is.
  const json clone = {{"name", "snap-clone"},
                      {"create_mode", "kubernetes"},
                      {"clone_snapshot_src", {{"path", path}}}};
  EXPECT_EQ(call_json("POST", "/v2.2/app_instances", clone, 409)["name"], "ConflictError");
  clock_.advance(2s);
  EXPECT_EQ(call_json("GET", vol + "/snapshots/" + ts)["data"]["op_state"], "available");
  auto c = call_json("POST", "/v2.2/app_instances", clone)["data"];
  EXPECT_EQ(c["name"], "snap-clone");
  EXPECT_EQ(c["storage_instances"][0]["volumes"][0]["size"], 16);
  EXPECT_TRUE(c["storage_instances"][0]["acl_policy"]["initiators"].empty());
  auto by_volume =
      call_json("POST", "/v2.2/app_instances",
                {{"name", "vol-clone"},
                 {"clone_volume_src", {{"path", vol.substr(5)}}}})["data"];  // without "/v2.2"
  EXPECT_NE(by_volume["storage_instances"][0]["volumes"][0]["uuid"],
            c["storage_instances"][0]["volumes"][0]["uuid"]);
  EXPECT_EQ(call_json("POST", "/v2.2/app_instances",
                      {{"name", "bad-clone"},
                       {"clone_volume_src",
                        {{"path",
                          "/app_instances/none/storage_instances/"
                          "storage-1/volumes/volume-1"}}}},
                      404)["name"],
            "NotFoundError");

  // The host tier's loop initiator finds a clone in /_sim/exports like any volume.
  auto exports = json::parse(call("GET", "/_sim/exports", "", {}, false).body)["exports"];
  EXPECT_TRUE(std::any_of(exports.begin(), exports.end(), [&](const json& e) {
    return e["app_instance"] == "snap-clone" &&
           e["uuid"] == c["storage_instances"][0]["volumes"][0]["uuid"];
  })) << exports.dump();

  // Delete: the snapshot goes; again is a 404; wrong methods are 405.
  call_json("DELETE", vol + "/snapshots/" + ts);
  call_json("DELETE", vol + "/snapshots/" + ts, nullptr, 404);
  call_json("PUT", vol + "/snapshots", json::object(), 405);
  EXPECT_EQ(call_json("GET", vol + "/snapshots")["data"].size(), 1u);
  call_json("GET",
            "/v2.2/app_instances/none/storage_instances/storage-1/volumes/volume-1/snapshots",
            nullptr, 404);
}

TEST_F(ApiTest, PaginatesAndFilters) {
  for (int i = 0; i < 25; ++i) {
    char name[32];  // room for any int: GCC checks the bound under -O1 (the sanitizer build)
    std::snprintf(name, sizeof name, "page-%02d", i);
    call_json("POST", "/v2.2/app_instances", ai_body(name));
  }
  std::vector<std::string> seen;
  for (int offset = 0; offset < 25; offset += 10) {
    auto page = call_json("GET", "/v2.2/app_instances?limit=10&offset=" + std::to_string(offset));
    EXPECT_EQ(page["metadata"]["total_count"], 25);
    EXPECT_EQ(page["metadata"]["limit"], 10);
    EXPECT_EQ(page["metadata"]["offset"], offset);
    EXPECT_EQ(page["metadata"]["request_count"], offset == 20 ? 5 : 10);
    EXPECT_EQ(page["data"].size(), offset == 20 ? 5u : 10u);
    for (const auto& ai : page["data"]) seen.push_back(ai["name"]);
  }
  ASSERT_EQ(seen.size(), 25u);
  for (int i = 0; i < 25; ++i) {
    char name[32];  // room for any int: GCC checks the bound under -O1 (the sanitizer build)
    std::snprintf(name, sizeof name, "page-%02d", i);
    EXPECT_EQ(seen[static_cast<size_t>(i)], name);  // creation order, nothing twice
  }
  auto v21 = call_json("GET", "/v2.1/app_instances?limit=10");
  EXPECT_EQ(v21["metadata"], json({{"total", 25}}));
  EXPECT_EQ(v21["data"].size(), 10u);
  auto filtered = call_json("GET", "/v2.2/app_instances?filter=name%3Dpage-07");
  ASSERT_EQ(filtered["data"].size(), 1u);
  EXPECT_EQ(filtered["data"][0]["name"], "page-07");
  EXPECT_EQ(filtered["metadata"]["total_count"], 1);
  EXPECT_EQ(call("GET", "/v2.2/app_instances?limit=1001").status, 400u);
  EXPECT_EQ(call("GET", "/v2.2/app_instances?offset=-1").status, 400u);
  EXPECT_EQ(call_json("GET", "/v2.2/app_instances")["data"].size(), 25u);
}

TEST_F(ApiTest, TenantHeaderSelectsANamespace) {
  call_json("POST", "/v2.2/app_instances", ai_body("tn-a"));
  auto r = call("GET", "/v2.2/app_instances/tn-a", "", {{"tenant", "/root/team1"}});
  EXPECT_EQ(r.status, 404u);
  auto created =
      call("POST", "/v2.2/app_instances", ai_body("tn-a").dump(), {{"tenant", "/root/team1"}});
  ASSERT_EQ(created.status, 200u) << created.body;
  EXPECT_EQ(json::parse(created.body)["tenant"], "/root/team1");
  auto all = call("GET", "/v2.2/app_instances", "", {{"tenant", "all"}});
  EXPECT_EQ(json::parse(all.body)["data"].size(), 2u);
  EXPECT_EQ(call_json("GET", "/v2.2/app_instances")["data"].size(), 1u);
}

TEST_F(ApiTest, DeleteRequiresOfflineOrForce) {
  call_json("POST", "/v2.2/app_instances", ai_body("del-a"));
  EXPECT_EQ(call_json("DELETE", "/v2.2/app_instances/del-a", nullptr, 409)["name"],
            "ConflictError");
  auto off =
      call_json("PUT", "/v2.2/app_instances/del-a", {{"admin_state", "offline"}, {"force", true}});
  EXPECT_EQ(off["data"]["admin_state"], "offline");
  EXPECT_EQ(off["data"]["storage_instances"][0]["op_state"], "unavailable");
  call_json("DELETE", "/v2.2/app_instances/del-a");
  call_json("GET", "/v2.2/app_instances/del-a", nullptr, 404);
  call_json("POST", "/v2.2/app_instances", ai_body("del-b"));
  call_json("DELETE", "/v2.2/app_instances/del-b", {{"force", true}});
}

TEST_F(ApiTest, AclMetadataVolumeAndAuthEndpoints) {
  call_json("POST", "/v2.2/app_instances", ai_body("acl-a"));
  const std::string si = "/v2.2/app_instances/acl-a/storage_instances/storage-1";
  const std::string a = "iqn.1993-08.org.debian:01:node-a";
  const std::string b = "iqn.1993-08.org.debian:01:node-b";
  call_json("POST", "/v2.2/initiators", {{"id", a}, {"name", "node-a"}, {"force", true}});
  EXPECT_EQ(call_json("POST", "/v2.2/initiators", {{"id", a}, {"name", "node-a"}}, 409)["name"],
            "ConflictError");
  call_json("POST", "/v2.2/initiators", {{"id", b}, {"name", "node-b"}});
  EXPECT_EQ(call_json("GET", "/v2.2/initiators/" + a)["data"]["path"], "/initiators/" + a);
  EXPECT_EQ(call_json("GET", "/v2.2/initiators")["data"].size(), 2u);

  auto acl = call_json("PUT", si + "/acl_policy",
                       {{"initiators",
                         {{{"path", "/initiators/" + a}},
                          {{"path", "/initiators/" + a}, {"tenant", "/root"}},
                          {{"path", "/initiators/" + b}}}}});
  ASSERT_EQ(acl["data"]["initiators"].size(), 2u);
  EXPECT_EQ(acl["data"]["initiators"][0],
            json({{"path", "/initiators/" + a}, {"tenant", "/root"}}));
  auto v21 = call_json("GET", "/v2.1/app_instances/acl-a/storage_instances/storage-1/acl_policy");
  EXPECT_EQ(v21["data"]["initiators"][0], json({{"path", "/initiators/" + a}}));
  call_json("PUT", si + "/acl_policy/initiators", {{"op", "remove"}, {"path", "/initiators/" + a}});
  auto after = call_json("GET", si + "/acl_policy");
  ASSERT_EQ(after["data"]["initiators"].size(), 1u);
  EXPECT_EQ(after["data"]["initiators"][0]["path"], "/initiators/" + b);
  auto log = json::parse(call("GET", "/_sim/acl_log", "", {}, false).body)["entries"];
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[2]["op"], "remove");
  EXPECT_EQ(log[2]["initiator"], "/initiators/" + a);
  EXPECT_EQ(log[2]["app_instance"], "acl-a");
  EXPECT_EQ(log[2]["storage_instance"], "storage-1");
  EXPECT_EQ(log[2]["ts_ms"], 1'700'000'000'000LL);

  auto md = call_json("PUT", "/v2.2/app_instances/acl-a/metadata", {{"a", "1"}, {"b", "2"}});
  md = call_json("PUT", "/v2.2/app_instances/acl-a/metadata", {{"a", ""}});
  EXPECT_EQ(md["data"], json({{"b", "2"}}));
  EXPECT_EQ(call_json("GET", "/v2.2/app_instances/acl-a/metadata")["data"], json({{"b", "2"}}));
  EXPECT_EQ(call_json("PUT", "/v2.2/app_instances/acl-a/metadata", {{"x", std::string(2100, 'y')}},
                      400)["name"],
            "InvalidRequestError");

  auto grown = call_json("PUT", si + "/volumes/volume-1", {{"size", 20}});
  EXPECT_EQ(grown["data"]["size"], 20);
  call_json("PUT", si + "/volumes/volume-1", {{"size", 10}}, 422);
  auto qos =
      call_json("PUT", si + "/volumes/volume-1/performance_policy", {{"total_iops_max", 100}});
  EXPECT_EQ(qos["data"]["total_iops_max"], 100);

  auto auth =
      call_json("PUT", si + "/auth",
                {{"type", "chap"}, {"target_user_name", "tu"}, {"target_pswd", "tsecret12"}});
  EXPECT_EQ(auth["data"]["target_pswd"], "(hidden)");
  auto state = call("GET", "/_sim/state", "", {}, false).body;
  EXPECT_EQ(state.find("tsecret12"), std::string::npos);
  auto pool = call_json("PUT", si, {{"ip_pool", {{"path", "/access_network_ip_pools/default"}}}});
  EXPECT_EQ(pool["data"]["ip_pool"]["path"], "/access_network_ip_pools/default");
  call_json("PUT", si, {{"ip_pool", {{"path", "/access_network_ip_pools/other"}}}}, 404);

  call_json("DELETE", "/v2.2/initiators/" + b);
  call_json("GET", "/v2.2/initiators/" + b, nullptr, 404);
}

TEST_F(ApiTest, SystemPoolsAndTemplates) {
  EXPECT_EQ(call_json("GET", "/v2.2/system")["data"]["sw_version"], "3.3.0.0");
  auto pool = call_json("GET", "/v2.2/access_network_ip_pools/default");
  EXPECT_EQ(pool["data"]["network_paths"][0]["start_ip"], "172.28.0.1");
  EXPECT_EQ(pool["data"]["network_paths"][0]["netmask"], 24);
  auto created =
      call_json("POST", "/v2.2/app_instances",
                {{"name", "CSI-pvc-1"},
                 {"create_mode", "kubernetes"},
                 {"app_template", {{"path", "/app_templates/basic"}}},
                 {"template_override",
                  {{"storage_instances",
                    {{"storage-1", {{"volumes", {{"volume-1", {{"size", "24"}}}}}}}}}}}});
  EXPECT_EQ(created["data"]["storage_instances"][0]["volumes"][0]["size"], 24);
  EXPECT_EQ(created["data"]["app_template"]["path"], "/app_templates/basic");
}

TEST_F(ApiTest, ControlFailoverRebalanceAndFaults) {
  call_json("POST", "/v2.2/app_instances", ai_body("vip-a"));
  auto fo =
      call("POST", "/_sim/failover", R"({"app_instance":"vip-a","to_node":"node-3"})", {}, false);
  ASSERT_EQ(fo.status, 200u) << fo.body;
  EXPECT_EQ(json::parse(fo.body)["to_node"], "node-3");
  auto rb = call("POST", "/_sim/rebalance",
                 R"({"app_instance":"vip-a","ips":["10.1.0.5","10.2.0.5"]})", {}, false);
  ASSERT_EQ(rb.status, 200u) << rb.body;
  auto access = call_json("GET", "/v2.2/app_instances/vip-a/storage_instances/storage-1/access");
  EXPECT_EQ(access["data"]["ips"], json({"10.1.0.5", "10.2.0.5"}));
  EXPECT_EQ(call("POST", "/_sim/failover", R"({"app_instance":"nope"})", {}, false).status, 404u);

  EXPECT_EQ(call("POST", "/_sim/faults", R"({"error_rate":2})", {}, false).status, 400u);
  EXPECT_EQ(call("POST", "/_sim/faults", R"({"bogus":1})", {}, false).status, 400u);
  ASSERT_EQ(call("POST", "/_sim/faults", R"({"error_rate":1,"seed":5})", {}, false).status, 200u);
  auto r = call("POST", "/v2.2/app_instances", ai_body("never").dump());
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(json::parse(r.body), json({{"message", "overloaded"}}));
  EXPECT_FALSE(model_.get_app_instance("/root", "never").ok());  // no effect
  EXPECT_EQ(json::parse(call("GET", "/_sim/faults", "", {}, false).body)["error_rate"], 1.0);
  ASSERT_EQ(call("DELETE", "/_sim/faults", "", {}, false).status, 200u);
  EXPECT_EQ(call("GET", "/v2.2/system").status, 200u);
}

TEST_F(ApiTest, LatencyWaitsOnATimerWithoutBlockingTheLoop) {
  Faults slow;
  slow.latency_ms = 60;
  api_.set_faults(slow);
  boost::asio::io_context ioc;
  bool other_ran = false;
  boost::asio::post(ioc, [&] { other_ran = true; });
  http::Request r;
  r.method = "GET";
  r.target = "/api_versions";
  const auto start = std::chrono::steady_clock::now();
  auto res = datera::testing::run_async(ioc, api_.handle(std::move(r)));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 60ms);
  EXPECT_EQ(res.status, 200u);
  EXPECT_TRUE(other_ran);
}

TEST(UrlTest, DecodesQueriesAndForms) {
  EXPECT_EQ(url_decode("iqn.1993-08.org.debian%3A01%3Aab"), "iqn.1993-08.org.debian:01:ab");
  EXPECT_EQ(url_decode("a+b"), "a+b");
  EXPECT_EQ(url_decode("a+b", true), "a b");
  EXPECT_EQ(url_decode("%zz%4"), "%zz%4");
  auto f = parse_form("name=ad%20min&password=p%2Bw&empty=&flag");
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0], std::make_pair(std::string("name"), std::string("ad min")));
  EXPECT_EQ(f[1].second, "p+w");
  EXPECT_EQ(f[3], std::make_pair(std::string("flag"), std::string()));
}

// --- through the real transport ---

/// One request on a fresh connection; returns everything the server sent ("" if it just closed).
std::string tcp_exchange(unsigned short port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "connect failed";
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

std::string request(const std::string& method, const std::string& target, const std::string& body,
                    const std::string& key = "") {
  return method + " " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
         (key.empty() ? "" : "Auth-Token: " + key + "\r\n") +
         "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

std::string body_of(const std::string& http) {
  const auto p = http.find("\r\n\r\n");
  return p == std::string::npos ? "" : http.substr(p + 4);
}

TEST(ApiServerTest, LostReplyAppliesTheEffectAndDropsTheConnection) {
  boost::asio::io_context ioc;
  ModelOptions mo;
  Model model(mo, system_clock());
  Sessions sessions(system_clock(), 15min, {{"admin", "password"}});
  Api api(model, sessions, null_logger());
  prometheus::Registry registry;
  http::Metrics probe(registry, "sim");
  http::Server server(ioc.get_executor(), http::ServerOptions{}, api, probe, null_logger());
  auto bound = server.listen_tcp("127.0.0.1", 0);
  ASSERT_TRUE(bound.ok()) << bound.error().message;
  server.start();
  std::thread loop([&] { ioc.run(); });
  const auto port = bound->port();

  auto login = tcp_exchange(
      port, request("PUT", "/v2.2/login", R"({"name":"admin","password":"password"})"));
  ASSERT_EQ(login.rfind("HTTP/1.1 200", 0), 0u) << login;
  const std::string key = json::parse(body_of(login))["key"];

  auto set = tcp_exchange(port, request("POST", "/_sim/faults", R"({"lost_reply_rate":1})"));
  ASSERT_EQ(set.rfind("HTTP/1.1 200", 0), 0u) << set;
  EXPECT_EQ(
      tcp_exchange(port, request("POST", "/v2.2/app_instances", ai_body("lost-1").dump(), key)),
      "");

  ASSERT_EQ(tcp_exchange(port, request("POST", "/_sim/faults", R"({"drop_rate":1})"))
                .rfind("HTTP/1.1 200", 0),
            0u);
  EXPECT_EQ(
      tcp_exchange(port, request("POST", "/v2.2/app_instances", ai_body("dropped-1").dump(), key)),
      "");

  ASSERT_EQ(tcp_exchange(port, request("DELETE", "/_sim/faults", "")).rfind("HTTP/1.1 200", 0), 0u);
  // The lost reply's create happened: a retry gets 409, and a GET finds it (the client's recovery).
  auto retry =
      tcp_exchange(port, request("POST", "/v2.2/app_instances", ai_body("lost-1").dump(), key));
  EXPECT_EQ(retry.rfind("HTTP/1.1 409", 0), 0u) << retry;
  auto got = tcp_exchange(port, request("GET", "/v2.2/app_instances/lost-1", "", key));
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
  // The dropped one never happened.
  auto missing = tcp_exchange(port, request("GET", "/v2.2/app_instances/dropped-1", "", key));
  EXPECT_EQ(missing.rfind("HTTP/1.1 404", 0), 0u) << missing;

  boost::asio::post(ioc, [&] { ioc.stop(); });
  loop.join();
}

}  // namespace
}  // namespace datera::sim

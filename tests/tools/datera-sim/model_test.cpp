// The EDF model alone: validation rules, conflicts, lookups, tenants, op_state timing, ACLs and
// their log, metadata, persistence. No HTTP here.

#include "tools/datera-sim/model.h"

#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/tools/datera-sim/fake_clock.h"
#include "tools/datera-sim/sessions.h"

namespace datera::sim {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

json ai_body(const std::string& name, int size = 16) {
  return {{"name", name},
          {"create_mode", "openstack"},
          {"access_control_mode", "deny_all"},
          {"storage_instances",
           {{{"name", "storage-1"},
             {"ip_pool", {{"path", "/access_network_ip_pools/default"}}},
             {"volumes",
              {{{"name", "volume-1"},
                {"size", size},
                {"placement_mode", "hybrid"},
                {"replica_count", 3},
                {"snapshot_policies", json::array()}}}}}}}};
}

class ModelTest : public ::testing::Test {
 protected:
  ModelOptions opts() {
    ModelOptions o;
    o.seed = 42;
    o.op_state_delay = 0ms;
    return o;
  }
  testing::FakeClock clock_;
  Model model_{opts(), clock_.clock()};
};

TEST_F(ModelTest, CreateFillsIdentityAccessAndUuids) {
  auto ai = model_.create_app_instance("/root", ai_body("vol-a"));
  ASSERT_TRUE(ai.ok()) << ai.error().message;
  EXPECT_TRUE(Model::valid_uuid(ai->id));
  ASSERT_EQ(ai->storage_instances.size(), 1u);
  const auto& si = ai->storage_instances[0];
  EXPECT_TRUE(std::regex_match(
      si.iqn, std::regex(R"(^iqn\.2013-05\.com\.daterainc:tc:01:sn:[0-9a-f]{16}$)")))
      << si.iqn;
  ASSERT_EQ(si.ips.size(), 2u);
  EXPECT_NE(si.ips[0], si.ips[1]);
  EXPECT_EQ(si.ips[0].rfind("172.28.0.", 0), 0u);
  ASSERT_EQ(si.volumes.size(), 1u);
  EXPECT_TRUE(Model::valid_uuid(si.volumes[0].uuid));
  EXPECT_EQ(si.volumes[0].size, 16);
  EXPECT_EQ(ai->admin_state, "online");
  EXPECT_EQ(model_.op_state(*ai), "available");

  auto second = model_.create_app_instance("/root", ai_body("vol-b"));
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->storage_instances[0].ips, si.ips);  // each SI takes its own pair
  EXPECT_NE(second->storage_instances[0].iqn, si.iqn);
  EXPECT_NE(second->storage_instances[0].volumes[0].uuid, si.volumes[0].uuid);
}

TEST_F(ModelTest, TwoPoolsGiveOneAddressFromEachNetwork) {
  ModelOptions o = opts();
  o.ip_pools = {*Cidr::parse("172.28.0.0/24"), *Cidr::parse("172.29.0.0/24")};
  Model m(o, clock_.clock());
  auto ai = m.create_app_instance("/root", ai_body("vol-a"));
  ASSERT_TRUE(ai.ok());
  EXPECT_EQ(ai->storage_instances[0].ips, (std::vector<std::string>{"172.28.0.1", "172.29.0.1"}));
  EXPECT_FALSE(Cidr::parse("172.28.0.0/33").ok());
  EXPECT_FALSE(Cidr::parse("nonsense").ok());
}

struct BadCase {
  const char* label;
  std::function<void(json&)> mutate;
  int status;
};

TEST_F(ModelTest, ValidationTable) {
  const std::vector<BadCase> cases = {
      {"not an object", [](json& b) { b = json::array(); }, 400},
      {"missing name", [](json& b) { b.erase("name"); }, 400},
      {"name not a string", [](json& b) { b["name"] = 5; }, 400},
      {"name too short", [](json& b) { b["name"] = "ab"; }, 422},
      {"name starts with digit", [](json& b) { b["name"] = "1abc"; }, 422},
      {"name with slash", [](json& b) { b["name"] = "a/bcd"; }, 422},
      {"name 65 chars", [](json& b) { b["name"] = "a" + std::string(64, 'b'); }, 422},
      {"unknown field", [](json& b) { b["colour"] = "red"; }, 400},
      {"bad create_mode", [](json& b) { b["create_mode"] = "cinder"; }, 422},
      {"bad access_control_mode", [](json& b) { b["access_control_mode"] = "open"; }, 422},
      {"bad descr", [](json& b) { b["descr"] = "!"; }, 422},
      {"size zero", [](json& b) { b["storage_instances"][0]["volumes"][0]["size"] = 0; }, 422},
      {"size 32769", [](json& b) { b["storage_instances"][0]["volumes"][0]["size"] = 32769; }, 422},
      {"size string", [](json& b) { b["storage_instances"][0]["volumes"][0]["size"] = "16"; }, 400},
      {"size missing", [](json& b) { b["storage_instances"][0]["volumes"][0].erase("size"); }, 400},
      {"replica 0", [](json& b) { b["storage_instances"][0]["volumes"][0]["replica_count"] = 0; },
       422},
      {"replica 6", [](json& b) { b["storage_instances"][0]["volumes"][0]["replica_count"] = 6; },
       422},
      {"placement",
       [](json& b) { b["storage_instances"][0]["volumes"][0]["placement_mode"] = "ssd"; }, 422},
      {"volume name", [](json& b) { b["storage_instances"][0]["volumes"][0]["name"] = "v"; }, 422},
      {"si name", [](json& b) { b["storage_instances"][0]["name"] = "-x-"; }, 422},
      {"ip pool missing",
       [](json& b) {
         b["storage_instances"][0]["ip_pool"] = {{"path", "/access_network_ip_pools/p9"}};
       },
       404},
      {"qos too high",
       [](json& b) {
         b["storage_instances"][0]["volumes"][0]["performance_policy"] = {
             {"total_iops_max", 10000001}};
       },
       422},
      {"qos unknown",
       [](json& b) {
         b["storage_instances"][0]["volumes"][0]["performance_policy"] = {{"speed", 1}};
       },
       400},
      {"snapshot interval",
       [](json& b) {
         b["storage_instances"][0]["volumes"][0]["snapshot_policies"] = {
             {{"name", "pol"}, {"interval", "2h"}}};
       },
       422},
      {"chap without secret",
       [](json& b) {
         b["storage_instances"][0]["auth"] = {{"type", "chap"}};
       },
       422},
      {"auth type",
       [](json& b) {
         b["storage_instances"][0]["auth"] = {{"type", "kerberos"}};
       },
       422},
      {"clone",
       [](json& b) {
         b["clone_src"] = {{"path", "/app_instances/x"}};
       },
       422},
      {"unknown template",
       [](json& b) {
         b.erase("storage_instances");
         b["app_template"] = {{"path", "/app_templates/nope"}};
       },
       404},
      {"bad uuid", [](json& b) { b["uuid"] = "not-a-uuid"; }, 422},
  };
  for (const auto& c : cases) {
    json body = ai_body("good-name");
    c.mutate(body);
    auto r = model_.create_app_instance("/root", body);
    ASSERT_FALSE(r.ok()) << c.label;
    EXPECT_EQ(r.error().code, http_status(c.status)) << c.label << ": " << r.error().message;
    EXPECT_EQ(edf_error_name(http_status_of(r.error().code)),
              c.status == 400   ? "InvalidRequestError"
              : c.status == 404 ? "NotFoundError"
                                : "ValidationFailedError")
        << c.label;
  }
  EXPECT_TRUE(model_.list_app_instances("/root").empty());  // nothing half-created
  EXPECT_EQ(model_.generation(), 0u);
  // Edges that are valid.
  for (const std::string& name :
       std::vector<std::string>{"abc", "a" + std::string(63, 'b'), "OS-9b8e2202-59a8-a79f",
                                std::string("6c26b5b4-1fe2-4c7e-9f58-4a5a2a3f1d20")}) {
    EXPECT_TRUE(model_.create_app_instance("/root", ai_body(name, 32768)).ok()) << name;
  }
  EXPECT_TRUE(model_.create_app_instance("/root", ai_body("one-gib", 1)).ok());
}

TEST_F(ModelTest, TemplateCreateWithStringSizeOverride) {
  json body = {
      {"name", "CSI-pvc-1"},
      {"create_mode", "kubernetes"},
      {"app_template", {{"path", "/app_templates/basic"}}},
      {"template_override",
       {{"storage_instances", {{"storage-1", {{"volumes", {{"volume-1", {{"size", "20"}}}}}}}}}}}};
  auto ai = model_.create_app_instance("/root", body);
  ASSERT_TRUE(ai.ok()) << ai.error().message;
  EXPECT_EQ(ai->app_template, "/app_templates/basic");
  EXPECT_EQ(ai->storage_instances.at(0).volumes.at(0).size, 20);
  EXPECT_EQ(ai->storage_instances.at(0).volumes.at(0).replica_count, 3);

  body["name"] = "CSI-pvc-2";
  body["template_override"]["storage_instances"]["storage-1"]["volumes"]["volume-1"]["size"] = "0";
  EXPECT_EQ(model_.create_app_instance("/root", body).error().code, http_status(422));
  body["template_override"]["storage_instances"]["storage-1"]["volumes"]["volume-1"]["size"] =
      "big";
  EXPECT_EQ(model_.create_app_instance("/root", body).error().code, http_status(400));
  body["template_override"] = {{"storage_instances", {{"storage-9", json::object()}}}};
  EXPECT_EQ(model_.create_app_instance("/root", body).error().code, http_status(400));
}

TEST_F(ModelTest, DuplicatesConflict) {
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("dup")).ok());
  auto again = model_.create_app_instance("/root", ai_body("dup"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, http_status(409));
  EXPECT_EQ(edf_error_name(409), "ConflictError");

  json init = {{"id", "iqn.1993-08.org.debian:01:abcd"}, {"name", "node-a"}, {"force", true}};
  ASSERT_TRUE(model_.create_initiator("/root", init).ok());
  EXPECT_EQ(model_.create_initiator("/root", init).error().code, http_status(409));
  EXPECT_TRUE(model_.create_initiator("/root/other", init).ok());  // another namespace
}

TEST_F(ModelTest, LookupByIdOrNameAndTenantsAreIsolated) {
  auto ai = model_.create_app_instance("/root", ai_body("shared-name"));
  ASSERT_TRUE(ai.ok());
  EXPECT_EQ(model_.get_app_instance("/root", ai->id)->name, "shared-name");
  EXPECT_EQ(model_.get_app_instance("/root", "shared-name")->id, ai->id);
  EXPECT_EQ(model_.get_app_instance("/root/t1", "shared-name").error().code, http_status(404));
  auto other = model_.create_app_instance("/root/t1", ai_body("shared-name"));
  ASSERT_TRUE(other.ok());  // same name, other tenant: no conflict
  EXPECT_NE(other->id, ai->id);
  EXPECT_EQ(model_.list_app_instances("/root").size(), 1u);
  EXPECT_EQ(model_.list_app_instances("/root/t1").size(), 1u);
  EXPECT_EQ(model_.list_app_instances("all").size(), 2u);
  EXPECT_EQ(model_.delete_app_instance("/root/t1", ai->id, {{"force", true}}).error().code,
            http_status(404));

  EXPECT_EQ(*Model::normalize_tenant(""), "/root");
  EXPECT_EQ(*Model::normalize_tenant("/root/t1"), "/root/t1");
  EXPECT_FALSE(Model::normalize_tenant("root").ok());
  EXPECT_FALSE(Model::normalize_tenant("/root/../etc").ok());
}

TEST_F(ModelTest, DeleteOfOnlineAppInstanceIsRefusedUntilOfflineOrForce) {
  auto a = model_.create_app_instance("/root", ai_body("del-a"));
  auto b = model_.create_app_instance("/root", ai_body("del-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto refused = model_.delete_app_instance("/root", "del-a", nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, http_status(409));
  ASSERT_TRUE(
      model_.update_app_instance("/root", "del-a", {{"admin_state", "offline"}, {"force", true}})
          .ok());
  EXPECT_TRUE(model_.delete_app_instance("/root", "del-a", nullptr).ok());
  EXPECT_EQ(model_.get_app_instance("/root", "del-a").error().code, http_status(404));
  EXPECT_TRUE(model_.delete_app_instance("/root", b->id, {{"force", true}}).ok());
  EXPECT_EQ(model_.delete_app_instance("/root", b->id, {{"force", true}}).error().code,
            http_status(404));
}

TEST_F(ModelTest, OpStateFollowsAdminStateAfterTheDelay) {
  ModelOptions o = opts();
  o.op_state_delay = 3s;
  Model m(o, clock_.clock());
  auto ai = m.create_app_instance("/root", ai_body("slow"));
  ASSERT_TRUE(ai.ok());
  EXPECT_EQ(m.op_state(*m.get_app_instance("/root", "slow")), "unavailable");
  clock_.advance(2999ms);
  EXPECT_EQ(m.op_state(*m.get_app_instance("/root", "slow")), "unavailable");
  clock_.advance(1ms);
  EXPECT_EQ(m.op_state(*m.get_app_instance("/root", "slow")), "available");
  ASSERT_TRUE(m.update_app_instance("/root", "slow", {{"admin_state", "offline"}}).ok());
  EXPECT_EQ(m.op_state(*m.get_app_instance("/root", "slow")), "unavailable");
  clock_.advance(10s);
  ASSERT_TRUE(m.update_app_instance("/root", "slow", {{"admin_state", "online"}}).ok());
  EXPECT_EQ(m.op_state(*m.get_app_instance("/root", "slow")), "unavailable");
  clock_.advance(3s);
  EXPECT_EQ(m.op_state(*m.get_app_instance("/root", "slow")), "available");
}

TEST_F(ModelTest, UpdateRules) {
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("upd")).ok());
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("other")).ok());
  EXPECT_EQ(model_.update_app_instance("/root", "upd", {{"admin_state", "paused"}}).error().code,
            http_status(422));
  EXPECT_EQ(model_.update_app_instance("/root", "upd", {{"force", "yes"}}).error().code,
            http_status(400));
  EXPECT_EQ(model_.update_app_instance("/root", "upd", {{"access_control_mode", "allow_all"}})
                .error()
                .code,
            http_status(422));  // only allow_all -> deny_all
  EXPECT_EQ(model_.update_app_instance("/root", "upd", {{"name", "other"}}).error().code,
            http_status(409));
  auto renamed =
      model_.update_app_instance("/root", "upd", {{"name", "upd-2"}, {"descr", "a volume"}});
  ASSERT_TRUE(renamed.ok());
  EXPECT_EQ(*renamed->descr, "a volume");
  EXPECT_TRUE(model_.get_app_instance("/root", "upd-2").ok());

  // Volumes grow only.
  EXPECT_EQ(
      model_.update_volume("/root", "upd-2", "storage-1", "volume-1", {{"size", 8}}).error().code,
      http_status(422));
  auto grown = model_.update_volume("/root", "upd-2", "storage-1", "volume-1", {{"size", 32}});
  ASSERT_TRUE(grown.ok());
  EXPECT_EQ(grown->size, 32);
  auto qos = model_.set_performance_policy("/root", "upd-2", "storage-1", "volume-1",
                                           {{"total_iops_max", 500}, {"read_bandwidth_max", 0}});
  ASSERT_TRUE(qos.ok());
  EXPECT_EQ(qos->performance_policy.at("total_iops_max"), 500);
  EXPECT_EQ(model_.get_volume("/root", "upd-2", "storage-1", "volume-9").error().code,
            http_status(404));

  // CHAP
  auto chap =
      model_.set_auth("/root", "upd-2", "storage-1",
                      {{"type", "chap"}, {"target_user_name", "u1"}, {"target_pswd", "secret12"}});
  ASSERT_TRUE(chap.ok());
  EXPECT_EQ(chap->auth.target_pswd, "secret12");
  EXPECT_EQ(model_.set_auth("/root", "upd-2", "storage-1", {{"type", "mchap"}}).error().code,
            http_status(422));
}

TEST_F(ModelTest, AclReplaceToleratesDuplicatesAndLogsChanges) {
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("acl")).ok());
  const std::string a = "iqn.1993-08.org.debian:01:aaaa";
  const std::string b = "iqn.1993-08.org.debian:01:bbbb";
  ASSERT_TRUE(model_.create_initiator("/root", {{"id", a}, {"name", "node-a"}}).ok());
  ASSERT_TRUE(model_.create_initiator("/root", {{"id", b}, {"name", "node-b"}}).ok());

  auto missing =
      model_.replace_acl("/root", "acl", "storage-1",
                         {{"initiators", {{{"path", "/initiators/iqn.2000-01.x:nobody"}}}}});
  EXPECT_EQ(missing.error().code, http_status(404));

  auto si = model_.replace_acl("/root", "acl", "storage-1",
                               {{"initiators",
                                 {{{"path", "/initiators/" + a}},
                                  {{"path", "/initiators/" + a}, {"tenant", "/root"}},
                                  "/initiators/" + b}}});
  ASSERT_TRUE(si.ok()) << si.error().message;
  ASSERT_EQ(si->acl_initiators.size(), 2u);  // the duplicate is stored once
  ASSERT_EQ(model_.acl_log().size(), 2u);
  EXPECT_EQ(model_.acl_log()[0].op, "add");
  EXPECT_EQ(model_.acl_log()[0].initiator, "/initiators/" + a);
  EXPECT_EQ(model_.acl_log()[0].app_instance, "acl");
  EXPECT_EQ(model_.acl_log()[0].storage_instance, "storage-1");
  EXPECT_EQ(model_.acl_log()[0].ts_ms, model_.now_ms());

  clock_.advance(1s);
  si = model_.replace_acl("/root", "acl", "storage-1",
                          {{"initiators", {{{"path", "/initiators/" + b}}}}});
  ASSERT_TRUE(si.ok());
  ASSERT_EQ(si->acl_initiators.size(), 1u);
  ASSERT_EQ(model_.acl_log().size(), 3u);
  EXPECT_EQ(model_.acl_log()[2].op, "remove");
  EXPECT_EQ(model_.acl_log()[2].initiator, "/initiators/" + a);

  // Atomic op endpoints.
  si = model_.acl_op("/root", "acl", "storage-1", "initiators",
                     {{"op", "add"}, {"path", "/initiators/" + a}});
  ASSERT_TRUE(si.ok());
  EXPECT_EQ(si->acl_initiators.size(), 2u);
  si = model_.acl_op("/root", "acl", "storage-1", "initiators",
                     {{"op", "add"}, {"path", "/initiators/" + a}});
  EXPECT_EQ(si->acl_initiators.size(), 2u);  // idempotent, no log entry
  EXPECT_EQ(model_.acl_log().size(), 4u);
  si = model_.acl_op("/root", "acl", "storage-1", "initiators",
                     {{"op", "remove"}, {"path", "/initiators/" + b}});
  ASSERT_TRUE(si.ok());
  ASSERT_EQ(si->acl_initiators.size(), 1u);
  EXPECT_EQ(si->acl_initiators[0].path, "/initiators/" + a);
  ASSERT_EQ(model_.acl_log().size(), 5u);
  EXPECT_EQ(model_.acl_log()[4].op, "remove");
  EXPECT_EQ(model_
                .acl_op("/root", "acl", "storage-1", "initiators",
                        {{"op", "swap"}, {"path", "/initiators/" + a}})
                .error()
                .code,
            http_status(422));
  EXPECT_EQ(model_.acl_op("/root", "acl", "storage-1", "initiators", {{"path", "/initiators/" + a}})
                .error()
                .code,
            http_status(400));
}

TEST_F(ModelTest, InitiatorValidation) {
  EXPECT_EQ(model_.create_initiator("/root", {{"id", "iqn.1993-08.org:x"}, {"name", "short-iqn"}})
                .error()
                .code,
            http_status(422));
  EXPECT_EQ(model_
                .create_initiator("/root",
                                  {{"id", "iqn.1993-28.org.debian:01:ab"}, {"name", "bad-month"}})
                .error()
                .code,
            http_status(422));
  EXPECT_EQ(
      model_.create_initiator("/root", {{"id", "iqn.1993-08.org.debian:01:ab"}, {"name", "!x"}})
          .error()
          .code,
      http_status(422));
  EXPECT_EQ(model_.create_initiator("/root", {{"name", "no-id"}}).error().code, http_status(400));
  EXPECT_TRUE(
      model_.create_initiator("/root", {{"id", "eui.0123456789abcdef"}, {"name", "eui host"}})
          .ok());
  EXPECT_TRUE(model_.get_initiator("/root", "eui.0123456789abcdef").ok());
  EXPECT_TRUE(model_.delete_initiator("/root", "eui.0123456789abcdef").ok());
  EXPECT_EQ(model_.get_initiator("/root", "eui.0123456789abcdef").error().code, http_status(404));
}

TEST_F(ModelTest, MetadataMergeDeleteAndLimit) {
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("meta")).ok());
  auto md = model_.put_metadata("/root", "meta", {{"fs_type", "xfs"}, {"formatted", "false"}});
  ASSERT_TRUE(md.ok());
  md = model_.put_metadata("/root", "meta",
                           {{"formatted", true}, {"pod_name", "web-0"}, {"fs_type", ""}});
  ASSERT_TRUE(md.ok());
  EXPECT_EQ(*md, (Metadata{{"formatted", "true"}, {"pod_name", "web-0"}}));
  EXPECT_EQ(*model_.get_metadata("/root", "meta"), *md);
  EXPECT_EQ(model_.put_metadata("/root", "meta", {{"nested", {{"a", 1}}}}).error().code,
            http_status(400));
  // {"formatted":"true","pod_name":"web-0","big":"xxx"} must stay within 2048 characters.
  const size_t base =
      json(Metadata{{"formatted", "true"}, {"pod_name", "web-0"}, {"big", ""}}).dump().size();
  auto over = model_.put_metadata("/root", "meta", {{"big", std::string(2048 - base + 1, 'x')}});
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, http_status(400));
  EXPECT_EQ(model_.get_metadata("/root", "meta")->size(), 2u);  // unchanged
  EXPECT_TRUE(model_.put_metadata("/root", "meta", {{"big", std::string(2048 - base, 'x')}}).ok());
  // SI-level metadata is separate.
  EXPECT_TRUE(model_.put_metadata("/root", "meta", {{"k", "v"}}, "storage-1").ok());
  EXPECT_EQ(model_.get_metadata("/root", "meta", "storage-1")->size(), 1u);
}

TEST_F(ModelTest, FailoverAndRebalanceAreRecorded) {
  auto ai = model_.create_app_instance("/root", ai_body("vip"));
  ASSERT_TRUE(ai.ok());
  const auto node = ai->storage_instances[0].node;
  auto ev = model_.failover("/root", "vip", "storage-1", "");
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->from_node, node);
  EXPECT_NE(ev->to_node, node);
  EXPECT_EQ(model_.get_storage_instance("/root", "vip", "storage-1")->node, ev->to_node);
  EXPECT_EQ(model_.failover("/root", "vip", "storage-1", "node-77").error().code, http_status(404));
  auto rb = model_.rebalance("/root", "vip", "storage-1", {"10.9.0.1", "10.9.0.2"});
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(model_.get_storage_instance("/root", "vip", "storage-1")->ips,
            (std::vector<std::string>{"10.9.0.1", "10.9.0.2"}));
  EXPECT_EQ(model_.rebalance("/root", "vip", "storage-1", {"10.9.0.300"}).error().code,
            http_status(422));
  EXPECT_EQ(model_.failovers().size(), 1u);
  EXPECT_EQ(model_.rebalances().size(), 1u);
}

TEST_F(ModelTest, PersistenceRoundTrip) {
  auto ai = model_.create_app_instance("/root", ai_body("keep-me"));
  ASSERT_TRUE(ai.ok());
  ASSERT_TRUE(model_.create_app_instance("/root/t2", ai_body("keep-too")).ok());
  const std::string iqn = "iqn.1993-08.org.debian:01:persist";
  ASSERT_TRUE(model_.create_initiator("/root", {{"id", iqn}, {"name", "node-p"}}).ok());
  ASSERT_TRUE(model_
                  .acl_op("/root", "keep-me", "storage-1", "initiators",
                          {{"op", "add"}, {"path", "/initiators/" + iqn}})
                  .ok());
  ASSERT_TRUE(model_.put_metadata("/root", "keep-me", {{"k", "v"}}).ok());
  ASSERT_TRUE(model_.update_app_instance("/root", "keep-me", {{"admin_state", "offline"}}).ok());

  const std::string text = model_.to_json().dump();
  Model restored(opts(), clock_.clock());
  ASSERT_TRUE(restored.load_json(json::parse(text)).ok());
  auto back = restored.get_app_instance("/root", "keep-me");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->id, ai->id);
  EXPECT_EQ(back->admin_state, "offline");
  EXPECT_EQ(back->storage_instances[0].volumes[0].uuid, ai->storage_instances[0].volumes[0].uuid);
  EXPECT_EQ(back->storage_instances[0].iqn, ai->storage_instances[0].iqn);
  EXPECT_EQ(back->storage_instances[0].ips, ai->storage_instances[0].ips);
  ASSERT_EQ(back->storage_instances[0].acl_initiators.size(), 1u);
  EXPECT_EQ(back->storage_instances[0].acl_initiators[0].path, "/initiators/" + iqn);
  EXPECT_EQ(back->metadata.at("k"), "v");
  EXPECT_TRUE(restored.get_app_instance("/root/t2", "keep-too").ok());
  EXPECT_TRUE(restored.get_initiator("/root", iqn).ok());
  EXPECT_EQ(restored.acl_log().size(), 1u);
  EXPECT_EQ(restored.to_json().dump(), text);
  // Counters continue: a new SI does not reuse the addresses of an old one.
  auto next = restored.create_app_instance("/root", ai_body("after-restart"));
  ASSERT_TRUE(next.ok());
  EXPECT_NE(next->storage_instances[0].ips, ai->storage_instances[0].ips);

  EXPECT_FALSE(restored.load_json(json{{"format", "other"}}).ok());
  EXPECT_FALSE(restored.load_json(json{{"format", "datera-sim-state/1"}, {"tenants", 5}}).ok());
}

// --- snapshots and clones ---

const std::string kSnapUuid = "0f8b2c3e-1d4a-4b5c-9d6e-7f8091a2b3c4";

Result<Snapshot> snap(Model& m, const std::string& ai, const json& body) {
  return m.create_snapshot("/root", ai, "storage-1", "volume-1", body);
}

TEST_F(ModelTest, SnapshotCreateListGetDelete) {
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("src", 20)).ok());
  auto s = snap(model_, "src", {{"uuid", kSnapUuid}});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->uuid, kSnapUuid);
  EXPECT_EQ(s->utc_ts, "1700000000.000000000") << "the injected clock, with nanoseconds";
  EXPECT_TRUE(Model::valid_utc_ts(s->utc_ts));
  EXPECT_EQ(s->size, 20);

  // Same instant, no uuid: the array makes one up and moves the timestamp on by a nanosecond.
  auto s2 = snap(model_, "src", nullptr);
  ASSERT_TRUE(s2.ok()) << s2.error().message;
  EXPECT_EQ(s2->utc_ts, "1700000000.000000001");
  EXPECT_TRUE(Model::valid_uuid(s2->uuid));
  EXPECT_NE(s2->uuid, kSnapUuid);

  auto list = model_.list_snapshots("/root", "src", "storage-1", "volume-1");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].utc_ts, s->utc_ts) << "oldest first";
  EXPECT_EQ(model_.get_snapshot("/root", "src", "storage-1", "volume-1", s->utc_ts)->uuid,
            kSnapUuid);
  EXPECT_EQ(model_.get_snapshot("/root", "src", "storage-1", "volume-1", "1.5").error().code,
            http_status(404));
  // The app instance shows them in its volume (one listing sees every snapshot).
  EXPECT_EQ(
      model_.get_app_instance("/root", "src")->storage_instances[0].volumes[0].snapshots.size(),
      2u);
  EXPECT_EQ(model_.snapshot_views().size(), 2u);

  ASSERT_TRUE(model_.delete_snapshot("/root", "src", "storage-1", "volume-1", s->utc_ts).ok());
  EXPECT_EQ(model_.delete_snapshot("/root", "src", "storage-1", "volume-1", s->utc_ts).error().code,
            http_status(404));
  EXPECT_EQ(model_.list_snapshots("/root", "src", "storage-1", "volume-1")->size(), 1u);
  EXPECT_EQ(snap(model_, "nobody", nullptr).error().code, http_status(404));
}

TEST_F(ModelTest, SnapshotValidationAndDuplicateUuid) {
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("src")).ok());
  ASSERT_TRUE(snap(model_, "src", {{"uuid", kSnapUuid}}).ok());
  auto dup = snap(model_, "src", {{"uuid", kSnapUuid}});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(error_status(dup.error()), 400u);
  EXPECT_EQ(error_edf_code(dup.error()), 15) << "EDF's duplicate snapshot uuid";
  EXPECT_EQ(edf_error_name(error_status(dup.error())), "InvalidRequestError");
  // The same uuid on another volume is fine: uuids are unique per volume.
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("other")).ok());
  EXPECT_TRUE(snap(model_, "other", {{"uuid", kSnapUuid}}).ok());

  EXPECT_EQ(snap(model_, "src", {{"uuid", "not-a-uuid"}}).error().code, http_status(422));
  EXPECT_EQ(snap(model_, "src", {{"uuid", 5}}).error().code, http_status(400));
  EXPECT_EQ(snap(model_, "src", {{"name", "x"}}).error().code, http_status(400));
  EXPECT_EQ(snap(model_, "src", json::array()).error().code, http_status(400));
  EXPECT_EQ(error_edf_code(snap(model_, "src", json::array()).error()), 0);
  EXPECT_EQ(model_.list_snapshots("/root", "src", "storage-1", "volume-1")->size(), 1u)
      << "refusals leave nothing behind";
}

TEST_F(ModelTest, SnapshotBecomesAvailableAfterTheDelay) {
  ModelOptions o = opts();
  o.op_state_delay = 500ms;
  Model m(o, clock_.clock());
  ASSERT_TRUE(m.create_app_instance("/root", ai_body("src")).ok());
  auto s = snap(m, "src", nullptr);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(m.op_state(*s), "unavailable");
  clock_.advance(499ms);
  EXPECT_EQ(m.op_state(*s), "unavailable");
  clock_.advance(1ms);
  EXPECT_EQ(m.op_state(*s), "available");
}

json clone_body(const std::string& name, const char* key, const std::string& path) {
  return {{"name", name}, {"create_mode", "kubernetes"}, {key, {{"path", path}}}};
}

TEST_F(ModelTest, ClonesFromASnapshotOrAVolume) {
  auto src = model_.create_app_instance("/root", ai_body("src", 20));
  ASSERT_TRUE(src.ok());
  const std::string iqn = "iqn.1993-08.org.debian:01:clone";
  ASSERT_TRUE(model_.create_initiator("/root", {{"id", iqn}, {"name", "node-c"}}).ok());
  ASSERT_TRUE(model_
                  .acl_op("/root", "src", "storage-1", "initiators",
                          {{"op", "add"}, {"path", "/initiators/" + iqn}})
                  .ok());
  ASSERT_TRUE(model_.put_metadata("/root", "src", {{"k", "v"}}).ok());
  auto s = snap(model_, "src", nullptr);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(model_.update_volume("/root", "src", "storage-1", "volume-1", {{"size", 30}}).ok());
  const std::string vol_path = "/app_instances/src/storage_instances/storage-1/volumes/volume-1";

  auto from_snap = model_.create_app_instance(
      "/root", clone_body("c-snap", "clone_snapshot_src", vol_path + "/snapshots/" + s->utc_ts));
  ASSERT_TRUE(from_snap.ok()) << from_snap.error().message;
  ASSERT_EQ(from_snap->storage_instances.size(), 1u);
  const auto& si = from_snap->storage_instances[0];
  const auto& src_si = src->storage_instances[0];
  EXPECT_EQ(si.name, "storage-1");
  ASSERT_EQ(si.volumes.size(), 1u);
  EXPECT_EQ(si.volumes[0].name, "volume-1");
  EXPECT_EQ(si.volumes[0].size, 20) << "the snapshot's size, not the volume's now";
  EXPECT_NE(si.volumes[0].uuid, src_si.volumes[0].uuid);
  EXPECT_TRUE(Model::valid_uuid(si.volumes[0].uuid));
  EXPECT_NE(si.uuid, src_si.uuid);
  EXPECT_NE(si.iqn, src_si.iqn);
  EXPECT_NE(si.ips, src_si.ips);
  EXPECT_TRUE(si.acl_initiators.empty()) << "a clone's ACL starts empty";
  EXPECT_TRUE(from_snap->metadata.empty());
  EXPECT_TRUE(si.volumes[0].snapshots.empty());
  EXPECT_EQ(si.volumes[0].clone_of_volume, src_si.volumes[0].uuid);
  EXPECT_EQ(si.volumes[0].clone_of_snapshot, s->utc_ts);

  // By the source's id works too (the paths the array itself returns carry ids).
  auto from_vol = model_.create_app_instance(
      "/root",
      clone_body("c-vol", "clone_volume_src",
                 "/app_instances/" + src->id + "/storage_instances/storage-1/volumes/volume-1"));
  ASSERT_TRUE(from_vol.ok()) << from_vol.error().message;
  EXPECT_EQ(from_vol->storage_instances[0].volumes[0].size, 30);
  EXPECT_EQ(from_vol->storage_instances[0].volumes[0].clone_of_snapshot, "");
  EXPECT_EQ(model_.exports().back().clone_of_volume, src_si.volumes[0].uuid);

  // Repeating a create that succeeded is a 409, as for any app instance.
  EXPECT_EQ(model_.create_app_instance("/root", clone_body("c-vol", "clone_volume_src", vol_path))
                .error()
                .code,
            http_status(409));
}

TEST_F(ModelTest, CloneRefusals) {
  ModelOptions o = opts();
  o.op_state_delay = 1s;
  Model m(o, clock_.clock());
  ASSERT_TRUE(m.create_app_instance("/root", ai_body("src")).ok());
  auto s = snap(m, "src", nullptr);
  ASSERT_TRUE(s.ok());
  const std::string vol_path = "/app_instances/src/storage_instances/storage-1/volumes/volume-1";
  const std::string snap_path = vol_path + "/snapshots/" + s->utc_ts;
  auto code = [&](const json& body) {
    auto r = m.create_app_instance("/root", body);
    return r.ok() ? 0u : http_status_of(r.error().code);
  };
  EXPECT_EQ(code(clone_body("c-1", "clone_snapshot_src", snap_path)), 409u)
      << "the snapshot is not available yet";
  EXPECT_EQ(code(clone_body("c-1", "clone_snapshot_src", vol_path + "/snapshots/1.000000000")),
            404u);
  EXPECT_EQ(code(clone_body("c-1", "clone_volume_src",
                            "/app_instances/nobody/storage_instances/storage-1/volumes/volume-1")),
            404u);
  EXPECT_EQ(code(clone_body("c-1", "clone_volume_src", "/app_instances/src")), 422u);
  EXPECT_EQ(code(clone_body("c-1", "clone_snapshot_src", vol_path)), 422u)
      << "a volume path is not a snapshot path";
  EXPECT_EQ(code(clone_body("c-1", "clone_volume_src", snap_path)), 422u);
  EXPECT_EQ(code(clone_body("c-1", "clone_src", "/app_instances/src")), 422u) << "not simulated";
  json both = clone_body("c-1", "clone_volume_src", vol_path);
  both["clone_snapshot_src"] = {{"path", snap_path}};
  EXPECT_EQ(code(both), 400u);
  json with_storage = ai_body("c-1");
  with_storage["clone_volume_src"] = {{"path", vol_path}};
  EXPECT_EQ(code(with_storage), 400u) << "a clone's storage is its source's";
  EXPECT_EQ(code(clone_body("c-1", "clone_volume_src", "")), 422u);
  json not_a_ref = {{"name", "c-1"}, {"clone_volume_src", 7}};
  EXPECT_EQ(code(not_a_ref), 400u);
  EXPECT_FALSE(m.get_app_instance("/root", "c-1").ok()) << "no refusal created anything";

  clock_.advance(1s);
  EXPECT_EQ(code(clone_body("c-1", "clone_snapshot_src", snap_path)), 0u) << "available now";
}

TEST_F(ModelTest, DeletingAnAppInstanceDeletesItsSnapshots) {
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("src")).ok());
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("other")).ok());
  ASSERT_TRUE(snap(model_, "src", nullptr).ok());
  ASSERT_TRUE(snap(model_, "src", nullptr).ok());
  ASSERT_TRUE(snap(model_, "other", nullptr).ok());
  EXPECT_EQ(model_.snapshot_views().size(), 3u);
  ASSERT_TRUE(model_.delete_app_instance("/root", "src", {{"force", true}}).ok());
  const auto left = model_.snapshot_views();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].volume_uuid,
            model_.get_app_instance("/root", "other")->storage_instances[0].volumes[0].uuid);
  // A new app instance under the old name has none of the old snapshots.
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("src")).ok());
  EXPECT_TRUE(model_.list_snapshots("/root", "src", "storage-1", "volume-1")->empty());
}

TEST_F(ModelTest, SnapshotsAndClonesSurviveARestart) {
  ASSERT_TRUE(model_.create_app_instance("/root", ai_body("src")).ok());
  auto s = snap(model_, "src", {{"uuid", kSnapUuid}});
  ASSERT_TRUE(s.ok());
  const std::string vol_path = "/app_instances/src/storage_instances/storage-1/volumes/volume-1";
  ASSERT_TRUE(model_
                  .create_app_instance("/root", clone_body("c-1", "clone_snapshot_src",
                                                           vol_path + "/snapshots/" + s->utc_ts))
                  .ok());
  const std::string text = model_.to_json().dump();
  Model restored(opts(), clock_.clock());
  ASSERT_TRUE(restored.load_json(json::parse(text)).ok());
  EXPECT_EQ(restored.to_json().dump(), text);
  auto back = restored.get_snapshot("/root", "src", "storage-1", "volume-1", s->utc_ts);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->uuid, kSnapUuid);
  EXPECT_EQ(back->created_ms, s->created_ms);
  EXPECT_EQ(error_edf_code(snap(restored, "src", {{"uuid", kSnapUuid}}).error()), 15)
      << "the uuid is still taken after a restart";
  EXPECT_EQ(
      restored.get_app_instance("/root", "c-1")->storage_instances[0].volumes[0].clone_of_snapshot,
      s->utc_ts);

  // A state file from before snapshots (no such keys) still loads, with none.
  json old = json::parse(text);
  for (auto& ai : old["tenants"]["/root"]["app_instances"]) {
    for (auto& si : ai["storage_instances"]) {
      for (auto& v : si["volumes"]) {
        v.erase("snapshots");
        v.erase("clone_of_volume");
        v.erase("clone_of_snapshot");
      }
    }
  }
  Model legacy(opts(), clock_.clock());
  ASSERT_TRUE(legacy.load_json(old).ok());
  EXPECT_TRUE(legacy.list_snapshots("/root", "src", "storage-1", "volume-1")->empty());

  // A snapshot whose utc_ts could not be a file name is refused.
  json bad = json::parse(text);
  bad["tenants"]["/root"]["app_instances"][0]["storage_instances"][0]["volumes"][0]["snapshots"][0]
     ["utc_ts"] = "../x";
  EXPECT_FALSE(Model(opts(), clock_.clock()).load_json(bad).ok());
}

TEST(SessionsTest, KeysExpireByTheClockAndOnDemand) {
  testing::FakeClock clock;
  Sessions s(clock.clock(), 15min, {{"admin", "password"}}, 1);
  EXPECT_EQ(s.login("admin", "wrong_pw").error().code, http_status(401));
  EXPECT_EQ(s.login("nobody", "password").error().code, http_status(401));
  EXPECT_EQ(s.login("a!", "password").error().code, http_status(400));
  auto key = s.login("admin", "password");
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key->size(), 32u);
  EXPECT_TRUE(s.valid(*key));
  clock.advance(15min - 1ms);
  EXPECT_TRUE(s.valid(*key));
  clock.advance(1ms);
  EXPECT_FALSE(s.valid(*key));
  auto k2 = s.login("admin", "password");
  ASSERT_TRUE(k2.ok());
  EXPECT_NE(*k2, *key);
  s.expire_all();
  EXPECT_FALSE(s.valid(*k2));
  EXPECT_FALSE(s.valid(""));
}

// Real arrays take any printable password (the published schema regex is narrower than what
// customers use); the simulator only bounds the length and refuses controls and broken UTF-8.
TEST(SessionsTest, PasswordsMayHoldAnyPrintableCharacter) {
  testing::FakeClock clock;
  const std::string pw = "pä ss\"w&o%r+d=\\ü'";
  Sessions s(clock.clock(), 15min, {{"admin", pw}, {"long", std::string(256, 'x')}}, 1);
  EXPECT_TRUE(s.login("admin", pw).ok());
  EXPECT_EQ(s.login("admin", pw + "x").error().code, http_status(401));
  EXPECT_EQ(s.login("admin", "pw").error().code, http_status(401))
      << "short is wrong, not malformed";
  EXPECT_TRUE(s.login("long", std::string(256, 'x')).ok());
  for (const std::string& bad :
       {std::string("pw\nx"), std::string("pw\tx"), std::string("pw\x7f"), std::string("pw\xff"),
        std::string(257, 'x'), std::string("pw\0x", 4)}) {
    auto r = s.login("admin", bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, http_status(400));
    EXPECT_EQ(r.error().message.find(bad), std::string::npos) << "never echoed";
  }
}

}  // namespace
}  // namespace datera::sim

// datera-agentctl migrate's planner: FlexVolume PVs in, CSI PVs and a plan out, refusals named.

#include "tools/agentctl/migrate.h"

#include <gtest/gtest.h>

namespace datera::agentctl {
namespace {

Json flex_pv(const std::string& name, Json options, const std::string& phase = "Bound") {
  return Json::parse(R"({"apiVersion":"v1","kind":"PersistentVolume",
    "metadata":{"name":"","labels":{"app":"db"}},
    "spec":{"capacity":{"storage":"10Gi"},"accessModes":["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy":"Delete","storageClassName":"datera",
            "mountOptions":["noatime"],
            "claimRef":{"kind":"PersistentVolumeClaim","namespace":"prod","name":"data-db-0",
                        "uid":"u-1","resourceVersion":"77"},
            "flexVolume":{"driver":"datera/iscsi","fsType":"xfs","options":{}}},
    "status":{"phase":""}})")
      .patch(Json::array(
          {{{"op", "replace"}, {"path", "/metadata/name"}, {"value", name}},
           {{"op", "replace"}, {"path", "/spec/flexVolume/options"}, {"value", options}},
           {{"op", "replace"}, {"path", "/status/phase"}, {"value", phase}}}));
}

Json list(std::vector<Json> items) {
  return {{"apiVersion", "v1"}, {"kind", "List"}, {"items", items}};
}

TEST(Migrate, AFlexVolumePvBecomesACsiPvOfTheSameVolumeBoundToTheSameClaim) {
  const auto plan = plan_migration(
      list({flex_pv("pv-datera-0", {{"volumeID", "vol-0"}, {"replica", "3"}, {"size", "10"}})}),
      Json(), MigrateOptions{});
  ASSERT_TRUE(plan.refused.empty()) << plan.text();
  ASSERT_EQ(plan.migrated.size(), 1u);
  const Json& m = plan.migrated[0].manifest;
  EXPECT_EQ(m["metadata"]["name"], "pv-datera-0") << "the PVC's volumeName still names it";
  EXPECT_EQ(m["metadata"]["labels"]["app"], "db");
  const Json& spec = m["spec"];
  EXPECT_EQ(spec["csi"]["driver"], "agent.iscsi.datera.io");
  EXPECT_EQ(spec["csi"]["volumeHandle"], "vol-0");
  EXPECT_EQ(spec["csi"]["fsType"], "xfs");
  EXPECT_EQ(spec["csi"]["volumeAttributes"]["replica"], "3");
  EXPECT_EQ(spec["capacity"]["storage"], "10Gi");
  EXPECT_EQ(spec["accessModes"], Json::array({"ReadWriteOnce"}));
  EXPECT_EQ(spec["persistentVolumeReclaimPolicy"], "Delete");
  EXPECT_EQ(spec["storageClassName"], "datera");
  EXPECT_EQ(spec["mountOptions"], Json::array({"noatime"}));
  EXPECT_EQ(spec["claimRef"]["name"], "data-db-0");
  EXPECT_EQ(spec["claimRef"]["uid"], "u-1");
  EXPECT_FALSE(spec["claimRef"].contains("resourceVersion"));
  EXPECT_FALSE(spec.contains("flexVolume"));
  EXPECT_EQ(plan.manifests()["kind"], "List");
  const std::string text = plan.text();
  EXPECT_NE(text.find("persistentVolumeReclaimPolicy\":\"Retain"), std::string::npos) << text;
  EXPECT_LT(text.find("kubectl patch pv pv-datera-0"), text.find("kubectl delete pv pv-datera-0"))
      << "Retain before the delete, or the delete takes the volume with it:\n"
      << text;
}

TEST(Migrate, TheVolumeIsThePvNameWhenNoVolumeIdWasGivenAsFlexVolumeChose) {
  const auto plan = plan_migration(flex_pv("pv-datera-1", Json::object()), Json(), {});
  ASSERT_EQ(plan.migrated.size(), 1u) << plan.text();
  EXPECT_EQ(plan.migrated[0].volume, "pv-datera-1");
}

TEST(Migrate, RefusalsSayWhyAndNeverEchoCredentials) {
  const auto plan = plan_migration(
      list({flex_pv("pv-creds", {{"serverUser", "admin"}, {"serverPasswd", "hunter2"}}),
            flex_pv("pv-other", {{"backstoreServer", "10.0.0.9"}}),
            flex_pv("pv-free", Json::object(), "Released"),
            flex_pv("pv-odd", {{"frobnicate", "yes"}}),
            flex_pv("pv-gone", {{"retainPolicy", "never"}}),
            flex_pv("pv-twin", {{"volumeID", "pv-free-twin"}}),
            flex_pv("pv-twin2", {{"volumeID", "pv-free-twin"}})}),
      Json(), {});
  ASSERT_EQ(plan.refused.size(), 6u) << plan.text();
  const std::string text = plan.text();
  EXPECT_NE(text.find("pv-creds: its options carry credentials"), std::string::npos) << text;
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
  EXPECT_NE(text.find("pv-other: it names another array"), std::string::npos) << text;
  EXPECT_NE(text.find("pv-free: it is not Bound"), std::string::npos) << text;
  EXPECT_NE(text.find("pv-odd: option 'frobnicate'"), std::string::npos) << text;
  EXPECT_NE(text.find("pv-gone: its retainPolicy is never"), std::string::npos) << text;
  EXPECT_NE(text.find("pv-twin2: another PV names the same app instance"), std::string::npos)
      << text;
}

TEST(Migrate, ASecretRefNeedsItsNamespaceAndBecomesTheCsiSecretRefs) {
  Json pv = flex_pv("pv-sec", {{"backstoreServer", "10.0.0.9"}});
  pv["spec"]["flexVolume"]["secretRef"] = {{"name", "edf-other"}};
  EXPECT_EQ(plan_migration(pv, Json(), {}).refused.size(), 1u);
  MigrateOptions o;
  o.secret_namespace = "datera-system";
  const auto plan = plan_migration(pv, Json(), o);
  ASSERT_EQ(plan.migrated.size(), 1u) << plan.text();
  const Json& csi = plan.migrated[0].manifest["spec"]["csi"];
  for (const char* k :
       {"nodeStageSecretRef", "controllerPublishSecretRef", "controllerExpandSecretRef"}) {
    EXPECT_EQ(csi[k]["name"], "edf-other") << k;
    EXPECT_EQ(csi[k]["namespace"], "datera-system") << k;
  }
  EXPECT_EQ(csi["volumeAttributes"]["backstoreServer"], "10.0.0.9");
}

TEST(Migrate, PodsUsingTheClaimAreListedToScaleDownFirst) {
  const Json pods = Json::parse(R"({"items":[
    {"metadata":{"namespace":"prod","name":"db-0"},"status":{"phase":"Running"},
     "spec":{"volumes":[{"name":"d","persistentVolumeClaim":{"claimName":"data-db-0"}}]}},
    {"metadata":{"namespace":"prod","name":"old-job"},"status":{"phase":"Succeeded"},
     "spec":{"volumes":[{"name":"d","persistentVolumeClaim":{"claimName":"data-db-0"}}]}},
    {"metadata":{"namespace":"dev","name":"db-0"},"status":{"phase":"Running"},
     "spec":{"volumes":[{"name":"d","persistentVolumeClaim":{"claimName":"data-db-0"}}]}}]})");
  const auto plan = plan_migration(flex_pv("pv-datera-0", Json::object()), pods, {});
  ASSERT_EQ(plan.migrated.size(), 1u);
  EXPECT_EQ(plan.migrated[0].pods, std::vector<std::string>{"prod/db-0"});
  EXPECT_NE(plan.text().find("scale down what runs these pods, and wait until they are gone: "
                             "prod/db-0"),
            std::string::npos)
      << plan.text();
}

TEST(Migrate, OtherDriversAndGarbageAreLeftAlone) {
  Json nfs = flex_pv("pv-nfs", Json::object());
  nfs["spec"]["flexVolume"]["driver"] = "other/nfs";
  const auto plan = plan_migration(list({nfs, Json("not an object"), Json::array()}), Json(), {});
  EXPECT_TRUE(plan.migrated.empty());
  EXPECT_EQ(plan.other, 1u);
  EXPECT_EQ(plan_migration(Json("x"), Json(), {}).refused.size(), 1u);
}

// Datera's own CSI driver (dsp.csi.daterainc.io): its PVs are imported as the same volumes.
Json datera_csi_pv(const std::string& name, Json attributes, const std::string& phase = "Bound") {
  return Json::parse(R"({"apiVersion":"v1","kind":"PersistentVolume",
    "metadata":{"name":"","annotations":{"pv.kubernetes.io/provisioned-by":"dsp.csi.daterainc.io"}},
    "spec":{"capacity":{"storage":"5Gi"},"accessModes":["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy":"Delete","storageClassName":"dat-block-storage",
            "volumeMode":"Filesystem","mountOptions":["discard"],
            "claimRef":{"kind":"PersistentVolumeClaim","namespace":"shop","name":"data-pg-0",
                        "uid":"u-9","resourceVersion":"12"},
            "csi":{"driver":"dsp.csi.daterainc.io","fsType":"xfs","volumeAttributes":{},
                   "volumeHandle":""}},
    "status":{"phase":""}})")
      .patch(Json::array(
          {{{"op", "replace"}, {"path", "/metadata/name"}, {"value", name}},
           {{"op", "replace"}, {"path", "/spec/csi/volumeHandle"}, {"value", "CSI-" + name}},
           {{"op", "replace"}, {"path", "/spec/csi/volumeAttributes"}, {"value", attributes}},
           {{"op", "replace"}, {"path", "/status/phase"}, {"value", phase}}}));
}

TEST(Migrate, ADateraCsiPvBecomesOurCsiPvOfTheSameAppInstance) {
  const auto plan = plan_migration(
      list({datera_csi_pv("pvc-1b2c", {{"replica_count", "3"},
                                       {"placement_mode", "hybrid"},
                                       {"storage.kubernetes.io/csiProvisionerIdentity", "1-x"}})}),
      Json(), {});
  ASSERT_TRUE(plan.refused.empty()) << plan.text();
  ASSERT_EQ(plan.migrated.size(), 1u);
  const auto& m = plan.migrated[0];
  EXPECT_EQ(m.volume, "CSI-pvc-1b2c");
  EXPECT_TRUE(m.datera_csi);
  const Json& pv = m.manifest;
  EXPECT_EQ(pv["metadata"]["name"], "pvc-1b2c");
  EXPECT_EQ(pv["metadata"]["annotations"]["datera.com/migrated-from"], "dsp.csi.daterainc.io");
  EXPECT_EQ(pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
            "agent.iscsi.datera.io");
  const Json& spec = pv["spec"];
  EXPECT_EQ(spec["csi"]["driver"], "agent.iscsi.datera.io");
  EXPECT_EQ(spec["csi"]["volumeHandle"], "CSI-pvc-1b2c");
  EXPECT_EQ(spec["csi"]["fsType"], "xfs");
  EXPECT_EQ(spec["csi"]["volumeAttributes"], (Json{{"fsType", "xfs"}}))
      << "Datera's creation parameters are not ours";
  EXPECT_FALSE(spec["csi"].contains("nodeStageSecretRef"));
  EXPECT_EQ(spec["capacity"]["storage"], "5Gi");
  EXPECT_EQ(spec["accessModes"], Json::array({"ReadWriteOnce"}));
  EXPECT_EQ(spec["persistentVolumeReclaimPolicy"], "Delete");
  EXPECT_EQ(spec["storageClassName"], "dat-block-storage");
  EXPECT_EQ(spec["volumeMode"], "Filesystem");
  EXPECT_EQ(spec["mountOptions"], Json::array({"discard"}));
  EXPECT_EQ(spec["claimRef"]["namespace"], "shop");
  EXPECT_EQ(spec["claimRef"]["name"], "data-pg-0");
  EXPECT_EQ(spec["claimRef"]["uid"], "u-9");
  EXPECT_FALSE(spec["claimRef"].contains("resourceVersion"));
  const std::string text = plan.text();
  for (const char* says :
       {"1 PV(s) to migrate (0 FlexVolume, 1 of Datera's CSI)", "from dsp.csi.daterainc.io",
        "delete_on_unmount", "stop Datera's CSI node plugin",
        "dropped (read only when Datera's driver created the volume): placement_mode "
        "replica_count storage.kubernetes.io/csiProvisionerIdentity"}) {
    EXPECT_NE(text.find(says), std::string::npos) << says << " in:\n" << text;
  }
  EXPECT_LT(text.find("kubectl patch pv pvc-1b2c"), text.find("kubectl delete pv pvc-1b2c"))
      << "Retain before the delete: a CSI PV's Delete policy deletes the app instance\n"
      << text;
}

TEST(Migrate, ADateraCsiPvWithoutFsTypeIsExt4AsDaterasNodePluginMadeIt) {
  Json pv = datera_csi_pv("pvc-2", Json::object());
  pv["spec"]["csi"].erase("fsType");
  const auto plan = plan_migration(pv, Json(), {});
  ASSERT_EQ(plan.migrated.size(), 1u) << plan.text();
  EXPECT_EQ(plan.migrated[0].manifest["spec"]["csi"]["fsType"], "ext4");
}

TEST(Migrate, DateraCsiPvsThatWouldAttachDifferentlyOrLoseDataAreRefused) {
  Json chap = datera_csi_pv("pvc-chap", Json::object());
  chap["spec"]["csi"]["nodeStageSecretRef"] = {{"name", "chap-secret"}, {"namespace", "default"}};
  Json bad_name = datera_csi_pv("pvc-bad", Json::object());
  bad_name["spec"]["csi"]["volumeHandle"] = "../../etc/passwd";
  Json odd_fs = datera_csi_pv("pvc-btrfs", Json::object());
  odd_fs["spec"]["csi"]["fsType"] = "btrfs";
  Json control = datera_csi_pv("pvc-ctl", {{"replica_count", "3\n"}});
  const auto plan =
      plan_migration(list({chap, bad_name, odd_fs, control,
                           datera_csi_pv("pvc-doomed", {{"delete_on_unmount", "true"}}),
                           datera_csi_pv("pvc-odd", {{"frobnicate", "1"}}),
                           datera_csi_pv("pvc-free", Json::object(), "Released")}),
                     Json(), {});
  EXPECT_TRUE(plan.migrated.empty()) << plan.text();
  ASSERT_EQ(plan.refused.size(), 7u) << plan.text();
  const std::string text = plan.text();
  for (const char* says :
       {"pvc-chap: its nodeStageSecretRef (Secret chap-secret) holds the iSCSI CHAP",
        "pvc-bad: its volumeHandle is not an EDF app instance name",
        "pvc-btrfs: its fsType is not xfs or ext4",
        "pvc-ctl: volume attribute 'replica_count' is not a plain string",
        "pvc-doomed: delete_on_unmount is true", "pvc-odd: volume attribute 'frobnicate'",
        "pvc-free: it is not Bound"}) {
    EXPECT_NE(text.find(says), std::string::npos) << says << " in:\n" << text;
  }
}

TEST(Migrate, ADateraCsiPvAndAFlexVolumePvOfOneAppInstanceAreOneTooMany) {
  Json csi = datera_csi_pv("pvc-3", Json::object());
  const auto plan =
      plan_migration(list({csi, flex_pv("pv-flex-3", {{"volumeID", "CSI-pvc-3"}})}), Json(), {});
  ASSERT_EQ(plan.migrated.size(), 1u) << plan.text();
  ASSERT_EQ(plan.refused.size(), 1u);
  EXPECT_EQ(plan.refused[0].pv, "pv-flex-3");
}

TEST(Migrate, FieldsOfTheWrongTypeAreNeverAnException) {
  Json csi = datera_csi_pv("pvc-5", Json::object());
  csi["spec"]["csi"]["readOnly"] = "yes";
  csi["spec"]["persistentVolumeReclaimPolicy"] = 5;
  Json flex = flex_pv("pv-5", Json::object());
  flex["spec"]["flexVolume"]["readOnly"] = Json::array();
  MigrationPlan plan;
  ASSERT_NO_THROW(plan = plan_migration(list({csi, flex}), Json(), {}));
  ASSERT_EQ(plan.migrated.size(), 2u) << plan.text();
  EXPECT_FALSE(plan.migrated[0].manifest["spec"]["csi"].contains("readOnly"));
  EXPECT_EQ(plan.migrated[0].manifest["spec"]["persistentVolumeReclaimPolicy"], "Retain");
}

TEST(Migrate, OtherCsiDriversAreLeftAlone) {
  Json ours = datera_csi_pv("pvc-4", Json::object());
  ours["spec"]["csi"]["driver"] = "agent.iscsi.datera.io";
  const auto plan = plan_migration(ours, Json(), {});
  EXPECT_TRUE(plan.migrated.empty());
  EXPECT_EQ(plan.other, 1u);
}

}  // namespace
}  // namespace datera::agentctl

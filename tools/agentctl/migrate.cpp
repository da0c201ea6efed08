#include "tools/agentctl/migrate.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "base/json.h"
#include "plugins/edf/options.h"

namespace datera::agentctl {

namespace {

std::string str(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const Json& obj(const Json& j, const char* key) {
  static const Json kEmpty = Json::object();
  const auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : kEmpty;
}

/// Options that describe the volume: carried over as CSI volume attributes (the node agent parses
/// them like StorageClass parameters).
bool carried(const std::string& key) {
  return edf::is_volume_spec_option(key) || key == "size";
}

/// Options FlexVolume (kubelet) adds itself, or that CSI expresses elsewhere: dropped.
bool kubelet_option(const std::string& key) {
  return key.rfind("kubernetes.io/", 0) == 0 || key == "volumeID" || key == "fsType" ||
         key == "mountOptions";
}

/// "namespace/name" of every pod (not finished) that mounts `claim` in `ns`.
std::vector<std::string> pods_of(const Json& pods, const std::string& ns,
                                 const std::string& claim) {
  std::vector<std::string> out;
  if (!pods.is_object()) return out;
  for (const auto& p : pods.value("items", Json::array())) {
    if (!p.is_object()) continue;
    const Json& md = obj(p, "metadata");
    if (str(md, "namespace") != ns) continue;
    const std::string phase = str(obj(p, "status"), "phase");
    if (phase == "Succeeded" || phase == "Failed") continue;
    for (const auto& v : obj(p, "spec").value("volumes", Json::array())) {
      if (v.is_object() && str(obj(v, "persistentVolumeClaim"), "claimName") == claim) {
        out.push_back(ns + "/" + str(md, "name"));
        break;
      }
    }
  }
  return out;
}

// NOLINTNEXTLINE(bugprone-exception-escape): the implicit moves of nlohmann::json only assert
struct Converted {
  Json manifest;
  std::string volume;
  std::string why_not;
};

Converted convert(const Json& pv, const MigrateOptions& o) {
  Converted c;
  const Json& md = obj(pv, "metadata");
  const Json& spec = obj(pv, "spec");
  const Json& flex = obj(spec, "flexVolume");
  const std::string name = str(md, "name");
  const Json& options = obj(flex, "options");
  for (const auto& [key, value] : options.items()) {
    if (!value.is_string()) return {{}, "", "option '" + key + "' is not a string"};
    if (datera::json::has_control_char(value.get<std::string>()) ||
        datera::json::has_control_char(key)) {
      return {{}, "", "option '" + key + "' holds a control character"};
    }
    if (key == "serverUser" || key == "serverPasswd") {
      return {{},
              "",
              "its options carry credentials (" + key +
                  "); put them in a Secret (keys username, password) and name it in "
                  "secretRef first, then migrate"};
    }
    if (key == "retainPolicy" && value.get<std::string>() == "never") {
      return {{},
              "",
              "its retainPolicy is never: the last FlexVolume unmount (scaling down, step "
              "1) deletes the app instance and its data, and a PV's volume source cannot "
              "be edited; this PV cannot be moved safely"};
    }
    if (key == "backstoreServer" && o.secret_namespace.empty()) {
      return {{},
              "",
              "it names another array (backstoreServer): CSI takes the array from a "
              "Secret's 'server' key; rerun with --secret-namespace where that Secret is"};
    }
    if (!kubelet_option(key) && !carried(key) && key != "backstoreServer") {
      return {{}, "", "option '" + key + "' has no CSI equivalent here"};
    }
  }
  const Json& secret = obj(flex, "secretRef");
  if (!secret.empty() && o.secret_namespace.empty()) {
    return {{},
            "",
            "it has a secretRef: rerun with --secret-namespace (the namespace of Secret " +
                str(secret, "name") + ")"};
  }
  const Json& claim = obj(spec, "claimRef");
  if (str(obj(pv, "status"), "phase") != "Bound" || str(claim, "name").empty()) {
    return {{},
            "",
            "it is not Bound to a claim (phase '" + str(obj(pv, "status"), "phase") +
                "'): nothing to re-bind"};
  }
  c.volume = str(options, "volumeID");
  if (c.volume.empty()) c.volume = name;  // FlexVolume's own fallback: the PV name
  std::string fs = str(flex, "fsType");
  if (fs.empty()) fs = str(options, "fsType");
  if (fs.empty()) fs = "xfs";  // the FlexVolume driver's default

  Json csi = {{"driver", o.driver}, {"volumeHandle", c.volume}, {"fsType", fs}};
  Json attrs = Json::object();
  for (const auto& [key, value] : options.items()) {
    if (carried(key) || key == "backstoreServer") attrs[key] = value;
  }
  attrs["fsType"] = fs;
  csi["volumeAttributes"] = attrs;
  if (flex.value("readOnly", false)) csi["readOnly"] = true;
  if (!secret.empty()) {
    const Json ref = {{"name", str(secret, "name")}, {"namespace", o.secret_namespace}};
    for (const char* k :
         {"nodeStageSecretRef", "controllerPublishSecretRef", "controllerExpandSecretRef"}) {
      csi[k] = ref;
    }
  }
  Json out_spec = {{"capacity", obj(spec, "capacity")},
                   {"accessModes", spec.value("accessModes", Json::array())},
                   {"persistentVolumeReclaimPolicy",
                    spec.value("persistentVolumeReclaimPolicy", std::string("Retain"))},
                   {"csi", csi},
                   {"claimRef",
                    {{"apiVersion", "v1"},
                     {"kind", "PersistentVolumeClaim"},
                     {"namespace", str(claim, "namespace")},
                     {"name", str(claim, "name")},
                     {"uid", str(claim, "uid")}}}};
  if (str(claim, "uid").empty()) out_spec["claimRef"].erase("uid");
  for (const char* k : {"storageClassName", "volumeMode"}) {
    if (!str(spec, k).empty()) out_spec[k] = str(spec, k);
  }
  if (spec.contains("mountOptions") && spec["mountOptions"].is_array()) {
    out_spec["mountOptions"] = spec["mountOptions"];
  }
  Json labels = obj(md, "labels");
  Json meta = {{"name", name},
               {"annotations",
                {{"datera.com/migrated-from", o.flex_driver},
                 {"pv.kubernetes.io/provisioned-by", o.driver}}}};
  if (!labels.empty()) meta["labels"] = labels;
  c.manifest = {
      {"apiVersion", "v1"}, {"kind", "PersistentVolume"}, {"metadata", meta}, {"spec", out_spec}};
  return c;
}

}  // namespace

MigrationPlan plan_migration(const Json& pvs, const Json& pods, const MigrateOptions& options) {
  MigrationPlan plan;
  std::vector<Json> items;
  if (pvs.is_object() && str(pvs, "kind") == "PersistentVolume") {
    items.push_back(pvs);
  } else if (pvs.is_object() && pvs.contains("items") && pvs["items"].is_array()) {
    items.assign(pvs["items"].begin(), pvs["items"].end());
  } else {
    plan.refused.push_back({"<input>", "not a PersistentVolume or a List of them"});
    return plan;
  }
  std::set<std::string> volumes;
  for (const auto& pv : items) {
    if (!pv.is_object()) continue;
    const std::string name = str(obj(pv, "metadata"), "name");
    if (str(obj(obj(pv, "spec"), "flexVolume"), "driver") != options.flex_driver) {
      ++plan.other;
      continue;
    }
    Converted c = convert(pv, options);
    if (c.manifest.is_null()) {
      plan.refused.push_back({name, c.why_not});
      continue;
    }
    if (!volumes.insert(c.volume).second) {
      plan.refused.push_back(
          {name, "another PV names the same app instance " + c.volume + ": one volume, one PV"});
      continue;
    }
    const Json& claim = obj(obj(pv, "spec"), "claimRef");
    MigratedPv m;
    m.pv = name;
    m.volume = c.volume;
    m.claim = str(claim, "namespace") + "/" + str(claim, "name");
    m.pods = pods_of(pods, str(claim, "namespace"), str(claim, "name"));
    m.manifest = std::move(c.manifest);
    plan.migrated.push_back(std::move(m));
  }
  return plan;
}

Json MigrationPlan::manifests() const {
  Json items = Json::array();
  for (const auto& m : migrated) items.push_back(m.manifest);
  return {{"apiVersion", "v1"}, {"kind", "List"}, {"items", items}};
}

std::string MigrationPlan::text() const {
  std::ostringstream o;
  o << migrated.size() << " FlexVolume PV(s) to migrate, " << refused.size() << " refused, "
    << other << " of other drivers left alone.\n";
  if (!migrated.empty()) {
    o << "\nFor each PV, in this order (nothing is reformatted: the CSI node stage finds the "
         "filesystem and mounts it):\n";
  }
  for (const auto& m : migrated) {
    o << "\n" << m.pv << " (app instance " << m.volume << ", claim " << m.claim << ")\n";
    if (m.pods.empty()) {
      o << "  1. no pod uses the claim now (as far as the pod list given shows)\n";
    } else {
      o << "  1. scale down what runs these pods, and wait until they are gone:";
      for (const auto& p : m.pods) o << " " << p;
      o << "\n";
    }
    o << "  2. kubectl patch pv " << m.pv
      << " -p '{\"spec\":{\"persistentVolumeReclaimPolicy\":\"Retain\"}}'\n"
      << "  3. kubectl delete pv " << m.pv << "   (Retain: the app instance stays)\n"
      << "  4. kubectl apply -f <the CSI PV " << m.pv << " from the manifests>\n"
      << "  5. wait until claim " << m.claim << " is Bound to " << m.pv
      << " again, then scale back up\n";
  }
  if (!refused.empty()) o << "\nRefused (nothing to do for these until fixed):\n";
  for (const auto& r : refused) o << "  " << r.pv << ": " << r.reason << "\n";
  return o.str();
}

}  // namespace datera::agentctl

#include "tools/agentctl/migrate.h"

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>

#include "base/json.h"
#include "plugins/edf/options.h"
#include "plugins/edf/types.h"

namespace datera::agentctl {

namespace {

std::string str(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

/// A boolean field; false when absent or of another type (json::value() would throw).
bool flag(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
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
struct Source {
  std::string volume;  ///< the app instance: the CSI volumeHandle
  std::string fs_type;
  Json attributes = Json::object();  ///< the CSI volumeAttributes
  std::string secret;                ///< the Secret the CSI secret refs name ("": none)
  bool read_only = false;
  std::vector<std::string> dropped;  ///< what only mattered at creation: named in the plan
};

struct Read {
  std::optional<Source> source;
  std::string why_not;
};

Read refuse(std::string why) {
  return {std::nullopt, std::move(why)};
}

/// A FlexVolume PV of `datera/iscsi`: its options, checked one by one.
Read read_flex(const Json& pv, const MigrateOptions& o) {
  const Json& flex = obj(obj(pv, "spec"), "flexVolume");
  const Json& options = obj(flex, "options");
  for (const auto& [key, value] : options.items()) {
    if (!value.is_string()) return refuse("option '" + key + "' is not a string");
    if (datera::json::has_control_char(value.get<std::string>()) ||
        datera::json::has_control_char(key)) {
      return refuse("option '" + key + "' holds a control character");
    }
    if (key == "serverUser" || key == "serverPasswd") {
      return refuse("its options carry credentials (" + key +
                    "); put them in a Secret (keys username, password) and name it in "
                    "secretRef first, then migrate");
    }
    if (key == "retainPolicy" && value.get<std::string>() == "never") {
      return refuse(
          "its retainPolicy is never: the last FlexVolume unmount (scaling down, step 1) deletes "
          "the app instance and its data, and a PV's volume source cannot be edited; this PV "
          "cannot be moved safely");
    }
    if (key == "backstoreServer" && o.secret_namespace.empty()) {
      return refuse(
          "it names another array (backstoreServer): CSI takes the array from a Secret's "
          "'server' key; rerun with --secret-namespace where that Secret is");
    }
    if (!kubelet_option(key) && !carried(key) && key != "backstoreServer") {
      return refuse("option '" + key + "' has no CSI equivalent here");
    }
  }
  const Json& secret = obj(flex, "secretRef");
  if (!secret.empty() && o.secret_namespace.empty()) {
    return refuse("it has a secretRef: rerun with --secret-namespace (the namespace of Secret " +
                  str(secret, "name") + ")");
  }
  Source s;
  s.volume = str(options, "volumeID");
  if (s.volume.empty()) s.volume = str(obj(pv, "metadata"), "name");  // FlexVolume's fallback
  s.fs_type = str(flex, "fsType");
  if (s.fs_type.empty()) s.fs_type = str(options, "fsType");
  if (s.fs_type.empty()) s.fs_type = "xfs";  // the FlexVolume driver's default
  for (const auto& [key, value] : options.items()) {
    if (carried(key) || key == "backstoreServer") s.attributes[key] = value;
  }
  s.secret = str(secret, "name");
  s.read_only = flag(flex, "readOnly");
  return {std::move(s), ""};
}

/// Volume attributes (and StorageClass parameters) of Datera's CSI driver it reads only when it
/// creates a volume (they live in the app instance and its metadata since): nothing the node's
/// attach depends on. Anything else is refused rather than guessed at.
// Its StorageClass parameters, which its CreateVolume copies into the app instance.
constexpr std::array<std::string_view, 15> kDateraCreationOnly = {"iops_per_gb",
                                                                  "bandwidth_per_gb",
                                                                  "placement_mode",
                                                                  "placement_policy",
                                                                  "round_robin",
                                                                  "replica_count",
                                                                  "ip_pool",
                                                                  "template",
                                                                  "disable_template_override",
                                                                  "read_iops_max",
                                                                  "write_iops_max",
                                                                  "total_iops_max",
                                                                  "read_bandwidth_max",
                                                                  "write_bandwidth_max",
                                                                  "total_bandwidth_max"};

bool datera_creation_only(const std::string& key) {
  return std::find(kDateraCreationOnly.begin(), kDateraCreationOnly.end(), key) !=
             kDateraCreationOnly.end() ||
         key.rfind("storage.kubernetes.io/", 0) == 0 || key.rfind("csi.storage.k8s.io/", 0) == 0;
}

constexpr size_t kMaxAttributes = 64;

/// A CSI PV of Datera's own driver: the volume handle is the app instance's name (its
/// CreateVolume names it "CSI-" + the PV name); the node side reads everything else from the app
/// instance's metadata, so the attributes only mattered at creation.
Read read_datera_csi(const Json& pv) {
  const Json& csi = obj(obj(pv, "spec"), "csi");
  Source s;
  s.volume = str(csi, "volumeHandle");
  if (datera::json::has_control_char(s.volume) || !edf::is_valid_name(s.volume)) {
    return refuse("its volumeHandle is not an EDF app instance name");
  }
  s.fs_type = str(csi, "fsType");
  if (s.fs_type.empty()) s.fs_type = "ext4";  // what Datera's node plugin made without one
  if (s.fs_type != "xfs" && s.fs_type != "ext4") {
    return refuse("its fsType is not xfs or ext4 (the filesystems this driver mounts)");
  }
  const Json& attrs = obj(csi, "volumeAttributes");
  if (attrs.size() > kMaxAttributes) return refuse("it has too many volumeAttributes");
  for (const auto& [key, value] : attrs.items()) {
    if (!value.is_string() || datera::json::has_control_char(key) ||
        datera::json::has_control_char(value.get<std::string>())) {
      return refuse("volume attribute '" + (datera::json::has_control_char(key) ? "?" : key) +
                    "' is not a plain string");
    }
    if (key == "delete_on_unmount") {
      if (value.get<std::string>() == "true") {
        return refuse(
            "delete_on_unmount is true: Datera's node plugin deletes the app instance when it "
            "unstages it (scaling down, step 1); this PV cannot be moved safely");
      }
      s.dropped.push_back(key);
      continue;
    }
    if (!datera_creation_only(key)) {
      return refuse("volume attribute '" + key + "' is not one Datera's CSI driver documents");
    }
    s.dropped.push_back(key);
  }
  if (const Json& chap = obj(csi, "nodeStageSecretRef"); !str(chap, "name").empty()) {
    // Datera's node stage reads iSCSI CHAP credentials (node.session.auth.*) from it; this
    // driver's node-stage Secret is an EDF account, and it logs in without CHAP.
    const std::string secret = str(chap, "name");
    return refuse("its nodeStageSecretRef (Secret " +
                  (datera::json::has_control_char(secret) ? std::string("?") : secret) +
                  ") holds the iSCSI CHAP credentials Datera's node plugin logs in with; this "
                  "driver logs in without CHAP, so its login would be refused. Keep this PV on "
                  "Datera's CSI, or copy its data to a new volume");
  }
  // Datera's driver reads no other secret at attach time (the array account is its own
  // deployment's): these refs are dropped.
  for (const char* k : {"nodePublishSecretRef", "controllerPublishSecretRef",
                        "controllerExpandSecretRef", "nodeExpandSecretRef"}) {
    if (!str(obj(csi, k), "name").empty()) s.dropped.emplace_back(k);
  }
  s.attributes["fsType"] = s.fs_type;
  s.read_only = flag(csi, "readOnly");
  return {std::move(s), ""};
}

// NOLINTNEXTLINE(bugprone-exception-escape): the implicit moves of nlohmann::json only assert
struct Converted {
  Json manifest;
  std::string why_not;
};

/// The one writer: a CSI PV of this driver for `s`, with everything the claim binds by kept.
Converted write_csi_pv(const Json& pv, const Source& s, const std::string& from,
                       const MigrateOptions& o) {
  const Json& md = obj(pv, "metadata");
  const Json& spec = obj(pv, "spec");
  const Json& claim = obj(spec, "claimRef");
  if (str(obj(pv, "status"), "phase") != "Bound" || str(claim, "name").empty()) {
    return {{},
            "it is not Bound to a claim (phase '" + str(obj(pv, "status"), "phase") +
                "'): nothing to re-bind"};
  }
  if (!edf::is_valid_name(s.volume)) {
    return {{}, "its app instance name is not a valid EDF name"};
  }
  const std::string reclaim = str(spec, "persistentVolumeReclaimPolicy");
  Json attrs = s.attributes;
  attrs["fsType"] = s.fs_type;
  Json csi = {{"driver", o.driver},
              {"volumeHandle", s.volume},
              {"fsType", s.fs_type},
              {"volumeAttributes", attrs}};
  if (s.read_only) csi["readOnly"] = true;
  if (!s.secret.empty()) {
    const Json ref = {{"name", s.secret}, {"namespace", o.secret_namespace}};
    for (const char* k :
         {"nodeStageSecretRef", "controllerPublishSecretRef", "controllerExpandSecretRef"}) {
      csi[k] = ref;
    }
  }
  Json out_spec = {{"capacity", obj(spec, "capacity")},
                   {"accessModes", spec.value("accessModes", Json::array())},
                   {"persistentVolumeReclaimPolicy", reclaim.empty() ? "Retain" : reclaim},
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
  Json meta = {
      {"name", str(md, "name")},
      {"annotations",
       {{"datera.com/migrated-from", from}, {"pv.kubernetes.io/provisioned-by", o.driver}}}};
  if (!labels.empty()) meta["labels"] = labels;
  return {
      {{"apiVersion", "v1"}, {"kind", "PersistentVolume"}, {"metadata", meta}, {"spec", out_spec}},
      ""};
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
    const Json& spec = obj(pv, "spec");
    Read read;
    std::string from;
    if (str(obj(spec, "flexVolume"), "driver") == options.flex_driver) {
      from = options.flex_driver;
      read = read_flex(pv, options);
    } else if (str(obj(spec, "csi"), "driver") == options.datera_csi_driver) {
      from = options.datera_csi_driver;
      read = read_datera_csi(pv);
    } else {
      ++plan.other;
      continue;
    }
    if (!read.source) {
      plan.refused.push_back({name, read.why_not});
      continue;
    }
    Converted c = write_csi_pv(pv, *read.source, from, options);
    if (c.manifest.is_null()) {
      plan.refused.push_back({name, c.why_not});
      continue;
    }
    const std::string& volume = read.source->volume;
    if (!volumes.insert(volume).second) {
      plan.refused.push_back(
          {name, "another PV names the same app instance " + volume + ": one volume, one PV"});
      continue;
    }
    const Json& claim = obj(spec, "claimRef");
    MigratedPv m;
    m.pv = name;
    m.volume = volume;
    m.from = from;
    m.datera_csi = from == options.datera_csi_driver;
    m.dropped = read.source->dropped;
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
  const auto datera = static_cast<size_t>(std::count_if(
      migrated.begin(), migrated.end(), [](const MigratedPv& m) { return m.datera_csi; }));
  std::ostringstream o;
  o << migrated.size() << " PV(s) to migrate (" << migrated.size() - datera << " FlexVolume, "
    << datera << " of Datera's CSI), " << refused.size() << " refused, " << other
    << " of other drivers left alone.\n";
  if (!migrated.empty()) {
    o << "\nFor each PV, in this order (nothing is reformatted: the CSI node stage finds the "
         "filesystem and mounts it, and refuses mkfs on a volume the array records as "
         "formatted):\n";
  }
  if (datera > 0) {
    o << "\nDatera CSI volumes: they must be on this driver's array (the agents' backend); "
         "before step 1, check that the app instance's metadata does not "
         "say delete_on_unmount: true (Datera's node plugin deletes such a volume when it "
         "unstages it); mount options it kept in metadata (m_args) are not carried: put them "
         "in the PV's mountOptions. Its node plugin must not run where this driver stages the "
         "volume (both would log in and manage the session): step 5 stops it on the node first, "
         "so move a node's Datera CSI volumes together.\n";
  }
  for (const auto& m : migrated) {
    o << "\n"
      << m.pv << " (app instance " << m.volume << ", claim " << m.claim << ", from " << m.from
      << ")\n";
    if (m.pods.empty()) {
      o << "  1. no pod uses the claim now (as far as the pod list given shows)\n";
    } else {
      o << "  1. scale down what runs these pods, and wait until they are gone:";
      for (const auto& p : m.pods) o << " " << p;
      o << "\n";
    }
    if (m.datera_csi) {
      o << "     (and wait until Datera's node plugin has unstaged it: no VolumeAttachment, no "
           "iSCSI session of it left on the node)\n";
    }
    o << "  2. kubectl patch pv " << m.pv
      << " -p '{\"spec\":{\"persistentVolumeReclaimPolicy\":\"Retain\"}}'\n"
      << "  3. kubectl delete pv " << m.pv << "   (Retain: the app instance stays)\n"
      << "  4. kubectl apply -f <the CSI PV " << m.pv << " from the manifests>\n";
    if (m.datera_csi) {
      o << "  5. stop Datera's CSI node plugin on the nodes that may run the pods; wait until "
           "claim "
        << m.claim << " is Bound to " << m.pv << " again, then scale back up\n";
    } else {
      o << "  5. wait until claim " << m.claim << " is Bound to " << m.pv
        << " again, then scale back up\n";
    }
    if (!m.dropped.empty()) {
      o << "  dropped (read only when Datera's driver created the volume):";
      for (const auto& d : m.dropped) o << " " << d;
      o << "\n";
    }
  }
  if (!refused.empty()) o << "\nRefused (nothing to do for these until fixed):\n";
  for (const auto& r : refused) o << "  " << r.pv << ": " << r.reason << "\n";
  return o.str();
}

}  // namespace datera::agentctl

#include "plugins/edf/types.h"

#include <algorithm>
#include <cctype>
#include <regex>

namespace datera::edf {
namespace {

std::string str(const Json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

int64_t num(const Json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    try {
      return std::stoll(it->get<std::string>());
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

/// v2.1+ collections are arrays; v2 used objects keyed by name.
const Json* find_named(const Json& coll, const std::string& name) {
  if (coll.is_array()) {
    for (const auto& e : coll) {
      if (e.is_object() && str(e, "name") == name) return &e;
    }
    return coll.empty() ? nullptr : &coll.front();
  }
  if (coll.is_object()) {
    if (auto it = coll.find(name); it != coll.end()) return &*it;
    return coll.empty() ? nullptr : &coll.begin().value();
  }
  return nullptr;
}

}  // namespace

Result<AppInstance> AppInstance::from_json(const Json& j) {
  if (!j.is_object()) return Error{"app instance is not a JSON object"};
  AppInstance ai;
  ai.id = str(j, "id");
  ai.name = str(j, "name");
  ai.admin_state = str(j, "admin_state");
  const auto sis = j.find("storage_instances");
  const Json* si = sis == j.end() ? nullptr : find_named(*sis, kStorageInstance);
  if (si == nullptr) return Error{"app instance '" + ai.name + "' has no storage instance"};
  ai.op_state = str(*si, "op_state");
  if (const auto access = si->find("access"); access != si->end() && access->is_object()) {
    ai.iqn = str(*access, "iqn");
    if (const auto ips = access->find("ips"); ips != access->end() && ips->is_array()) {
      for (const auto& ip : *ips) {
        if (ip.is_string()) ai.ips.push_back(ip.get<std::string>());
      }
    }
  }
  for (const char* field : {"acl_policy", "access_control"}) {  // v2.1+ / v2
    const auto acl = si->find(field);
    if (acl == si->end() || !acl->is_object()) continue;
    if (const auto inits = acl->find("initiators"); inits != acl->end() && inits->is_array()) {
      for (const auto& e : *inits) {
        const std::string path = e.is_string() ? e.get<std::string>() : str(e, "path");
        const auto slash = path.rfind('/');
        if (!path.empty())
          ai.acl.push_back(slash == std::string::npos ? path : path.substr(slash + 1));
      }
    }
  }
  const auto vols = si->find("volumes");
  if (const Json* vol = vols == si->end() ? nullptr : find_named(*vols, kVolume)) {
    ai.volume_uuid = str(*vol, "uuid");
    ai.size_gib = num(*vol, "size");
    ai.replica_count = static_cast<int>(num(*vol, "replica_count"));
    if (const auto snaps = vol->find("snapshots"); snaps != vol->end()) {
      // v2.1+: an array; v2: an object keyed by timestamp. Entries that are only paths (or do not
      // parse) are left out: a listing is no place to fail a whole app instance.
      const auto add = [&](const Json& e) {
        if (!e.is_object()) return;
        if (auto s = Snapshot::from_json(e, ai.name)) ai.snapshots.push_back(std::move(*s));
      };
      if (snaps->is_array()) {
        for (const auto& e : *snaps) add(e);
      } else if (snaps->is_object()) {
        for (const auto& [k, e] : snaps->items()) add(e);
      }
    }
  }
  return ai;
}

Result<Snapshot> Snapshot::from_json(const Json& j, const std::string& app_instance) {
  if (!j.is_object()) return Error{"snapshot of " + app_instance + " is not a JSON object"};
  Snapshot s;
  s.app_instance = app_instance;
  s.timestamp = str(j, "utc_ts");
  if (s.timestamp.empty()) s.timestamp = str(j, "timestamp");
  s.uuid = str(j, "uuid");
  s.op_state = str(j, "op_state");
  s.path = str(j, "path");
  // The timestamp goes into URL paths and CSI snapshot ids.
  if (!is_valid_snapshot_timestamp(s.timestamp)) {
    return Error{"a snapshot of " + app_instance +
                 " has no usable utc_ts (digits and one dot, at most 32 characters)"};
  }
  return s;
}

bool is_valid_snapshot_timestamp(const std::string& ts) {
  return !ts.empty() && ts.size() <= 32 && std::all_of(ts.begin(), ts.end(), [](char c) {
    return (c >= '0' && c <= '9') || c == '.';
  }) && std::count(ts.begin(), ts.end(), '.') <= 1;
}

std::string volume_path(const std::string& app_instance) {
  return "/app_instances/" + app_instance + "/storage_instances/" + kStorageInstance + "/volumes/" +
         kVolume;
}

std::string snapshot_path(const std::string& app_instance, const std::string& timestamp) {
  return volume_path(app_instance) + "/snapshots/" + timestamp;
}

std::string initiator_name_for_node(const std::string& node) {
  constexpr size_t kMax = 128;
  std::string out = "k8s_node_" + node;
  if (out.size() > kMax) out.resize(kMax);
  return out;
}

// Checked by hand, not with std::regex: every EDF call validates its name, and at 500 volumes the
// lease reads alone make 50 calls a second (the regex was 5 % of the idle agent's profile).
bool is_valid_name(const std::string& name) {
  const auto ascii_alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  const auto hex = [&](char c) {
    return digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  };
  // ^[a-zA-Z_][a-zA-Z0-9_\-\.]{2,63}$
  if (name.size() >= 3 && name.size() <= 64 && (ascii_alpha(name[0]) || name[0] == '_') &&
      std::all_of(name.begin() + 1, name.end(), [&](char c) {
        return ascii_alpha(c) || digit(c) || c == '_' || c == '-' || c == '.';
      })) {
    return true;
  }
  // A UUID: 8-4-4-4-12 hex digits.
  if (name.size() != 36) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? name[i] != '-' : !hex(name[i])) return false;
  }
  return true;
}

bool is_valid_iqn(const std::string& iqn) {
  static const std::regex kIqn(R"(^iqn\.\d{4}-[01]\d\.[^/\s]*\.[^/\s]*$)");
  static const std::regex kEui(R"(^eui\.[0-9a-fA-F]{16}$)");
  if (iqn.size() < 16 || iqn.size() > 223) return std::regex_match(iqn, kEui);
  return std::regex_match(iqn, kIqn) || std::regex_match(iqn, kEui);
}

}  // namespace datera::edf

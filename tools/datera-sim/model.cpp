#include "tools/datera-sim/model.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cstdio>
#include <regex>
#include <set>

namespace datera::sim {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Errors, clock, names
// ---------------------------------------------------------------------------------------------

Clock system_clock() {
  return [] { return std::chrono::system_clock::now(); };
}

std::string edf_error_name(unsigned http_status) {
  switch (http_status) {
    case 400:
    case 405:
      return "InvalidRequestError";
    case 401:
      return "AuthFailedError";
    case 403:
      return "PermissionDeniedError";
    case 404:
      return "NotFoundError";
    case 409:
      return "ConflictError";
    case 422:
      return "ValidationFailedError";
    case 503:
      return "ServiceUnavailableError";
    default:
      return "InternalError";
  }
}

Error edf_error(unsigned http_status, std::string message) {
  return Error{std::move(message), datera::http_status(http_status)};
}

const std::error_category& edf_code_category() {
  struct Category : std::error_category {
    const char* name() const noexcept override { return "edf-code"; }
    std::string message(int c) const override { return "EDF error code " + std::to_string(c); }
  };
  static const Category category;
  return category;
}

Error edf_error(EdfCode code, std::string message) {
  return Error{std::move(message), std::error_code(static_cast<int>(code), edf_code_category())};
}

unsigned error_status(const Error& e) {
  if (e.code.category() == edf_code_category()) return 400;  // every EdfCode so far is a 400
  const unsigned status = http_status_of(e.code);
  return status >= 400 && status < 600 ? status : 500;
}

int error_edf_code(const Error& e) {
  return e.code.category() == edf_code_category() ? e.code.value() : 0;
}

namespace {

Error bad_request(const std::string& m) {
  return edf_error(400, m);
}
Error invalid(const std::string& m) {
  return edf_error(422, m);
}
Error not_found(const std::string& m) {
  return edf_error(404, m);
}
Error conflict(const std::string& m) {
  return edf_error(409, m);
}

const std::regex& name_re() {
  static const std::regex re(R"(^[a-zA-Z_][a-zA-Z0-9_\-\.]{2,63}$)");
  return re;
}
const std::regex& uuid_re() {
  static const std::regex re(
      R"(^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$)");
  return re;
}
const std::regex& descr_re() {
  static const std::regex re(R"(^[a-zA-Z_][a-zA-Z0-9_\-\s\.]{2,127}$)");
  return re;
}
const std::regex& iqn_re() {
  static const std::regex re(R"(^iqn\.\d{4}-[01]\d\.[^/]*\.[^/]*$)");
  return re;
}
const std::regex& eui_re() {
  static const std::regex re(R"(^eui\.[0-9a-fA-F]{16}$)");
  return re;
}
const std::regex& tenant_re() {
  static const std::regex re(R"(^/root(/[a-zA-Z0-9_][a-zA-Z0-9_\-\.]{0,63})*$)");
  return re;
}

bool one_of(const std::string& v, std::initializer_list<const char*> allowed) {
  return std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return v == a; });
}

std::string join_list(std::initializer_list<const char*> allowed) {
  std::string out;
  for (const char* a : allowed) out += (out.empty() ? "" : " | ") + std::string(a);
  return out;
}

Status require_object(const json& body, const std::string& what) {
  if (!body.is_object()) return bad_request(what + ": the body must be a JSON object");
  return ok_status();
}

/// 400 for keys outside `allowed`: a typo should not silently do nothing.
Status check_keys(const json& body, std::initializer_list<const char*> allowed,
                  const std::string& what) {
  for (const auto& [key, value] : body.items()) {
    if (!one_of(key, allowed)) {
      return bad_request(what + ": unknown field '" + key + "' (allowed: " + join_list(allowed) +
                         ")");
    }
  }
  return ok_status();
}

/// Optional string field: absent -> nullopt; present but not a string -> 400.
Result<std::optional<std::string>> opt_string(const json& body, const char* key,
                                              const std::string& what) {
  auto it = body.find(key);
  if (it == body.end()) return std::optional<std::string>{};
  if (!it->is_string()) return bad_request(what + ": '" + key + "' must be a string");
  return std::optional<std::string>{it->get<std::string>()};
}

Result<std::optional<int64_t>> opt_int(const json& body, const char* key, const std::string& what,
                                       bool allow_string = false) {
  auto it = body.find(key);
  if (it == body.end()) return std::optional<int64_t>{};
  if (it->is_number_integer()) return std::optional<int64_t>{it->get<int64_t>()};
  if (allow_string && it->is_string()) {
    const auto s = it->get<std::string>();
    if (!s.empty() && s.size() < 12 && std::all_of(s.begin(), s.end(), ::isdigit)) {
      return std::optional<int64_t>{std::stoll(s)};
    }
  }
  return bad_request(what + ": '" + key + "' must be an integer");
}

Result<std::optional<bool>> opt_bool(const json& body, const char* key, const std::string& what) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::optional<bool>{};
  if (!it->is_boolean()) return bad_request(what + ": '" + key + "' must be true or false");
  return std::optional<bool>{it->get<bool>()};
}

/// A reference: {"path":"..."} (v2.1+) or a plain string (v2).
Result<std::string> ref_path(const json& v, const std::string& what) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object()) {
    auto it = v.find("path");
    if (it != v.end() && it->is_string()) return it->get<std::string>();
  }
  return bad_request(what + " must be {\"path\": \"...\"}");
}

const std::initializer_list<const char*> kCreateModes = {
    "normal",     "openstack", "internal",   "docker",         "cloudstack",
    "kubernetes", "mesos",     "vmware_vro", "vmware_vcenter", "docker_swarm"};
const std::initializer_list<const char*> kPlacementModes = {"hybrid", "single_flash", "all_flash"};
const std::initializer_list<const char*> kAccessModes = {"allow_all", "deny_all"};
const std::initializer_list<const char*> kIntervals = {"1min", "2min",  "15min",  "1hour",
                                                       "1day", "1week", "1month", "1year"};

Status check_enum(const std::optional<std::string>& v, std::initializer_list<const char*> allowed,
                  const std::string& what) {
  if (v && !one_of(*v, allowed)) {
    return invalid(what + " '" + *v + "' is not one of " + join_list(allowed));
  }
  return ok_status();
}

Result<std::map<std::string, int64_t>> parse_qos(const json& body, const std::string& what) {
  if (auto st = require_object(body, what); !st) return st.error();
  std::map<std::string, int64_t> out;
  for (const auto& [key, value] : body.items()) {
    if (key == "path") continue;
    const bool iops = key == "total_iops_max" || key == "read_iops_max" || key == "write_iops_max";
    const bool bw =
        key == "total_bandwidth_max" || key == "read_bandwidth_max" || key == "write_bandwidth_max";
    if (!iops && !bw) return bad_request(what + ": unknown field '" + key + "'");
    if (!value.is_number_integer()) return bad_request(what + ": '" + key + "' must be an integer");
    const auto n = value.get<int64_t>();
    const int64_t max = iops ? 10'000'000 : 10'240'000;
    if (n < 0 || n > max) {
      return invalid(what + ": " + key + " " + std::to_string(n) + " is outside 0.." +
                     std::to_string(max) + " (0 means unlimited)");
    }
    out[key] = n;
  }
  return out;
}

Status check_snapshot_policies(const json& v, const std::string& what) {
  if (!v.is_array()) return bad_request(what + ": 'snapshot_policies' must be an array");
  for (const auto& p : v) {
    if (!p.is_object()) return bad_request(what + ": a snapshot policy must be an object");
    if (auto st = check_keys(p, {"name", "retention_count", "interval", "start_time"},
                             what + " snapshot policy");
        !st)
      return st;
    auto name = opt_string(p, "name", what);
    if (!name) return name.error();
    if (!*name || !Model::valid_name(**name)) {
      return invalid(what + ": snapshot policy name is missing or invalid");
    }
    auto rc = opt_int(p, "retention_count", what);
    if (!rc) return rc.error();
    if (*rc && (**rc < 1 || **rc > 256))
      return invalid(what + ": retention_count is outside 1..256");
    auto interval = opt_string(p, "interval", what);
    if (!interval) return interval.error();
    if (auto st = check_enum(*interval, kIntervals, what + " interval"); !st) return st;
  }
  return ok_status();
}

Result<Volume> parse_volume(const json& v, const std::string& ctx) {
  if (auto st = require_object(v, ctx + " volume"); !st) return st.error();
  if (auto st = check_keys(v,
                           {"name", "size", "replica_count", "placement_mode", "snapshot_policies",
                            "performance_policy", "placement_policy"},
                           ctx + " volume");
      !st)
    return st.error();
  Volume vol;
  auto name = opt_string(v, "name", ctx + " volume");
  if (!name) return name.error();
  if (!*name) return bad_request(ctx + ": a volume needs a 'name'");
  if (!Model::valid_name(**name)) {
    return invalid(ctx + ": volume name '" + **name +
                   "' must match ^[a-zA-Z_][a-zA-Z0-9_\\-\\.]{2,63}$");
  }
  vol.name = **name;
  const std::string what = ctx + " volume " + vol.name;
  auto size = opt_int(v, "size", what);
  if (!size) return size.error();
  if (!*size) return bad_request(what + ": 'size' (GiB) is required");
  if (**size < 1 || **size > 32768) {
    return invalid(what + ": size " + std::to_string(**size) + " GiB is outside 1..32768");
  }
  vol.size = **size;
  auto replica = opt_int(v, "replica_count", what);
  if (!replica) return replica.error();
  if (*replica) {
    if (**replica < 1 || **replica > 5) {
      return invalid(what + ": replica_count " + std::to_string(**replica) + " is outside 1..5");
    }
    vol.replica_count = static_cast<int>(**replica);
  }
  auto placement = opt_string(v, "placement_mode", what);
  if (!placement) return placement.error();
  if (auto st = check_enum(*placement, kPlacementModes, what + " placement_mode"); !st) {
    return st.error();
  }
  if (*placement) vol.placement_mode = **placement;
  if (auto it = v.find("performance_policy"); it != v.end()) {
    auto qos = parse_qos(*it, what + " performance_policy");
    if (!qos) return qos.error();
    vol.performance_policy = std::move(*qos);
  }
  if (auto it = v.find("snapshot_policies"); it != v.end()) {
    if (auto st = check_snapshot_policies(*it, what); !st) return st.error();
  }
  return vol;
}

/// The built-in templates: {"storage_instances":[...]} create documents.
const std::map<std::string, json>& templates() {
  static const std::map<std::string, json> t = {
      {"basic", json::parse(R"({"storage_instances":[{"name":"storage-1","volumes":[
          {"name":"volume-1","size":16,"replica_count":3,"placement_mode":"hybrid"}]}]})")}};
  return t;
}

/// Applies template_override {"storage_instances":{"<si>":{...,"volumes":{"<vol>":{...}}}}}.
Status apply_override(json& sis, const json& override_doc) {
  if (!override_doc.is_object()) return bad_request("template_override must be an object");
  if (auto st = check_keys(override_doc, {"storage_instances"}, "template_override"); !st) {
    return st;
  }
  auto si_over = override_doc.find("storage_instances");
  if (si_over == override_doc.end()) return ok_status();
  if (!si_over->is_object()) {
    return bad_request("template_override.storage_instances must be an object keyed by name");
  }
  for (const auto& [si_name, si_fields] : si_over->items()) {
    auto si = std::find_if(sis.begin(), sis.end(),
                           [&name = si_name](const json& s) { return s["name"] == name; });
    if (si == sis.end()) {
      return bad_request("template_override: the template has no storage instance '" + si_name +
                         "'");
    }
    if (!si_fields.is_object())
      return bad_request("template_override: '" + si_name + "' must be an object");
    for (const auto& [key, value] : si_fields.items()) {
      if (key != "volumes") {
        (*si)[key] = value;
        continue;
      }
      if (!value.is_object()) {
        return bad_request("template_override: volumes must be an object keyed by name");
      }
      auto& vols = (*si)["volumes"];
      for (const auto& [vol_name, vol_fields] : value.items()) {
        auto vol = std::find_if(vols.begin(), vols.end(),
                                [&name = vol_name](const json& v) { return v["name"] == name; });
        if (vol == vols.end()) {
          return bad_request("template_override: the template has no volume '" + vol_name + "'");
        }
        if (!vol_fields.is_object()) {
          return bad_request("template_override: volume '" + vol_name + "' must be an object");
        }
        for (const auto& [vkey, vvalue] : vol_fields.items()) {
          // Overrides carry numbers as strings ("size":"16"), as CSI sends them.
          if ((vkey == "size" || vkey == "replica_count") && vvalue.is_string()) {
            json tmp = json::object();
            tmp[vkey] = vvalue;
            auto n = opt_int(tmp, vkey.c_str(), "template_override volume " + vol_name, true);
            if (!n) return n.error();
            (*vol)[vkey] = **n;
          } else {
            (*vol)[vkey] = vvalue;
          }
        }
      }
    }
  }
  return ok_status();
}

Result<std::string> ip_pool_path(const json& v, const std::string& what) {
  auto path = ref_path(v, what + " ip_pool");
  if (!path) return path.error();
  if (*path != "/access_network_ip_pools/default") {
    return not_found(what + ": access network ip pool '" + *path +
                     "' does not exist (the simulator has /access_network_ip_pools/default)");
  }
  return *path;
}

Status validate_auth(const Auth& a, const std::string& what) {
  if (!one_of(a.type, {"none", "chap", "mchap"})) {
    return invalid(what + ": auth type '" + a.type + "' is not one of none | chap | mchap");
  }
  if (a.type != "none" && (a.target_user_name.empty() || a.target_pswd.empty())) {
    return invalid(what + ": auth type " + a.type + " needs target_user_name and target_pswd");
  }
  if (a.type == "mchap" && (a.initiator_user_name.empty() || a.initiator_pswd.empty())) {
    return invalid(what + ": auth type mchap needs initiator_user_name and initiator_pswd");
  }
  return ok_status();
}

Result<Auth> merge_auth(Auth a, const json& body, const std::string& what) {
  if (auto st = require_object(body, what + " auth"); !st) return st.error();
  if (auto st = check_keys(body,
                           {"path", "type", "target_user_name", "target_pswd",
                            "initiator_user_name", "initiator_pswd"},
                           what + " auth");
      !st)
    return st.error();
  for (const char* key :
       {"type", "target_user_name", "target_pswd", "initiator_user_name", "initiator_pswd"}) {
    auto v = opt_string(body, key, what + " auth");
    if (!v) return v.error();
    if (!*v) continue;
    std::string k = key;
    if (k == "type") a.type = **v;
    if (k == "target_user_name") a.target_user_name = **v;
    if (k == "target_pswd") a.target_pswd = **v;
    if (k == "initiator_user_name") a.initiator_user_name = **v;
    if (k == "initiator_pswd") a.initiator_pswd = **v;
  }
  if (a.type == "none") a = Auth{};
  if (auto st = validate_auth(a, what); !st) return st.error();
  return a;
}

}  // namespace

bool Model::valid_name(const std::string& name) {
  return std::regex_match(name, name_re());
}
bool Model::valid_uuid(const std::string& text) {
  return std::regex_match(text, uuid_re());
}
bool Model::valid_ai_name(const std::string& name) {
  return valid_name(name) || valid_uuid(name);
}

bool Model::valid_initiator_id(const std::string& id) {
  if (std::regex_match(id, eui_re())) return true;
  return id.size() >= 16 && id.size() <= 223 && std::regex_match(id, iqn_re());
}

Result<std::string> Model::normalize_tenant(const std::string& header) {
  if (header.empty()) return std::string("/root");
  if (!std::regex_match(header, tenant_re())) {
    return bad_request("tenant '" + header + "' must be /root or /root/<name>");
  }
  return header;
}

// ---------------------------------------------------------------------------------------------
// CIDR pools
// ---------------------------------------------------------------------------------------------

Result<Cidr> Cidr::parse(const std::string& text) {
  const auto slash = text.find('/');
  const std::string addr = text.substr(0, slash);
  int prefix = 32;
  if (slash != std::string::npos) {
    const std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 2 || !std::all_of(p.begin(), p.end(), ::isdigit)) {
      return Error{"'" + text + "' is not an IPv4 CIDR such as 172.28.0.0/24"};
    }
    prefix = std::stoi(p);
  }
  in_addr a{};
  if (::inet_pton(AF_INET, addr.c_str(), &a) != 1 || prefix < 8 || prefix > 30) {
    return Error{"'" + text + "' is not an IPv4 CIDR with a prefix of 8..30, e.g. 172.28.0.0/24"};
  }
  Cidr c;
  c.prefix = prefix;
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  c.network = ntohl(a.s_addr) & mask;
  return c;
}

static std::string ipv4(uint32_t host_order) {
  in_addr a{};
  a.s_addr = htonl(host_order);
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string Cidr::to_string() const {
  return ipv4(network) + "/" + std::to_string(prefix);
}
uint32_t Cidr::host_count() const {
  return (uint32_t{1} << (32 - prefix)) - 2;
}
std::string Cidr::host(uint64_t i) const {
  return ipv4(network + 1 + static_cast<uint32_t>(i % host_count()));
}
std::string Cidr::netmask() const {
  return ipv4(~uint32_t{0} << (32 - prefix));
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

Model::Model(ModelOptions options, Clock clock)
    : options_(std::move(options)), clock_(std::move(clock)) {
  rng_.seed(options_.seed ? *options_.seed : std::random_device{}());
  if (options_.ip_pools.empty()) options_.ip_pools.push_back(Cidr{0xAC1C0000u, 24});
  if (options_.storage_nodes.empty()) options_.storage_nodes = {"node-1"};
}

int64_t Model::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_().time_since_epoch()).count();
}

std::string Model::new_uuid() {
  const uint64_t hi = rng_();
  const uint64_t lo = rng_();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xffff), static_cast<unsigned>(hi & 0x0fff),
                static_cast<unsigned>(0x8000 | ((lo >> 48) & 0x3fff)),
                static_cast<unsigned long long>(lo & 0xffffffffffffULL));
  return buf;
}

std::string Model::new_iqn() {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng_()));
  return std::string("iqn.2013-05.com.daterainc:tc:01:sn:") + buf;
}

std::vector<std::string> Model::allocate_ips() {
  const uint64_t n = next_ip_++;
  const auto& pools = options_.ip_pools;
  if (pools.size() >= 2) return {pools[0].host(n), pools[1].host(n)};
  return {pools[0].host(2 * n), pools[0].host(2 * n + 1)};
}

AppInstance* Model::find_ai(const std::string& tenant, const std::string& id) {
  auto t = tenants_.find(tenant);
  if (t == tenants_.end()) return nullptr;
  auto& ais = t->second.app_instances;
  auto it = std::find_if(ais.begin(), ais.end(), [&](const AppInstance& a) { return a.id == id; });
  if (it == ais.end()) {
    it = std::find_if(ais.begin(), ais.end(), [&](const AppInstance& a) { return a.name == id; });
  }
  return it == ais.end() ? nullptr : &*it;
}

const AppInstance* Model::find_ai(const std::string& tenant, const std::string& id) const {
  return const_cast<Model*>(this)->find_ai(tenant, id);
}

Result<StorageInstance*> Model::find_si(const std::string& tenant, const std::string& ai,
                                        const std::string& si, AppInstance** owner) {
  AppInstance* a = find_ai(tenant, ai);
  if (!a) return not_found("app instance '" + ai + "' not found in tenant " + tenant);
  if (owner) *owner = a;
  for (auto& s : a->storage_instances) {
    if (s.name == si || s.uuid == si) return &s;
  }
  return not_found("storage instance '" + si + "' not found in app instance " + a->name);
}

Result<Volume*> Model::find_volume(const std::string& tenant, const std::string& ai,
                                   const std::string& si, const std::string& vol) {
  auto s = find_si(tenant, ai, si);
  if (!s) return s.error();
  for (auto& v : (*s)->volumes) {
    if (v.name == vol || v.uuid == vol) return &v;
  }
  return not_found("volume '" + vol + "' not found in storage instance " + (*s)->name);
}

// --- app instances ---

Result<AppInstance> Model::create_app_instance(const std::string& tenant, const json& body_in) {
  if (auto st = require_object(body_in, "app instance"); !st) return st.error();
  json body = body_in;
  if (body.contains("clone_src")) {
    return invalid(
        "app instance: clone_src (a copy of a whole app instance) is not simulated; "
        "use clone_volume_src or clone_snapshot_src");
  }
  if (auto st = check_keys(body,
                           {"name", "create_mode", "uuid", "access_control_mode", "descr",
                            "admin_state", "storage_instances", "app_template", "template_override",
                            "placement_policy", "clone_volume_src", "clone_snapshot_src"},
                           "app instance");
      !st)
    return st.error();
  const bool clone = body.contains("clone_volume_src") || body.contains("clone_snapshot_src");

  auto name = opt_string(body, "name", "app instance");
  if (!name) return name.error();
  if (!*name) return bad_request("app instance: 'name' is required");
  if (!valid_ai_name(**name)) {
    return invalid("app instance name '" + **name +
                   "' must be a UUID or match ^[a-zA-Z_][a-zA-Z0-9_\\-\\.]{2,63}$");
  }
  AppInstance ai;
  ai.name = **name;
  ai.tenant = tenant;
  const std::string what = "app instance " + ai.name;
  if (clone) {
    // The clone's storage is its source's: a body that also describes storage is contradictory.
    for (const char* other : {"storage_instances", "app_template", "template_override"}) {
      if (body.contains(other)) {
        return bad_request(what + ": " + other +
                           " cannot go with clone_volume_src or clone_snapshot_src (a clone "
                           "takes its storage from its source)");
      }
    }
    if (body.contains("clone_volume_src") && body.contains("clone_snapshot_src")) {
      return bad_request(what + ": give clone_volume_src or clone_snapshot_src, not both");
    }
  }

  if (auto it = body.find("app_template"); it != body.end() && !it->is_null()) {
    auto path = ref_path(*it, what + ": app_template");
    if (!path) return path.error();
    if (!path->empty()) {
      const std::string prefix = "/app_templates/";
      const auto tname = path->rfind(prefix, 0) == 0 ? path->substr(prefix.size()) : "";
      auto t = templates().find(tname);
      if (t == templates().end()) {
        return not_found(what + ": app template '" + *path +
                         "' not found (built in: /app_templates/basic)");
      }
      if (body.contains("storage_instances")) {
        return bad_request(what + ": give either app_template or storage_instances, not both");
      }
      body["storage_instances"] = t->second["storage_instances"];
      if (auto o = body.find("template_override"); o != body.end()) {
        if (auto st = apply_override(body["storage_instances"], *o); !st) return st.error();
      }
      ai.app_template = *path;
    }
  } else if (body.contains("template_override")) {
    return bad_request(what + ": template_override needs app_template");
  }

  auto mode = opt_string(body, "create_mode", what);
  if (!mode) return mode.error();
  if (auto st = check_enum(*mode, kCreateModes, what + ": create_mode"); !st) return st.error();
  if (*mode) ai.create_mode = **mode;
  auto acm = opt_string(body, "access_control_mode", what);
  if (!acm) return acm.error();
  if (auto st = check_enum(*acm, kAccessModes, what + ": access_control_mode"); !st) {
    return st.error();
  }
  if (*acm) ai.access_control_mode = **acm;
  if (auto it = body.find("descr"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return bad_request(what + ": 'descr' must be a string or null");
    const auto d = it->get<std::string>();
    if (!std::regex_match(d, descr_re())) {
      return invalid(what + ": descr must match ^[a-zA-Z_][a-zA-Z0-9_\\-\\s\\.]{2,127}$");
    }
    ai.descr = d;
  }
  auto admin = opt_string(body, "admin_state", what);
  if (!admin) return admin.error();
  if (auto st = check_enum(*admin, {"online", "offline"}, what + ": admin_state"); !st) {
    return st.error();
  }
  if (*admin) ai.admin_state = **admin;
  auto uuid = opt_string(body, "uuid", what);
  if (!uuid) return uuid.error();
  if (*uuid && !valid_uuid(**uuid)) return invalid(what + ": uuid '" + **uuid + "' is not a UUID");

  std::vector<StorageInstance> sis;
  if (auto it = body.find("storage_instances"); it != body.end()) {
    if (!it->is_array()) return bad_request(what + ": storage_instances must be an array");
    for (const auto& s : *it) {
      if (auto st = require_object(s, what + " storage instance"); !st) return st.error();
      if (auto st = check_keys(s,
                               {"name", "ip_pool", "volumes", "auth", "acl_policy",
                                "access_control_mode", "placement_policy"},
                               what + " storage instance");
          !st)
        return st.error();
      StorageInstance si;
      auto sname = opt_string(s, "name", what);
      if (!sname) return sname.error();
      if (!*sname) return bad_request(what + ": a storage instance needs a 'name'");
      if (!valid_name(**sname)) {
        return invalid(what + ": storage instance name '" + **sname +
                       "' must match ^[a-zA-Z_][a-zA-Z0-9_\\-\\.]{2,63}$");
      }
      si.name = **sname;
      for (const auto& other : sis) {
        if (other.name == si.name)
          return invalid(what + ": storage instance '" + si.name + "' given twice");
      }
      const std::string swhat = what + " storage instance " + si.name;
      if (auto p = s.find("ip_pool"); p != s.end()) {
        auto path = ip_pool_path(*p, swhat);
        if (!path) return path.error();
        si.ip_pool = *path;
      }
      if (auto a = s.find("auth"); a != s.end()) {
        auto auth = merge_auth(Auth{}, *a, swhat);
        if (!auth) return auth.error();
        si.auth = std::move(*auth);
      }
      if (auto v = s.find("volumes"); v != s.end()) {
        if (!v->is_array()) return bad_request(swhat + ": volumes must be an array");
        for (const auto& vj : *v) {
          auto vol = parse_volume(vj, swhat);
          if (!vol) return vol.error();
          for (const auto& other : si.volumes) {
            if (other.name == vol->name)
              return invalid(swhat + ": volume '" + vol->name + "' given twice");
          }
          si.volumes.push_back(std::move(*vol));
        }
      }
      sis.push_back(std::move(si));
    }
  }

  // Validation passed: now conflicts, then effects.
  auto& t = tenants_[tenant];
  for (const auto& other : t.app_instances) {
    if (other.name == ai.name) {
      return conflict("app instance '" + ai.name + "' already exists in tenant " + tenant +
                      " (id " + other.id + ")");
    }
    if (uuid && *uuid && other.id == **uuid) {
      return conflict("an app instance with uuid " + **uuid + " already exists in tenant " +
                      tenant);
    }
  }
  if (clone) {
    // After the name check, so a repeated create of an existing clone is a 409 as for any other.
    auto source = clone_source(tenant, body, what);
    if (!source) return source.error();
    sis = {std::move(*source)};
  }
  ai.id = (uuid && *uuid) ? **uuid : new_uuid();
  ai.seq = next_seq_++;
  ai.online_since_ms = now_ms();
  for (auto& si : sis) {
    si.uuid = new_uuid();
    si.iqn = new_iqn();
    si.ips = allocate_ips();
    si.node = options_.storage_nodes[(next_ip_ - 1) % options_.storage_nodes.size()];
    for (auto& v : si.volumes) v.uuid = new_uuid();
  }
  ai.storage_instances = std::move(sis);
  t.app_instances.push_back(ai);
  touched();
  return ai;
}

Result<StorageInstance> Model::clone_source(const std::string& tenant, const json& body,
                                            const std::string& what) {
  const bool from_snapshot = body.contains("clone_snapshot_src");
  const char* key = from_snapshot ? "clone_snapshot_src" : "clone_volume_src";
  auto path = ref_path(body[key], what + ": " + key);
  if (!path) return path.error();
  // /app_instances/<ai>/storage_instances/<si>/volumes/<vol>[/snapshots/<utc_ts>]
  std::vector<std::string> segs;
  for (size_t start = 0; start <= path->size();) {
    size_t end = path->find('/', start);
    if (end == std::string::npos) end = path->size();
    segs.push_back(path->substr(start, end - start));
    start = end + 1;
  }
  const size_t want = from_snapshot ? 9 : 7;
  if (segs.size() != want || !segs[0].empty() || segs[1] != "app_instances" ||
      segs[3] != "storage_instances" || segs[5] != "volumes" ||
      (from_snapshot && segs[7] != "snapshots")) {
    return invalid(what + ": " + key + " '" + *path + "' must be " +
                   "/app_instances/<ai>/storage_instances/<si>/volumes/<volume>" +
                   (from_snapshot ? "/snapshots/<utc_ts>" : ""));
  }
  auto v = find_volume(tenant, segs[2], segs[4], segs[6]);
  if (!v) return not_found(what + ": " + key + " '" + *path + "': " + v.error().message);
  const Volume& src = **v;
  Volume copy;
  copy.name = src.name;
  copy.size = src.size;
  copy.replica_count = src.replica_count;
  copy.placement_mode = src.placement_mode;
  copy.performance_policy = src.performance_policy;
  copy.clone_of_volume = src.uuid;
  if (from_snapshot) {
    const auto& snaps = src.snapshots;
    const auto it = std::find_if(snaps.begin(), snaps.end(),
                                 [&](const Snapshot& s) { return s.utc_ts == segs[8]; });
    if (it == snaps.end()) {
      return not_found(what + ": " + key + " '" + *path + "': volume " + src.name +
                       " has no snapshot " + segs[8]);
    }
    // Strict: a snapshot still being made has no data to copy yet.
    if (op_state(*it) != "available") {
      return conflict(what + ": snapshot " + segs[8] + " of " + segs[2] +
                      " is not available yet (op_state unavailable); retry once it is");
    }
    copy.size = it->size;
    copy.clone_of_snapshot = it->utc_ts;
  }
  const StorageInstance* src_si = nullptr;
  for (const auto& s : find_ai(tenant, segs[2])->storage_instances) {
    if (s.name == segs[4] || s.uuid == segs[4]) src_si = &s;
  }
  StorageInstance si;
  si.name = src_si->name;
  si.ip_pool = src_si->ip_pool;  // its own access, ACL, auth and metadata: none copied
  si.volumes.push_back(std::move(copy));
  return si;
}

// --- snapshots ---

bool Model::valid_utc_ts(const std::string& ts) {
  static const std::regex re(R"(^[0-9]{1,12}\.[0-9]{9}$)");
  return std::regex_match(ts, re);
}

Result<Snapshot> Model::create_snapshot(const std::string& tenant, const std::string& ai,
                                        const std::string& si, const std::string& vol,
                                        const json& body) {
  auto v = find_volume(tenant, ai, si, vol);
  if (!v) return v.error();
  const std::string what = "snapshot of " + ai + " volume " + (*v)->name;
  std::optional<std::string> uuid;
  if (!body.is_null()) {
    if (auto st = require_object(body, what); !st) return st.error();
    if (auto st = check_keys(body, {"uuid"}, what); !st) return st.error();
    auto u = opt_string(body, "uuid", what);
    if (!u) return u.error();
    if (*u && !valid_uuid(**u)) return invalid(what + ": uuid '" + **u + "' is not a UUID");
    uuid = *u;
  }
  auto& snaps = (*v)->snapshots;
  if (uuid) {
    for (const auto& s : snaps) {
      if (s.uuid == *uuid) {
        return edf_error(EdfCode::duplicate_snapshot_uuid,
                         what + ": the volume already has a snapshot with uuid " + *uuid + " (" +
                             s.utc_ts + ")");
      }
    }
  }
  // utc_ts is the snapshot's id: the clock's nanoseconds, moved on by 1 ns on a collision.
  int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_().time_since_epoch()).count();
  std::string ts;
  for (;; ++ns) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%lld.%09lld", static_cast<long long>(ns / 1'000'000'000),
                  static_cast<long long>(ns % 1'000'000'000));
    ts = buf;
    if (std::none_of(snaps.begin(), snaps.end(), [&](const Snapshot& s) { return s.utc_ts == ts; }))
      break;
  }
  Snapshot snap{ts, uuid ? *uuid : new_uuid(), now_ms(), (*v)->size};
  snaps.push_back(snap);
  touched();
  return snap;
}

Result<std::vector<Snapshot>> Model::list_snapshots(const std::string& tenant,
                                                    const std::string& ai, const std::string& si,
                                                    const std::string& vol) const {
  auto v = const_cast<Model*>(this)->find_volume(tenant, ai, si, vol);
  if (!v) return v.error();
  return (*v)->snapshots;
}

Result<Snapshot> Model::get_snapshot(const std::string& tenant, const std::string& ai,
                                     const std::string& si, const std::string& vol,
                                     const std::string& utc_ts) const {
  auto v = const_cast<Model*>(this)->find_volume(tenant, ai, si, vol);
  if (!v) return v.error();
  for (const auto& s : (*v)->snapshots) {
    if (s.utc_ts == utc_ts) return s;
  }
  return not_found("snapshot '" + utc_ts + "' not found in volume " + (*v)->name + " of " + ai);
}

Status Model::delete_snapshot(const std::string& tenant, const std::string& ai,
                              const std::string& si, const std::string& vol,
                              const std::string& utc_ts) {
  auto v = find_volume(tenant, ai, si, vol);
  if (!v) return v.error();
  // Clones are copies with their own data, so a snapshot that has clones can still go.
  if (std::erase_if((*v)->snapshots, [&](const Snapshot& s) { return s.utc_ts == utc_ts; }) == 0) {
    return not_found("snapshot '" + utc_ts + "' not found in volume " + (*v)->name + " of " + ai);
  }
  touched();
  return ok_status();
}

std::string Model::op_state(const Snapshot& s) const {
  return now_ms() - s.created_ms >= options_.op_state_delay.count() ? "available" : "unavailable";
}

std::vector<SnapshotView> Model::snapshot_views() const {
  std::vector<SnapshotView> out;
  for (const auto& ai : list_app_instances("all")) {
    for (const auto& si : ai.storage_instances) {
      for (const auto& v : si.volumes) {
        for (const auto& s : v.snapshots) out.push_back(SnapshotView{v.uuid, s.utc_ts, s.size});
      }
    }
  }
  return out;
}

Result<AppInstance> Model::get_app_instance(const std::string& tenant,
                                            const std::string& id) const {
  const AppInstance* a = find_ai(tenant, id);
  if (!a) return not_found("app instance '" + id + "' not found in tenant " + tenant);
  return *a;
}

std::vector<AppInstance> Model::list_app_instances(const std::string& tenant) const {
  std::vector<AppInstance> out;
  for (const auto& [name, t] : tenants_) {
    if (tenant != "all" && name != tenant) continue;
    out.insert(out.end(), t.app_instances.begin(), t.app_instances.end());
  }
  std::sort(out.begin(), out.end(),
            [](const AppInstance& a, const AppInstance& b) { return a.seq < b.seq; });
  return out;
}

Result<AppInstance> Model::update_app_instance(const std::string& tenant, const std::string& id,
                                               const json& body) {
  AppInstance* a = find_ai(tenant, id);
  if (!a) return not_found("app instance '" + id + "' not found in tenant " + tenant);
  const std::string what = "app instance " + a->name;
  if (auto st = require_object(body, what); !st) return st.error();
  if (auto st =
          check_keys(body, {"admin_state", "force", "descr", "name", "access_control_mode"}, what);
      !st)
    return st.error();
  auto force = opt_bool(body, "force", what);
  if (!force) return force.error();
  auto admin = opt_string(body, "admin_state", what);
  if (!admin) return admin.error();
  if (auto st = check_enum(*admin, {"online", "offline"}, what + ": admin_state"); !st) {
    return st.error();
  }
  auto acm = opt_string(body, "access_control_mode", what);
  if (!acm) return acm.error();
  if (auto st = check_enum(*acm, kAccessModes, what + ": access_control_mode"); !st) {
    return st.error();
  }
  if (*acm && **acm == "allow_all" && a->access_control_mode == "deny_all") {
    return invalid(what + ": access_control_mode can only change from allow_all to deny_all");
  }
  std::optional<std::optional<std::string>> descr;
  if (auto it = body.find("descr"); it != body.end()) {
    if (it->is_null()) {
      descr = std::optional<std::string>{};
    } else if (!it->is_string()) {
      return bad_request(what + ": 'descr' must be a string or null");
    } else if (!std::regex_match(it->get<std::string>(), descr_re())) {
      return invalid(what + ": descr must match ^[a-zA-Z_][a-zA-Z0-9_\\-\\s\\.]{2,127}$");
    } else {
      descr = it->get<std::string>();
    }
  }
  auto rename = opt_string(body, "name", what);
  if (!rename) return rename.error();
  if (*rename && **rename != a->name) {
    if (!valid_ai_name(**rename)) return invalid(what + ": new name '" + **rename + "' is invalid");
    for (const auto& other : tenants_[tenant].app_instances) {
      if (other.name == **rename) {
        return conflict("app instance '" + **rename + "' already exists in tenant " + tenant);
      }
    }
  }
  if (*admin && **admin != a->admin_state) {
    a->admin_state = **admin;
    if (a->admin_state == "online") a->online_since_ms = now_ms();
  }
  if (*acm) a->access_control_mode = **acm;
  if (descr) a->descr = *descr;
  if (*rename) a->name = **rename;
  touched();
  return *a;
}

Status Model::delete_app_instance(const std::string& tenant, const std::string& id,
                                  const json& body) {
  AppInstance* a = find_ai(tenant, id);
  if (!a) return not_found("app instance '" + id + "' not found in tenant " + tenant);
  bool force = false;
  if (!body.is_null()) {
    if (auto st = require_object(body, "delete"); !st) return st;
    if (auto st = check_keys(body, {"force"}, "delete"); !st) return st;
    auto f = opt_bool(body, "force", "delete");
    if (!f) return f.error();
    force = f->value_or(false);
  }
  if (a->admin_state == "online" && !force) {
    return conflict("app instance '" + a->name +
                    "' is online; PUT {\"admin_state\":\"offline\",\"force\":true} first, or "
                    "DELETE with {\"force\":true}");
  }
  auto& ais = tenants_[tenant].app_instances;
  const std::string victim = a->id;
  ais.erase(
      std::remove_if(ais.begin(), ais.end(), [&](const AppInstance& x) { return x.id == victim; }),
      ais.end());
  touched();
  return ok_status();
}

// --- storage instances ---

Result<StorageInstance> Model::get_storage_instance(const std::string& tenant,
                                                    const std::string& ai,
                                                    const std::string& si) const {
  auto s = const_cast<Model*>(this)->find_si(tenant, ai, si);
  if (!s) return s.error();
  return **s;
}

Result<StorageInstance> Model::update_storage_instance(const std::string& tenant,
                                                       const std::string& ai, const std::string& si,
                                                       const json& body) {
  auto s = find_si(tenant, ai, si);
  if (!s) return s.error();
  const std::string what = "storage instance " + (*s)->name;
  if (auto st = require_object(body, what); !st) return st.error();
  if (auto st = check_keys(body, {"ip_pool", "auth", "acl_policy", "force"}, what); !st) {
    return st.error();
  }
  if (auto f = opt_bool(body, "force", what); !f) return f.error();
  std::optional<std::string> pool;
  if (auto p = body.find("ip_pool"); p != body.end()) {
    auto path = ip_pool_path(*p, what);
    if (!path) return path.error();
    pool = *path;
  }
  std::optional<Auth> auth;
  if (auto a = body.find("auth"); a != body.end()) {
    auto merged = merge_auth((*s)->auth, *a, what);
    if (!merged) return merged.error();
    auth = std::move(*merged);
  }
  if (auto acl = body.find("acl_policy"); acl != body.end()) {
    auto r = replace_acl(tenant, ai, si, *acl);
    if (!r) return r.error();
  }
  if (pool) (*s)->ip_pool = *pool;
  if (auth) (*s)->auth = std::move(*auth);
  touched();
  return **s;
}

Result<StorageInstance> Model::set_auth(const std::string& tenant, const std::string& ai,
                                        const std::string& si, const json& body) {
  auto s = find_si(tenant, ai, si);
  if (!s) return s.error();
  auto merged = merge_auth((*s)->auth, body, "storage instance " + (*s)->name);
  if (!merged) return merged.error();
  (*s)->auth = std::move(*merged);
  touched();
  return **s;
}

Result<AclRef> Model::acl_ref(const json& entry, const std::string& list,
                              const std::string& tenant) const {
  const std::string what = "acl_policy " + list;
  auto path = ref_path(entry, what + " entry");
  if (!path) return path.error();
  std::string entry_tenant = tenant;
  if (entry.is_object()) {
    for (const auto& [key, value] : entry.items()) {
      if (key != "path" && key != "tenant") {
        return bad_request(what + " entry: unknown field '" + key + "'");
      }
    }
    if (auto t = entry.find("tenant"); t != entry.end() && !t->is_null()) {
      if (!t->is_string()) return bad_request(what + " entry: 'tenant' must be a string");
      auto nt = normalize_tenant(t->get<std::string>());
      if (!nt) return nt.error();
      entry_tenant = *nt;
    }
  }
  if (list == "initiators") {
    const std::string prefix = "/initiators/";
    if (path->rfind(prefix, 0) != 0) {
      return invalid(what + " entry '" + *path + "' must be /initiators/<iqn>");
    }
    const std::string id = path->substr(prefix.size());
    // An initiator is looked up in the entry's tenant, then in /root (shared with sub-tenants).
    for (const std::string& t : {entry_tenant, std::string("/root")}) {
      auto it = tenants_.find(t);
      if (it == tenants_.end()) continue;
      for (const auto& i : it->second.initiators) {
        if (i.id == id) return AclRef{*path, t};
      }
    }
    return not_found(what + ": initiator '" + id + "' not found in tenant " + entry_tenant +
                     " (POST /initiators first)");
  }
  const std::string prefix = "/initiator_groups/";
  if (path->rfind(prefix, 0) != 0 || !valid_name(path->substr(prefix.size()))) {
    return invalid(what + " entry '" + *path + "' must be /initiator_groups/<name>");
  }
  return AclRef{*path, entry_tenant};
}

void Model::log_acl(const AppInstance& ai, const StorageInstance& si, const std::string& op,
                    const AclRef& ref) {
  acl_log_.push_back(AclChange{now_ms(), ai.tenant, ai.name, ai.id, si.name, op, ref.path});
  if (acl_log_.size() > options_.log_limit) acl_log_.erase(acl_log_.begin());
}

Result<StorageInstance> Model::replace_acl(const std::string& tenant, const std::string& ai,
                                           const std::string& si, const json& body) {
  AppInstance* owner = nullptr;
  auto s = find_si(tenant, ai, si, &owner);
  if (!s) return s.error();
  if (auto st = require_object(body, "acl_policy"); !st) return st.error();
  if (auto st = check_keys(body, {"path", "initiators", "initiator_groups"}, "acl_policy"); !st) {
    return st.error();
  }
  std::optional<std::vector<AclRef>> lists[2];
  const char* names[2] = {"initiators", "initiator_groups"};
  for (int i = 0; i < 2; ++i) {
    auto it = body.find(names[i]);
    if (it == body.end()) continue;
    if (!it->is_array())
      return bad_request(std::string("acl_policy: '") + names[i] + "' must be an array");
    std::vector<AclRef> refs;
    for (const auto& e : *it) {
      auto ref = acl_ref(e, names[i], tenant);
      if (!ref) return ref.error();
      // Duplicates are tolerated (CSI appends without checking) and stored once.
      if (std::find(refs.begin(), refs.end(), *ref) == refs.end()) refs.push_back(*ref);
    }
    lists[i] = std::move(refs);
  }
  std::vector<AclRef>* current[2] = {&(*s)->acl_initiators, &(*s)->acl_initiator_groups};
  for (int i = 0; i < 2; ++i) {
    if (!lists[i]) continue;
    for (const auto& old : *current[i]) {
      if (std::find(lists[i]->begin(), lists[i]->end(), old) == lists[i]->end()) {
        log_acl(*owner, **s, "remove", old);
      }
    }
    for (const auto& added : *lists[i]) {
      if (std::find(current[i]->begin(), current[i]->end(), added) == current[i]->end()) {
        log_acl(*owner, **s, "add", added);
      }
    }
    *current[i] = std::move(*lists[i]);
  }
  touched();
  return **s;
}

Result<StorageInstance> Model::acl_op(const std::string& tenant, const std::string& ai,
                                      const std::string& si, const std::string& list,
                                      const json& body) {
  AppInstance* owner = nullptr;
  auto s = find_si(tenant, ai, si, &owner);
  if (!s) return s.error();
  const std::string what = "acl_policy/" + list;
  if (auto st = require_object(body, what); !st) return st.error();
  if (auto st = check_keys(body, {"op", "path", "tenant"}, what); !st) return st.error();
  auto op = opt_string(body, "op", what);
  if (!op) return op.error();
  if (!*op) return bad_request(what + ": 'op' (add | remove) is required");
  if (auto st = check_enum(*op, {"add", "remove"}, what + " op"); !st) return st.error();
  if (!body.contains("path")) return bad_request(what + ": 'path' is required");
  json entry = body["path"].is_object() ? body["path"] : json{{"path", body["path"]}};
  if (body.contains("tenant")) entry["tenant"] = body["tenant"];
  auto& members = list == "initiators" ? (*s)->acl_initiators : (*s)->acl_initiator_groups;
  if (**op == "remove") {
    // Removing does not need the initiator to exist any more: match on the path.
    auto path = ref_path(entry, what + " path");
    if (!path) return path.error();
    auto it = std::find_if(members.begin(), members.end(),
                           [&](const AclRef& r) { return r.path == *path; });
    if (it != members.end()) {
      log_acl(*owner, **s, "remove", *it);
      members.erase(it);
      touched();
    }
    return **s;
  }
  auto ref = acl_ref(entry, list, tenant);
  if (!ref) return ref.error();
  if (std::find(members.begin(), members.end(), *ref) == members.end()) {
    members.push_back(*ref);
    log_acl(*owner, **s, "add", *ref);
    touched();
  }
  return **s;
}

// --- volumes ---

Result<Volume> Model::get_volume(const std::string& tenant, const std::string& ai,
                                 const std::string& si, const std::string& vol) const {
  auto v = const_cast<Model*>(this)->find_volume(tenant, ai, si, vol);
  if (!v) return v.error();
  return **v;
}

Result<Volume> Model::update_volume(const std::string& tenant, const std::string& ai,
                                    const std::string& si, const std::string& vol,
                                    const json& body) {
  auto v = find_volume(tenant, ai, si, vol);
  if (!v) return v.error();
  const std::string what = "volume " + (*v)->name;
  if (auto st = require_object(body, what); !st) return st.error();
  if (auto st = check_keys(
          body, {"size", "replica_count", "placement_mode", "performance_policy", "force"}, what);
      !st)
    return st.error();
  if (auto f = opt_bool(body, "force", what); !f) return f.error();
  Volume next = **v;
  auto size = opt_int(body, "size", what);
  if (!size) return size.error();
  if (*size) {
    if (**size < 1 || **size > 32768) {
      return invalid(what + ": size " + std::to_string(**size) + " GiB is outside 1..32768");
    }
    if (**size < next.size) {
      return invalid(what + ": cannot shrink from " + std::to_string(next.size) + " to " +
                     std::to_string(**size) + " GiB (volumes only grow)");
    }
    next.size = **size;
  }
  auto replica = opt_int(body, "replica_count", what);
  if (!replica) return replica.error();
  if (*replica) {
    if (**replica < 1 || **replica > 5) return invalid(what + ": replica_count is outside 1..5");
    next.replica_count = static_cast<int>(**replica);
  }
  auto placement = opt_string(body, "placement_mode", what);
  if (!placement) return placement.error();
  if (auto st = check_enum(*placement, kPlacementModes, what + ": placement_mode"); !st) {
    return st.error();
  }
  if (*placement) next.placement_mode = **placement;
  if (auto it = body.find("performance_policy"); it != body.end()) {
    auto qos = parse_qos(*it, what + " performance_policy");
    if (!qos) return qos.error();
    next.performance_policy = std::move(*qos);
  }
  **v = std::move(next);
  touched();
  return **v;
}

Result<Volume> Model::set_performance_policy(const std::string& tenant, const std::string& ai,
                                             const std::string& si, const std::string& vol,
                                             const json& body) {
  auto v = find_volume(tenant, ai, si, vol);
  if (!v) return v.error();
  auto qos = parse_qos(body, "volume " + (*v)->name + " performance_policy");
  if (!qos) return qos.error();
  (*v)->performance_policy = std::move(*qos);
  touched();
  return **v;
}

// --- metadata ---

Result<Metadata> Model::get_metadata(const std::string& tenant, const std::string& ai,
                                     const std::string& si) const {
  if (si.empty()) {
    const AppInstance* a = find_ai(tenant, ai);
    if (!a) return not_found("app instance '" + ai + "' not found in tenant " + tenant);
    return a->metadata;
  }
  auto s = get_storage_instance(tenant, ai, si);
  if (!s) return s.error();
  return s->metadata;
}

Result<Metadata> Model::put_metadata(const std::string& tenant, const std::string& ai,
                                     const json& body, const std::string& si) {
  Metadata* target = nullptr;
  if (si.empty()) {
    AppInstance* a = find_ai(tenant, ai);
    if (!a) return not_found("app instance '" + ai + "' not found in tenant " + tenant);
    target = &a->metadata;
  } else {
    auto s = find_si(tenant, ai, si);
    if (!s) return s.error();
    target = &(*s)->metadata;
  }
  if (auto st = require_object(body, "metadata"); !st) return st.error();
  Metadata next = *target;
  for (const auto& [key, value] : body.items()) {
    std::string text;
    if (value.is_string()) {
      text = value.get<std::string>();
    } else if (value.is_boolean() || value.is_number()) {
      text = value.dump();  // GOSDK sends bools and ints; stored as their text
    } else {
      return bad_request("metadata: the value of '" + key +
                         "' must be a string, number or boolean (the map is flat)");
    }
    if (text.empty()) {
      next.erase(key);  // "" deletes, as CSI clears keys
    } else {
      next[key] = text;
    }
  }
  const auto size = json(next).dump().size();
  if (size > kMetadataLimit) {
    return bad_request("metadata: " + std::to_string(size) +
                       " characters once merged; the limit is " + std::to_string(kMetadataLimit));
  }
  *target = std::move(next);
  touched();
  return *target;
}

// --- initiators ---

Result<Initiator> Model::create_initiator(const std::string& tenant, const json& body) {
  if (auto st = require_object(body, "initiator"); !st) return st.error();
  if (auto st = check_keys(body, {"id", "name", "force"}, "initiator"); !st) return st.error();
  if (auto f = opt_bool(body, "force", "initiator"); !f) return f.error();
  auto id = opt_string(body, "id", "initiator");
  if (!id) return id.error();
  if (!*id) return bad_request("initiator: 'id' (the IQN) is required");
  if (!valid_initiator_id(**id)) {
    return invalid(
        "initiator id '" + **id +
        "' must be an IQN of 16..223 characters (^iqn\\.\\d{4}-[01]\\d\\.[^/]*\\.[^/]*$) "
        "or eui.<16 hex>");
  }
  auto name = opt_string(body, "name", "initiator");
  if (!name) return name.error();
  if (!*name) return bad_request("initiator: 'name' is required");
  if (!std::regex_match(**name, descr_re())) {
    return invalid("initiator name '" + **name +
                   "' must match ^[a-zA-Z_][a-zA-Z0-9_\\-\\s\\.]{2,127}$");
  }
  auto& t = tenants_[tenant];
  for (const auto& i : t.initiators) {
    if (i.id == **id) {
      return conflict("initiator '" + **id + "' already exists in tenant " + tenant);
    }
  }
  Initiator init{**id, **name, tenant};
  t.initiators.push_back(init);
  touched();
  return init;
}

Result<Initiator> Model::get_initiator(const std::string& tenant, const std::string& id) const {
  auto t = tenants_.find(tenant);
  if (t != tenants_.end()) {
    for (const auto& i : t->second.initiators) {
      if (i.id == id) return i;
    }
  }
  return not_found("initiator '" + id + "' not found in tenant " + tenant);
}

std::vector<Initiator> Model::list_initiators(const std::string& tenant) const {
  std::vector<Initiator> out;
  for (const auto& [name, t] : tenants_) {
    if (tenant != "all" && name != tenant) continue;
    out.insert(out.end(), t.initiators.begin(), t.initiators.end());
  }
  return out;
}

Status Model::delete_initiator(const std::string& tenant, const std::string& id) {
  auto t = tenants_.find(tenant);
  if (t != tenants_.end()) {
    auto& list = t->second.initiators;
    auto it =
        std::find_if(list.begin(), list.end(), [&](const Initiator& i) { return i.id == id; });
    if (it != list.end()) {
      list.erase(it);
      touched();
      return ok_status();
    }
  }
  return not_found("initiator '" + id + "' not found in tenant " + tenant);
}

// --- state ---

std::string Model::op_state(const AppInstance& ai) const {
  if (ai.admin_state != "online") return "unavailable";
  return now_ms() - ai.online_since_ms >= options_.op_state_delay.count() ? "available"
                                                                          : "unavailable";
}

Result<FailoverEvent> Model::failover(const std::string& tenant, const std::string& ai,
                                      const std::string& si, const std::string& to_node) {
  AppInstance* owner = nullptr;
  auto s = find_si(tenant, ai, si, &owner);
  if (!s) return s.error();
  const auto& nodes = options_.storage_nodes;
  std::string target = to_node;
  if (target.empty()) {
    auto it = std::find(nodes.begin(), nodes.end(), (*s)->node);
    target =
        nodes[it == nodes.end() ? 0 : (static_cast<size_t>(it - nodes.begin()) + 1) % nodes.size()];
  } else if (std::find(nodes.begin(), nodes.end(), target) == nodes.end()) {
    std::string all;
    for (const auto& n : nodes) all += (all.empty() ? "" : ", ") + n;
    return not_found("storage node '" + target + "' does not exist (nodes: " + all + ")");
  }
  FailoverEvent ev{now_ms(), tenant, owner->name, (*s)->name, (*s)->ips, (*s)->node, target};
  (*s)->node = target;
  failovers_.push_back(ev);
  if (failovers_.size() > options_.log_limit) failovers_.erase(failovers_.begin());
  touched();
  return ev;
}

Result<RebalanceEvent> Model::rebalance(const std::string& tenant, const std::string& ai,
                                        const std::string& si,
                                        const std::vector<std::string>& ips) {
  AppInstance* owner = nullptr;
  auto s = find_si(tenant, ai, si, &owner);
  if (!s) return s.error();
  if (ips.empty() || ips.size() > 2) return invalid("rebalance: give one or two access IPs");
  for (const auto& ip : ips) {
    in_addr a{};
    if (::inet_pton(AF_INET, ip.c_str(), &a) != 1) {
      return invalid("rebalance: '" + ip + "' is not an IPv4 address");
    }
  }
  RebalanceEvent ev{now_ms(), tenant, owner->name, (*s)->name, (*s)->ips, ips};
  (*s)->ips = ips;
  rebalances_.push_back(ev);
  if (rebalances_.size() > options_.log_limit) rebalances_.erase(rebalances_.begin());
  touched();
  return ev;
}

std::vector<ExportView> Model::exports() const {
  std::vector<ExportView> out;
  for (const auto& ai : list_app_instances("all")) {
    for (const auto& si : ai.storage_instances) {
      std::vector<std::string> iqns;
      for (const auto& r : si.acl_initiators)
        iqns.push_back(r.path.substr(std::string("/initiators/").size()));
      for (const auto& v : si.volumes) {
        out.push_back(ExportView{ai.tenant, ai.name, ai.id, si.name, v.name, v.uuid, v.size,
                                 op_state(ai) == "available", ai.access_control_mode, iqns, si.iqn,
                                 si.ips, si.node, v.clone_of_volume, v.clone_of_snapshot});
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------------------------

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Snapshot, utc_ts, uuid, created_ms, size)
// Older state files have no snapshots or clone sources: the defaults (none) apply.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Volume, name, size, replica_count, placement_mode,
                                                uuid, performance_policy, snapshots,
                                                clone_of_volume, clone_of_snapshot)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Auth, type, target_user_name, target_pswd,
                                                initiator_user_name, initiator_pswd)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(AclRef, path, tenant)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(StorageInstance, name, uuid, ip_pool, ips, iqn,
                                                node, acl_initiators, acl_initiator_groups, auth,
                                                active_initiators, metadata, volumes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Initiator, id, name, tenant)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(AclChange, ts_ms, tenant, app_instance,
                                                app_instance_id, storage_instance, op, initiator)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(FailoverEvent, ts_ms, tenant, app_instance,
                                                storage_instance, ips, from_node, to_node)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RebalanceEvent, ts_ms, tenant, app_instance,
                                                storage_instance, old_ips, new_ips)

json to_json_value(const AclChange& c) {
  return c;
}
json to_json_value(const FailoverEvent& e) {
  return e;
}
json to_json_value(const RebalanceEvent& e) {
  return e;
}

// descr is optional, so AppInstance is spelled out.
void to_json(json& j, const AppInstance& a) {
  j = json{{"id", a.id},
           {"name", a.name},
           {"tenant", a.tenant},
           {"admin_state", a.admin_state},
           {"create_mode", a.create_mode},
           {"descr", a.descr ? json(*a.descr) : json(nullptr)},
           {"access_control_mode", a.access_control_mode},
           {"app_template", a.app_template},
           {"online_since_ms", a.online_since_ms},
           {"seq", a.seq},
           {"metadata", a.metadata},
           {"storage_instances", a.storage_instances}};
}

void from_json(const json& j, AppInstance& a) {
  a.id = j.at("id").get<std::string>();
  a.name = j.at("name").get<std::string>();
  a.tenant = j.at("tenant").get<std::string>();
  a.admin_state = j.value("admin_state", "online");
  a.create_mode = j.value("create_mode", "normal");
  if (j.contains("descr") && j["descr"].is_string()) a.descr = j["descr"].get<std::string>();
  a.access_control_mode = j.value("access_control_mode", "deny_all");
  a.app_template = j.value("app_template", "");
  a.online_since_ms = j.value("online_since_ms", int64_t{0});
  a.seq = j.value("seq", uint64_t{0});
  a.metadata = j.value("metadata", Metadata{});
  a.storage_instances = j.value("storage_instances", std::vector<StorageInstance>{});
}

json Model::to_json() const {
  json tenants = json::object();
  for (const auto& [name, t] : tenants_) {
    tenants[name] = {{"app_instances", t.app_instances}, {"initiators", t.initiators}};
  }
  return {{"format", "datera-sim-state/1"},
          {"tenants", tenants},
          {"next_seq", next_seq_},
          {"next_ip", next_ip_},
          {"acl_log", acl_log_},
          {"failovers", failovers_},
          {"rebalances", rebalances_}};
}

Status Model::load_json(const json& doc) {
  try {
    if (doc.value("format", "") != "datera-sim-state/1") {
      return Error{"not a datera-sim state file (format is not datera-sim-state/1)"};
    }
    std::map<std::string, Tenant> tenants;
    for (const auto& [name, t] : doc.at("tenants").items()) {
      if (!normalize_tenant(name)) return Error{"state file: bad tenant '" + name + "'"};
      Tenant tenant;
      tenant.app_instances = t.at("app_instances").get<std::vector<AppInstance>>();
      tenant.initiators = t.at("initiators").get<std::vector<Initiator>>();
      for (const auto& ai : tenant.app_instances) {
        if (!valid_ai_name(ai.name) || !valid_uuid(ai.id)) {
          return Error{"state file: bad app instance '" + ai.name + "'"};
        }
        for (const auto& si : ai.storage_instances) {
          for (const auto& v : si.volumes) {
            for (const auto& snap : v.snapshots) {
              if (!valid_utc_ts(snap.utc_ts) || !valid_uuid(snap.uuid)) {
                return Error{"state file: bad snapshot '" + snap.utc_ts + "' of app instance '" +
                             ai.name + "'"};
              }
            }
          }
        }
      }
      tenants[name] = std::move(tenant);
    }
    tenants_ = std::move(tenants);
    next_seq_ = doc.value("next_seq", uint64_t{1});
    next_ip_ = doc.value("next_ip", uint64_t{0});
    acl_log_ = doc.value("acl_log", std::vector<AclChange>{});
    failovers_ = doc.value("failovers", std::vector<FailoverEvent>{});
    rebalances_ = doc.value("rebalances", std::vector<RebalanceEvent>{});
  } catch (const json::exception& e) {
    return Error{std::string("state file is malformed: ") + e.what()};
  }
  touched();
  return ok_status();
}

}  // namespace datera::sim

#include "agent/config/config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <map>
#include <set>
#include <tuple>
#include <type_traits>
#include <unistd.h>
#include <utility>

#include <yaml-cpp/yaml.h>

#include "base/duration.h"
#include "base/fs.h"
#include "base/logging.h"

namespace datera::config {
namespace {

constexpr size_t kMaxUnixPath = 107;  // sun_path is 108 bytes including the NUL

Error key_error(const std::string& key, const std::string& why) {
  return Error{"config key '" + key + "': " + why};
}

/// Every key the file may hold, by section ("" = top level; "api." = under api:).
const std::map<std::string, std::set<std::string>>& schema() {
  static const std::map<std::string, std::set<std::string>> kSchema = {
      {"",
       {"node_name", "socket_path", "plugin_dir", "kubelet_root", "state_dir", "log_level",
        "log_format", "shutdown_grace", "attach", "metrics", "api", "driver", "backend",
        "initiator", "handoff", "csi"}},
      {"metrics.", {"listen", "probe_listen"}},
      {"api.", {"allowed_uids", "max_connections", "read_timeout", "call_timeout"}},
      {"driver.", {"vendor", "driver", "shim_source", "shim_timeout", "self_test_timeout"}},
      {"backend.",
       {"server", "username", "password_file", "tenant", "tls", "ca_file", "insecure_skip_verify",
        "request_timeout", "check_interval", "allowed_servers"}},
      {"initiator.",
       {"kind", "iqn", "iscsiadm", "replacement_timeout", "noop_out_interval", "noop_out_timeout",
        "login_timeout", "online_timeout", "session_poll_interval", "multipath", "dmsetup",
        "array_poll_interval", "iface", "stall_poll_interval", "io_hold"}},
      {"handoff.", {"mode", "lease_ttl", "claim_settle", "claim_write_bound"}},
      {"csi.",
       {"enabled", "endpoint", "driver_name", "controller", "node", "max_volumes_per_node"}},
  };
  return kSchema;
}

/// CSI's rule for driver names: at most 63 characters, alphanumerics at both ends, and only
/// alphanumerics, '-' and '.' between.
bool is_csi_driver_name(const std::string& n) {
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  if (n.empty() || n.size() > 63 || !alnum(n.front()) || !alnum(n.back())) return false;
  return std::all_of(n.begin(), n.end(), [&](char c) { return alnum(c) || c == '-' || c == '.'; });
}

Status check_csi(const Config& cfg) {
  if (!cfg.csi.enabled) return ok_status();
  if (cfg.csi.endpoint.empty() || cfg.csi.endpoint.front() != '/' ||
      cfg.csi.endpoint.size() > 100 || cfg.csi.endpoint.find("/../") != std::string::npos) {
    return key_error(
        "csi.endpoint",
        "'" + cfg.csi.endpoint + "' must be an absolute socket path of at most 100 characters");
  }
  if (!is_csi_driver_name(cfg.csi.driver_name)) {
    return key_error("csi.driver_name",
                     "'" + cfg.csi.driver_name +
                         "' is not a CSI driver name (at most 63 characters: "
                         "alphanumerics, '-' and '.', alphanumeric at both ends)");
  }
  if (!cfg.csi.controller && !cfg.csi.node) {
    return key_error("csi.enabled", "true needs csi.controller or csi.node (or both)");
  }
  if (cfg.csi.controller && !cfg.backend.configured()) {
    return key_error("csi.controller",
                     "true needs backend.server (and its credentials): the controller creates "
                     "and grants volumes on the agent's array");
  }
  return ok_status();
}

Status check_keys(const YAML::Node& map, const std::string& prefix) {
  const auto& known = schema().at(prefix);
  if (!map.IsMap()) return key_error(prefix.empty() ? "<top>" : prefix, "must be a mapping");
  for (const auto& kv : map) {
    const auto key = kv.first.as<std::string>();
    if (!known.contains(key)) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      return key_error(prefix + key, "unknown key (known: " + list + ")");
    }
  }
  return ok_status();
}

/// "host", "host:port" or "[v6]:port", port 1..65535 (the agent's EDF options parse them the
/// same way; this keeps the config library free of the EDF client).
Status check_server_name(const std::string& text) {
  const std::string bad = "'" + text + "' is not host[:port]";
  std::string host = text, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos) return Error{bad};
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') return Error{bad};
      port = text.substr(close + 2);
      if (port.empty()) return Error{bad};
    }
  } else if (const auto colon = text.rfind(':');
             colon != std::string::npos && text.find(':') == colon) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty()) return Error{bad};
  }
  if (host.empty()) return Error{bad};
  for (const unsigned char c : host) {
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '_')) return Error{bad};
  }
  if (!port.empty()) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc{} || p != port.data() + port.size() || v < 1 || v > 65535) {
      return Error{bad};
    }
  }
  return ok_status();
}

Result<std::string> get_string(const YAML::Node& node, const std::string& key) {
  if (!node.IsScalar()) return key_error(key, "must be a string");
  return node.as<std::string>();
}

Result<milliseconds> get_duration(const YAML::Node& node, const std::string& key) {
  if (!node.IsScalar()) return key_error(key, "must be a duration such as 10s");
  auto d = parse_duration(node.as<std::string>());
  if (!d) return key_error(key, d.error().message);
  return *d;
}

Result<long long> parse_int(const std::string& text, const std::string& key, long long lo,
                            long long hi) {
  long long v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || p != text.data() + text.size()) {
    return key_error(key, "'" + text + "' is not an integer");
  }
  if (v < lo || v > hi) {
    return key_error(key, std::to_string(v) + " is out of range [" + std::to_string(lo) + ", " +
                              std::to_string(hi) + "]");
  }
  return v;
}

Result<long long> get_int(const YAML::Node& node, const std::string& key, long long lo,
                          long long hi) {
  if (!node.IsScalar()) return key_error(key, "must be an integer");
  return parse_int(node.as<std::string>(), key, lo, hi);
}

Result<bool> get_bool(const YAML::Node& node, const std::string& key) {
  if (!node.IsScalar()) return key_error(key, "must be true or false");
  const auto v = node.as<std::string>();
  if (v == "true") return true;
  if (v == "false") return false;
  return key_error(key, "'" + v + "' is not true or false");
}

// Assigns `out` from node[key] with `getter` if the key is present.
#define DT_SET_STRING(node, key, full, out) \
  if (node[key]) {                          \
    auto v = get_string(node[key], full);   \
    if (!v) return v.error();               \
    out = *v;                               \
  }
#define DT_SET_DURATION(node, key, full, out) \
  if (node[key]) {                            \
    auto v = get_duration(node[key], full);   \
    if (!v) return v.error();                 \
    out = *v;                                 \
  }

Status apply_yaml(const YAML::Node& root, Config& cfg) {
  if (!root || root.IsNull()) return ok_status();
  if (auto s = check_keys(root, ""); !s) {
    return s;
  }
  DT_SET_STRING(root, "node_name", "node_name", cfg.node_name)
  DT_SET_STRING(root, "socket_path", "socket_path", cfg.socket_path)
  DT_SET_STRING(root, "plugin_dir", "plugin_dir", cfg.plugin_dir)
  DT_SET_STRING(root, "kubelet_root", "kubelet_root", cfg.kubelet_root)
  DT_SET_STRING(root, "state_dir", "state_dir", cfg.state_dir)
  DT_SET_STRING(root, "log_level", "log_level", cfg.log_level)
  DT_SET_STRING(root, "log_format", "log_format", cfg.log_format)
  DT_SET_DURATION(root, "shutdown_grace", "shutdown_grace", cfg.shutdown_grace)
  if (root["attach"]) {
    auto v = get_bool(root["attach"], "attach");
    if (!v) return v.error();
    cfg.attach = *v;
  }

  if (const auto c = root["csi"]; c && !c.IsNull()) {
    if (auto st = check_keys(c, "csi."); !st) return st;
    DT_SET_STRING(c, "endpoint", "csi.endpoint", cfg.csi.endpoint)
    DT_SET_STRING(c, "driver_name", "csi.driver_name", cfg.csi.driver_name)
    for (const auto& [key, out] :
         {std::pair{"enabled", &cfg.csi.enabled}, std::pair{"controller", &cfg.csi.controller},
          std::pair{"node", &cfg.csi.node}}) {
      if (!c[key]) continue;
      auto v = get_bool(c[key], std::string("csi.") + key);
      if (!v) return v.error();
      *out = *v;
    }
    if (c["max_volumes_per_node"]) {
      auto v = get_int(c["max_volumes_per_node"], "csi.max_volumes_per_node", 0, 4096);
      if (!v) return v.error();
      cfg.csi.max_volumes_per_node = static_cast<int>(*v);
    }
  }
  if (const auto m = root["metrics"]; m && !m.IsNull()) {
    if (auto s = check_keys(m, "metrics."); !s) return s;
    DT_SET_STRING(m, "listen", "metrics.listen", cfg.metrics.listen)
    DT_SET_STRING(m, "probe_listen", "metrics.probe_listen", cfg.metrics.probe_listen)
  }
  if (const auto a = root["api"]; a && !a.IsNull()) {
    if (auto s = check_keys(a, "api."); !s) {
      return s;
    }
    if (const auto u = a["allowed_uids"]) {
      if (!u.IsSequence()) return key_error("api.allowed_uids", "must be a list of uids");
      cfg.api.allowed_uids.clear();
      for (const auto& item : u) {
        auto v = get_int(item, "api.allowed_uids", 0, 4'294'967'294LL);
        if (!v) return v.error();
        cfg.api.allowed_uids.push_back(static_cast<uid_t>(*v));
      }
    }
    if (a["max_connections"]) {
      auto v = get_int(a["max_connections"], "api.max_connections", 1, 4096);
      if (!v) return v.error();
      cfg.api.max_connections = static_cast<size_t>(*v);
    }
    DT_SET_DURATION(a, "read_timeout", "api.read_timeout", cfg.api.read_timeout)
    DT_SET_DURATION(a, "call_timeout", "api.call_timeout", cfg.api.call_timeout)
  }
  if (const auto d = root["driver"]; d && !d.IsNull()) {
    if (auto s = check_keys(d, "driver."); !s) {
      return s;
    }
    DT_SET_STRING(d, "vendor", "driver.vendor", cfg.driver.vendor)
    DT_SET_STRING(d, "driver", "driver.driver", cfg.driver.driver)
    DT_SET_STRING(d, "shim_source", "driver.shim_source", cfg.driver.shim_source)
    DT_SET_DURATION(d, "shim_timeout", "driver.shim_timeout", cfg.driver.shim_timeout)
    DT_SET_DURATION(d, "self_test_timeout", "driver.self_test_timeout",
                    cfg.driver.self_test_timeout)
  }
  if (const auto b = root["backend"]; b && !b.IsNull()) {
    if (auto st = check_keys(b, "backend."); !st) {
      return st;
    }
    DT_SET_STRING(b, "server", "backend.server", cfg.backend.server)
    DT_SET_STRING(b, "username", "backend.username", cfg.backend.username)
    DT_SET_STRING(b, "password_file", "backend.password_file", cfg.backend.password_file)
    DT_SET_STRING(b, "tenant", "backend.tenant", cfg.backend.tenant)
    DT_SET_STRING(b, "ca_file", "backend.ca_file", cfg.backend.ca_file)
    DT_SET_DURATION(b, "request_timeout", "backend.request_timeout", cfg.backend.request_timeout)
    DT_SET_DURATION(b, "check_interval", "backend.check_interval", cfg.backend.check_interval)
    if (const auto list = b["allowed_servers"]; list && !list.IsNull()) {
      if (!list.IsSequence()) {
        return key_error("backend.allowed_servers", "must be a list of host[:port]");
      }
      for (const auto& item : list) {
        auto v = get_string(item, "backend.allowed_servers");
        if (!v) return v.error();
        if (auto st = check_server_name(*v); !st) {
          return key_error("backend.allowed_servers", st.error().message);
        }
        cfg.backend.allowed_servers.push_back(*v);
      }
    }
    for (const auto& [key, out] :
         {std::pair{"tls", &cfg.backend.tls},
          std::pair{"insecure_skip_verify", &cfg.backend.insecure_skip_verify}}) {
      if (!b[key]) continue;
      auto v = get_bool(b[key], std::string("backend.") + key);
      if (!v) return v.error();
      *out = *v;
    }
  }
  if (const auto n = root["handoff"]; n && !n.IsNull()) {
    if (auto st = check_keys(n, "handoff."); !st) {
      return st;
    }
    DT_SET_STRING(n, "mode", "handoff.mode", cfg.handoff.mode)
    DT_SET_DURATION(n, "lease_ttl", "handoff.lease_ttl", cfg.handoff.lease_ttl)
    DT_SET_DURATION(n, "claim_settle", "handoff.claim_settle", cfg.handoff.claim_settle)
    DT_SET_DURATION(n, "claim_write_bound", "handoff.claim_write_bound",
                    cfg.handoff.claim_write_bound)
  }
  if (const auto n = root["initiator"]; n && !n.IsNull()) {
    if (auto st = check_keys(n, "initiator."); !st) {
      return st;
    }
    DT_SET_STRING(n, "kind", "initiator.kind", cfg.initiator.kind)
    DT_SET_STRING(n, "iqn", "initiator.iqn", cfg.initiator.iqn)
    DT_SET_STRING(n, "iscsiadm", "initiator.iscsiadm", cfg.initiator.iscsiadm)
    DT_SET_STRING(n, "multipath", "initiator.multipath", cfg.initiator.multipath)
    DT_SET_STRING(n, "iface", "initiator.iface", cfg.initiator.iface)
    DT_SET_STRING(n, "dmsetup", "initiator.dmsetup", cfg.initiator.dmsetup)
    DT_SET_DURATION(n, "array_poll_interval", "initiator.array_poll_interval",
                    cfg.initiator.array_poll_interval)
    DT_SET_DURATION(n, "login_timeout", "initiator.login_timeout", cfg.initiator.login_timeout)
    DT_SET_DURATION(n, "online_timeout", "initiator.online_timeout", cfg.initiator.online_timeout)
    DT_SET_DURATION(n, "session_poll_interval", "initiator.session_poll_interval",
                    cfg.initiator.session_poll_interval)
    DT_SET_DURATION(n, "stall_poll_interval", "initiator.stall_poll_interval",
                    cfg.initiator.stall_poll_interval)
    DT_SET_DURATION(n, "io_hold", "initiator.io_hold", cfg.initiator.io_hold)
    for (const auto& [key, out, lo, hi] :
         {std::tuple{"replacement_timeout", &cfg.initiator.replacement_timeout, 0, 86400},
          std::tuple{"noop_out_interval", &cfg.initiator.noop_out_interval, 0, 3600},
          std::tuple{"noop_out_timeout", &cfg.initiator.noop_out_timeout, 0, 3600}}) {
      if (!n[key]) continue;
      auto v = parse_int(n[key].as<std::string>(), std::string("initiator.") + key, lo, hi);
      if (!v) return v.error();
      *out = static_cast<int>(*v);
    }
  }
  return ok_status();
}

#undef DT_SET_STRING
#undef DT_SET_DURATION

// Each enumerated key's values with their spellings: to_string() and parse_choice() share them.
constexpr std::pair<InitiatorKind, std::string_view> kInitiatorKinds[] = {
    {InitiatorKind::open_iscsi, "open-iscsi"}, {InitiatorKind::loop, "loop"}};
constexpr std::pair<MultipathMode, std::string_view> kMultipathModes[] = {
    {MultipathMode::automatic, "auto"}, {MultipathMode::on, "on"}, {MultipathMode::off, "off"}};
constexpr std::pair<HandoffMode, std::string_view> kHandoffModes[] = {{HandoffMode::agent, "agent"},
                                                                      {HandoffMode::off, "off"}};

template <typename E>
constexpr const auto& spellings() {
  if constexpr (std::is_same_v<E, InitiatorKind>) {
    return kInitiatorKinds;
  } else if constexpr (std::is_same_v<E, MultipathMode>) {
    return kMultipathModes;
  } else {
    return kHandoffModes;
  }
}

template <typename E>
std::optional<E> parse_choice(std::string_view text) {
  for (const auto& [value, name] : spellings<E>()) {
    if (name == text) return value;
  }
  return std::nullopt;
}

template <typename E>
std::string_view spelling(E value) {
  for (const auto& [v, name] : spellings<E>()) {
    if (v == value) return name;
  }
  return "?";
}

Status check_abs_path(const std::string& key, const std::string& path) {
  if (path.empty() || path.front() != '/')
    return key_error(key, "'" + path + "' must be an absolute path");
  if (path.find("/../") != std::string::npos || path.ends_with("/..") ||
      path.find('\0') != std::string::npos) {
    return key_error(key, "'" + path + "' must not contain '..'");
  }
  return ok_status();
}

bool is_name_token(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  return std::all_of(s.begin(), s.end(),
                     [](unsigned char c) {
                       return std::islower(c) || std::isdigit(c) || c == '-' || c == '_' ||
                              c == '.';
                     }) &&
         s.front() != '.';
}

Status parse_host_port(const std::string& key, const std::string& text, const char* example,
                       std::string& host_out, uint16_t& port_out) {
  const auto pos = text.rfind(':');
  if (pos == std::string::npos || pos == 0) {
    return key_error(key, "'" + text + "' must be HOST:PORT, e.g. " + example);
  }
  std::string host = text.substr(0, pos);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  auto port = parse_int(text.substr(pos + 1), key, 0, 65535);
  if (!port) return port.error();
  host_out = host;
  port_out = static_cast<uint16_t>(*port);
  return ok_status();
}

Status parse_listen(MetricsConfig& m) {
  if (auto s = parse_host_port("metrics.listen", m.listen, "0.0.0.0:9808", m.host, m.port); !s) {
    return s;
  }
  if (m.probe_listen.empty()) return ok_status();
  if (auto s = parse_host_port("metrics.probe_listen", m.probe_listen, "127.0.0.1:9809",
                               m.probe_host, m.probe_port);
      !s) {
    return s;
  }
  // Only a loopback address keeps other pods off it, which is its whole point.
  const bool loopback =
      m.probe_host == "::1" || (m.probe_host.rfind("127.", 0) == 0 &&
                                std::count(m.probe_host.begin(), m.probe_host.end(), '.') == 3);
  if (!loopback) {
    return key_error("metrics.probe_listen",
                     "'" + m.probe_listen +
                         "' is not a loopback address: use 127.0.0.1:PORT (kubelet probes it "
                         "with httpGet host 127.0.0.1 on a hostNetwork pod)");
  }
  if (m.probe_port == 0) {
    return key_error("metrics.probe_listen", "needs a fixed port: the probes name it");
  }
  if (m.probe_port == m.port) {
    return key_error("metrics.probe_listen",
                     "port " + std::to_string(m.probe_port) + " is metrics.listen's port");
  }
  return ok_status();
}

}  // namespace

std::vector<std::string> known_keys() {
  std::vector<std::string> out;
  for (const auto& top : schema().at("")) {
    const auto section = schema().find(top + ".");
    if (section == schema().end()) {
      out.push_back(top);
      continue;
    }
    for (const auto& key : section->second) out.push_back(top + "." + key);
  }
  return out;
}

std::string_view to_string(InitiatorKind kind) {
  return spelling(kind);
}
std::string_view to_string(MultipathMode mode) {
  return spelling(mode);
}
std::string_view to_string(HandoffMode mode) {
  return spelling(mode);
}

bool is_valid_node_name(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  while (start <= name.size()) {
    const auto dot = name.find('.', start);
    const auto label =
        name.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty() || label.size() > 63) return false;
    if (!std::isalnum(static_cast<unsigned char>(label.front())) ||
        !std::isalnum(static_cast<unsigned char>(label.back()))) {
      return false;
    }
    for (unsigned char c : label) {
      if (!(std::islower(c) || std::isdigit(c) || c == '-')) return false;
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return true;
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name.c_str()); v != nullptr) return std::string(v);
    return std::nullopt;
  };
}

const std::vector<EnvOverride>& env_overrides() {
  static const std::vector<EnvOverride> kEnv = {
      {"NODE_NAME", "node_name", [](Config& c, std::string v) { c.node_name = std::move(v); }},
      {"DATERA_AGENT_NODE_NAME", "node_name",
       [](Config& c, std::string v) { c.node_name = std::move(v); }},
      {"DATERA_AGENT_SOCKET_PATH", "socket_path",
       [](Config& c, std::string v) { c.socket_path = std::move(v); }},
      {"DATERA_AGENT_PLUGIN_DIR", "plugin_dir",
       [](Config& c, std::string v) { c.plugin_dir = std::move(v); }},
      {"DATERA_AGENT_KUBELET_ROOT", "kubelet_root",
       [](Config& c, std::string v) { c.kubelet_root = std::move(v); }},
      {"DATERA_AGENT_STATE_DIR", "state_dir",
       [](Config& c, std::string v) { c.state_dir = std::move(v); }},
      {"DATERA_AGENT_LOG_LEVEL", "log_level",
       [](Config& c, std::string v) { c.log_level = std::move(v); }},
      {"DATERA_AGENT_LOG_FORMAT", "log_format",
       [](Config& c, std::string v) { c.log_format = std::move(v); }},
      {"DATERA_AGENT_METRICS_LISTEN", "metrics.listen",
       [](Config& c, std::string v) { c.metrics.listen = std::move(v); }},
      {"DATERA_AGENT_ATTACH", "attach",
       [](Config& c, std::string v) { c.attach_text = std::move(v); }},
      {"DATERA_AGENT_INITIATOR_KIND", "initiator.kind",
       [](Config& c, std::string v) { c.initiator.kind = std::move(v); }},
      {"DATERA_AGENT_INITIATOR_IQN", "initiator.iqn",
       [](Config& c, std::string v) { c.initiator.iqn = std::move(v); }},
      {"DATERA_AGENT_BACKEND_SERVER", "backend.server",
       [](Config& c, std::string v) { c.backend.server = std::move(v); }},
      {"DATERA_AGENT_BACKEND_USERNAME", "backend.username",
       [](Config& c, std::string v) { c.backend.username = std::move(v); }},
      {"DATERA_AGENT_BACKEND_PASSWORD", "backend.password",
       [](Config& c, std::string v) { c.backend.password = std::move(v); }},
  };
  return kEnv;
}

Status validate(Config& cfg) {
  if (!is_valid_node_name(cfg.node_name)) {
    return key_error("node_name", "'" + cfg.node_name +
                                      "' is not a valid Kubernetes node name (lowercase RFC 1123 "
                                      "subdomain); set node_name or NODE_NAME");
  }
  for (const auto& [key, path] :
       {std::pair{"socket_path", &cfg.socket_path}, std::pair{"plugin_dir", &cfg.plugin_dir},
        std::pair{"kubelet_root", &cfg.kubelet_root}, std::pair{"state_dir", &cfg.state_dir}}) {
    if (auto s = check_abs_path(key, *path); !s) return s;
    while (path->size() > 1 && path->back() == '/') path->pop_back();
  }
  if (!cfg.attach_text.empty()) {
    if (cfg.attach_text != "true" && cfg.attach_text != "false") {
      return key_error("attach", "'" + cfg.attach_text +
                                     "' (DATERA_AGENT_ATTACH) is not true or "
                                     "false");
    }
    cfg.attach = cfg.attach_text == "true";
    cfg.attach_text.clear();
  }
  if (cfg.attach && cfg.socket_path == Config{}.socket_path) {
    // kube-controller-manager runs the driver inside its own container, which mounts the plugin
    // dir and not /run: the socket goes where both it and kubelet find it. Directly in the plugin
    // dir with a dot name: kubelet's prober ignores an event only when the file's own name starts
    // with '.', so a socket inside a dot-dir would make it probe that dir as a driver.
    cfg.socket_path = cfg.plugin_dir + "/.datera-agent.sock";
  }
  if (cfg.socket_path.size() > kMaxUnixPath) {
    return key_error("socket_path", "'" + cfg.socket_path + "' is longer than " +
                                        std::to_string(kMaxUnixPath) +
                                        " bytes, the limit for a Unix socket path");
  }
  auto format = parse_log_format(cfg.log_format);
  if (!format) return key_error("log_format", format.error().message);
  cfg.choices.log_format = *format;
  auto level = parse_log_level(cfg.log_level);
  if (!level) return key_error("log_level", level.error().message);
  cfg.choices.log_level = *level;
  if (auto s = parse_listen(cfg.metrics); !s) return s;
  if (!is_name_token(cfg.driver.vendor) || cfg.driver.vendor.find('~') != std::string::npos) {
    return key_error("driver.vendor", "'" + cfg.driver.vendor + "' must be a short lowercase name");
  }
  if (!is_name_token(cfg.driver.driver)) {
    return key_error("driver.driver", "'" + cfg.driver.driver + "' must be a short lowercase name");
  }
  if (!cfg.driver.shim_source.empty()) {
    if (auto s = check_abs_path("driver.shim_source", cfg.driver.shim_source); !s) return s;
  }
  if (cfg.api.allowed_uids.empty()) {
    return key_error("api.allowed_uids", "must name at least one uid (0 is root)");
  }
  if (cfg.api.read_timeout.count() < 100)
    return key_error("api.read_timeout", "must be at least 100ms");
  if (cfg.api.call_timeout.count() < 1000)
    return key_error("api.call_timeout", "must be at least 1s");
  if (cfg.driver.shim_timeout <= cfg.api.call_timeout) {
    return key_error("driver.shim_timeout",
                     "must be longer than api.call_timeout, so the agent's own, more precise "
                     "error reaches kubelet before the shim gives up");
  }
  auto kind = parse_choice<InitiatorKind>(cfg.initiator.kind);
  if (!kind) {
    return key_error("initiator.kind", "'" + cfg.initiator.kind +
                                           "' is not open-iscsi or loop (loop is for development "
                                           "and tests only)");
  }
  cfg.choices.initiator = *kind;
  if (*kind == InitiatorKind::loop && (cfg.initiator.iqn.empty() || !cfg.backend.configured())) {
    return key_error("initiator.kind",
                     "loop needs initiator.iqn and backend.server (a datera-sim with --backend "
                     "file)");
  }
  if (!cfg.initiator.iqn.empty() &&
      (cfg.initiator.iqn.size() < 16 ||
       (cfg.initiator.iqn.rfind("iqn.", 0) != 0 && cfg.initiator.iqn.rfind("eui.", 0) != 0))) {
    return key_error("initiator.iqn",
                     "'" + cfg.initiator.iqn + "' is not an IQN (iqn.YYYY-MM.domain:name)");
  }
  if (auto st = check_abs_path("initiator.iscsiadm", cfg.initiator.iscsiadm); !st) return st;
  if (auto st = check_abs_path("initiator.dmsetup", cfg.initiator.dmsetup); !st) return st;
  auto multipath = parse_choice<MultipathMode>(cfg.initiator.multipath);
  if (!multipath) {
    return key_error("initiator.multipath",
                     "'" + cfg.initiator.multipath + "' is not one of auto, on, off");
  }
  cfg.choices.multipath = *multipath;
  if (cfg.initiator.iface.empty() || cfg.initiator.iface.size() > 64 ||
      cfg.initiator.iface.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789._-") != std::string::npos) {
    return key_error("initiator.iface",
                     "'" + cfg.initiator.iface + "' is not an iface name ([A-Za-z0-9._-], 1-64)");
  }
  if (cfg.attach && !cfg.backend.configured()) {
    return key_error("attach",
                     "true needs backend.server (and its credentials): Kubernetes passes no "
                     "secrets to attach, detach, waitforattach or mountdevice");
  }
  if (auto st = check_csi(cfg); !st) return st;
  auto handoff = parse_choice<HandoffMode>(cfg.handoff.mode);
  if (!handoff) {
    return key_error("handoff.mode", "'" + cfg.handoff.mode + "' is not one of agent, off");
  }
  cfg.choices.handoff = *handoff;
  if (cfg.handoff.lease_ttl.count() < 1000) {
    return key_error("handoff.lease_ttl", "must be at least 1s");
  }
  if (cfg.handoff.claim_settle <= cfg.handoff.claim_write_bound ||
      cfg.handoff.claim_write_bound.count() < 10) {
    return key_error("handoff.claim_settle",
                     "must be longer than handoff.claim_write_bound (at least 10ms): the claim "
                     "protocol is only safe when it waits longer than a claim may take to land");
  }
  if (cfg.initiator.array_poll_interval.count() != 0 &&
      cfg.initiator.array_poll_interval.count() < 1000) {
    return key_error("initiator.array_poll_interval", "must be 0 (off) or at least 1s");
  }
  if (cfg.initiator.session_poll_interval.count() < 100) {
    return key_error("initiator.session_poll_interval", "must be at least 100ms");
  }
  if (cfg.initiator.stall_poll_interval.count() < 100) {
    return key_error("initiator.stall_poll_interval", "must be at least 100ms");
  }
  if (cfg.initiator.io_hold.count() != 0 &&
      (cfg.initiator.io_hold.count() < 1000 || cfg.initiator.io_hold > std::chrono::hours(1))) {
    return key_error("initiator.io_hold",
                     "must be 0 (no hold) or between 1s and 1h: a longer hold blocks unmount and "
                     "pod deletion for as long in an outage");
  }
  if (cfg.backend.configured()) {
    if (cfg.backend.username.empty()) {
      return key_error("backend.username",
                       "is required with backend.server (or DATERA_AGENT_BACKEND_USERNAME)");
    }
    if (cfg.backend.password.empty() && cfg.backend.password_file.empty()) {
      return key_error(
          "backend.password_file",
          "is required with backend.server (or DATERA_AGENT_BACKEND_PASSWORD); passwords are "
          "never written into the config file itself");
    }
    if (!cfg.backend.password_file.empty()) {
      if (auto st = check_abs_path("backend.password_file", cfg.backend.password_file); !st)
        return st;
    }
    if (!cfg.backend.ca_file.empty()) {
      if (auto st = check_abs_path("backend.ca_file", cfg.backend.ca_file); !st) return st;
    }
    if (cfg.backend.tenant.empty() || cfg.backend.tenant.front() != '/') {
      return key_error("backend.tenant",
                       "'" + cfg.backend.tenant + "' must look like /root or /root/<name>");
    }
    if (cfg.backend.check_interval.count() < 1000)
      return key_error("backend.check_interval", "must be at least 1s");
    if (cfg.backend.request_timeout.count() < 100) {
      return key_error("backend.request_timeout", "must be at least 100ms");
    }
  }
  if (cfg.driver.self_test_timeout.count() < 100) {
    return key_error("driver.self_test_timeout", "must be at least 100ms");
  }
  return ok_status();
}

Result<Config> parse(const std::string& yaml_text, const EnvLookup& env,
                     const std::string& hostname) {
  Config cfg;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return Error{"config is not valid YAML: " + std::string(e.what())};
  }
  try {
    if (auto s = apply_yaml(root, cfg); !s) return s.error();
  } catch (const YAML::Exception& e) {  // e.g. a map where a scalar was expected
    return Error{"config has a value of the wrong type: " + std::string(e.what())};
  }
  for (const auto& e : env_overrides()) {
    if (auto value = env(e.variable); value && !value->empty()) e.apply(cfg, std::move(*value));
  }
  if (cfg.node_name.empty()) {
    cfg.node_name = hostname;
    std::transform(cfg.node_name.begin(), cfg.node_name.end(), cfg.node_name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  if (auto s = validate(cfg); !s) return s.error();
  return cfg;
}

Result<Config> load(const std::string& path, const EnvLookup& env, const std::string& hostname) {
  std::string text;
  if (!path.empty()) {
    auto content = fs::read_file(path, 1 << 20);
    if (!content) return content.error().wrap("reading config");
    text = std::move(*content);
  }
  auto cfg = parse(text, env, hostname);
  if (!cfg && !path.empty()) return cfg.error().wrap(path);
  if (cfg && cfg->backend.configured() && cfg->backend.password.empty()) {
    auto pw = fs::read_file(cfg->backend.password_file, 4096);
    if (!pw) return pw.error().wrap("config key 'backend.password_file'");
    while (!pw->empty() && (pw->back() == '\n' || pw->back() == '\r')) pw->pop_back();
    if (pw->empty())
      return Error{"config key 'backend.password_file': " + cfg->backend.password_file +
                   " is empty"};
    cfg->backend.password = std::move(*pw);
  }
  return cfg;
}

}  // namespace datera::config

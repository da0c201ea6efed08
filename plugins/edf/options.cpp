#include "plugins/edf/options.h"

#include <cctype>
#include <charconv>
#include <functional>
#include <tuple>

namespace datera::edf {
namespace {

std::string opt(const Json& o, const char* key) {
  const auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

Error bad(const std::string& key, const std::string& why) {
  return Error{"volume option '" + key + "': " + why};
}

Result<uint64_t> parse_uint(const std::string& key, const std::string& text, uint64_t lo,
                            uint64_t hi) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || p != text.data() + text.size())
    return bad(key, "'" + text + "' is not a whole number");
  if (v < lo || v > hi) {
    return bad(key,
               std::to_string(v) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  return v;
}

}  // namespace

Result<std::string> base64_decode(const std::string& in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  int buffer = 0, bits = 0;
  size_t pads = 0;
  for (const char c : in) {
    if (c == '=') {
      ++pads;
      continue;
    }
    if (c == '\n' || c == '\r') continue;
    const int v = value(c);
    if (v < 0 || pads > 0) return Error{"not valid base64"};
    buffer = (buffer << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  if (pads > 2) return Error{"not valid base64"};
  return out;
}

Result<BackendTarget> parse_server(const std::string& text, BackendTarget base) {
  std::string host = text;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos) return Error{"'" + text + "' has an unclosed '['"};
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') return Error{"'" + text + "' is not [ADDRESS]:PORT"};
      port = text.substr(close + 2);
    }
  } else if (const auto colon = text.rfind(':');
             colon != std::string::npos && text.find(':') == colon) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty()) return Error{"'" + text + "' names no host"};
  for (const unsigned char c : host) {
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '_')) {
      return Error{"'" + text + "' is not a host name or address"};
    }
  }
  for (auto& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  base.host = host;
  if (!port.empty()) {
    auto p = parse_uint("backstoreServer", port, 1, 65535);
    if (!p) return p.error();
    base.port = static_cast<uint16_t>(*p);
  }
  return base;
}

namespace {
/// `t` is one of `allowed` ("host[:port]", without a port: `default_port`).
bool server_allowed(const BackendTarget& t, const std::vector<std::string>& allowed,
                    uint16_t default_port) {
  for (const auto& entry : allowed) {
    BackendTarget base;
    base.port = default_port;
    if (auto a = parse_server(entry, base); a && same_server(*a, t)) return true;
  }
  return false;
}
}  // namespace

std::string server_key(const BackendTarget& t) {
  std::string host = t.host;
  for (auto& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(t.port);
}

bool same_server(const BackendTarget& a, const BackendTarget& b) {
  return server_key(a) == server_key(b);
}

namespace {

/// kubelet's secretRef values among the options, base64-decoded.
Result<SecretKeys> secret_of_options(const Json& o) {
  SecretKeys out;
  for (const auto& [field, key, value] :
       {std::tuple{"server", "kubernetes.io/secret/server", &out.server},
        std::tuple{"username", "kubernetes.io/secret/username", &out.username},
        std::tuple{"password", "kubernetes.io/secret/password", &out.password}}) {
    const auto raw = opt(o, key);
    if (raw.empty()) continue;
    auto decoded = base64_decode(raw);
    if (!decoded) return Error{"secret key '" + std::string(field) + "' is not valid base64"};
    *value = std::move(*decoded);
  }
  return out;
}

/// Both parse_volume_options(): `secret` yields the secret's keys where they are needed, so an
/// error in the options before them is reported first, as it always was.
Result<VolumeOptions> parse(const Json& o, const std::function<Result<SecretKeys>()>& secret,
                            const BackendTarget& defaults,
                            const std::vector<std::string>& allowed_servers) {
  if (!o.is_object()) return Error{"volume options are not a JSON object"};
  VolumeOptions v;
  auto& s = v.spec;
  s.name = opt(o, "volumeID");
  const char* name_key = "volumeID";
  if (s.name.empty()) {
    s.name = opt(o, "kubernetes.io/pvOrVolumeName");
    name_key = "kubernetes.io/pvOrVolumeName";
  }
  if (s.name.empty()) return bad("volumeID", "missing (and no PV name to fall back on)");
  if (!is_valid_name(s.name)) {
    return bad(name_key, "'" + s.name +
                             "' is not a valid Datera name (a letter or '_', then 2..63 of "
                             "letters, digits, '_', '-', '.'; or a UUID)");
  }
  if (auto size = opt(o, "size"); !size.empty()) {
    // Accept "10", "10G" and "10Gi": the Flex driver took GiB.
    while (!size.empty() && (size.back() == 'i' || size.back() == 'G' || size.back() == 'g'))
      size.pop_back();
    auto n = parse_uint("size", size, 1, 32768);
    if (!n) return n.error();
    s.size_gib = static_cast<int64_t>(*n);
  }
  if (auto r = opt(o, "replica"); !r.empty()) {
    auto n = parse_uint("replica", r, 1, 5);
    if (!n) return n.error();
    s.replica_count = static_cast<int>(*n);
  }
  if (auto t = opt(o, "template"); !t.empty()) {
    if (!is_valid_name(t)) return bad("template", "'" + t + "' is not a valid Datera name");
    s.template_name = t;
  }
  if (auto p = opt(o, "placementMode"); !p.empty()) {
    if (p != "hybrid" && p != "single_flash" && p != "all_flash") {
      return bad("placementMode", "'" + p + "' is not hybrid, single_flash or all_flash");
    }
    s.placement_mode = p;
  }
  if (auto p = opt(o, "ipPool"); !p.empty()) {
    if (!is_valid_name(p)) return bad("ipPool", "'" + p + "' is not a valid Datera name");
    s.ip_pool = p;
  }
  if (auto q = opt(o, "maxIops"); !q.empty()) {
    auto n = parse_uint("maxIops", q, 0, 10'000'000);
    if (!n) return n.error();
    s.max_iops = *n;
  }
  if (auto q = opt(o, "maxBW"); !q.empty()) {
    auto n = parse_uint("maxBW", q, 0, 10'240'000);
    if (!n) return n.error();
    s.max_bandwidth = *n;
  }
  if (auto r = opt(o, "retainPolicy"); !r.empty()) {
    if (r != "never" && r != "retain")
      return bad("retainPolicy", "'" + r + "' is not 'retain' or 'never'");
    v.delete_on_release = r == "never";
  }
  for (const char* key : {"kubernetes.io/fsType", "fsType"}) {
    if (auto f = opt(o, key); !f.empty()) {
      if (f != "xfs" && f != "ext4") return bad(key, "'" + f + "' is not supported (xfs or ext4)");
      v.fs_type = f;
      break;
    }
  }

  // Where, and as whom. The secret wins over the options: it is where Kubernetes wants
  // credentials to live. Values from the secret are never echoed (they may be passwords).
  std::string server_option;  // the option that named the server, for messages
  std::string server_text = opt(o, "backstoreServer");
  if (!server_text.empty()) server_option = "volume option 'backstoreServer'";
  Credentials own{opt(o, "serverUser"), opt(o, "serverPasswd")};
  auto keys = secret();
  if (!keys) return keys.error();
  if (!keys->server.empty()) {
    server_text = keys->server;
    server_option = "secret key 'server'";
  }
  if (!keys->username.empty()) own.user = keys->username;
  if (!keys->password.empty()) own.password = keys->password;
  const bool has_default = !defaults.host.empty();
  BackendTarget target;
  target.port = defaults.port;  // a server named without a port: the default array's port
  if (!server_text.empty()) {
    auto t = parse_server(server_text, target);
    if (!t) return Error{server_option + ": " + t.error().message};
    target = *t;
  } else if (has_default) {
    target = defaults;
  } else {
    return Error{"no Datera EDF server for volume " + s.name +
                 ": set backstoreServer, the secret's 'server' key, or the agent's default "
                 "(backend.server)"};
  }
  const bool on_default = has_default && same_server(target, defaults);
  if (!on_default && !server_allowed(target, allowed_servers, defaults.port)) {
    // Refused before any connection: an allowed list keeps a PV from pointing the node at an
    // arbitrary host (and reading its replies back through pod events).
    return Error{server_option + ": server " + target.server() +
                 " is not allowed on this node (backend.allowed_servers" +
                 (has_default ? ", besides the default array " + defaults.server() : "") +
                 "); add it to backend.allowed_servers in the agent's configuration on every "
                 "node, or leave the option out to use the default array"};
  }
  if (!own.user.empty() || !own.password.empty()) {
    if (own.user.empty() || own.password.empty()) {
      return Error{std::string("the credentials of volume ") + s.name + " need both " +
                   (own.user.empty() ? "a username" : "a password") +
                   ": set the secretRef keys 'username' and 'password', or serverUser and "
                   "serverPasswd (the agent's own password is never lent to another user)"};
    }
    target.credentials = own;
    target.is_default = false;
  } else if (on_default) {
    // The agent's own array with its own account: a reference, resolved at each use, so a
    // rotated password applies to every volume (nothing copies it).
    target = defaults;
    target.is_default = true;
  } else {
    return Error{server_option + " names " + target.server() +
                 ", which is not the agent's default array: give the volume its own credentials "
                 "(a secretRef with 'username' and 'password', or serverUser and serverPasswd); "
                 "the agent's own credentials are only ever sent to backend.server"};
  }
  v.backend = std::move(target);
  return v;
}

}  // namespace

Result<VolumeOptions> parse_volume_options(const Json& o, const BackendTarget& defaults,
                                           const std::vector<std::string>& allowed_servers) {
  return parse(
      o, [&] { return secret_of_options(o); }, defaults, allowed_servers);
}

Result<VolumeOptions> parse_volume_options(const Json& o, const SecretKeys& secret,
                                           const BackendTarget& defaults,
                                           const std::vector<std::string>& allowed_servers) {
  return parse(
      o, [&] { return Result<SecretKeys>(secret); }, defaults, allowed_servers);
}

}  // namespace datera::edf

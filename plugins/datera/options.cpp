#include "plugins/datera/options.h"

#include <cctype>
#include <charconv>

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
  base.host = host;
  if (!port.empty()) {
    auto p = parse_uint("backstoreServer", port, 1, 65535);
    if (!p) return p.error();
    base.port = static_cast<uint16_t>(*p);
  }
  return base;
}

Result<VolumeOptions> parse_volume_options(const Json& o, const BackendTarget& defaults) {
  if (!o.is_object()) return Error{"volume options are not a JSON object"};
  VolumeOptions v;
  v.backend = defaults;
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
  if (auto srv = opt(o, "backstoreServer"); !srv.empty()) {
    auto t = parse_server(srv, v.backend);
    if (!t) return bad("backstoreServer", t.error().message);
    v.backend = *t;
  }
  if (auto u = opt(o, "serverUser"); !u.empty()) v.backend.credentials.user = u;
  if (auto p = opt(o, "serverPasswd"); !p.empty()) v.backend.credentials.password = p;
  // The secret wins: it is where Kubernetes wants credentials to live.
  for (const auto& [field, key] : {std::pair{"server", "kubernetes.io/secret/server"},
                                   std::pair{"username", "kubernetes.io/secret/username"},
                                   std::pair{"password", "kubernetes.io/secret/password"}}) {
    const auto raw = opt(o, key);
    if (raw.empty()) continue;
    auto decoded = base64_decode(raw);
    // Never echo the value: it may be a password.
    if (!decoded) return Error{"secret key '" + std::string(field) + "' is not valid base64"};
    if (std::string(field) == "server") {
      auto t = parse_server(*decoded, v.backend);
      if (!t) return Error{"secret key 'server': " + t.error().message};
      v.backend.host = t->host;
      v.backend.port = t->port;
    } else if (std::string(field) == "username") {
      v.backend.credentials.user = *decoded;
    } else {
      v.backend.credentials.password = *decoded;
    }
  }
  if (v.backend.host.empty()) {
    return Error{"no Datera EDF server for volume " + s.name +
                 ": set backstoreServer, the secret's 'server' key, or the agent's default"};
  }
  return v;
}

}  // namespace datera::edf

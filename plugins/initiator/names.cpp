#include "plugins/initiator/names.h"

#include <cctype>
#include <charconv>

#include <boost/asio/ip/address.hpp>

namespace datera::initiator {

namespace {

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_hex(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}
bool all_of(std::string_view s, bool (*pred)(char)) {
  for (const char c : s) {
    if (!pred(c)) return false;
  }
  return true;
}

std::string quoted(std::string_view s) {
  // Bounded and printable, so a hostile value cannot flood or forge log lines.
  std::string out = "'";
  for (const char c : s.substr(0, 80)) {
    out += std::isprint(static_cast<unsigned char>(c)) != 0 ? c : '?';
  }
  if (s.size() > 80) out += "...";
  return out + "'";
}

Status bad_iqn(std::string_view iqn, const std::string& why) {
  return Error{"invalid iSCSI name " + quoted(iqn) + ": " + why, errno_code(EINVAL)};
}

/// "com.daterainc": dot-separated labels of [a-z0-9-], not starting or ending with '-'.
bool valid_domain(std::string_view d) {
  if (d.empty()) return false;
  size_t start = 0;
  while (start <= d.size()) {
    const size_t dot = d.find('.', start);
    const std::string_view label =
        d.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.front() == '-' || label.back() == '-') return false;
    for (const char c : label) {
      if (!is_lower_alnum(c) && c != '-') return false;
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

Status validate_iqn(std::string_view iqn) {
  if (iqn.empty()) return bad_iqn(iqn, "it is empty");
  if (iqn.size() > 223) return bad_iqn(iqn, "longer than 223 bytes");
  if (iqn.rfind("eui.", 0) == 0) {
    const auto hex = iqn.substr(4);
    if (hex.size() != 16 || !all_of(hex, is_hex)) {
      return bad_iqn(iqn, "an eui. name has exactly 16 hex digits");
    }
    return ok_status();
  }
  if (iqn.rfind("naa.", 0) == 0) {
    const auto hex = iqn.substr(4);
    if ((hex.size() != 16 && hex.size() != 32) || !all_of(hex, is_hex)) {
      return bad_iqn(iqn, "a naa. name has 16 or 32 hex digits");
    }
    return ok_status();
  }
  if (iqn.rfind("iqn.", 0) != 0) return bad_iqn(iqn, "it must start with iqn., eui. or naa.");
  // iqn.YYYY-MM.<reversed domain>[:<identifier>]
  const std::string_view rest = iqn.substr(4);
  if (rest.size() < 8 || rest[4] != '-' || rest[7] != '.' ||
      !all_of(rest.substr(0, 4), [](char c) { return c >= '0' && c <= '9'; }) ||
      !all_of(rest.substr(5, 2), [](char c) { return c >= '0' && c <= '9'; })) {
    return bad_iqn(iqn, "expected iqn.YYYY-MM.<reversed domain>[:<identifier>]");
  }
  const std::string_view tail = rest.substr(8);
  const size_t colon = tail.find(':');
  const std::string_view domain = tail.substr(0, colon);
  if (!valid_domain(domain)) {
    return bad_iqn(iqn, "the naming authority must be a reversed domain name ([a-z0-9-] labels)");
  }
  if (colon != std::string_view::npos) {
    const std::string_view id = tail.substr(colon + 1);
    if (id.empty()) return bad_iqn(iqn, "empty identifier after ':'");
    for (const char c : id) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != ':' && c != '-' &&
          c != '_') {
        return bad_iqn(iqn, "the identifier may only hold letters, digits and . : - _");
      }
    }
  }
  return ok_status();
}

std::string Portal::str() const {
  return (ipv6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

Result<Portal> parse_portal(std::string_view text) {
  const auto bad = [&](const std::string& why) {
    return Error{"invalid iSCSI portal " + quoted(text) + ": " + why, errno_code(EINVAL)};
  };
  if (text.empty()) return bad("it is empty");
  if (text.size() > 64) return bad("too long");
  std::string_view host = text;
  std::string_view port_text;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ']'");
    host = text.substr(1, close - 1);
    const std::string_view after = text.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("expected ':<port>' after ']'");
      port_text = after.substr(1);
      if (port_text.empty()) return bad("empty port");
    }
  } else if (const size_t colon = text.find(':');
             colon != std::string_view::npos &&
             text.find(':', colon + 1) == std::string_view::npos) {
    host = text.substr(0, colon);  // exactly one ':' means IPv4:port; more is a bare IPv6 address
    port_text = text.substr(colon + 1);
    if (port_text.empty()) return bad("empty port");
  }
  boost::system::error_code ec;
  const auto addr = boost::asio::ip::make_address(std::string(host), ec);
  if (ec) return bad("not an IP address (expected IP or IP:port)");
  if (addr.is_unspecified() || addr.is_multicast()) return bad("not a unicast address");
  Portal p;
  p.ipv6 = addr.is_v6();
  if (p.ipv6 && addr.to_v6().scope_id() != 0) return bad("scoped IPv6 addresses are not supported");
  p.address = addr.to_string();
  if (!port_text.empty()) {
    unsigned port = 0;
    const auto [end, err] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (err != std::errc{} || end != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
      return bad("the port must be a number from 1 to 65535");
    }
    p.port = port;
  }
  return p;
}

Status validate_lun(int lun) {
  if (lun < 0 || lun > 16383) {
    return Error{"invalid LUN " + std::to_string(lun) + ": expected 0..16383", errno_code(EINVAL)};
  }
  return ok_status();
}

Status validate_serial(std::string_view serial) {
  if (serial.empty()) {
    return Error{"the volume has no serial (EDF volume uuid) to verify its device against",
                 errno_code(EINVAL)};
  }
  if (serial.size() > 64)
    return Error{"invalid volume serial " + quoted(serial) + ": too long", errno_code(EINVAL)};
  for (const char c : serial) {
    if (!std::isgraph(static_cast<unsigned char>(c))) {
      return Error{"invalid volume serial " + quoted(serial) + ": only printable characters",
                   errno_code(EINVAL)};
    }
  }
  return ok_status();
}

Result<std::string> parse_initiator_name(std::string_view text) {
  std::string_view found;
  bool have = false;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty() || line.front() == '#') continue;
    constexpr std::string_view key = "InitiatorName=";
    if (line.rfind(key, 0) != 0) continue;
    found = trim(line.substr(key.size()));
    have = true;
  }
  if (!have) return Error{"no InitiatorName= line", errno_code(ENOENT)};
  if (auto st = validate_iqn(found); !st) return st.error();
  return std::string(found);
}

}  // namespace datera::initiator

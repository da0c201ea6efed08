#pragma once

// UTF-8 checks and escaping for text from outside (kubelet's argv, API bodies, EDF replies) on its
// way into JSON or a log line. Header-only and dependency-free: the static shim uses it too.
//
// valid(): strict RFC 3629 (no overlong forms, no surrogates, nothing above U+10FFFF), which is
// what nlohmann::json accepts when dumping strictly.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace datera::utf8 {

/// The length (1-4) of the well-formed UTF-8 sequence starting at s[i], or 0 if there is none.
inline size_t sequence_length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t len = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return len;
}

inline bool valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

/// True for C0 controls, DEL and the C1 controls (U+0080-U+009F, UTF-8 C2 80-C2 9F).
inline bool is_control_at(std::string_view s, size_t i, size_t len) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (len == 1) return b0 < 0x20 || b0 == 0x7F;
  return len == 2 && b0 == 0xC2 && static_cast<uint8_t>(s[i + 1]) <= 0x9F;
}

/// The offset of the first control character or malformed byte, or npos if there is none.
inline size_t find_unprintable(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = sequence_length(s, i);
    if (n == 0 || is_control_at(s, i, n)) return i;
    i += n;
  }
  return std::string_view::npos;
}

/// For one-line text: well-formed, printable UTF-8 is kept; \n, \r and \t become the two
/// characters \n, \r, \t; every other control byte and every malformed byte becomes \xNN. The
/// result is valid UTF-8 and holds no control character, so outside data cannot start a new line.
inline void append_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto hex = [&](uint8_t b) {
    out += "\\x";
    out += kHex[b >> 4];
    out += kHex[b & 0xF];
  };
  for (size_t i = 0; i < s.size();) {
    const size_t n = sequence_length(s, i);
    if (n == 0) {
      hex(static_cast<uint8_t>(s[i]));
      ++i;
      continue;
    }
    if (!is_control_at(s, i, n)) {
      out.append(s.substr(i, n));
    } else if (s[i] == '\n') {
      out += "\\n";
    } else if (s[i] == '\r') {
      out += "\\r";
    } else if (s[i] == '\t') {
      out += "\\t";
    } else {
      for (size_t k = 0; k < n; ++k) hex(static_cast<uint8_t>(s[i + k]));
    }
    i += n;
  }
}

inline std::string escaped(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  append_escaped(out, s);
  return out;
}

}  // namespace datera::utf8

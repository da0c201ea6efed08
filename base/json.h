#pragma once

// JSON from outside the process (EDF replies, API bodies, kubelet's options, the journal, the
// agent's own reply read by the shim) is parsed here and nowhere else. nlohmann's parser takes any
// depth, and its dump() and comparison recurse: a 400 KB reply of '[' overflows the stack. So the
// depth is bounded before parsing, and text is dumped with invalid UTF-8 replaced rather than
// thrown on. Header-only: the static FlexVolume shim uses it without linking agent_common.

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace datera::json {

/// Deep enough for every document the agent reads (EDF's deepest reply nests about 8 levels).
inline constexpr size_t kMaxDepth = 64;
/// The largest document the agent accepts from anyone (EDF's app instance lists included).
inline constexpr size_t kMaxBytes = 4u << 20;

/// The deepest nesting of arrays and objects in `text`, counting only brackets outside strings;
/// stops counting (and returns max_depth + 1) as soon as it goes past `max_depth`. Exact for valid
/// JSON; for invalid JSON the parser rejects the text anyway.
inline size_t nesting_depth(std::string_view text, size_t max_depth = kMaxDepth) {
  size_t depth = 0;
  size_t deepest = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return max_depth + 1;
      if (depth > deepest) deepest = depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

/// Parses `text` when it is at most `max_bytes` long and nests at most `max_depth` levels. The
/// error says which bound was broken, or that the text is not JSON; it never quotes the text.
inline Result<nlohmann::json> parse_bounded(std::string_view text, size_t max_depth = kMaxDepth,
                                            size_t max_bytes = kMaxBytes) {
  if (text.size() > max_bytes) {
    return Error{"JSON document of " + std::to_string(text.size()) + " bytes is larger than " +
                 std::to_string(max_bytes)};
  }
  if (nesting_depth(text, max_depth) > max_depth) {
    return Error{"JSON nests deeper than " + std::to_string(max_depth) + " levels"};
  }
  auto parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return Error{"not valid JSON"};
  return parsed;
}

/// dump() that never throws on invalid UTF-8 in a string (it is replaced by U+FFFD). Only for
/// values that were parsed bounded or built by the agent, so the recursion is bounded too.
inline std::string dump(const nlohmann::json& value, int indent = -1) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// The longest prefix of `text` of at most `max_bytes` that ends on a UTF-8 character boundary.
inline std::string_view utf8_prefix(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  // Back off over continuation bytes (10xxxxxx) to the start of the cut character.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

/// True when `text` holds a byte below 0x20 or 0x7F (NUL, newline, escape...).
inline bool has_control_char(std::string_view text) {
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return true;
  }
  return false;
}

}  // namespace datera::json

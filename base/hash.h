#pragma once

// FNV-1a 64: a fast, stable fingerprint for detecting change (installed driver digests, torn
// journal records, owner tags). Not a cryptographic hash: nothing here defends against an
// adversary.

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace datera {

inline uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 14695981039346656037ULL;
  for (const unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

/// 16 lowercase hex digits.
inline std::string fnv1a64_hex(std::string_view bytes) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(fnv1a64(bytes)));
  return buf;
}

}  // namespace datera

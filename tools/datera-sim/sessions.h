#pragma once

// Login sessions of the simulated array: accounts fixed at start, keys with an absolute lifetime
// measured on the injected clock (15 minutes by default, as PYSDK documents), and a hook to expire
// every key at once. Keys are never logged and never persisted: a restarted array forgets them,
// and clients log in again on the 401.

#include <chrono>
#include <map>
#include <random>
#include <string>

#include "base/result.h"
#include "tools/datera-sim/model.h"

namespace datera::sim {

inline constexpr size_t kMaxPasswordBytes = 256;

/// OK for any printable UTF-8 password of 1-256 bytes; else a 400 Error that never quotes it.
Status check_password(const std::string& password);

class Sessions {
 public:
  Sessions(Clock clock, std::chrono::milliseconds ttl, std::map<std::string, std::string> accounts,
           std::optional<uint64_t> seed = std::nullopt);

  /// A new key, or an Error with code 401 (bad credentials) or 400 (malformed name/password).
  Result<std::string> login(const std::string& name, const std::string& password);
  /// True while `key` was issued and has not expired or been revoked.
  bool valid(const std::string& key);
  void logout(const std::string& key) { keys_.erase(key); }
  void expire_all() { keys_.clear(); }
  /// A new password for an existing account (a rotation on the array); every key is revoked.
  /// False when there is no such account.
  bool set_password(const std::string& name, const std::string& password);
  size_t active();

 private:
  void prune();

  Clock clock_;
  std::chrono::milliseconds ttl_;
  std::map<std::string, std::string> accounts_;
  std::map<std::string, TimePoint> keys_;  ///< key -> expiry
  std::mt19937_64 rng_;
};

}  // namespace datera::sim

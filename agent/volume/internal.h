#pragma once

// Helpers shared by the volume manager's translation units (manager.cpp, attached.cpp).

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "agent/common/result.h"
#include "agent/volume/probe.h"
#include "plugins/flexvolume/protocol.h"

namespace datera::volume::detail {

inline std::string opt(const flex::Json& o, const char* key) {
  const auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

/// Lexically normal absolute path without "..", or "" when it is not one.
inline std::string normal_path(const std::string& p) {
  if (p.empty() || p.front() != '/') return "";
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= p.size()) {
    const size_t j = std::min(p.find('/', i), p.size());
    const std::string part = p.substr(i, j - i);
    if (part == "..") return "";
    if (!part.empty() && part != ".") parts.push_back(part);
    i = j + 1;
  }
  std::string out;
  for (const auto& part : parts) out += "/" + part;
  return out.empty() ? "/" : out;
}

/// Measures one step into the probe when it goes out of scope.
class StepTimer {
 public:
  StepTimer(Probe& probe, std::string op, std::string step)
      : probe_(probe),
        op_(std::move(op)),
        step_(std::move(step)),
        start_(std::chrono::steady_clock::now()) {}
  ~StepTimer() { probe_.step(op_, step_, std::chrono::steady_clock::now() - start_); }
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

 private:
  Probe& probe_;
  std::string op_;
  std::string step_;
  std::chrono::steady_clock::time_point start_;
};

/// The `mountOptions` option ("noatime,discard"; kubelet passes no mount options to FlexVolume
/// drivers), checked against the mounter's allow-list for `fs_type`.
Result<std::vector<std::string>> mount_options_of(const flex::Json& options,
                                                  const std::string& fs_type);

}  // namespace datera::volume::detail

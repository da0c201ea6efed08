#pragma once

// Helpers shared by the volume manager's translation units.

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "agent/volume/metrics.h"
#include "agent/volume/step.h"

namespace datera::volume::detail {

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
  StepTimer(Metrics& probe, Operation op, Step step)
      : metrics_(probe), op_(op), step_(step), start_(std::chrono::steady_clock::now()) {}
  ~StepTimer() {
    metrics_.step(to_string(op_), to_string(step_), std::chrono::steady_clock::now() - start_);
  }
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

 private:
  Metrics& metrics_;
  Operation op_;
  Step step_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace datera::volume::detail

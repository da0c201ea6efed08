#pragma once

#include <chrono>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace datera::flexvolume {

/// datera_agent_flexvolume_requests_total{command,status}
/// datera_agent_flexvolume_request_duration_seconds{command} (histogram, 1 ms .. 10 min)
class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  void served(const std::string& command, const std::string& status, std::chrono::nanoseconds took);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& duration_;
};

}  // namespace datera::flexvolume

#pragma once

// The controller side's metrics (attach: true, run where kube-controller-manager calls):
//   datera_agent_controller_operations_total{operation,result}   counter (attach, detach,
//                                                                 isattached; success, failure)
//   datera_agent_controller_operation_duration_seconds{operation} histogram
//   datera_agent_controller_refusals_total                       counter (an attach refused because
//                                                                 another node holds the volume)

#include <chrono>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace datera::controller {

class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  void operation(const std::string& operation, bool ok, std::chrono::nanoseconds took);
  void refused();

 private:
  prometheus::Family<prometheus::Counter>& operations_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Counter& refused_;
};

}  // namespace datera::controller

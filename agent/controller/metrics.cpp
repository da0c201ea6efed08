#include "agent/controller/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>

namespace datera::controller {

Metrics::Metrics(prometheus::Registry& registry)
    : operations_(prometheus::BuildCounter()
                      .Name("datera_agent_controller_operations_total")
                      .Help("attach, detach and isattached calls answered for the attach-detach "
                            "controller, by result")
                      .Register(registry)),
      duration_(prometheus::BuildHistogram()
                    .Name("datera_agent_controller_operation_duration_seconds")
                    .Help("Time to answer one attach, detach or isattached call")
                    .Register(registry)),
      refused_(prometheus::BuildCounter()
                   .Name("datera_agent_controller_refusals_total")
                   .Help("attach calls refused because another node holds the volume "
                         "(multi-attach)")
                   .Register(registry)
                   .Add({})) {
  for (const char* op : {"attach", "detach", "isattached"}) {
    for (const char* r : {"success", "failure"})
      operations_.Add({{"operation", op}, {"result", r}});
  }
}

void Metrics::operation(const std::string& operation, bool ok, std::chrono::nanoseconds took) {
  operations_.Add({{"operation", operation}, {"result", ok ? "success" : "failure"}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets{0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                                                2.5,  5,    10,  30,   60,  120};
  duration_.Add({{"operation", operation}}, kBuckets)
      .Observe(std::chrono::duration<double>(took).count());
}

void Metrics::refused() {
  refused_.Increment();
}

}  // namespace datera::controller

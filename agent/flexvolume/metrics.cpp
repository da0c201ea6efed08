#include "agent/flexvolume/metrics.h"

namespace datera::flexvolume {

Metrics::Metrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("datera_agent_flexvolume_requests_total")
                    .Help("FlexVolume calls answered by the agent, by command and reply status")
                    .Register(registry)),
      duration_(prometheus::BuildHistogram()
                    .Name("datera_agent_flexvolume_request_duration_seconds")
                    .Help("Time the agent spent on a FlexVolume call, by command")
                    .Register(registry)) {}

void Metrics::served(const std::string& command, const std::string& status,
                     std::chrono::nanoseconds took) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  requests_.Add({{"command", command}, {"status", status}}).Increment();
  duration_.Add({{"command", command}}, kBuckets)
      .Observe(std::chrono::duration<double>(took).count());
}

}  // namespace datera::flexvolume

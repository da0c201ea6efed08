#pragma once

#include <chrono>
#include <grpcpp/support/status_code_enum.h>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace datera::csi {

/// A gRPC status code's name as the CSI specification writes it: "OK", "NOT_FOUND", ...
const char* code_name(grpc::StatusCode code);

/// datera_agent_csi_requests_total{method,code}
/// datera_agent_csi_request_duration_seconds{method} (histogram, 1 ms .. 10 min)
/// datera_agent_csi_requests_in_flight
/// datera_agent_csi_copies_total{kind,consistency} (snapshots and clones)
/// Thread-safe (prometheus-cpp's metrics are): the transport counts a call on gRPC's threads when
/// it arrives and on the event loop when it is answered.
class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  /// A call arrived (in flight until finished()).
  void started();
  /// A call was answered with `code` after `took`.
  void finished(const std::string& method, grpc::StatusCode code, std::chrono::nanoseconds took);
  /// A snapshot or clone taken, by what its filesystem was like (Controller::freeze): frozen,
  /// not_mounted, unheld (no node held the volume), crash_consistent (no freeze).
  void copy_taken(const std::string& kind, const std::string& consistency);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Gauge& in_flight_;
  prometheus::Family<prometheus::Counter>& copies_;
};

}  // namespace datera::csi

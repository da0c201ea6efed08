#include "agent/csi/metrics.h"

namespace datera::csi {

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";  // not a code of the gRPC specification
  }
}

Metrics::Metrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("datera_agent_csi_requests_total")
                    .Help("CSI calls answered by the agent, by method and gRPC status code")
                    .Register(registry)),
      duration_(prometheus::BuildHistogram()
                    .Name("datera_agent_csi_request_duration_seconds")
                    .Help("Time from a CSI call's arrival to its answer, by method")
                    .Register(registry)),
      in_flight_(prometheus::BuildGauge()
                     .Name("datera_agent_csi_requests_in_flight")
                     .Help("CSI calls arrived and not answered yet")
                     .Register(registry)
                     .Add({})),
      copies_(prometheus::BuildCounter()
                  .Name("datera_agent_csi_copies_total")
                  .Help("Snapshots and clones taken, by how consistent their filesystem is")
                  .Register(registry)) {
  // A closed label set, present from the start: an alert on crash_consistent sees its first.
  for (const char* kind : {"snapshot", "clone"}) {
    for (const char* c : {"frozen", "not_mounted", "unheld", "crash_consistent"}) {
      copies_.Add({{"kind", kind}, {"consistency", c}});
    }
  }
}

void Metrics::copy_taken(const std::string& kind, const std::string& consistency) {
  copies_.Add({{"kind", kind}, {"consistency", consistency}}).Increment();
}

void Metrics::started() {
  in_flight_.Increment();
}

void Metrics::finished(const std::string& method, grpc::StatusCode code,
                       std::chrono::nanoseconds took) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  in_flight_.Decrement();
  requests_.Add({{"method", method}, {"code", code_name(code)}}).Increment();
  duration_.Add({{"method", method}}, kBuckets)
      .Observe(std::chrono::duration<double>(took).count());
}

}  // namespace datera::csi

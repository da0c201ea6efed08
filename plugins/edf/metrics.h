#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <unordered_map>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace datera::edf {

/// datera_agent_backend_requests_total{method,endpoint,status}  (status "error" = no reply)
/// datera_agent_backend_request_duration_seconds{method,endpoint}
/// datera_agent_backend_retries_total{reason}                   (unavailable, connect, timeout,
///                                                                io, lost_reply)
/// datera_agent_backend_relogins_total
class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  void request(const std::string& method, const std::string& endpoint, const std::string& status,
               std::chrono::nanoseconds took);
  void retry(const std::string& reason) { retries_.Add({{"reason", reason}}).Increment(); }
  void relogin() { relogins_.Increment(); }

 private:
  /// The series of one (method, endpoint, status): looked up in the families once, then reused
  /// (a label-map build and hash per request was a visible part of an idle node's profile).
  struct Series {
    prometheus::Counter* requests = nullptr;
    prometheus::Histogram* duration = nullptr;
  };
  std::mutex mu_;
  std::unordered_map<std::string, Series> series_;  ///< key: method, endpoint, status
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Counter& relogins_;
};

/// Low-cardinality endpoint class of an API path: ids and names become ":id".
/// "/v2.2/app_instances/vol-1/storage_instances/storage-1/acl_policy"
///   -> "/app_instances/:id/storage_instances/:id/acl_policy"
std::string endpoint_class(const std::string& target);

}  // namespace datera::edf

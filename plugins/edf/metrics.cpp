#include "plugins/edf/metrics.h"

#include <cctype>
#include <set>
#include <string_view>

namespace datera::edf {

Metrics::Metrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("datera_agent_backend_requests_total")
                    .Help("Requests to the EDF REST API by method, endpoint class and HTTP status")
                    .Register(registry)),
      duration_(prometheus::BuildHistogram()
                    .Name("datera_agent_backend_request_duration_seconds")
                    .Help("EDF REST API request latency by method and endpoint class")
                    .Register(registry)),
      retries_(prometheus::BuildCounter()
                   .Name("datera_agent_backend_retries_total")
                   .Help("EDF requests retried, by reason")
                   .Register(registry)),
      relogins_(prometheus::BuildCounter()
                    .Name("datera_agent_backend_relogins_total")
                    .Help("Logins repeated because the array refused an expired or unknown key")
                    .Register(registry)
                    .Add({})) {
  // A closed set: at 0 from the start, so rate() and dashboards have the series.
  for (const char* r : {"unavailable", "connect", "timeout", "io", "lost_reply"}) {
    retries_.Add({{"reason", r}});
  }
}

void Metrics::request(const std::string& method, const std::string& endpoint,
                      const std::string& status, std::chrono::nanoseconds took) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  std::string key;
  key.reserve(method.size() + endpoint.size() + status.size() + 2);
  key.append(method).append(1, ' ').append(endpoint).append(1, ' ').append(status);
  std::lock_guard lock(mu_);
  auto [it, fresh] = series_.try_emplace(std::move(key));
  if (fresh) {
    it->second.requests =
        &requests_.Add({{"method", method}, {"endpoint", endpoint}, {"status", status}});
    it->second.duration = &duration_.Add({{"method", method}, {"endpoint", endpoint}}, kBuckets);
  }
  it->second.requests->Increment();
  it->second.duration->Observe(std::chrono::duration<double>(took).count());
}

std::string endpoint_class(const std::string& target) {
  static const std::set<std::string, std::less<>> kCollections = {
      "app_instances",    "storage_instances", "volumes",       "initiators",
      "initiator_groups", "snapshots",         "app_templates", "access_network_ip_pools",
      "tenants",          "storage_nodes"};
  std::string_view path(target);
  path = path.substr(0, path.find('?'));
  std::string out;
  bool after_collection = false;
  bool first = true;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    const std::string_view seg = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (seg.empty()) continue;
    if (first && seg.size() > 1 && seg[0] == 'v' &&
        std::isdigit(static_cast<unsigned char>(seg[1]))) {
      first = false;
      continue;  // the version prefix
    }
    first = false;
    out += '/';
    if (after_collection) {
      out += ":id";
    } else {
      out += seg;
    }
    after_collection = !after_collection && kCollections.contains(seg);
  }
  return out.empty() ? "/" : out;
}

}  // namespace datera::edf

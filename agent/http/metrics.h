#pragma once

#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

namespace datera::http {

/// Metrics of one HTTP server instance, labelled server="api" or server="metrics":
///   datera_agent_http_requests_total{server,route,code}
///   datera_agent_http_rejections_total{server,reason}   (peer_uid, too_large, malformed, ...)
///   datera_agent_http_connections{server}                (open now)
class Metrics {
 public:
  Metrics(prometheus::Registry& registry, std::string server);

  void request(const std::string& route, unsigned code);
  void rejected(const std::string& reason);
  void connection_opened() { connections_.Increment(); }
  void connection_closed() { connections_.Decrement(); }

 private:
  std::string server_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& rejections_;
  prometheus::Gauge& connections_;
};

}  // namespace datera::http

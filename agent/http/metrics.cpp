#include "agent/http/metrics.h"

namespace datera::http {

Metrics::Metrics(prometheus::Registry& registry, std::string server)
    : server_(std::move(server)),
      requests_(prometheus::BuildCounter()
                    .Name("datera_agent_http_requests_total")
                    .Help("HTTP requests answered, by server, route and status code")
                    .Register(registry)),
      rejections_(prometheus::BuildCounter()
                      .Name("datera_agent_http_rejections_total")
                      .Help("HTTP requests or connections refused before reaching a handler")
                      .Register(registry)),
      connections_(prometheus::BuildGauge()
                       .Name("datera_agent_http_connections")
                       .Help("Open HTTP connections")
                       .Register(registry)
                       .Add({{"server", server_}})) {}

void Metrics::request(const std::string& route, unsigned code) {
  requests_.Add({{"server", server_}, {"route", route}, {"code", std::to_string(code)}})
      .Increment();
}

void Metrics::rejected(const std::string& reason) {
  rejections_.Add({{"server", server_}, {"reason", reason}}).Increment();
}

}  // namespace datera::http

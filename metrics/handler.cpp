#include "metrics/handler.h"

#include <prometheus/gauge.h>
#include <prometheus/text_serializer.h>

#include "base/version.h"
#include "metrics/endpoints.h"

namespace datera::metrics {

Handler::Handler(std::vector<std::shared_ptr<prometheus::Collectable>> sources,
                 Readiness& readiness)
    : sources_(std::move(sources)), readiness_(readiness) {}

std::string Handler::scrape() const {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& s : sources_) {
    auto more = s->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

boost::asio::awaitable<http::Response> Handler::handle(http::Request request) {
  const auto path = request.path();
  http::Response r;
  if (request.method != "GET" && request.method != "HEAD") {
    co_return http::error_response(405, "method", "only GET is served here");
  }
  if (path == kMetricsPath) {
    r.route = "metrics";
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = scrape();
  } else if (path == kHealthPath) {
    r.route = "healthz";
    r.content_type = "text/plain";
    r.body = "ok\n";
  } else if (path == kReadyPath) {
    r.route = "readyz";
    r.status = readiness_.ready() ? 200 : 503;
    // Details quote error messages, which may quote paths or replies: never let one fail the probe.
    r.body = readiness_.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    r = http::error_response(404, "not_found", "serves /metrics, /healthz and /readyz");
  }
  co_return r;
}

void register_build_info(prometheus::Registry& registry) {
  prometheus::BuildGauge()
      .Name("datera_agent_build_info")
      .Help("Build of the running agent; always 1")
      .Register(registry)
      .Add({{"version", version::kVersion},
            {"commit", version::kGitCommit},
            {"protocol", std::to_string(version::kProtocol)}})
      .Set(1);
}

}  // namespace datera::metrics

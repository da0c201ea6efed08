#pragma once

// The metrics server's routes, apart from its transport:
//   GET /metrics  Prometheus text format of the registry and extra collectables
//   GET /healthz  200 "ok": answering at all proves the event loop turns
//   GET /readyz   200 when every readiness condition holds, else 503; JSON detail either way

#include <memory>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/registry.h>

#include "agent/http/types.h"
#include "metrics/readiness.h"

namespace datera::metrics {

class Handler : public http::Handler {
 public:
  Handler(std::vector<std::shared_ptr<prometheus::Collectable>> sources, Readiness& readiness);
  boost::asio::awaitable<http::Response> handle(http::Request request) override;

  /// The exposition text (also used by tests and the demo).
  std::string scrape() const;

 private:
  std::vector<std::shared_ptr<prometheus::Collectable>> sources_;
  Readiness& readiness_;
};

/// datera_agent_build_info{version,commit,protocol} 1
void register_build_info(prometheus::Registry& registry);

}  // namespace datera::metrics

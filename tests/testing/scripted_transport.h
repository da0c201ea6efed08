#pragma once

// An EDF transport for unit tests: every request is recorded and answered by `handler`.

#include <functional>
#include <string>
#include <vector>

#include "plugins/edf/transport.h"

namespace datera::testing {

struct ScriptedTransport : edf::Transport {
  std::function<Result<edf::HttpResponse>(const edf::HttpRequest&)> handler;
  std::vector<edf::HttpRequest> log;

  boost::asio::awaitable<Result<edf::HttpResponse>> send(edf::HttpRequest request) override {
    log.push_back(request);
    co_return handler(log.back());
  }
  /// "METHOD target" per request, in order.
  std::vector<std::string> lines() const {
    std::vector<std::string> out;
    for (const auto& r : log) out.push_back(r.method + " " + r.target);
    return out;
  }
};

}  // namespace datera::testing

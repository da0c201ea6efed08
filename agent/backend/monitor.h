#pragma once

// Watches the default Datera array (config `backend`): logs in and reads /system at start-up and
// every check_interval, and reports the result to readiness, /v1/status and metrics. Volume
// operations do not wait for it; it exists so that an operator sees "array unreachable" or "login
// refused" before the first pod does.
//
// Runs on the event loop; run() until stop().

#include <chrono>
#include <functional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "base/logging.h"
#include "plugins/edf/client.h"

namespace datera::backend {

/// datera_agent_backend_up{server} 1/0 and datera_agent_backend_checks_total{result}
class Metrics {
 public:
  Metrics(prometheus::Registry& registry, const std::string& server);
  void checked(bool ok);

 private:
  prometheus::Gauge& up_;
  prometheus::Family<prometheus::Counter>& checks_;
};

class Monitor {
 public:
  using StateCallback = std::function<void(bool up, const std::string& detail)>;

  Monitor(boost::asio::any_io_executor executor, edf::Client& client, std::string server,
          std::chrono::milliseconds interval, Metrics& probe, LoggerPtr log);

  /// Checks now, then every interval, calling `on_state` after each check.
  boost::asio::awaitable<void> run(StateCallback on_state);
  /// One check: version discovery, login, GET /system.
  boost::asio::awaitable<Status> check();
  void stop();

  bool up() const { return up_; }
  nlohmann::json state() const;

 private:
  edf::Client& client_;
  std::string server_;
  std::chrono::milliseconds interval_;
  Metrics& metrics_;
  LoggerPtr log_;
  boost::asio::steady_timer timer_;
  bool stopping_ = false;
  bool checked_ = false;
  bool up_ = false;
  std::string api_version_;
  std::string array_name_;
  std::string sw_version_;
  std::string last_error_;
  std::chrono::system_clock::time_point checked_at_{};
};

}  // namespace datera::backend

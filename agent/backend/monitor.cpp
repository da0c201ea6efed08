#include "agent/backend/monitor.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace datera::backend {

namespace asio = boost::asio;

Metrics::Metrics(prometheus::Registry& registry, const std::string& server)
    : up_(prometheus::BuildGauge()
              .Name("datera_agent_backend_up")
              .Help("1 when the last check of the default Datera array (login + /system) succeeded")
              .Register(registry)
              .Add({{"server", server}})),
      checks_(prometheus::BuildCounter()
                  .Name("datera_agent_backend_checks_total")
                  .Help("Checks of the default Datera array by result")
                  .Register(registry)) {}

void Metrics::checked(bool ok) {
  up_.Set(ok ? 1 : 0);
  checks_.Add({{"result", ok ? "ok" : "failed"}}).Increment();
}

Monitor::Monitor(asio::any_io_executor executor, edf::Client& client, std::string server,
                 std::chrono::milliseconds interval, Metrics& probe, LoggerPtr log)
    : client_(client),
      server_(std::move(server)),
      interval_(interval),
      metrics_(probe),
      log_(std::move(log)),
      timer_(executor) {}

asio::awaitable<Status> Monitor::check() {
  auto version = co_await client_.version();
  if (!version) co_return version.error();
  auto sys = co_await client_.system();
  if (!sys) co_return sys.error();
  api_version_ = *version;
  array_name_ = sys->value("name", "");
  sw_version_ = sys->value("sw_version", "");
  co_return ok_status();
}

asio::awaitable<void> Monitor::run(StateCallback on_state) {
  while (!stopping_) {
    auto st = co_await check();
    if (stopping_) break;
    const bool was_up = up_;
    const bool first = !checked_;
    checked_ = true;
    up_ = st.ok();
    checked_at_ = std::chrono::system_clock::now();
    metrics_.checked(up_);
    if (up_) {
      last_error_.clear();
      if (first || !was_up) {
        log_->info("Datera array {} reachable: {} (software {}, API {})", server_, array_name_,
                   sw_version_, api_version_);
      }
    } else {
      last_error_ = st.error().message;
      // Log on transitions only: an outage must not flood the log once a minute.
      if (first || was_up) log_->warn("Datera array {} not usable: {}", server_, last_error_);
    }
    on_state(up_, up_ ? "array " + server_ + " reachable" : last_error_);
    timer_.expires_after(interval_);
    boost::system::error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

void Monitor::stop() {
  stopping_ = true;
  timer_.cancel();
}

nlohmann::json Monitor::state() const {
  nlohmann::json j{{"server", server_}, {"up", up_}, {"checked", checked_}};
  if (!api_version_.empty()) j["api_version"] = api_version_;
  if (!array_name_.empty()) j["array"] = array_name_;
  if (!sw_version_.empty()) j["sw_version"] = sw_version_;
  if (!last_error_.empty()) j["last_error"] = last_error_;
  if (checked_) {
    j["checked_at_unix"] =
        std::chrono::duration_cast<std::chrono::seconds>(checked_at_.time_since_epoch()).count();
  }
  return j;
}

}  // namespace datera::backend

#include "base/clock.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace datera {

namespace {

class RealClock : public Clock {
 public:
  time_point now() override { return std::chrono::steady_clock::now(); }
  boost::asio::awaitable<void> sleep(std::chrono::milliseconds d) override {
    boost::asio::steady_timer t(co_await boost::asio::this_coro::executor);
    t.expires_after(d);
    boost::system::error_code ec;  // cancelled with its executor's shutdown: just return
    co_await t.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
  }
};

}  // namespace

Clock& real_clock() {
  static RealClock clock;
  return clock;
}

}  // namespace datera

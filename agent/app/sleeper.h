#pragma once

// A wait between a long-running loop's rounds that stop() ends at once: such loops run
// `while (co_await sleeper.sleep_for(d))`, so shutdown cuts the wait short instead of the loop
// noticing a flag a whole period later.

#include <chrono>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace datera::app {

class Sleeper {
 public:
  explicit Sleeper(const boost::asio::any_io_executor& executor) : timer_(executor) {}

  /// Waits until `deadline`; false when stop() was called (before or during the wait).
  boost::asio::awaitable<bool> sleep_until(std::chrono::steady_clock::time_point deadline) {
    if (stopped_) co_return false;
    timer_.expires_at(deadline);
    boost::system::error_code ec;
    co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    co_return !stopped_;
  }
  boost::asio::awaitable<bool> sleep_for(std::chrono::steady_clock::duration d) {
    return sleep_until(std::chrono::steady_clock::now() + d);
  }

  void stop() {
    stopped_ = true;
    timer_.cancel();
  }

 private:
  boost::asio::steady_timer timer_;
  bool stopped_ = false;
};

}  // namespace datera::app

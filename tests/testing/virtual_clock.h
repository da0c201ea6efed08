#pragma once

// Virtual time for coroutine code that waits through a datera::Clock (base/clock.h): a
// sleep parks the coroutine on a timer that only this clock fires; run_until() runs every ready
// handler, and when nothing is ready moves time straight to the earliest sleeper's wake-up. Races
// between timed protocols so run in no wall time and in the same order every run. Every wait of
// the code under test must go through the clock (a real timer would stall virtual time).

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <optional>
#include <stdexcept>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "base/clock.h"
#include "tests/testing/run_async.h"

namespace datera::testing {

class VirtualClock : public Clock {
 public:
  time_point now() override { return now_; }

  boost::asio::awaitable<void> sleep(std::chrono::milliseconds d) override {
    // Never expires by itself: advance() cancels it when virtual time reaches the wake-up.
    boost::asio::steady_timer wake(co_await boost::asio::this_coro::executor, time_point::max());
    sleepers_.emplace(now_ + std::max(d, std::chrono::milliseconds(0)), &wake);
    boost::system::error_code ec;
    co_await wake.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    // Woken early (cancelled: the sleep lost an `||` race): it is due no more, and advance() must
    // not touch its timer. (A frame destroyed with its io_context leaves its entry: nothing
    // advances a clock whose io_context is gone.)
    std::erase_if(sleepers_, [&](const auto& s) { return s.second == &wake; });
  }

  /// Moves time forward to `t` (never back), waking every sleeper due by then: for tests that
  /// step time by hand between calls. The woken run at the io_context's next poll.
  void advance_to(time_point t) {
    now_ = std::max(now_, t);
    wake_due();
  }

  /// Runs `ioc` until `done()`, advancing virtual time whenever nothing is ready. Throws when
  /// nothing is ready and nobody sleeps (the code waits for something that cannot happen).
  template <typename Done>
  void run_until(boost::asio::io_context& ioc, Done done) {
    for (;;) {
      ioc.restart();
      while (!done() && ioc.poll_one() > 0) {
      }
      if (done()) return;
      if (!advance()) throw std::logic_error("virtual clock: nothing ready and nobody sleeps");
    }
  }
  /// Until nothing is ready and nobody sleeps (background loops have ended).
  void run_all(boost::asio::io_context& ioc) {
    do {
      ioc.restart();
      while (ioc.poll_one() > 0) {
      }
    } while (advance());
  }

  /// One awaitable to completion in virtual time (run_async's counterpart).
  template <typename T>
  T run(boost::asio::io_context& ioc, boost::asio::awaitable<T> task) {
    std::optional<T> result;
    std::exception_ptr error;
    bool finished = false;
    boost::asio::co_spawn(ioc, wrap_optional(std::move(task)),
                          [&](std::exception_ptr e, std::optional<T> value) {
                            error = e;
                            if (!e) result = std::move(value);
                            finished = true;
                          });
    run_until(ioc, [&] { return finished; });
    if (error) std::rethrow_exception(error);
    return std::move(*result);
  }

 private:
  /// Moves time to the earliest wake-up and wakes every sleeper due then, in the order they fell
  /// asleep; false when nobody sleeps.
  bool advance() {
    if (sleepers_.empty()) return false;
    now_ = sleepers_.begin()->first;
    wake_due();
    return true;
  }
  void wake_due() {
    while (!sleepers_.empty() && sleepers_.begin()->first <= now_) {
      sleepers_.begin()->second->cancel();
      sleepers_.erase(sleepers_.begin());
    }
  }

  time_point now_ =
      time_point() + std::chrono::hours(1);  ///< not the epoch: "never" stays distinct
  std::multimap<time_point, boost::asio::steady_timer*> sleepers_;
};

}  // namespace datera::testing

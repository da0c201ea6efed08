#pragma once

// Time for code that waits on it: what time it is, and a sleep. Production passes real_clock()
// (std::chrono::steady_clock and an Asio timer); tests pass a virtual clock
// (tests/testing/virtual_clock.h) so timed protocols, such as the lease's Fischer rounds, run in
// virtual time: deterministic, and without waiting.

#include <chrono>

#include <boost/asio/awaitable.hpp>

namespace datera {

class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual time_point now() = 0;
  /// Resumes the awaiting coroutine, on its executor, once `d` of this clock's time has passed.
  virtual boost::asio::awaitable<void> sleep(std::chrono::milliseconds d) = 0;
};

/// std::chrono::steady_clock; sleep() is an asio::steady_timer on the awaiting coroutine's
/// executor.
Clock& real_clock();

}  // namespace datera

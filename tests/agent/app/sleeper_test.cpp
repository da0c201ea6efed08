#include "agent/app/sleeper.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <gtest/gtest.h>

#include "tests/testing/run_async.h"

namespace datera::app {
namespace {

namespace asio = boost::asio;
using std::chrono::steady_clock;

TEST(ApplicationSleeper, SleepsItsTimeWhenNotStopped) {
  asio::io_context ioc;
  Sleeper sleeper(ioc.get_executor());
  const auto start = steady_clock::now();
  EXPECT_TRUE(testing::run_async(ioc, sleeper.sleep_for(std::chrono::milliseconds(20))));
  EXPECT_GE(steady_clock::now() - start, std::chrono::milliseconds(20));
}

// Shutdown must not wait out a loop's period (the lease loop's is ttl/3, 10 s by default).
TEST(ApplicationSleeper, StopEndsAWaitAtOnceAndEveryLaterOne) {
  asio::io_context ioc;
  Sleeper sleeper(ioc.get_executor());
  asio::steady_timer later(ioc, std::chrono::milliseconds(20));  // while the sleep waits
  later.async_wait([&](boost::system::error_code) { sleeper.stop(); });
  const auto start = steady_clock::now();
  EXPECT_FALSE(testing::run_async(ioc, sleeper.sleep_for(std::chrono::seconds(10))));
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_FALSE(testing::run_async(ioc, sleeper.sleep_for(std::chrono::hours(1))))
      << "a loop that was mid-round when stopped ends at its next wait";
}

}  // namespace
}  // namespace datera::app

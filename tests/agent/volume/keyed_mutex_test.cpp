#include "agent/volume/keyed_mutex.h"

#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

namespace datera::volume {
namespace {

namespace asio = boost::asio;

/// Holds `key` for `hold`, appending "<name>+" on entry and "<name>-" on exit.
asio::awaitable<void> worker(KeyedMutex& m, std::string key, std::string name,
                             std::chrono::milliseconds hold, std::vector<std::string>& trace) {
  auto guard = co_await m.lock(key);
  trace.push_back(name + "+");
  asio::steady_timer t(co_await asio::this_coro::executor, hold);
  co_await t.async_wait(asio::use_awaitable);
  trace.push_back(name + "-");
}

TEST(KeyedMutex, SameKeyRunsOneAtATimeInArrivalOrder) {
  asio::io_context ioc;
  KeyedMutex m;
  std::vector<std::string> trace;
  for (const std::string n : {"a", "b", "c"}) {
    asio::co_spawn(ioc, worker(m, "vol-1", n, std::chrono::milliseconds(5), trace), asio::detached);
  }
  ioc.run();
  EXPECT_EQ(trace, (std::vector<std::string>{"a+", "a-", "b+", "b-", "c+", "c-"}));
  EXPECT_FALSE(m.held("vol-1"));
}

TEST(KeyedMutex, DifferentKeysOverlap) {
  asio::io_context ioc;
  KeyedMutex m;
  std::vector<std::string> trace;
  asio::co_spawn(ioc, worker(m, "vol-1", "a", std::chrono::milliseconds(20), trace),
                 asio::detached);
  asio::co_spawn(ioc, worker(m, "vol-2", "b", std::chrono::milliseconds(1), trace), asio::detached);
  ioc.run();
  EXPECT_EQ(trace, (std::vector<std::string>{"a+", "b+", "b-", "a-"}));
}

TEST(KeyedMutex, ReleasedWhenTheHolderThrows) {
  asio::io_context ioc;
  KeyedMutex m;
  bool second_ran = false;
  auto thrower = [&]() -> asio::awaitable<void> {
    auto guard = co_await m.lock("k");
    throw std::runtime_error("bug");
  };
  auto second = [&]() -> asio::awaitable<void> {
    auto guard = co_await m.lock("k");
    second_ran = true;
  };
  asio::co_spawn(ioc, thrower(), [](std::exception_ptr) {});
  asio::co_spawn(ioc, second(), asio::detached);
  ioc.run();
  EXPECT_TRUE(second_ran);
  EXPECT_FALSE(m.held("k"));
}

}  // namespace
}  // namespace datera::volume

// Unit tier: the degraded path (a monitor that cannot be opened) and waiter bookkeeping that does
// not need events: every waiter returns at its own deadline, the poll interval caps a degraded
// wait, and destroying the monitor releases pending waiters.

#include <chrono>
#include <optional>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "agent/udev/linux_udev_monitor.h"
#include "tests/testing/run_async.h"

namespace datera::udev {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;  // NOLINT(google-build-using-namespace)
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using testing::run_async;

milliseconds since(Clock::time_point t0) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - t0);
}

asio::awaitable<void> timed_wait(Monitor& m, milliseconds max, std::optional<milliseconds>& out) {
  const auto t0 = Clock::now();
  co_await m.wait(max);
  out = since(t0);
}

UdevOptions broken_options() {
  UdevOptions opts;
  opts.source = "no-such-netlink-group";  // udev_monitor_new_from_netlink refuses it
  opts.poll_interval = 60s;
  return opts;
}

TEST(UdevDegraded, UnopenableMonitorIsDegradedAndWaitsReturnAtTheirTimeout) {
  asio::io_context ioc;
  auto mon = make_udev_monitor(ioc.get_executor(), broken_options(), null_logger());
  EXPECT_TRUE(mon->degraded());
  std::optional<milliseconds> a, b, c;
  asio::co_spawn(ioc, timed_wait(*mon, 300ms, a), asio::detached);
  asio::co_spawn(ioc, timed_wait(*mon, 100ms, b), asio::detached);
  asio::co_spawn(ioc, timed_wait(*mon, 200ms, c), asio::detached);
  ioc.run_for(5s);
  ASSERT_TRUE(a && b && c);
  EXPECT_GE(*a, 300ms);
  EXPECT_GE(*b, 100ms);
  EXPECT_GE(*c, 200ms);
  EXPECT_LT(*a, 2s);
  EXPECT_LT(*b, *c);
  EXPECT_LT(*c, *a);
  EXPECT_TRUE(mon->degraded());
}

TEST(UdevDegraded, PollIntervalCapsADegradedWait) {
  asio::io_context ioc;
  UdevOptions opts = broken_options();
  opts.poll_interval = 100ms;
  auto mon = make_udev_monitor(ioc.get_executor(), opts, null_logger());
  ASSERT_TRUE(mon->degraded());
  const auto t0 = Clock::now();
  run_async(ioc, mon->wait(1h));
  EXPECT_GE(since(t0), 100ms);
  EXPECT_LT(since(t0), 5s);
}

TEST(UdevDegraded, CallbacksMayBeRegisteredWhileDegraded) {
  asio::io_context ioc;
  auto mon = make_udev_monitor(ioc.get_executor(), broken_options(), null_logger());
  int calls = 0;
  mon->on_event([&](const Event&) { ++calls; });
  run_async(ioc, mon->wait(10ms));
  EXPECT_EQ(calls, 0);
}

TEST(UdevDegraded, DestroyingTheMonitorReleasesPendingWaiters) {
  asio::io_context ioc;
  auto mon = make_udev_monitor(ioc.get_executor(), broken_options(), null_logger());
  std::optional<milliseconds> woke;
  asio::co_spawn(ioc, timed_wait(*mon, 30s, woke), asio::detached);
  asio::steady_timer later(ioc, 50ms);
  later.async_wait([&](boost::system::error_code) { mon.reset(); });
  ioc.run_for(5s);
  ASSERT_TRUE(woke.has_value());
  EXPECT_LT(*woke, 2s);
}

TEST(UdevDegraded, UdevSourceWithoutUdevdStartsDegraded) {
  asio::io_context ioc;
  UdevOptions opts;
  opts.udevd_control_path = "/nonexistent/udev/control";
  opts.poll_interval = 50ms;
  auto mon = make_udev_monitor(ioc.get_executor(), opts, null_logger());
  EXPECT_TRUE(mon->degraded());
  const auto t0 = Clock::now();
  run_async(ioc, mon->wait(1h));
  EXPECT_LT(since(t0), 5s);
}

}  // namespace
}  // namespace datera::udev

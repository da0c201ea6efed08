#pragma once

// Runs a blocking function (fsync, rename, a large read) on a worker pool and resumes the calling
// coroutine on its own executor, so the event loop never stalls on disk.

#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace datera {

template <typename Fn>
auto run_blocking(boost::asio::thread_pool& pool, Fn fn)
    -> boost::asio::awaitable<decltype(fn())> {
  using R = decltype(fn());
  // The function object is moved into co_spawn's own frame, so nothing dangles.
  co_return co_await boost::asio::co_spawn(
      pool.get_executor(),
      [f = std::move(fn)]() mutable -> boost::asio::awaitable<R> { co_return f(); },
      boost::asio::use_awaitable);
}

}  // namespace datera

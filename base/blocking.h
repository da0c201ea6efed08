#pragma once

// Runs a blocking function (fsync, rename, a large read) on a worker pool and resumes the calling
// coroutine on its own executor, so the event loop never stalls on disk.
//
// Pass lambdas that capture by reference (the caller's frame outlives the call). GCC 12 destroys a
// brace-initialized aggregate passed by value straight into a coroutine twice (GCC PR 100611;
// reproduced under ASan): lambdas are such aggregates, and so is `f(Call{...})`. Name the object
// first and pass it (or std::move it); objects built by a constructor are not affected.

#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace datera {

template <typename Fn>
auto run_blocking(boost::asio::thread_pool& pool, Fn fn) -> boost::asio::awaitable<decltype(fn())> {
  using R = decltype(fn());
  // The function object is moved into co_spawn's own frame, so nothing dangles. co_spawn needs a
  // default-constructible result, hence the optional around types such as Result<T>.
  if constexpr (std::is_void_v<R>) {
    co_await boost::asio::co_spawn(
        pool.get_executor(),
        [f = std::move(fn)]() mutable -> boost::asio::awaitable<void> {
          f();
          co_return;
        },
        boost::asio::use_awaitable);
  } else {
    auto out = co_await boost::asio::co_spawn(
        pool.get_executor(),
        [f = std::move(fn)]() mutable -> boost::asio::awaitable<std::optional<R>> {
          co_return f();
        },
        boost::asio::use_awaitable);
    co_return std::move(*out);
  }
}

}  // namespace datera

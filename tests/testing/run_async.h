#pragma once

// Runs one awaitable to completion and returns its value, so unit tests of coroutine code read like
// plain calls. Other work on the same io_context (a server) runs meanwhile and resumes next time.

#include <exception>
#include <optional>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

namespace datera::testing {

template <typename T>
boost::asio::awaitable<std::optional<T>> wrap_optional(boost::asio::awaitable<T> task) {
  co_return co_await std::move(task);
}

/// co_spawn's completion handler needs a default-constructible value: carry T in an optional.
template <typename T>
T run_async(boost::asio::io_context& ioc, boost::asio::awaitable<T> task) {
  std::optional<T> result;
  std::exception_ptr error;
  boost::asio::co_spawn(ioc, wrap_optional(std::move(task)),
                        [&](std::exception_ptr e, std::optional<T> value) {
                          error = e;
                          if (!e) result = std::move(value);
                          ioc.stop();  // other work (servers, watchers) may keep the loop busy
                        });
  ioc.restart();
  ioc.run();
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

/// The void case: no value to carry.
inline void run_async(boost::asio::io_context& ioc, boost::asio::awaitable<void> task) {
  std::exception_ptr error;
  boost::asio::co_spawn(ioc, std::move(task), [&](std::exception_ptr e) {
    error = e;
    ioc.stop();
  });
  ioc.restart();
  ioc.run();
  if (error) std::rethrow_exception(error);
}

template <typename T>
T run_async(boost::asio::awaitable<T> task) {
  boost::asio::io_context ioc;
  return run_async(ioc, std::move(task));
}

}  // namespace datera::testing

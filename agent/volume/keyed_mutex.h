#pragma once

// Serializes operations per key (per volume) on one executor, never globally: kubelet retries and
// concurrent pods on the same volume queue up behind each other, other volumes proceed. Waiters are
// served in arrival order. Single-threaded (the agent's event loop); not thread-safe.

#include <deque>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace datera::volume {

class KeyedMutex {
 public:
  /// Releases the key when destroyed (and hands it to the next waiter).
  class Guard {
   public:
    Guard(KeyedMutex* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
    Guard(Guard&& o) noexcept : owner_(o.owner_), key_(std::move(o.key_)) { o.owner_ = nullptr; }
    Guard& operator=(Guard&&) = delete;
    Guard(const Guard&) = delete;
    ~Guard() {  // NOLINT(bugprone-exception-escape): release()'s timer cancel() cannot fail here
      if (owner_) owner_->release(key_);
    }

   private:
    KeyedMutex* owner_;
    std::string key_;
  };

  boost::asio::awaitable<Guard> lock(std::string key) {
    auto& slot = slots_[key];
    if (!slot.held) {
      slot.held = true;
      co_return Guard(this, key);
    }
    // Wait for release() to cancel our timer; the timer never fires on its own.
    auto timer = std::make_shared<boost::asio::steady_timer>(
        co_await boost::asio::this_coro::executor, boost::asio::steady_timer::time_point::max());
    slot.waiters.push_back(timer);
    boost::system::error_code ec;
    co_await timer->async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    // release() left `held` true and handed the key to us.
    co_return Guard(this, key);
  }

  bool held(const std::string& key) const {
    const auto it = slots_.find(key);
    return it != slots_.end() && it->second.held;
  }
  size_t waiting(const std::string& key) const {
    const auto it = slots_.find(key);
    return it == slots_.end() ? 0 : it->second.waiters.size();
  }

 private:
  struct Slot {
    bool held = false;
    std::deque<std::shared_ptr<boost::asio::steady_timer>> waiters;
  };

  void release(const std::string& key) {
    auto it = slots_.find(key);
    if (it == slots_.end()) return;
    if (it->second.waiters.empty()) {
      slots_.erase(it);
      return;
    }
    auto next = std::move(it->second.waiters.front());
    it->second.waiters.pop_front();
    next->cancel();  // resumes that waiter, which now holds the key
  }

  std::map<std::string, Slot> slots_;
};

}  // namespace datera::volume

// The libudev Monitor. One reader coroutine per monitor waits for the socket to become readable,
// drains it (udev_monitor_receive_device until EAGAIN), runs the callbacks and then cancels every
// waiter's timer. Waiters each own a steady_timer set to their own deadline, registered in the
// shared state before they suspend, so an event can never slip between "register" and "sleep"
// (everything runs on one executor).
//
// Lifetime: the state (libudev handles, descriptor, waiters) is shared by the Monitor, the reader
// coroutine and every pending wait(), so destroying the Monitor while they are suspended is safe:
// it marks the state stopped and cancels them, and the last one out frees it. libudev owns the
// socket, so the descriptor is release()d, never closed, before udev_monitor_unref.

#include "agent/udev/linux_udev_monitor.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <unistd.h>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <libudev.h>

namespace datera::udev {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;

struct UdevDeleter {
  void operator()(::udev* u) const { udev_unref(u); }
};
struct MonitorDeleter {
  void operator()(udev_monitor* m) const { udev_monitor_unref(m); }
};
struct DeviceDeleter {
  void operator()(udev_device* d) const { udev_device_unref(d); }
};
using UdevPtr = std::unique_ptr<::udev, UdevDeleter>;
using UdevMonitorPtr = std::unique_ptr<udev_monitor, MonitorDeleter>;
using DevicePtr = std::unique_ptr<udev_device, DeviceDeleter>;

constexpr size_t kMaxDrain = 4096;  // events per wake before yielding to other work

std::string str(const char* s) {
  return s != nullptr ? std::string(s) : std::string();
}

struct State {
  State(asio::any_io_executor executor, UdevOptions options, LoggerPtr logger)
      : ex(std::move(executor)), opts(std::move(options)), log(std::move(logger)), fd(ex) {}
  ~State() {
    // libudev owns the socket: hand it back before udev_monitor_unref closes it.
    if (fd.is_open()) fd.release();
  }
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  /// Opens, filters and enables the monitor; an Error string on failure.
  std::string open() {
    u.reset(udev_new());
    if (!u) return std::string("udev_new: ") + std::strerror(errno != 0 ? errno : ENOMEM);
    errno = 0;
    mon.reset(udev_monitor_new_from_netlink(u.get(), opts.source.c_str()));
    if (!mon)
      return "udev_monitor_new_from_netlink(\"" + opts.source +
             "\"): " + std::strerror(errno != 0 ? errno : EINVAL);
    for (const auto& s : opts.subsystems) {
      const int r = udev_monitor_filter_add_match_subsystem_devtype(mon.get(), s.c_str(), nullptr);
      if (r < 0) return "adding the subsystem filter " + s + ": " + std::strerror(-r);
    }
    if (opts.receive_buffer_bytes > 0) {
      const int r = udev_monitor_set_receive_buffer_size(mon.get(), opts.receive_buffer_bytes);
      if (r < 0) log->debug("udev monitor: receive buffer size not set: {}", std::strerror(-r));
    }
    if (const int r = udev_monitor_enable_receiving(mon.get()); r < 0)
      return std::string("udev_monitor_enable_receiving: ") + std::strerror(-r);
    const int raw = udev_monitor_get_fd(mon.get());
    if (raw < 0) return std::string("udev_monitor_get_fd: ") + std::strerror(-raw);
    boost::system::error_code ec;
    fd.assign(raw, ec);
    if (ec) return "watching the udev monitor socket: " + ec.message();
    return {};
  }

  /// Degrades for good: one warning, no more reads. Waiters keep their own deadlines.
  void fail(const std::string& why) {
    if (!failed)
      log->warn("udev monitor unusable ({}); falling back to polling every {} ms", why,
                opts.poll_interval.count());
    failed = true;
    if (fd.is_open()) {
      boost::system::error_code ignored;
      fd.cancel(ignored);
      fd.release();
    }
  }

  void wake_all() {
    for (auto* t : waiters) t->cancel();
  }

  void dispatch(const Event& ev) {
    // By index: a callback may register another one.
    for (size_t i = 0; i < callbacks.size() && !stopped; ++i) {
      try {
        callbacks[i](ev);
      } catch (const std::exception& e) {
        log->error("udev event callback failed on {} {}: {}", ev.action, ev.devpath, e.what());
      }
    }
  }

  bool degraded() const { return failed || !udevd_seen; }

  asio::any_io_executor ex;
  UdevOptions opts;
  LoggerPtr log;
  UdevPtr u;
  UdevMonitorPtr mon;
  asio::posix::stream_descriptor fd;  // after mon: destroyed (released) first
  std::vector<std::function<void(const Event&)>> callbacks;
  std::vector<asio::steady_timer*> waiters;
  bool failed = false;
  bool udevd_seen = true;
  bool stopped = false;
  uint64_t events = 0;
};

asio::awaitable<void> read_loop(std::shared_ptr<State> s) {
  namespace posix = asio::posix;
  while (!s->stopped && !s->failed) {
    boost::system::error_code ec;
    co_await s->fd.async_wait(posix::descriptor_base::wait_read,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (s->stopped || s->failed) co_return;
    if (ec) {
      s->fail("waiting on its socket: " + ec.message());
      co_return;
    }
    bool any = false;
    bool more = false;
    for (size_t n = 0;; ++n) {
      if (n == kMaxDrain) {
        more = true;
        break;
      }
      errno = 0;
      DevicePtr d(udev_monitor_receive_device(s->mon.get()));
      if (!d) {
        const int err = errno;
        if (err == 0 || err == EAGAIN || err == EWOULDBLOCK || err == EINTR) break;
        if (err == ENOBUFS) {
          // The kernel dropped events: say so, and wake waiters so they re-read sysfs.
          s->log->warn("udev monitor: receive buffer overflow, events were lost; resyncing");
          any = true;
          continue;
        }
        s->fail(std::string("receiving an event: ") + std::strerror(err));
        break;
      }
      Event ev;
      ev.action = str(udev_device_get_action(d.get()));
      ev.subsystem = str(udev_device_get_subsystem(d.get()));
      ev.devname = str(udev_device_get_devnode(d.get()));
      ev.devpath = str(udev_device_get_devpath(d.get()));
      d.reset();
      ++s->events;
      if (!s->udevd_seen) {
        s->udevd_seen = true;
        s->log->info("udev monitor: events arriving, no longer degraded");
      }
      s->log->trace("udev event: {} {} {} {}", ev.action, ev.subsystem, ev.devname, ev.devpath);
      any = true;
      s->dispatch(ev);
      if (s->stopped) co_return;
    }
    if (any) s->wake_all();
    if (more) co_await asio::post(s->ex, asio::use_awaitable);  // let other work run
  }
}

class LinuxUdevMonitor : public Monitor {
 public:
  explicit LinuxUdevMonitor(std::shared_ptr<State> state) : s_(std::move(state)) {}
  // Clearing callbacks and a cancel with an error_code do not throw; clang-tidy cannot see
  // through std::function's destructor.
  // NOLINTNEXTLINE(bugprone-exception-escape)
  ~LinuxUdevMonitor() override {
    s_->stopped = true;
    s_->callbacks.clear();
    if (s_->fd.is_open()) {
      boost::system::error_code ignored;
      s_->fd.cancel(ignored);
    }
    s_->wake_all();
  }
  LinuxUdevMonitor(const LinuxUdevMonitor&) = delete;
  LinuxUdevMonitor& operator=(const LinuxUdevMonitor&) = delete;

  asio::awaitable<void> wait(milliseconds max) override {
    std::shared_ptr<State> s = s_;  // the Monitor may go away while this waits
    if (s->degraded()) max = std::min(max, s->opts.poll_interval);
    asio::steady_timer timer(s->ex, max);
    s->waiters.push_back(&timer);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    std::erase(s->waiters, &timer);
  }

  void on_event(std::function<void(const Event&)> callback) override {
    s_->callbacks.push_back(std::move(callback));
  }

  bool degraded() const override { return s_->degraded(); }

 private:
  std::shared_ptr<State> s_;
};

}  // namespace

MonitorPtr make_udev_monitor(asio::any_io_executor executor, UdevOptions options, LoggerPtr log) {
  if (!log) log = null_logger();
  auto state = std::make_shared<State>(std::move(executor), std::move(options), std::move(log));
  if (const std::string err = state->open(); !err.empty()) {
    state->fail(err);
  } else {
    if (state->opts.source == "udev" &&
        ::access(state->opts.udevd_control_path.c_str(), F_OK) != 0) {
      state->udevd_seen = false;
      state->log->warn(
          "udev monitor: udevd does not seem to run ({} missing), so no events will arrive until "
          "it starts; waking every {} ms meanwhile",
          state->opts.udevd_control_path, state->opts.poll_interval.count());
    }
    asio::co_spawn(state->ex, read_loop(state), asio::detached);
  }
  return std::make_unique<LinuxUdevMonitor>(std::move(state));
}

}  // namespace datera::udev

#pragma once

// Kernel device events for the data path: block, scsi and iscsi_session add/change/remove. The
// Linux implementation reads libudev's monitor socket as an Asio descriptor on the event loop (no
// thread). If the monitor cannot be opened or breaks, it degrades to "wake every poll interval",
// says so in the log, and reports degraded() so a metric can show it.

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>

namespace datera::udev {

struct Event {
  std::string action;     ///< "add", "change", "remove"...
  std::string subsystem;  ///< "block", "scsi", "iscsi_session"
  std::string devname;    ///< "/dev/sdc" ("" when none)
  std::string devpath;    ///< sysfs path below /sys
};

class Monitor {
 public:
  virtual ~Monitor() = default;
  /// Resumes after the next event that arrives after the call, or after `max` (the poll fallback).
  /// Any number of coroutines may wait at once; all wake on an event.
  virtual boost::asio::awaitable<void> wait(std::chrono::milliseconds max) = 0;
  /// Called on the event loop for every event, in order (metrics, the session keeper).
  virtual void on_event(std::function<void(const Event&)> callback) = 0;
  /// True when the monitor is not working and waiters only wake by timeout.
  virtual bool degraded() const = 0;
};

using MonitorPtr = std::unique_ptr<Monitor>;

}  // namespace datera::udev

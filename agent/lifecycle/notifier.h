#pragma once

// Talks to the service manager. With NOTIFY_SOCKET unset (DaemonSet, manual runs) every call is a
// no-op, so the agent needs no special mode for non-systemd environments.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace datera::lifecycle {

class Notifier {
 public:
  virtual ~Notifier() = default;
  virtual void ready(const std::string& status) = 0;
  virtual void status(const std::string& status) = 0;
  virtual void stopping() = 0;
  virtual void reloading() = 0;
  virtual void watchdog() = 0;
  /// The interval systemd expects pings at (WatchdogSec), if the watchdog is enabled for us.
  virtual std::optional<std::chrono::microseconds> watchdog_interval() const = 0;
};

/// libsystemd's sd_notify / sd_watchdog_enabled.
std::unique_ptr<Notifier> make_systemd_notifier();

}  // namespace datera::lifecycle

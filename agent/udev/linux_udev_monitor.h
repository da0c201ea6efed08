#pragma once

// The libudev Monitor: a netlink monitor filtered by subsystem, its socket read as an Asio
// descriptor by one coroutine on the given executor (no thread, no polling). Each wake drains every
// pending event, calls the on_event callbacks in order, then wakes every waiter. wait() and
// on_event() must be called on that executor (the agent's single event loop).
//
// Degraded mode: if the monitor cannot be created, or its socket fails later, a warning is logged
// once, degraded() turns true and wait(max) returns after min(max, poll_interval). With the "udev"
// source and no udevd on the node (/run/udev/control missing) nothing would ever arrive, so the
// monitor also starts degraded; the first event received clears that.

#include <chrono>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "agent/udev/udev_monitor.h"
#include "base/logging.h"

namespace datera::udev {

struct UdevOptions {
  std::vector<std::string> subsystems = {"block", "scsi", "iscsi_session"};
  /// Upper bound of a wait() while degraded: the poll fallback's period.
  std::chrono::milliseconds poll_interval{std::chrono::seconds(5)};
  /// "udev": events after udevd ran its rules (device nodes and links exist). "kernel": raw
  /// uevents, which also arrive without udevd and inside another network namespace, but may come
  /// before the device node is usable. Anything else fails to open (the degraded path).
  std::string source = "udev";
  /// SO_RCVBUF(FORCE) for the netlink socket; a burst larger than this is lost (ENOBUFS), which
  /// is logged and treated as an event so that waiters re-read sysfs.
  int receive_buffer_bytes = 8 << 20;
  /// Where udevd's control socket lives; its absence means "udev" events will not arrive.
  std::string udevd_control_path = "/run/udev/control";
};

MonitorPtr make_udev_monitor(boost::asio::any_io_executor executor, UdevOptions options,
                             LoggerPtr log);

}  // namespace datera::udev

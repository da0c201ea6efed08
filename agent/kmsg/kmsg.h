#pragma once

// Filesystem failures as the kernel reports them in its log (/dev/kmsg): an xfs shutdown, an
// ext4 error or its read-only remount. A storage outage longer than the session's replacement
// timeout ends there, and nothing else on the node says so: the session comes back, the disk is
// "running", and every access of the pod still fails.
//
// The kernel log is read from its start at start-up, so a failure that happened while the agent
// was down is still known; a failure counts until a later mount of the same device (the next
// kubelet mount of the volume stages it afresh). Only records of the kernel's own facility are
// believed: userspace may write to /dev/kmsg, but never as the kernel.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "base/logging.h"

namespace datera::kmsg {

/// One kernel record about a filesystem on a block device.
struct FsEvent {
  enum class Kind { mounted, failed };
  Kind kind = Kind::mounted;
  std::string device;  ///< kernel name: "dm-3", "sdb"
  std::string fs;      ///< "xfs", "ext4"
  std::string text;    ///< the kernel's line (failed only), for the operator
};

/// xfs's words changed between kernels ("... Shutting down filesystem." on 6.18, "Filesystem has
/// been shut down due to log error (0x2)." on Debian 12's 6.1); both end with "Please unmount the
/// filesystem and rectify the problem(s)", which is matched as well.
/// Parses one /dev/kmsg record ("<pri>,<seq>,<usec>,<flags>;<text>\n[ KEY=value\n]...") and
/// returns what it says about a filesystem, if anything. Records not from the kernel facility,
/// malformed ones and everything else: nullopt.
std::optional<FsEvent> fs_event_of(std::string_view record);

/// libiscsi's verdict that a session's connection went silent (Debian 12's 6.1):
///   "connection<sid>:<cid>: ping timeout of <P> secs expired, recv timeout <R>, last rx <X>,
///    last ping <Y>, now <Z>"   (X, Y, Z in jiffies)
/// The kernel declares the connection dead only R + P seconds after it last heard from the target,
/// and iscsid's recovery starts there; a writer in the pod stalled since the last rx.
struct PingTimeout {
  int sid = -1;               ///< the iSCSI session ("session<sid>")
  double silent_seconds = 0;  ///< now - last rx, in seconds
};
/// Parses one /dev/kmsg record (kernel facility only). HZ is not known to userspace; it is the
/// kernel's own: (now - last rx) / (R + P), snapped to a configurable HZ (100, 250, 300, 1000).
std::optional<PingTimeout> ping_timeout_of(std::string_view record);

/// Per session, when its connection went silent, from the latest ping timeout read live.
/// Bounded: at most `max_sessions` sessions are remembered (the oldest entries go first).
class Silences {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  explicit Silences(size_t max_sessions = 4096) : max_sessions_(max_sessions) {}
  /// `read_at`: when the record was read (live records are read as the kernel writes them).
  void feed(const PingTimeout& p, TimePoint read_at);
  /// When session `sid`'s connection went silent, if the kernel declared that at or after
  /// `after` (an older ping timeout belongs to an earlier stall).
  std::optional<TimePoint> since(int sid, TimePoint after) const;

 private:
  struct Entry {
    TimePoint declared;
    TimePoint silent_since;
    uint64_t order = 0;  ///< feeding order: the least recently fed goes first
  };
  std::map<int, Entry> sessions_;
  uint64_t next_ = 0;
  size_t max_sessions_;
};

/// Per device, whether its filesystem failed since it was last mounted. Bounded: at most
/// `max_devices` devices are remembered (the oldest entries go first).
class FsFailures {
 public:
  explicit FsFailures(size_t max_devices = 4096) : max_devices_(max_devices) {}
  void feed(const FsEvent& e);
  /// The kernel's line about the failure of `device`'s filesystem since its last mount.
  std::optional<std::string> failure(const std::string& device) const;

 private:
  struct Entry {
    uint64_t order = 0;
    std::optional<std::string> failed;
  };
  std::map<std::string, Entry> devices_;
  uint64_t next_ = 0;
  size_t max_devices_;
};

/// Metrics:
///   datera_agent_kernel_log_readable              gauge (0: filesystem failures go unseen)
///   datera_agent_filesystem_failures_total{fs}    counter (failure records logged while the
///                                                 agent runs; the backlog read at start-up is
///                                                 not counted again)
class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  void readable(bool yes) { readable_.Set(yes ? 1 : 0); }
  void failure(const std::string& fs) { failures_.Add({{"fs", fs}}).Increment(); }

 private:
  prometheus::Gauge& readable_;
  prometheus::Family<prometheus::Counter>& failures_;
};

/// Where the kernel log's records go.
struct Sinks {
  std::function<void(const FsEvent&)> fs;  ///< every filesystem record, the backlog included
  /// Ping timeouts read live only: a backlog record's read time says nothing of when it happened.
  std::function<void(const PingTimeout&)> ping_timeout;
};

/// Reads the kernel log (/dev/kmsg) on the event loop, from its start, and feeds its filesystem
/// and ping-timeout records to the sinks until stop(). Without the file (or the right to read it)
/// run() logs why, sets the gauge to 0 and returns: filesystem failures then go unseen, and
/// stalls are counted from when the keeper saw them.
class KernelLog {
 public:
  KernelLog(boost::asio::any_io_executor executor, std::string path, Metrics& probe, LoggerPtr log);
  ~KernelLog();
  boost::asio::awaitable<void> run(Sinks sinks);
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace datera::kmsg

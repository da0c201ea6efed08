#pragma once

// A per-volume dm-multipath map that the filesystem is mounted on, so the agent can move a mounted
// volume from one iSCSI session to another (a new access IP after an EDF rebalance) without the
// filesystem seeing an I/O error, and without multipathd.
//
// The map is "datera-<volume uuid>" (dm uuid "DATERA-<volume uuid>") over the verified session
// disk(s). Its standing mode (holds_io()) is to queue when no path is left (queue_if_no_path),
// bounded by the keeper, which fails the queue after initiator.io_hold; with io_hold 0 it does not
// queue, and a dead array surfaces exactly as on the raw disk, after the session's
// replacement_timeout. A path swap queues for its few seconds (measured in the kernel tier,
// docs/benchmarks.md):
//   set_queueing(true)            I/O that fails on the old path waits inside dm, never reaches xfs
//   (caller logs out the old session: its in-flight I/O fails back into dm)
//   ensure(new paths)             reload + resume --noflush --nolockfs (flush would drop the queue,
//                                 lockfs would freeze xfs waiting on the queue)
//   ensure() ends in the standing mode again
//
// Everything is idempotent: ensure() with the map already right does nothing, remove() of an
// absent map succeeds. Maps are never removed while open (a mount): remove() then fails.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "base/result.h"

namespace datera::multipath {

/// A block device by number ("8:16") with the path the agent found it at.
struct PathDevice {
  std::string path;  ///< "/dev/sdb", for messages
  unsigned major = 0;
  unsigned minor = 0;
  std::string dev_t() const { return std::to_string(major) + ":" + std::to_string(minor); }
};

/// A map as the kernel has it now.
struct Map {
  std::string name;
  std::string device;  ///< "/dev/dm-3"
  unsigned major = 0;
  unsigned minor = 0;
  uint64_t sectors = 0;
  std::vector<std::string> paths;  ///< "8:16", in table order
  bool queueing = false;           ///< queue_if_no_path in the live table
  /// Paths the kernel marked failed (an I/O error on them). They stay failed until reinstated,
  /// even after their session is back: multipathd's path checker would reinstate them; here
  /// ensure() does.
  std::vector<std::string> failed;
};

class Multipath {
 public:
  virtual ~Multipath() = default;
  /// The kernel has dm-multipath (and the round-robin selector), and dmsetup is present.
  virtual bool available() const = 0;
  /// The maps' standing mode: queue I/O when no path is usable (the keeper bounds the hold).
  virtual bool holds_io() const { return false; }
  virtual boost::asio::awaitable<Result<std::optional<Map>>> find(const std::string& name) = 0;
  /// find() for several maps; absent ones are left out. The default asks one by one; dmsetup
  /// lists every map with two commands whatever their number.
  virtual boost::asio::awaitable<Result<std::map<std::string, Map>>> find_all(
      std::vector<std::string> names) {
    std::map<std::string, Map> out;
    for (const auto& name : names) {
      auto m = co_await find(name);
      if (!m) co_return m.error();
      if (*m) out.emplace(name, std::move(**m));
    }
    co_return out;
  }
  /// Creates `name` over `paths`, or swaps the live map to exactly `paths` (and their current
  /// size, after a grow). Every path must have the same size. Ends in the standing queue mode
  /// (holds_io()) with every path active: a failed path of an unchanged table is reinstated (the
  /// caller knows its session is up), and one that stays failed is an Error.
  virtual boost::asio::awaitable<Result<Map>> ensure(const std::string& name,
                                                     const std::string& uuid,
                                                     const std::vector<PathDevice>& paths) = 0;
  virtual boost::asio::awaitable<Status> set_queueing(const std::string& name, bool queue) = 0;
  /// Absent: success. Open (mounted): an Error, the map stays.
  virtual boost::asio::awaitable<Status> remove(const std::string& name) = 0;
};

/// The map's name and dm uuid for a volume uuid (checked: [0-9a-f-], at most 64 characters).
Result<std::string> map_name(const std::string& volume_uuid);
std::string map_uuid(const std::string& volume_uuid);

// The table codec (pure, unit tested).
struct Table {
  uint64_t sectors = 0;
  std::vector<std::string> paths;
  bool queue = false;
};
/// "0 <sectors> multipath <features> 0 1 1 round-robin 0 <n> 1 <path> 1 ..."
std::string encode_table(const Table& t);
/// Parses one line of `dmsetup table` for a multipath target (any selector, any path groups).
Result<Table> decode_table(const std::string& line);
/// The failed paths ("8:16") in one line of `dmsetup status` for a multipath target:
/// "0 <sectors> multipath <#feat> <feat>... <#hw> <hw>... <#groups> <next> then per group
/// <state> <#sel> <sel>... <#paths> <#info>, and per path <dev> <A|F> <fail count> <info>...".
Result<std::vector<std::string>> decode_failed_paths(const std::string& line);

}  // namespace datera::multipath

#pragma once

// The Linux Mounter: libblkid for signatures, libmount for mount and the mount table, mount(2) for
// binds, umount2(2) without MNT_DETACH, and mkfs/xfs_growfs/resize2fs through the ProcessRunner.
// Every blocking call (blkid reads, mount, umount) runs on the given thread pool; the coroutines
// resume on the caller's executor. mounts() reads /proc/self/mountinfo on the caller's thread, and
// only when poll(2) says the table changed since its last read. Mount, bind and unmount are
// serialised inside the Mounter, so the "is it mounted elsewhere?" check and the mount itself
// cannot interleave.
//
// probe() reports a partition table as "partition-table:<type>" (e.g. "partition-table:gpt"), so a
// device holding one is never "empty" and never compares equal to "xfs" or "ext4".
//
// Repairs, so a filesystem that failed (an ext4 error, an xfs shutdown) comes back at the next
// staging mount without anyone at the node, and never by reformatting: a read-write mount of ext4
// runs `fsck.ext4 -p` first (only when the device is mounted nowhere); a read-write mount of xfs
// that fails with EUCLEAN runs `xfs_repair` (never -L) and mounts once more. An ordinary xfs
// shutdown needs neither: the mount replays the log. Read-only requests never write the device.

#include <chrono>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>

#include "agent/mount/metrics.h"
#include "agent/mount/mounter.h"
#include "base/logging.h"
#include "base/process/process_runner.h"

namespace datera::mount {

struct MounterOptions {
  /// Directories searched, in order, for mkfs.xfs, mkfs.ext4, fsck.ext4, xfs_repair, xfs_growfs
  /// and resize2fs.
  std::vector<std::string> tool_dirs = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
  std::chrono::milliseconds mkfs_timeout{std::chrono::minutes(10)};
  /// fsck.ext4 -p and xfs_repair. A full check of a large, damaged filesystem takes long; killed
  /// at the limit, either tool can simply be run again (the next mount does).
  std::chrono::milliseconds repair_timeout{std::chrono::minutes(30)};
  std::chrono::milliseconds grow_timeout{std::chrono::minutes(5)};
  /// The mount table read by mounts() and by every check.
  std::string mountinfo_path = "/proc/self/mountinfo";
  /// Root of the process table scanned for holders of a busy mount.
  std::string proc_root = "/proc";
  /// Bounds of that scan: processes looked at, and fds looked at per process.
  size_t holder_scan_max_pids = 4096;
  size_t holder_scan_max_fds = 4096;
};

/// Validates mount options against the allow-list for `fstype` ("xfs" or "ext4"). Exposed for
/// unit tests and for callers that want to reject a request before queueing it.
Status validate_mount_options(const std::string& fstype, const std::vector<std::string>& options,
                              bool read_only);

/// What a repair tool's run means for the mount. Exposed for unit tests.
enum class RepairVerdict {
  clean,      ///< nothing to repair (fsck.ext4 exit 0)
  repaired,   ///< errors corrected (fsck.ext4 exit 1-3, xfs_repair exit 0): mount it
  dirty_log,  ///< xfs_repair exit 2: the log holds changes only a mount (or -L) can settle
  failed,     ///< anything else, a timeout or a signal: not mounted, the operator decides
};
/// fsck.ext4 -p (e2fsck(8)): the exit status is a bit set; 1 "corrected" and 2 "corrected, reboot"
/// (only meaningful for a mounted root) both mean repaired; 4 and up mean not repaired.
RepairVerdict fsck_ext4_verdict(const process::Outcome& outcome);
/// xfs_repair (xfs_repair(8)): 0 repaired, 2 dirty log, anything else failed. It only runs after a
/// mount was refused as corrupt, so 0 is never "clean".
RepairVerdict xfs_repair_verdict(const process::Outcome& outcome);
/// A repair tool's output for one log line or error message: stdout then stderr, xfs_repair's
/// progress lines dropped, lines joined with " | ", control characters and malformed UTF-8 removed.
/// Longer than `max_bytes`: its first and last max_bytes/2, joined by " ... ".
std::string repair_summary(const process::Outcome& outcome, size_t max_bytes);

/// `runner`, `pool` and `probe` must outlive the Mounter.
MounterPtr make_linux_mounter(boost::asio::any_io_executor executor, boost::asio::thread_pool& pool,
                              process::ProcessRunner& runner, MounterOptions options,
                              Metrics& probe, LoggerPtr log);

}  // namespace datera::mount

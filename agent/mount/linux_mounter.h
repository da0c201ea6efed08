#pragma once

// The Linux Mounter: libblkid for signatures, libmount for mount and the mount table, mount(2) for
// binds, umount2(2) without MNT_DETACH, and mkfs/xfs_growfs/resize2fs through the ProcessRunner.
// Every blocking call (blkid reads, mount, umount, /proc scans) runs on the given thread pool; the
// coroutines resume on the caller's executor. Mount, bind and unmount are serialised inside the
// Mounter, so the "is it mounted elsewhere?" check and the mount itself cannot interleave.
//
// probe() reports a partition table as "partition-table:<type>" (e.g. "partition-table:gpt"), so a
// device holding one is never "empty" and never compares equal to "xfs" or "ext4".

#include <chrono>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>

#include "agent/common/logging.h"
#include "agent/mount/mounter.h"
#include "agent/process/process_runner.h"

namespace datera::mount {

struct MounterOptions {
  /// Directories searched, in order, for mkfs.xfs, mkfs.ext4, xfs_growfs and resize2fs.
  std::vector<std::string> tool_dirs = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
  std::chrono::milliseconds mkfs_timeout{std::chrono::minutes(10)};
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

/// `runner` and `pool` must outlive the Mounter.
MounterPtr make_linux_mounter(boost::asio::any_io_executor executor, boost::asio::thread_pool& pool,
                              process::ProcessRunner& runner, MounterOptions options,
                              LoggerPtr log);

}  // namespace datera::mount

#pragma once

// Filesystems on block devices, through libmount and libblkid (no shell, no mount(8) parsing).
// Rules that protect data: mkfs only on a device where blkid finds no signature; a read-write
// mount that the kernel would downgrade to read-only is an error, never a silent fallback; a
// device already mounted somewhere other than the allowed places is refused; unmount never lazy.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "base/result.h"

namespace datera::mount {

/// One line of /proc/self/mountinfo.
struct MountEntry {
  std::string source;  ///< "/dev/loop3"
  std::string target;  ///< mount point
  std::string fstype;
  std::string root;     ///< "/" for a whole filesystem; a subdir for some bind mounts
  std::string options;  ///< VFS + fs options, comma-separated
  bool read_only = false;
  unsigned major = 0;
  unsigned minor = 0;
};

/// One snapshot of the mount table, indexed: lookups by target or by device are O(1) / O(mounts of
/// that device), so a caller checking every volume does not rescan the table per volume.
class MountTable {
 public:
  MountTable() = default;
  explicit MountTable(std::vector<MountEntry> entries);
  const std::vector<MountEntry>& entries() const { return entries_; }
  /// The visible mount at `target` (the last one mounted there), or nullptr.
  const MountEntry* at(const std::string& target) const;
  /// Every mount whose filesystem is on device major:minor, in table order.
  std::vector<const MountEntry*> of_device(unsigned major, unsigned minor) const;
  /// Every mount whose source is `source` ("/dev/loop3"), in table order.
  std::vector<const MountEntry*> of_source(const std::string& source) const;

 private:
  std::vector<MountEntry> entries_;
  std::unordered_map<std::string, size_t> by_target_;  ///< the last entry per target
  std::multimap<std::pair<unsigned, unsigned>, size_t> by_device_;
  std::unordered_multimap<std::string, size_t> by_source_;
};
using MountTablePtr = std::shared_ptr<const MountTable>;

struct MountRequest {
  std::string device;
  std::string target;
  std::string fstype;                ///< "xfs" or "ext4"
  std::vector<std::string> options;  ///< extra mount options ("noatime"...), validated
  bool read_only = false;
};

class Mounter {
 public:
  virtual ~Mounter() = default;

  /// The filesystem type blkid finds on `device` ("xfs", "ext4"...), nullopt when it finds no
  /// signature at all. An unreadable device is an Error, never "empty".
  virtual boost::asio::awaitable<Result<std::optional<std::string>>> probe(
      const std::string& device) = 0;
  /// mkfs.<fstype> on `device`, only after probe() found nothing (checked again here).
  virtual boost::asio::awaitable<Status> format(const std::string& device,
                                                const std::string& fstype) = 0;
  /// Mounts `req.device` at `req.target` (created if missing). Already mounted there with the same
  /// device: success. Read-write asked and read-only obtained: unmounted again and an Error.
  virtual boost::asio::awaitable<Status> mount(const MountRequest& req) = 0;
  /// Bind-mounts `source` at `target` (created if missing), read-only when asked (a bind then a
  /// read-only remount of the bind). Already bound there from the same filesystem: success.
  virtual boost::asio::awaitable<Status> bind(const std::string& source, const std::string& target,
                                              bool read_only) = 0;
  /// Unmounts `target`. Not mounted: success. EBUSY: an Error naming a process that holds it when
  /// one can be found. Never MNT_DETACH.
  virtual boost::asio::awaitable<Status> unmount(const std::string& target) = 0;
  /// Grows the filesystem mounted at `target` to the device size (xfs_growfs / resize2fs).
  virtual boost::asio::awaitable<Status> grow(const std::string& device, const std::string& target,
                                              const std::string& fstype) = 0;
  /// Freezes the filesystem mounted at `target` (FIFREEZE): dirty data reaches the device and new
  /// writes wait, so a copy of the device taken now is clean. A filesystem frozen already is an
  /// Error (someone else froze it, and would find it thawed under them). `target` must be the
  /// filesystem's mount point, reached without following a symlink.
  virtual boost::asio::awaitable<Status> freeze(const std::string& target) = 0;
  /// Thaws it (FITHAW). Not frozen: success.
  virtual boost::asio::awaitable<Status> thaw(const std::string& target) = 0;
  /// The current mount table. An unchanged table is the same snapshot (the Linux mounter asks the
  /// kernel whether mountinfo changed, with poll(2), before reading it again).
  virtual Result<MountTablePtr> mounts() const = 0;
  /// Checks `path` (absolute, lexically normal, below the canonical directory `root`) component by
  /// component from `root` without following any symlink: yields `path` when no existing component
  /// is a symlink and every existing one but the last is a directory (components that do not exist
  /// yet are fine: a bind creates them). ELOOP names a symlink found on the way. Pod authors can
  /// plant symlinks in directories kubelet mounts into; this keeps a bind inside kubelet's tree.
  virtual Result<std::string> resolve_beneath(const std::string& root,
                                              const std::string& path) const = 0;
};

using MounterPtr = std::unique_ptr<Mounter>;

}  // namespace datera::mount

#pragma once

// Small, synchronous file-system helpers with errno-carrying results. They block, so code on the
// event loop calls them through run_blocking() (base/blocking.h).

#include <string>
#include <sys/types.h>
#include <unordered_map>

#include "base/result.h"
#include "base/unique_fd.h"

namespace datera::fs {

/// Reads a whole file (bounded by max_bytes, to refuse surprises such as /dev/zero).
Result<std::string> read_file(const std::string& path, size_t max_bytes = 64 << 20);

/// Reads `path` only if it is a regular file: it is opened with O_NOFOLLOW | O_NONBLOCK and
/// checked with fstat(), so a symlink, a FIFO (whose open() would wait for a writer) or a device
/// node is never followed, waited on or read. Anything else is an Error (EINVAL, or ELOOP for a
/// symlink) naming what was found. `mode`, when given, receives the file's st_mode.
Result<std::string> read_regular_file(const std::string& path, size_t max_bytes = 64 << 20,
                                      mode_t* mode = nullptr);

/// "a FIFO", "a symbolic link", "a socket", "a character device", "a block device",
/// "a directory" or "a regular file": for messages about what was found at a path.
std::string describe_file_type(mode_t mode);

/// Small sysfs attributes re-read through descriptors kept open: a pread() at offset 0 makes sysfs
/// show the current value, so a periodic look over hundreds of devices costs one syscall per
/// attribute instead of a path walk, an open and a close each (3 times the time, measured). Not
/// thread-safe. At most `max_open` descriptors are kept; reads beyond that open and close.
class HeldAttributes {
 public:
  explicit HeldAttributes(size_t max_open) : max_open_(max_open) {}

  /// The attribute's current value, at most `max_bytes` (more is EFBIG). A failed read closes its
  /// descriptor (the device went away), so a later read opens the path afresh.
  Result<std::string> read(const std::string& path, size_t max_bytes = 4096);

  /// Closes every descriptor not read since the previous call: devices gone or no longer watched.
  void drop_unread();

  size_t open_count() const { return held_.size(); }

 private:
  struct Held {
    UniqueFd fd;
    bool read = false;
  };
  std::unordered_map<std::string, Held> held_;
  size_t max_open_;
};

/// Crash-safe replace: write `<dir>/.<name>.tmp-<pid>`, fsync, chmod, rename over `path`, fsync the
/// directory. Readers (and exec) see either the old or the new content, never a mix.
Status atomic_write(const std::string& path, const std::string& content, mode_t mode);

/// Creates or truncates `path`, writes `content`, fsyncs, sets `mode` and closes, reporting close
/// errors. The building block of atomic_write and of staged installs (write, check, then rename).
Status write_synced(const std::string& path, const std::string& content, mode_t mode);

/// Creates `path` (and parents) if missing; sets `mode` on the last component either way.
Status ensure_dir(const std::string& path, mode_t mode);

/// A Unix socket's directory. A missing one is created 0750 (parents 0755). An existing one may be
/// shared (/run, kubelet's plugin dir) and is left as it is; but whoever may write into it can
/// replace the socket under its clients, so it must be owned by root (or the caller's effective
/// user) and not be group- or world-writable. Used by the agent's API and CSI sockets.
Status prepare_socket_dir(const std::string& dir);

Status fsync_dir(const std::string& dir);

bool exists(const std::string& path);

std::string dirname(const std::string& path);
std::string basename(const std::string& path);
std::string join(const std::string& a, const std::string& b);

/// `path` with every symlink resolved (realpath(3)); for trusted configuration only, never for
/// paths that untrusted parties can change.
Result<std::string> real_path(const std::string& path);

/// The absolute path of the running executable (/proc/self/exe).
Result<std::string> self_exe();

}  // namespace datera::fs

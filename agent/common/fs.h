#pragma once

// Small, synchronous file-system helpers with errno-carrying results. They block, so code on the
// event loop calls them through run_blocking() (agent/common/blocking.h).

#include <string>
#include <sys/types.h>

#include "agent/common/result.h"

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

/// Crash-safe replace: write `<dir>/.<name>.tmp-<pid>`, fsync, chmod, rename over `path`, fsync the
/// directory. Readers (and exec) see either the old or the new content, never a mix.
Status atomic_write(const std::string& path, const std::string& content, mode_t mode);

/// Creates or truncates `path`, writes `content`, fsyncs, sets `mode` and closes, reporting close
/// errors. The building block of atomic_write and of staged installs (write, check, then rename).
Status write_synced(const std::string& path, const std::string& content, mode_t mode);

/// Creates `path` (and parents) if missing; sets `mode` on the last component either way.
Status ensure_dir(const std::string& path, mode_t mode);

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

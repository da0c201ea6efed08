#pragma once

// Watches directories for entries being created, replaced or removed. The installer uses it to
// reinstall when the shim it ships changes or when someone deletes the installed driver.

#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "base/result.h"

namespace datera::installer {

struct FileEvent {
  enum class Kind { written, removed, dir_gone };
  std::string dir;   ///< the watched directory
  std::string name;  ///< entry name inside it (empty for dir_gone)
  Kind kind;
};

class FileWatcher {
 public:
  virtual ~FileWatcher() = default;
  /// Starts (or refreshes, after the directory was re-created) a watch on `dir`.
  virtual Status watch(const std::string& dir) = 0;
  /// Waits for the next batch of events; an Error means the watcher is broken.
  virtual boost::asio::awaitable<Result<std::vector<FileEvent>>> next() = 0;
  /// Ends a pending next() (shutdown).
  virtual void close() = 0;
};

/// inotify on the event loop (the fd is watched by Asio; no thread).
Result<std::unique_ptr<FileWatcher>> make_inotify_watcher(boost::asio::any_io_executor executor);

}  // namespace datera::installer

#pragma once

// Installs the FlexVolume shim where kubelet looks for it, keeps it current, and proves it works.
//
//   <plugin_dir>/datera~iscsi/iscsi               the shim (kubelet execs it)
//   <plugin_dir>/datera~iscsi/.datera-agent.json  socket path, timeouts, init capabilities
//
// First install fills a hidden temp dir and renames it into place, so kubelet's prober never sees
// an empty or half-filled driver dir. Updates stage `.iscsi.new-<pid>` (written, fsynced, closed),
// exec it once (`init`) so a broken build never replaces a working driver, then rename it over the
// old file: a concurrent exec gets the old inode or the new one, never a partial file. Identical
// content is left alone (every change costs kubelet a re-probe). Nothing is removed on exit; only
// uninstall() removes the driver.
//
// After a change the installed path is self-tested: `init` (local) and a `getvolumename` round trip
// through the agent's socket, with a minimal environment like kubelet's.
//
// Runs on the event loop; file work goes to the blocking pool. ensure() calls are serialized by
// the caller (run() is the only caller in the agent).

#include <chrono>
#include <functional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <nlohmann/json.hpp>

#include "agent/installer/file_watcher.h"
#include "agent/installer/metrics.h"
#include "base/logging.h"
#include "base/process/process_runner.h"
#include "base/result.h"
#include "plugins/flex/driver_info.h"

namespace datera::installer {

struct Options {
  std::string plugin_dir;
  std::string driver_dir_name = "datera~iscsi";
  std::string exe_name = "iscsi";
  std::string shim_source;
  flex::DriverInfo info;
  std::chrono::milliseconds self_test_timeout{10'000};

  std::string driver_dir() const { return plugin_dir + "/" + driver_dir_name; }
  std::string exe_path() const { return driver_dir() + "/" + exe_name; }
  std::string info_path() const { return driver_dir() + "/" + flex::kDriverInfoFile; }
};

enum class Change { installed, updated, unchanged };
const char* to_string(Change c);

/// Removes the installed shim, its info file and the driver dir (if then empty). Missing is fine.
Status uninstall(const Options& options);

/// FNV-1a 64-bit digest as 16 hex digits: identifies shim builds in status and metrics.
std::string digest(const std::string& bytes);

/// True when `event` means the installed driver or its source changed under us.
bool needs_reinstall(const Options& options, const FileEvent& event);

class Installer {
 public:
  Installer(boost::asio::any_io_executor executor, boost::asio::thread_pool& pool,
            process::ProcessRunner& runner, Options options, Metrics& probe, LoggerPtr log);

  /// Installs or updates as needed, then self-tests after any change (or until one passes).
  boost::asio::awaitable<Result<Change>> ensure();

  /// Called after every ensure() with whether the driver is usable and why not.
  using StateCallback = std::function<void(bool ready, const std::string& detail)>;
  /// ensure() now, retrying failures with backoff (1 s doubling to 60 s); then, with a watcher,
  /// ensure() again whenever the source shim or the installed driver changes. Ends on stop().
  boost::asio::awaitable<void> run(FileWatcher* watcher, StateCallback on_state);
  void stop();

  bool ready() const { return ready_; }
  /// For GET /v1/status: path, state, digest, version, self-test result, last error.
  nlohmann::json state() const;

 private:
  boost::asio::awaitable<Status> check_shim(const std::string& path, bool round_trip);
  void refresh_watches(FileWatcher& watcher);

  boost::asio::any_io_executor executor_;
  boost::asio::thread_pool& pool_;
  process::ProcessRunner& runner_;
  Options options_;
  Metrics& metrics_;
  LoggerPtr log_;
  boost::asio::steady_timer wait_;
  FileWatcher* watcher_ = nullptr;
  bool stopping_ = false;

  bool ready_ = false;
  std::string state_ = "pending";
  std::string installed_digest_;
  std::string last_change_;
  std::string last_error_;
  std::string self_test_ = "pending";
  std::chrono::system_clock::time_point changed_at_{};
};

}  // namespace datera::installer

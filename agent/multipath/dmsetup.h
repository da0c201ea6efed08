#pragma once

// The Linux Multipath: dmsetup by argv (never a shell) through the process runner, sysfs for path
// sizes and the dm-N name. libdevmapper is not linked: dmsetup is what operators read in the logs
// and rerun by hand, and it keeps the agent's address space free of a library that calls exit().
//
//   find:    dmsetup info -c --noheadings --separator ' ' -o major,minor,uuid NAME
//            dmsetup table NAME
//   create:  dmsetup create NAME -u UUID --table TABLE
//   swap:    dmsetup reload NAME --table TABLE(queueing); dmsetup resume --noflush --nolockfs NAME;
//            dmsetup message NAME 0 fail_if_no_path (unless maps hold I/O)
//   hold:    dmsetup message NAME 0 queue_if_no_path / fail_if_no_path (the keeper's io_hold)
//   remove:  dmsetup remove --retry NAME
//
// The device used is /dev/dm-N (devtmpfs makes it at once; /dev/mapper/NAME needs udev).

#include <chrono>
#include <string>

#include <boost/asio/thread_pool.hpp>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "agent/multipath/multipath.h"
#include "base/logging.h"
#include "base/process/process_runner.h"

namespace datera::multipath {

/// Metrics:
///   datera_agent_multipath_available                    gauge (1 = volumes mount on dm maps)
///   datera_agent_multipath_operations_total{op,result}  counter (create, swap, remove, queue)
class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  void available(bool yes);
  void operation(const std::string& op, bool ok);

 private:
  prometheus::Gauge& available_;
  prometheus::Family<prometheus::Counter>& operations_;
};

struct DmsetupOptions {
  std::string dmsetup = "/sbin/dmsetup";
  std::string root = "/";  ///< prefix of /sys and /dev (tests)
  std::chrono::milliseconds timeout{30'000};
  /// /dev/dm-N must be a block device with the map's number. Off only for fake trees in tests.
  bool require_block_device = true;
  /// Maps queue I/O when no path is usable (queue_if_no_path), for the keeper's bounded hold
  /// (initiator.io_hold); off: a dead array surfaces as on the raw disk.
  bool hold_io = false;
};

/// initiator.multipath auto/on: loads dm_multipath and dm_round_robin with `modprobe` (argv, a
/// bounded wait) when /sys/module lacks them, as multipathd's unit would have; failures are
/// logged, and detect() then says what is missing. `root` as DmsetupOptions::root.
boost::asio::awaitable<void> load_modules(process::ProcessRunner& runner, const std::string& root,
                                          const std::string& modprobe, LoggerPtr log);

/// Whether multipathd runs on this node: its abstract socket in `<root>proc/net/unix` (also
/// there when systemd holds it for socket activation), or a process named multipathd.
bool multipathd_present(const std::string& root = "/");

class Dmsetup final : public Multipath {
 public:
  Dmsetup(process::ProcessRunner& runner, boost::asio::thread_pool& pool, DmsetupOptions options,
          Metrics& probe, LoggerPtr log);

  /// Looks once (start-up): /sys/module/dm_multipath and dm_round_robin, and dmsetup executable.
  /// `why_not` says what is missing.
  bool detect(std::string* why_not);

  bool available() const override { return available_; }
  bool holds_io() const override { return options_.hold_io; }
  boost::asio::awaitable<Result<std::optional<Map>>> find(const std::string& name) override;
  /// Three commands for any number of maps: `dmsetup info -c`, and `dmsetup table` and
  /// `dmsetup status` with `--target multipath`.
  boost::asio::awaitable<Result<std::map<std::string, Map>>> find_all(
      std::vector<std::string> names) override;
  boost::asio::awaitable<Result<Map>> ensure(const std::string& name, const std::string& uuid,
                                             const std::vector<PathDevice>& paths) override;
  boost::asio::awaitable<Status> set_queueing(const std::string& name, bool queue) override;
  boost::asio::awaitable<Status> remove(const std::string& name) override;

 private:
  boost::asio::awaitable<Result<process::Outcome>> dmsetup(std::vector<std::string> args);
  boost::asio::awaitable<Status> must(std::vector<std::string> args, const std::string& what);
  /// dmsetup's standard output; a failure is an Error "<what>: dmsetup <verb> failed (...)".
  boost::asio::awaitable<Result<std::string>> output(std::vector<std::string> args,
                                                     const std::string& what);
  /// `dmsetup <verb> --target multipath` ("table", "status"): map name -> the rest of its line.
  boost::asio::awaitable<Result<std::map<std::string, std::string>>> multipath_lines(
      std::string verb, const std::string& what);
  Result<uint64_t> sectors_of(const PathDevice& p) const;
  /// What holds `p` other than the map with dm uuid `uuid` (sysfs holders), said for the
  /// operator; nullopt when nothing else does.
  std::optional<std::string> foreign_holder(const PathDevice& p, const std::string& uuid) const;

  process::ProcessRunner& runner_;
  boost::asio::thread_pool& pool_;
  DmsetupOptions options_;
  Metrics& metrics_;
  LoggerPtr log_;
  bool available_ = false;
};

}  // namespace datera::multipath

#pragma once

// The production Initiator: open-iscsi on the host.
//
//   connect():    per portal, unless a session to (IQN, portal) already exists:
//                   iscsiadm -m node -T IQN -p IP:PORT -I IFACE -o new
//                   iscsiadm -m node -T IQN -p IP:PORT -I IFACE -o update -n <key> -v <value>
//                   (each) iscsiadm -m node -T IQN -p IP:PORT -I IFACE --login   (15 = exists:
//                   verified)
//                 then the LUN's SCSI device is found through sysfs (one-LUN scan when missing),
//                 /dev/sdX is awaited, and its unit serial must equal Target::serial.
//   disconnect(): iscsiadm -m node -T IQN -I IFACE --logout (every portal, old IPs too; 21 = none),
//                 iscsiadm -m node -T IQN -I IFACE -o delete (21 = none), then sysfs must show no
//                 session of this iface.
//   Sessions of other ifaces (sysfs ifacename) are never seen, reused or logged out.
//   prune():      per session on a portal the target no longer lists:
//                   iscsiadm -m session -r SID --logout
//                   iscsiadm -m node -T IQN -p IP:PORT -o delete
//   sessions():   sysfs only (sysfs.h).
//
// iscsiadm runs through process::ProcessRunner by argv (never a shell) with a timeout, under an
// flock on `lock_file` shared with any other tool that honours it; the lock is awaited with an
// Asio timer (LOCK_NB tries), never blocking the event loop. `-o new` resets an existing record to
// the iscsid.conf defaults, so `new` and all `update`s run as one unit under one lock. Exit codes
// become Errors saying what failed, for which target and portal, and what to do.
// 6/28/29 and "database failure" are retried (bounded); nothing else is.
//
// Lifecycle and threading: lives on the agent's event loop; sysfs work and the LUN scan go to
// `pool`. Calls for different targets may run concurrently; the caller serializes one target.
// libopeniscsiusr is not used: it cannot read session state, host numbers or LUNs,
// and its sysfs paths are hard-coded, so the one tested sysfs walk serves production too.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "base/logging.h"
#include "base/process/process_runner.h"
#include "plugins/initiator/initiator.h"
#include "plugins/initiator/names.h"
#include "plugins/initiator/sysfs.h"

namespace datera::initiator {

struct OpenIscsiOptions {
  std::string iscsiadm = "/usr/sbin/iscsiadm";
  std::string iface = "default";
  /// Used when set (validated); else InitiatorName= from `initiator_name_file`.
  std::string initiator_iqn;
  std::string initiator_name_file = "/etc/iscsi/initiatorname.iscsi";
  /// Prefix of every sysfs and /dev path: "/" in production, a fake tree in tests.
  std::string root = "/";
  /// flock'ed around iscsiadm; "" disables the lock (tests only).
  std::string lock_file = "/run/lock/iscsiadm-datera.lock";
  /// How long to wait for the lock (another login may hold it for up to `login_timeout`).
  std::chrono::milliseconds lock_timeout{180'000};
  std::chrono::milliseconds lock_poll{50};

  std::chrono::milliseconds command_timeout{30'000};
  std::chrono::milliseconds login_timeout{120'000};
  /// Attempts per iscsiadm step for retryable failures (6/28/29, "database failure"), >= 1.
  int max_attempts = 4;
  std::chrono::milliseconds retry_delay{1'000};

  /// Log in on every portal (for dm-multipath, which turns the sessions into paths of one
  /// device). Off: the first portal that works, so one LUN never shows up as two sdX.
  bool all_portals = false;

  /// Written into each node record before login (node.session.timeo.replacement_timeout and the
  /// NOP-Out timers).
  int replacement_timeout = 120;
  int noop_out_interval = 5;
  int noop_out_timeout = 5;

  /// Sessions whose target IQN starts with this are reported by sessions(); "" = all.
  std::string session_prefix = "iqn.2013-05.com.daterainc:";

  /// Longest sleep between sysfs looks while waiting for the device (or for sessions to go away).
  std::chrono::milliseconds device_poll{200};
  /// When set (a udev monitor), waits for the next device event or at most the given time;
  /// otherwise a steady_timer of `device_poll`.
  std::function<boost::asio::awaitable<void>(std::chrono::milliseconds)> wait_for_event;
  /// How long disconnect() waits for sysfs to drop the sessions after logout.
  std::chrono::milliseconds logout_settle{5'000};
  /// /dev/sdX must be a block device with the sysfs dev_t. Off only for fake trees in tests.
  bool require_block_device = true;
};

/// The name of an iscsiadm exit code ("LOGIN_AUTH_FAILED"), "UNKNOWN" for others.
const char* iscsiadm_rc_name(int rc);
/// What a person should do about it ("" when there is nothing specific to say).
const char* iscsiadm_rc_advice(int rc);

class OpenIscsi final : public Initiator {
 public:
  OpenIscsi(process::ProcessRunner& runner, boost::asio::thread_pool& pool,
            OpenIscsiOptions options, LoggerPtr log);
  ~OpenIscsi() override;

  std::string kind() const override { return "open-iscsi"; }
  Result<std::string> initiator_iqn() const override;
  boost::asio::awaitable<Result<Device>> connect(const Target& target,
                                                 std::chrono::milliseconds timeout) override;
  boost::asio::awaitable<Status> disconnect(const Target& target) override;
  boost::asio::awaitable<Status> prune(const Target& target) override;
  boost::asio::awaitable<Status> refresh(const Target& target) override;
  boost::asio::awaitable<Result<std::vector<Session>>> sessions() override;

 private:
  struct Step;
  class Lock;

  boost::asio::awaitable<Result<Lock>> lock(const std::string& what);
  /// Runs one iscsiadm step with retries; returns its exit code when it is 0 or in `accept`.
  boost::asio::awaitable<Result<int>> iscsiadm(const Step& step);
  /// iscsiadm -m session -r SID --logout under the lock; a session already gone is success.
  boost::asio::awaitable<Status> logout_session(int sid, const std::string& about);
  /// Record setup and login for one portal; returns the sid.
  boost::asio::awaitable<Result<int>> login(const Target& target, const Portal& portal);
  boost::asio::awaitable<Result<Device>> wait_device(
      const Target& target, const std::vector<int>& sids,
      std::chrono::steady_clock::time_point deadline);
  /// Only this iface's sessions (read_sessions() and sessions() see no others).
  boost::asio::awaitable<Result<std::vector<SysfsSession>>> read_sessions();
  bool mine(const SysfsSession& s) const;
  boost::asio::awaitable<void> pause(std::chrono::milliseconds d, bool event_hook);

  process::ProcessRunner& runner_;
  boost::asio::thread_pool& pool_;
  OpenIscsiOptions options_;
  LoggerPtr log_;
  SysfsReader sysfs_;
  /// What sessions() learnt of each session that does not change while it lives (target, portal,
  /// its LUN's directory, disk and serial), so a look reads two states per session instead of
  /// walking its whole sysfs tree. A new or vanished session, or a LUN whose disk changed, makes
  /// the next look a full one.
  struct Known {
    Session session;      ///< state and device_state are read at every look
    std::string lun_dir;  ///< "" when the session had no disk yet (never cached)
    std::string block;    ///< "sdc"
    std::string devno;    ///< "8:16", the disk's dev attribute when learnt
  };
  std::mutex known_mu_;
  std::map<int, Known> known_;  ///< by sid; only this iface's Datera sessions
  std::vector<int> known_ids_;  ///< every sid seen at the last full look (ours or not)
};

InitiatorPtr make_open_iscsi(process::ProcessRunner& runner, boost::asio::thread_pool& pool,
                             OpenIscsiOptions options, LoggerPtr log);

}  // namespace datera::initiator

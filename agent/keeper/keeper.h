#pragma once

// The session keeper: watches the session behind every attached volume and says, with timestamps,
// when it is healthy, recovering, failed or its device offline.
//
// Signals: udev events wake it at once (block, scsi, iscsi_session); a poll at `poll_interval` is
// the safety net, since not every state change of a session makes an event. Each look reads the
// initiator's sessions (sysfs: session state and the SCSI device's state).
//
//   healthy         LOGGED_IN, the disk "running", and every path of its map active
//   recovering      iscsid is reconnecting (FAILED, or the disk "blocked"), or the session is
//                   back and its map's failed path not yet reinstated: I/O waits, nothing is
//                   lost; the keeper measures the stall and counts the recovery when it ends
//   device_offline  the replacement timeout expired ("transport-offline"/"offline", or FREE): the
//                   map holds I/O for at most `io_hold`, then fails it (without a hold, or on the
//                   raw disk, I/O errors reach the filesystem at once). Alerted, and degraded
//   missing         no session at all for an attached volume
//   fs_failed       the kernel shut the volume's filesystem down (xfs) or found errors in it
//                   (ext4), whatever the session does now: every access of the pod fails until
//                   the pod restarts and the volume is mounted afresh. Never counted as a
//                   recovery, and reported until that fresh mount
//
// A stall is timed from the pod's point of view: from when the session last heard from the target
// (the kernel's ping-timeout line says so, agent/kmsg), not from when the kernel gave up on it,
// `noop_out_interval + noop_out_timeout` later; and while any volume stalls the keeper looks every
// `stall_poll_interval`, so its end is seen within that.
//
// The I/O hold (multipathd's no_path_retry, done here): a volume on a map whose session lost its
// disk holds I/O in the map; after `io_hold` without a usable path the keeper fails the queue
// (release_held), so a long outage surfaces as errors once and never as a hang that blocks unmount
// or pod deletion. The map's standing queue mode comes back when its path is reinstated.
//
// It never logs out a session, and never touches a session that has a mount: recovery is iscsid's
// job, and a logout under a mount loses data. What it does ask for is an access check (the volume
// manager's check_access: has EDF moved the volume to other IPs?) every `array_poll_interval`, and
// at once when a session stops being healthy (iscsid reconnects only to its old portal).
// Checks run detached, at most one per volume at a time, so a slow array never stalls the watch.
// The periodic checks that fall due in one look go out as one call, so the manager can ask the
// array once for all of them (one listing, not one request per volume).

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "agent/keeper/metrics.h"
#include "agent/udev/udev_monitor.h"
#include "base/clock.h"
#include "base/logging.h"
#include "plugins/initiator/initiator.h"

namespace datera::keeper {

enum class Health { healthy, recovering, device_offline, missing, fs_failed };
const char* to_string(Health h);

/// An attached volume, as the volume manager knows it.
struct Watched {
  std::string volume;
  initiator::Target target;
  std::string device;  ///< the staging mount's disk, by its kernel name ("dm-3"); "" unknown
  bool map = false;    ///< on a dm-multipath map (its paths are checked; it can hold I/O)
};

struct KeeperOptions {
  std::chrono::milliseconds poll_interval{2'000};
  /// The poll while any volume stalls: how soon the end of a stall is seen.
  std::chrono::milliseconds stall_poll_interval{500};
  /// How long a map holds I/O with no usable path before the keeper fails it; 0: no hold.
  std::chrono::milliseconds io_hold{0};
  /// How often each attached volume's access IPs are checked on the array; 0 = only on failures.
  std::chrono::milliseconds array_poll_interval{60'000};
  /// Failure-triggered checks are at least this far apart per volume (an array that answers
  /// slowly during an outage is not asked in a loop).
  std::chrono::milliseconds min_check_gap{5'000};
  size_t history = 32;  ///< transitions kept per volume for /v1/volumes
};

/// What the keeper asks of the rest of the agent; each may be empty.
struct KeeperHooks {
  using TimePoint = std::chrono::steady_clock::time_point;
  /// check(volumes, reason). Periodic checks come together (reason "poll"); a volume whose
  /// session stopped being healthy, or came back, comes alone, at once.
  std::function<boost::asio::awaitable<void>(std::vector<std::string>, std::string)> check;
  /// The kernel's line about the failure of the filesystem on `device` ("dm-3") since its last
  /// mount, if it failed (agent/kmsg).
  std::function<std::optional<std::string>(const std::string& device)> fs_failure;
  /// When session `sid` last heard from its target, if the kernel declared it silent at or after
  /// `after` (agent/kmsg); empty or nullopt: the stall starts when the keeper saw it.
  std::function<std::optional<TimePoint>(int sid, TimePoint after)> silent_since;
  /// Whether every path of the volume's map is active; nullopt when that cannot be told.
  std::function<boost::asio::awaitable<std::optional<bool>>(std::string volume)> paths_active;
  /// Fails the I/O the volume's map holds (its hold expired); true when done.
  std::function<boost::asio::awaitable<bool>(std::string volume)> release_held;
};

class Keeper {
 public:
  using WallClock = std::function<std::chrono::system_clock::time_point()>;

  /// `clock` times everything: the polls, stalls, holds and check intervals (production passes
  /// real_clock(); tests a virtual one). `wall` stamps the transitions /v1/volumes shows.
  Keeper(boost::asio::any_io_executor executor, KeeperOptions options, Clock& clock,
         initiator::Initiator& initiator, std::function<std::vector<Watched>()> watch_list,
         udev::Monitor* monitor, Metrics& probe, LoggerPtr log, KeeperHooks hooks = {},
         WallClock wall = {});

  /// Looks, then waits for an event or the poll interval, until stop().
  boost::asio::awaitable<void> run();
  void stop();
  /// One look at every watched volume (run() calls it; tests call it directly).
  boost::asio::awaitable<void> observe();

  /// The volume's session as last seen, with its recent transitions ({"state":"unknown"} before
  /// the first look).
  nlohmann::json state(const std::string& volume) const;
  /// nullopt before the first look.
  std::optional<Health> health(const std::string& volume) const;

 private:
  struct Transition {
    std::chrono::system_clock::time_point at;
    Health from;
    Health to;
    std::string detail;
  };
  struct Track {
    Health health = Health::missing;
    bool seen = false;
    std::chrono::steady_clock::time_point since;
    std::chrono::steady_clock::time_point stall_start;
    std::chrono::steady_clock::time_point last_look;
    std::string portal;
    int sid = -1;
    std::string fs_failure;        ///< the kernel's line, while fs_failed
    bool session_healthy = false;  ///< the sessions alone, at the last look
    bool session_back = false;     ///< they became healthy at the last look
    bool paths_suspect = false;    ///< the disk went away in this stall: the map path may be failed
    bool paths_failed = false;     ///< the session is back, the map's path is not (last look)
    bool holding = false;          ///< the map holds I/O: no usable disk since hold_since
    bool hold_released = false;    ///< the hold expired and its I/O was failed
    std::chrono::steady_clock::time_point hold_since;
    bool pending_check = false;  ///< an urgent check held back by min_check_gap or a running one
    std::string pending_reason;
    std::string session_state;
    std::string device_state;
    uint64_t recoveries = 0;
    double last_recovery_seconds = -1;
    double blocked_seconds = 0;
    std::deque<Transition> history;
    std::chrono::steady_clock::time_point last_check;
    bool checked = false;
  };

  /// Returns true when the volume just stopped being healthy, or just became healthy again after
  /// a stall (its map path may need reinstating): either wants an access check at once.
  /// `mine`: the volume's sessions, in the order the initiator listed them.
  /// `t` is the volume's track (looked up once per look).
  /// `session`: classify(mine), or recovering while the map's path is failed.
  bool update(const Watched& w, Track& t, const std::vector<const initiator::Session*>& mine,
              Health session, std::chrono::steady_clock::time_point now);
  /// Starts or ends the volume's I/O hold, and fails its I/O when the hold expired.
  void hold(const Watched& w, Track& t, Health session, std::chrono::steady_clock::time_point now);
  /// The volume's health from its sessions' (`h`) and its filesystem; true as update().
  bool update_health(const Watched& w, Track& t, const std::vector<const initiator::Session*>& mine,
                     Health h, std::chrono::steady_clock::time_point now);
  /// Starts an urgent check of `volume` at once, or adds it to `due` when its periodic one is due,
  /// or to `early` when it falls due within half an interval (checked with `due`, if any).
  void maybe_check(const std::string& volume, Track& t, bool changed,
                   std::chrono::steady_clock::time_point now, std::vector<std::string>& due,
                   std::vector<std::string>& early);
  void start_check(std::vector<std::string> volumes, std::string reason);
  /// Until `wait` of the clock's time has passed, a udev event arrives, or stop() is called.
  boost::asio::awaitable<void> next_look(std::chrono::milliseconds wait);
  boost::asio::awaitable<void> stopped();

  boost::asio::any_io_executor executor_;
  KeeperOptions options_;
  initiator::Initiator& initiator_;
  std::function<std::vector<Watched>()> watch_list_;
  udev::Monitor* monitor_;
  Metrics& metrics_;
  LoggerPtr log_;
  Clock& clock_;
  WallClock wall_;
  KeeperHooks hooks_;
  std::map<std::string, Track> tracks_;
  std::set<std::string> checking_;
  boost::asio::steady_timer stop_;  ///< never expires: stop() cancels it to end the wait
  bool stalled_ = false;  ///< some volume stalled at the last look: poll at stall_poll_interval
  bool stopping_ = false;
};

/// The health of one volume's sessions (the best one wins: one working path is enough).
Health classify(const std::vector<const initiator::Session*>& sessions);

}  // namespace datera::keeper

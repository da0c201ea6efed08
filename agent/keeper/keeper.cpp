#include "agent/keeper/keeper.h"

#include <algorithm>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace datera::keeper {

namespace asio = boost::asio;
using std::chrono::steady_clock;

const char* to_string(Health h) {
  switch (h) {
    case Health::healthy:
      return "healthy";
    case Health::recovering:
      return "recovering";
    case Health::device_offline:
      return "device_offline";
    case Health::missing:
      return "missing";
    case Health::fs_failed:
      return "fs_failed";
  }
  return "unknown";
}

namespace {
/// The session's disk is gone (the replacement timeout expired, or no session at all): I/O on it
/// fails, so the map's path may be failed, and a map holds the I/O.
bool disk_gone(Health h) {
  return h == Health::device_offline || h == Health::missing;
}
}  // namespace

Health classify(const std::vector<const initiator::Session*>& sessions) {
  if (sessions.empty()) return Health::missing;
  bool recovering = false;
  for (const auto* s : sessions) {
    const bool disk_ok = s->device_state.empty() || s->device_state == "running";
    if (s->state == "LOGGED_IN" && disk_ok) return Health::healthy;
    if (s->device_state == "blocked" || s->state == "FAILED" || s->state == "LOGGED_IN") {
      recovering = true;
    }
  }
  // FREE, or the disk offline / transport-offline: the replacement timeout expired.
  for (const auto* s : sessions) {
    if (s->device_state == "offline" || s->device_state == "transport-offline" ||
        s->state == "FREE") {
      return Health::device_offline;
    }
  }
  return recovering ? Health::recovering : Health::device_offline;
}

Keeper::Keeper(asio::any_io_executor executor, KeeperOptions options, Clock& clock,
               initiator::Initiator& initiator, std::function<std::vector<Watched>()> watch_list,
               udev::Monitor* monitor, Metrics& probe, LoggerPtr log, KeeperHooks hooks,
               WallClock wall)
    : executor_(executor),
      options_(options),
      initiator_(initiator),
      watch_list_(std::move(watch_list)),
      monitor_(monitor),
      metrics_(probe),
      log_(std::move(log)),
      clock_(clock),
      wall_(wall ? std::move(wall) : WallClock([] { return std::chrono::system_clock::now(); })),
      hooks_(std::move(hooks)),
      stop_(executor, steady_clock::time_point::max()) {}

asio::awaitable<void> Keeper::run() {
  log_->info(
      "session keeper: watching attached volumes (poll every {} ms, {} ms while one stalls{}); "
      "maps hold I/O {}",
      options_.poll_interval.count(), options_.stall_poll_interval.count(),
      monitor_ ? ", and on udev events" : "",
      options_.io_hold.count() > 0
          ? "for " + std::to_string(options_.io_hold.count()) + " ms without a path"
          : std::string("never (io_hold 0)"));
  while (!stopping_) {
    co_await observe();
    if (stopping_) break;
    const auto wait = stalled_ ? std::min(options_.stall_poll_interval, options_.poll_interval)
                               : options_.poll_interval;
    co_await next_look(wait);
  }
}

asio::awaitable<void> Keeper::next_look(std::chrono::milliseconds wait) {
  using namespace asio::experimental::awaitable_operators;  // NOLINT(google-build-using-namespace)
  // The first to finish cancels the others.
  if (monitor_) {
    // The monitor's own bound stays: degraded, it wakes at its poll interval.
    co_await (clock_.sleep(wait) || monitor_->wait(wait) || stopped());
  } else {
    co_await (clock_.sleep(wait) || stopped());
  }
}

asio::awaitable<void> Keeper::stopped() {
  // stop_ never expires by itself; stop() cancels it.
  boost::system::error_code ec;
  co_await stop_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

void Keeper::stop() {
  stopping_ = true;
  stop_.cancel();
}

asio::awaitable<void> Keeper::observe() {
  const auto watched = watch_list_();
  if (watched.empty() && tracks_.empty()) co_return;
  const auto started = clock_.now();
  auto sessions = co_await initiator_.sessions();
  const auto now = clock_.now();
  if (!sessions) {
    log_->warn("session keeper: cannot list sessions: {}", sessions.error().message);
    co_return;
  }
  // One listing per look, indexed once: matching a volume to its sessions costs the same at 5 or
  // 500 volumes.
  std::unordered_map<std::string_view, std::vector<size_t>> by_iqn, by_serial;
  for (size_t i = 0; i < sessions->size(); ++i) {
    const auto& s = (*sessions)[i];
    if (!s.target_iqn.empty()) by_iqn[s.target_iqn].push_back(i);
    if (s.target_iqn.empty() && s.device && !s.device->serial.empty()) {
      by_serial[s.device->serial].push_back(i);
    }
  }
  std::set<std::string> names;
  std::vector<const initiator::Session*> mine;
  std::vector<std::string> due, early;
  for (const auto& w : watched) {
    names.insert(w.volume);
    std::vector<size_t> at;
    if (auto it = by_iqn.find(w.target.iqn); !w.target.iqn.empty() && it != by_iqn.end()) {
      at = it->second;
    }
    if (auto it = by_serial.find(w.target.serial);
        !w.target.serial.empty() && it != by_serial.end()) {
      at.insert(at.end(), it->second.begin(), it->second.end());
      std::sort(at.begin(), at.end());  // in listing order, as the initiator reported them
    }
    mine.clear();
    for (size_t i : at) mine.push_back(&(*sessions)[i]);
    Track& t = tracks_[w.volume];
    Health session = classify(mine);
    t.paths_failed = false;
    if (session == Health::healthy && t.paths_suspect && w.map && hooks_.paths_active) {
      // The disk was gone in this stall, so I/O may have failed the map's path, which stays
      // failed with the session back: healthy only once the path is active again.
      auto active = co_await hooks_.paths_active(w.volume);
      if (active && !*active) {
        session = Health::recovering;
        t.paths_failed = true;
      } else {
        t.paths_suspect = false;
      }
    }
    const bool changed = update(w, t, mine, session, now);
    hold(w, t, session, now);
    maybe_check(w.volume, t, changed, now, due, early);
  }
  if (!due.empty()) {
    // Volumes first seen at different times fall due at different times; those due within half
    // an interval go along, so the checks converge on one listing of the array per interval.
    for (const auto& v : early) {
      tracks_[v].last_check = now;
      due.push_back(v);
    }
    start_check(std::move(due), "poll");
  }
  for (auto it = tracks_.begin(); it != tracks_.end();) {
    if (names.count(it->first)) {
      ++it;
      continue;
    }
    metrics_.forget(it->first);  // detached: no longer ours to watch
    it = tracks_.erase(it);
  }
  // Keyed by the state itself, not its position: a new Health cannot shift another's count.
  std::map<Health, double> counts;
  for (const auto& [_, t] : tracks_) counts[t.health] += 1;
  stalled_ =
      counts[Health::recovering] + counts[Health::device_offline] + counts[Health::missing] > 0;
  metrics_.states(counts[Health::healthy], counts[Health::recovering],
                  counts[Health::device_offline], counts[Health::missing],
                  counts[Health::fs_failed]);
  metrics_.poll(std::chrono::duration<double>(clock_.now() - started).count());
}

void Keeper::maybe_check(const std::string& volume, Track& t, bool changed,
                         steady_clock::time_point now, std::vector<std::string>& due,
                         std::vector<std::string>& early) {
  if (!hooks_.check || stopping_) return;
  // A change wants a check at once; one held back (a check still running, or the last one less
  // than min_check_gap ago) is kept pending, not dropped: the check after a session comes back is
  // the one that reinstates its map path.
  if (changed) {
    t.pending_check = true;
    t.pending_reason = t.session_back ? std::string("session recovered")
                                      : "session " + std::string(to_string(t.health));
  }
  if (checking_.count(volume)) return;
  const auto since = now - t.last_check;
  const bool periodic = !t.checked || (options_.array_poll_interval.count() > 0 &&
                                       since >= options_.array_poll_interval);
  const bool urgent = t.pending_check && (!t.checked || since >= options_.min_check_gap);
  if (!periodic && !urgent) {
    if (t.checked && options_.array_poll_interval.count() > 0 &&
        since >= options_.array_poll_interval / 2) {
      early.push_back(volume);
    }
    return;
  }
  t.last_check = now;
  t.checked = true;
  if (urgent) {
    t.pending_check = false;
    start_check({volume}, t.pending_reason);
  } else {
    t.pending_check = false;  // the periodic check looks at it too
    due.push_back(volume);
  }
}

void Keeper::start_check(std::vector<std::string> volumes, std::string reason) {
  for (const auto& v : volumes) checking_.insert(v);
  auto names = volumes;  // for the completion handler; the check owns `volumes`
  asio::co_spawn(executor_, hooks_.check(std::move(volumes), std::move(reason)),
                 [this, names = std::move(names)](const std::exception_ptr& e) {
                   for (const auto& v : names) checking_.erase(v);
                   if (e)
                     log_->error("access check of {} volume(s) threw; this is a bug", names.size());
                 });
}

bool Keeper::update(const Watched& w, Track& t, const std::vector<const initiator::Session*>& mine,
                    Health session, steady_clock::time_point now) {
  // The session back after a stall wants a check even when the volume's health does not change
  // (its filesystem failed meanwhile): the kernel failed the map's path, and the check
  // reinstates it. So does a path still failed with the session back (the last reinstatement
  // failed); min_check_gap spaces those checks.
  const bool up = session == Health::healthy || t.paths_failed;
  const bool back = t.seen && !t.session_healthy && up;
  t.session_healthy = up;
  t.session_back = back;
  if (disk_gone(session)) t.paths_suspect = true;
  return update_health(w, t, mine, session, now) || back || t.paths_failed;
}

void Keeper::hold(const Watched& w, Track& t, Health session, steady_clock::time_point now) {
  if (!w.map || options_.io_hold.count() <= 0) return;
  if (!disk_gone(session)) {
    if (session == Health::healthy) {
      t.holding = false;  // the path is active again, and ensure() restored the queue mode
      t.hold_released = false;
    }
    return;
  }
  if (!t.holding) {
    t.holding = true;
    t.hold_since = now;
    log_->warn("volume {}: no usable path; its map holds I/O for up to {} s", w.volume,
               std::chrono::duration<double>(options_.io_hold).count());
    return;
  }
  if (t.hold_released || now - t.hold_since < options_.io_hold || !hooks_.release_held) return;
  t.hold_released = true;
  const double held = std::chrono::duration<double>(now - t.hold_since).count();
  metrics_.hold_expired();
  log_->error(
      "volume {}: DEGRADED: no usable path for {:.1f} s (initiator.io_hold); failing the I/O its "
      "map holds: the filesystem sees errors now, and its pods need a restart once the array is "
      "back",
      w.volume, held);
  asio::co_spawn(executor_, hooks_.release_held(w.volume),
                 [this, volume = w.volume](const std::exception_ptr& e, bool done) {
                   if (e) {
                     log_->error("volume {}: releasing its held I/O threw; this is a bug", volume);
                   } else if (!done) {
                     auto it = tracks_.find(volume);
                     if (it != tracks_.end()) it->second.hold_released = false;  // next look
                   }
                 });
}

bool Keeper::update_health(const Watched& w, Track& t,
                           const std::vector<const initiator::Session*>& mine, Health h,
                           steady_clock::time_point now) {
  std::optional<std::string> fs_failure;
  if (hooks_.fs_failure && !w.device.empty()) fs_failure = hooks_.fs_failure(w.device);
  if (fs_failure) h = Health::fs_failed;
  t.fs_failure = fs_failure.value_or("");
  const bool first = !t.seen;
  // A failed filesystem is not I/O waiting on a session: its stall, if any, ended in the failure.
  if (!first && t.health != Health::healthy && t.health != Health::fs_failed) {
    const double dt = std::chrono::duration<double>(now - t.last_look).count();
    t.blocked_seconds += dt;
    metrics_.blocked(w.volume, dt);
  }
  const auto previous_look = t.last_look;
  t.last_look = now;
  const initiator::Session* best = mine.empty() ? nullptr : mine.front();
  for (const auto* s : mine) {
    if (s->state == "LOGGED_IN") best = s;
  }
  const std::string old_portal = t.portal;
  const int old_sid = t.sid;
  t.portal = best ? best->portal : "";
  t.sid = best ? best->id : -1;
  t.session_state = best ? best->state : "";
  t.device_state = best ? best->device_state : "";
  // Per-volume series are touched only when they change (a label lookup per volume per poll is
  // the keeper's largest cost at hundreds of volumes otherwise).
  if (first || (h == Health::healthy) != (t.health == Health::healthy)) {
    metrics_.up(w.volume, h == Health::healthy);
  }
  if (first) {
    t.seen = true;
    t.health = h;
    t.since = now;
    if (h != Health::healthy) t.stall_start = now;
    if (h == Health::fs_failed) {
      log_->error(
          "volume {}: DEGRADED: its filesystem on {} failed: \"{}\". Every access of its pods "
          "fails; restart them, and the next mount stages the volume afresh",
          w.volume, w.device, t.fs_failure);
    } else {
      log_->info("volume {}: session {} via {} is {}", w.volume, t.sid, t.portal, to_string(h));
    }
    return h != Health::healthy;
  }
  if (h == t.health) return false;

  const Health from = t.health;
  const std::string detail = "session " + std::to_string(t.sid) + " " + t.session_state +
                             ", disk " + (t.device_state.empty() ? "-" : t.device_state) +
                             (t.portal.empty() ? "" : ", portal " + t.portal) +
                             (t.paths_failed ? ", map path failed" : "");
  t.history.push_back(Transition{wall_(), from, h, detail});
  while (t.history.size() > options_.history) t.history.pop_front();
  metrics_.transition(to_string(from), to_string(h));
  t.health = h;
  t.since = now;
  if (from == Health::healthy) {
    t.stall_start = now;
    // The pod's I/O stalled when the session last heard from the target, noop_out_interval +
    // noop_out_timeout before the kernel said so. That wait is part of the stall and of the
    // time I/O was blocked. (A second of slack: the last healthy look may have read the session
    // just after the kernel's verdict, before iscsid marked it failed.)
    if (hooks_.silent_since && old_sid >= 0) {
      const auto silent = hooks_.silent_since(old_sid, previous_look - std::chrono::seconds(1));
      if (silent && *silent < now && now - *silent < std::chrono::hours(1)) {
        t.stall_start = *silent;
        if (h != Health::fs_failed) {
          const double dt = std::chrono::duration<double>(now - *silent).count();
          t.blocked_seconds += dt;
          metrics_.blocked(w.volume, dt);
        }
      }
    }
  }

  switch (h) {
    case Health::healthy: {
      if (from == Health::fs_failed) {
        // The pod restarted and the volume was mounted afresh: an outage that ended in a failed
        // filesystem is not a recovery.
        log_->info("volume {}: its filesystem was mounted afresh; healthy ({})", w.volume, detail);
        return false;
      }
      const double stall = std::chrono::duration<double>(now - t.stall_start).count();
      ++t.recoveries;
      t.last_recovery_seconds = stall;
      metrics_.recovered(stall);
      const bool same = old_sid == t.sid && old_sid >= 0;
      log_->info("volume {}: session recovered after {:.2f} s of stalled I/O ({}; {})", w.volume,
                 stall,
                 same ? "same session " + std::to_string(t.sid)
                      : "session " + std::to_string(t.sid) + ", was " + std::to_string(old_sid),
                 detail);
      if (old_portal != t.portal && !old_portal.empty()) {
        log_->warn("volume {}: portal changed {} -> {}", w.volume, old_portal, t.portal);
      }
      // Checked at once: a session that was down long enough may have had its map path failed
      // by the kernel, and the path stays failed until the check reinstates it.
      return true;
    }
    case Health::recovering:
      if (t.paths_failed) {
        log_->warn(
            "volume {}: session back, its map's failed path not yet reinstated; I/O waits "
            "({})",
            w.volume, detail);
      } else {
        log_->warn("volume {}: session stalled, iscsid is recovering it; I/O waits ({})", w.volume,
                   detail);
      }
      break;
    case Health::device_offline:
      metrics_.offline();
      if (w.map && options_.io_hold.count() > 0) {
        log_->error(
            "volume {}: DEGRADED: the disk is offline ({}); its map holds I/O for up to {:.0f} s, "
            "then fails it. The session is left alone while mounted; check the array and the "
            "network",
            w.volume, detail, std::chrono::duration<double>(options_.io_hold).count());
      } else {
        log_->error(
            "volume {}: DEGRADED: the disk is offline, I/O errors reach the filesystem ({}). The "
            "session is left alone while mounted; check the array and the network, then remount "
            "the pods",
            w.volume, detail);
      }
      break;
    case Health::missing:
      log_->error("volume {}: no session for target {} although the volume is attached", w.volume,
                  w.target.iqn);
      break;
    case Health::fs_failed:
      log_->error(
          "volume {}: DEGRADED: its filesystem on {} failed: \"{}\" ({}). Every access of its "
          "pods fails, whatever the session does now; restart them, and the next mount stages "
          "the volume afresh",
          w.volume, w.device, t.fs_failure, detail);
      break;
  }
  return from == Health::healthy;
}

std::optional<Health> Keeper::health(const std::string& volume) const {
  auto it = tracks_.find(volume);
  if (it == tracks_.end() || !it->second.seen) return std::nullopt;
  return it->second.health;
}

nlohmann::json Keeper::state(const std::string& volume) const {
  auto it = tracks_.find(volume);
  if (it == tracks_.end() || !it->second.seen) return {{"state", "unknown"}};
  const Track& t = it->second;
  nlohmann::json history = nlohmann::json::array();
  for (const auto& tr : t.history) {
    history.push_back(
        {{"at_ms",
          std::chrono::duration_cast<std::chrono::milliseconds>(tr.at.time_since_epoch()).count()},
         {"from", to_string(tr.from)},
         {"to", to_string(tr.to)},
         {"detail", tr.detail}});
  }
  return {{"state", to_string(t.health)},
          {"degraded", t.health != Health::healthy},
          {"session", t.sid},
          {"portal", t.portal},
          {"session_state", t.session_state},
          {"device_state", t.device_state},
          {"recoveries", t.recoveries},
          {"last_recovery_seconds", t.last_recovery_seconds},
          {"io_blocked_seconds", t.blocked_seconds},
          {"fs_failure", t.fs_failure},
          {"map_path_failed", t.paths_failed},
          {"io_held", t.holding && !t.hold_released},
          {"io_hold_expired", t.hold_released},
          {"transitions", history}};
}

}  // namespace datera::keeper

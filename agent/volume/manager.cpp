#include "agent/volume/manager.h"

#include <algorithm>
#include <deque>
#include <set>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "agent/mount/linux_mounter.h"
#include "agent/volume/internal.h"
#include "base/fs.h"
#include "base/json.h"
#include "plugins/initiator/names.h"

namespace datera::volume {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

using detail::normal_path;

namespace {

/// "pod(s) uid-1, uid-2" from kubelet pod volume dirs (.../pods/<uid>/volumes/...).
std::string pods_text(const std::vector<PodMount>& pods) {
  std::string out;
  for (const auto& p : pods) {
    const auto at = p.dir.find("/pods/");
    std::string uid = at == std::string::npos ? p.dir : p.dir.substr(at + 6);
    uid = uid.substr(0, uid.find('/'));
    out += (out.empty() ? "" : ", ") + uid;
  }
  return (pods.size() == 1 ? "pod " : "pods ") + out;
}

}  // namespace

Manager::Manager(ManagerOptions options, Arrays& arrays, initiator::Initiator& initiator,
                 mount::Mounter& mounter, Journal& journal, Metrics& probe, LoggerPtr log,
                 multipath::Multipath* multipath, ownership::Coordinator* coordinator)
    : options_(std::move(options)),
      arrays_(arrays),
      initiator_(initiator),
      mounter_(mounter),
      journal_(journal),
      metrics_(probe),
      log_(std::move(log)),
      multipath_(multipath),
      coordinator_(coordinator) {
  AccessContext access{
      options_.node_name, options_.online_timeout, arrays_, journal_, metrics_, log_, coordinator_};
  lease_access_ = make_lease_access(access);
  grant_access_ = make_grant_access(std::move(access));
  options_.kubelet_root = normal_path(options_.kubelet_root);
  options_.kubelet_root_real = options_.kubelet_root_real.empty()
                                   ? options_.kubelet_root
                                   : normal_path(options_.kubelet_root_real);
}

// ---------------------------------------------------------------------------------------------
// mount
// ---------------------------------------------------------------------------------------------

namespace {

/// "a/b/c" -> {"a", "b", "c"} (the path is lexically normal: no empty, "." or ".." parts).
std::vector<std::string> components(const std::string& relative) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= relative.size()) {
    const size_t slash = std::min(relative.find('/', start), relative.size());
    out.push_back(relative.substr(start, slash - start));
    start = slash + 1;
  }
  return out;
}

/// The part of `path` below `root`, or nullopt when it is not strictly below it.
std::optional<std::string> below(const std::string& path, const std::string& root) {
  const std::string prefix = root == "/" ? root : root + "/";
  if (path.size() <= prefix.size() || path.compare(0, prefix.size(), prefix) != 0) {
    return std::nullopt;
  }
  return path.substr(prefix.size());
}

}  // namespace

Result<std::string> Manager::kubelet_path(const std::string& raw, KubeletPath kind,
                                          bool walk) const {
  if (datera::json::has_control_char(raw)) {
    return Error{"refusing kubelet's path: it contains a control character"};
  }
  const std::string path = normal_path(raw);
  if (path.empty()) return Error{"refusing path '" + raw + "': it must be absolute, without '..'"};
  // kubelet may name its root as configured or as resolved; both mean the canonical tree.
  auto rel = below(path, options_.kubelet_root_real);
  if (!rel) rel = below(path, options_.kubelet_root);
  if (!rel) {
    return Error{"refusing path " + path + ": it is not under kubelet_root " +
                 options_.kubelet_root + " (check the agent's kubelet_root setting)"};
  }
  if (!layout_ok(*rel, kind)) {
    std::string vendor_driver = options_.driver_dir;
    std::replace(vendor_driver.begin(), vendor_driver.end(), '~', '/');
    const std::string csi = "<kubelet_root>/plugins/kubernetes.io/csi/";
    std::string where;
    switch (kind) {
      case KubeletPath::pod_volume:
        where =
            "pod volumes at <kubelet_root>/pods/<uid>/volumes/" + options_.driver_dir + "/<name>";
        break;
      case KubeletPath::device_mount:
        where = "device mounts at <kubelet_root>/plugins/kubernetes.io/flexvolume/" +
                vendor_driver + "/mounts/<name>";
        break;
      case KubeletPath::csi_publish:
        where =
            "CSI targets at <kubelet_root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount or " +
            csi + "volumeDevices/publish/<pv>/<pod-uid>";
        break;
      case KubeletPath::csi_staging:
        where = "CSI staging paths at " + csi + options_.csi_driver + "/<hash>/globalmount, " +
                csi + "pv/<pv>/globalmount or " + csi + "volumeDevices/staging/<pv>";
        break;
    }
    return Error{"refusing path " + path + ": kubelet puts this driver's " + where};
  }
  const std::string canonical = options_.kubelet_root_real + "/" + *rel;
  if (!walk) return canonical;
  auto resolved = mounter_.resolve_beneath(options_.kubelet_root_real, canonical);
  if (!resolved) return Error{"refusing path " + path + ": " + resolved.error().message};
  return canonical;
}

bool Manager::layout_ok(const std::string& rel, KubeletPath kind) const {
  const auto parts = components(rel);
  const auto n = parts.size();
  const auto csi_dir = [&] {
    return n >= 4 && parts[0] == "plugins" && parts[1] == "kubernetes.io" && parts[2] == "csi";
  };
  switch (kind) {
    case KubeletPath::pod_volume:
      return n == 5 && parts[0] == "pods" && parts[2] == "volumes" &&
             parts[3] == options_.driver_dir;
    case KubeletPath::device_mount: {
      std::string vendor_driver = options_.driver_dir;
      std::replace(vendor_driver.begin(), vendor_driver.end(), '~', '/');
      return n == 7 &&
             rel == "plugins/kubernetes.io/flexvolume/" + vendor_driver + "/mounts/" + parts[6];
    }
    case KubeletPath::csi_publish:
      return (n == 6 && parts[0] == "pods" && parts[2] == "volumes" &&
              parts[3] == "kubernetes.io~csi" && parts[5] == "mount") ||
             (n == 7 && csi_dir() && parts[3] == "volumeDevices" && parts[4] == "publish");
    case KubeletPath::csi_staging:
      return n == 6 && csi_dir() &&
             ((parts[3] == options_.csi_driver && parts[5] == "globalmount") ||
              (parts[3] == "pv" && parts[5] == "globalmount") ||
              (parts[3] == "volumeDevices" && parts[4] == "staging"));
  }
  return false;
}

std::string Manager::canonical_recorded(const std::string& path, KubeletPath kind) const {
  // No walk: a recorded path was checked when it was mounted, and a symlink planted since must not
  // make the agent forget a mount (unmount never follows one: UMOUNT_NOFOLLOW).
  auto p = kubelet_path(path, kind, /*walk=*/false);
  return p ? *p : std::string();
}

// ---------------------------------------------------------------------------------------------
// reconcile
// ---------------------------------------------------------------------------------------------

asio::awaitable<std::string> Manager::reconcile() {
  const size_t unusable = load_journal();
  // Only local work here (the journal, the mount table): it decides what each record is before
  // the API serves. Releases need the array and run after, in release_leftovers().
  Tally tally;
  leftovers_.clear();
  std::vector<std::string> names;
  for (const auto& [name, _] : records_) names.push_back(name);
  for (const auto& name : names) co_await reconcile_volume(name, tally);
  const int leaked = co_await log_out_leaked_sessions();
  update_gauges();
  co_return "reconciled: " + std::to_string(tally.kept) + " volume(s) in use, " +
      std::to_string(tally.finished) + " interrupted mount(s) finished, " +
      std::to_string(tally.dropped) + " record(s) with nothing to undo dropped, " +
      std::to_string(leftovers_.size()) + " to release in the background, " +
      std::to_string(leaked) + " leaked session(s) removed, " + std::to_string(unusable) +
      " unusable and " + std::to_string(set_aside_.size()) + " set-aside record(s)";
}

size_t Manager::load_journal() {
  std::vector<std::string> problems;
  if (auto st = journal_.prepare(); !st) problems.push_back(st.error().message);
  for (auto& rec : journal_.load_all(&problems)) {
    if (!rec.mode_recorded) rec.mode = options_.controller_attach ? Mode::controller : Mode::agent;
    // A checksummed record passes the same checks as a new request before anything acts on it: a
    // record naming a path outside the agent's or kubelet's trees is never unmounted.
    if (auto st = check_record(rec); !st) {
      set_aside(rec.volume, "its record fails the checks new requests pass: " + st.error().message,
                "set_aside_invalid");
      continue;
    }
    // A record whose handling crashed the agent again and again would crash every start: set it
    // aside, so the agent serves every other volume.
    if (const int crashes = journal_.attempts(rec.volume); crashes >= kCrashesBeforeSetAside) {
      set_aside(rec.volume,
                "the agent died " + std::to_string(crashes) +
                    " times in a row while releasing it at start-up",
                "set_aside_crashed");
      continue;
    }
    records_[rec.volume] = std::move(rec);
  }
  for (size_t i = 0; i < problems.size(); ++i) metrics_.reconcile("journal_unusable");
  return problems.size();
}

asio::awaitable<void> Manager::reconcile_volume(const std::string& name, Tally& tally) {
  auto guard = co_await locks_.lock(name);
  Record& rec = records_[name];
  const Phase phase_before = rec.phase;
  bool changed = canonicalize(rec);
  if (!rec.frozen.empty()) {
    // The last run died holding a snapshot's freeze: writes to it wait until it is thawed.
    if (auto st = co_await mounter_.thaw(rec.staging); !st) {
      log_->error(
          "volume {}: left frozen for snapshot request {} by the last run; thawing {} "
          "failed: {} (fsfreeze -u {})",
          name, rec.frozen, rec.staging, st.error().message, rec.staging);
    } else {
      log_->warn("volume {}: thawed {}, left frozen for snapshot request {} by the last run", name,
                 rec.staging, rec.frozen);
    }
    metrics_.freeze("thawed_at_start", -1);
    rec.frozen.clear();
    changed = true;
  }
  std::vector<std::string> known_pods;
  for (const auto& p : rec.pods) known_pods.push_back(p.dir);
  if (!rec.pending_pod.empty()) known_pods.push_back(rec.pending_pod);
  changed |= settle_pods(rec, tally);
  if (!rec.pods.empty()) {
    rec.phase = Phase::attached;
    if (!mount_at(rec.staging)) {
      log_->error("volume {}: pods use it but its staging mount {} is gone", name, rec.staging);
      metrics_.reconcile("staging_missing");
    }
    if (changed || rec.phase != phase_before) (void)co_await journal_.save(rec);
    ++tally.kept;
    metrics_.reconcile("kept");
    co_return;
  }
  if (rec.mode != Mode::agent && rec.phase == Phase::attached && staged(rec)) {
    // Controller mode and CSI: kubelet's staging, kept until its unstage.
    if (changed) (void)co_await journal_.save(rec);
    ++tally.kept;
    metrics_.reconcile("kept");
    co_return;
  }
  if (nothing_to_undo(rec)) {
    // A mount that failed before it touched the ACL, the lease or the host: forgetting the
    // record is its whole release, and needs no array (which may be why it failed).
    log_->info("volume {}: its mount never reached the array's ACL or this host; forgetting it",
               name);
    if (auto st = co_await journal_.remove(name); st) {
      records_.erase(name);
      ++tally.dropped;
      metrics_.reconcile("dropped");
      co_return;
    }
  }
  // Its last pod is gone (a crash mid-unmount, or the bind removed behind kubelet's back): it is
  // released like a last unmount. A crashed mount stays `attaching` (never served: the retain
  // policy must not delete it). release_leftover() skips it if a mount takes it over meanwhile.
  if (rec.phase == Phase::attached) rec.phase = Phase::detaching;
  leftovers_.push_back(name);
  // kubelet's retried unmount of a pod whose bind a crash already removed must wait for the
  // volume's release, not answer at once that it knows nothing of that pod.
  for (const auto& dir : known_pods) leftover_pods_[dir] = name;
}

bool Manager::settle_pods(Record& rec, Tally& tally) {
  // Pods: keep those whose bind is still there. A mount that crashed after its bind but before
  // its journal update is finished here; one that crashed before is forgotten (kubelet retries).
  const bool changed = forget_gone_pods(rec);
  if (rec.pending_pod.empty()) return changed;
  if (rec.has_pod(rec.pending_pod) && rec.phase == Phase::attaching) {
    log_->info("volume {}: finishing the mount into {} that a crash interrupted", rec.volume,
               rec.pending_pod);
    ++tally.finished;
    metrics_.reconcile("mount_finished");
  }
  rec.pending_pod.clear();
  return true;
}

asio::awaitable<int> Manager::log_out_leaked_sessions() {
  // Sessions with no journal record: leaked by a crash between login and the first journal write
  // that named the target. Log out only when nothing of them is mounted.
  auto sessions = co_await initiator_.sessions();
  if (!sessions) {
    log_->error("listing {} sessions at start-up failed: {}", initiator_.kind(),
                sessions.error().message);
    metrics_.reconcile("sessions_unreadable");
    co_return 0;
  }
  std::set<std::string> known;
  for (const auto& [_, rec] : records_) known.insert(rec.target.serial);
  int leaked = 0;
  for (const auto& s : *sessions) {
    if (!s.device || known.count(s.device->serial)) continue;
    if (co_await session_in_use(*s.device)) {
      log_->warn(
          "{} session {} (device {}) has no journal record but is mounted (or under a map); "
          "leaving it",
          initiator_.kind(), s.id, s.device->path);
      metrics_.reconcile("unknown_session_in_use");
      continue;
    }
    initiator::Target t{"(unknown)", s.target_iqn, {}, s.device->serial, 0};
    if (auto st = co_await initiator_.disconnect(t); !st) {
      log_->error("leaked session {} (device {}): logout failed: {}", s.id, s.device->path,
                  st.error().message);
      metrics_.reconcile("leak_logout_failed");
    } else {
      log_->warn("logged out leaked {} session {} (device {}, serial {})", initiator_.kind(), s.id,
                 s.device->path, s.device->serial);
      metrics_.reconcile("leak_logged_out");
      ++leaked;
    }
  }
  co_return leaked;
}

asio::awaitable<bool> Manager::session_in_use(const initiator::Device& disk) {
  auto table = mounter_.mounts();
  if (!table) co_return true;  // unknown: never log out what may be under a mount
  if (!(*table)->of_device(disk.major, disk.minor).empty()) co_return true;
  // A disk under one of our maps is in use whenever the map is (mounted on the map, not on the
  // disk); a lost journal record must never log out the session beneath a mount.
  if (multipath_) {
    if (auto name = multipath::map_name(disk.serial)) {
      auto map = co_await multipath_->find(*name);
      co_return !map || map->has_value();
    }
  }
  co_return false;
}

asio::awaitable<void> Manager::release_leftovers() {
  auto queue = std::make_shared<std::deque<std::string>>(leftovers_.begin(), leftovers_.end());
  leftovers_.clear();
  if (queue->empty()) co_return;
  log_->info("releasing {} volume(s) no pod uses, {} at a time, while serving", queue->size(),
             kReleaseLanes);
  auto worker = [this, queue]() -> asio::awaitable<void> {
    while (!queue->empty()) {
      std::string name = std::move(queue->front());
      queue->pop_front();
      co_await release_leftover(std::move(name));
    }
  };
  using namespace asio::experimental::awaitable_operators;
  static_assert(kReleaseLanes == 4, "one worker per lane below");
  co_await (worker() && worker() && worker() && worker());
  update_gauges();
}

asio::awaitable<void> Manager::release_leftover(std::string name) {
  struct ForgetPods {
    std::map<std::string, std::string>& pods;
    const std::string& name;
    ~ForgetPods() {
      std::erase_if(pods, [&](const auto& entry) { return entry.second == name; });
    }
  } forget{leftover_pods_, name};
  auto delay = options_.release_retry_delay;
  for (int attempt = 1;; ++attempt) {
    {
      auto guard = co_await locks_.lock(name);
      auto it = records_.find(name);
      if (it == records_.end()) co_return;  // a kubelet call finished it meanwhile
      Record& rec = it->second;
      if (!rec.pods.empty() || !rec.pending_pod.empty() || rec.phase == Phase::attached) {
        retries_.erase(name);  // a new mount took it over meanwhile
        co_return;
      }
      // Counted before, cleared after: a crash in between shows at the next start-up.
      (void)co_await journal_.note_attempt(name);
      auto st = co_await release(rec, Operation::reconcile);  // `rec` dangles once released
      (void)co_await journal_.clear_attempt(name);
      if (st) {
        log_->info("volume {}: no pod uses it; released what a crash left behind", name);
        metrics_.reconcile("released");
        retries_.erase(name);
        update_gauges();
        co_return;
      }
      metrics_.reconcile("release_failed");
      auto& retry = retries_[name];
      retry.failures = attempt;
      retry.last_error =
          std::string("failed at ") + to_string(st.error().step) + ": " + st.error().message();
      if (attempt >= options_.release_attempts) {
        retry.set_aside = true;
        metrics_.reconcile("set_aside_failing");
        log_->error(
            "volume {}: releasing it failed {} times ({}); set aside. Only its own calls are "
            "affected: kubelet's next call on it, `datera-agentctl release {}` or the next start "
            "retries it",
            name, attempt, retry.last_error, name);
        update_gauges();
        co_return;
      }
      log_->warn("volume {}: releasing it at start-up {}; retrying in {} ms", name,
                 retry.last_error, delay.count());
    }
    asio::steady_timer timer(co_await asio::this_coro::executor, delay);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    delay = std::min(delay * 2, std::chrono::milliseconds(60'000));
  }
}

void Manager::set_aside(const std::string& volume, const std::string& why,
                        const std::string& action) {
  auto moved = journal_.set_aside(volume);
  log_->error(
      "volume {}: {}; its record is set aside{} and the agent no longer manages the volume on "
      "this node. Check its mounts and session by hand (docs/troubleshooting.md)",
      volume, why, moved ? " as " + *moved : " (moving it failed: " + moved.error().message + ")");
  metrics_.reconcile(action);
  set_aside_.push_back(
      {{"volume", volume}, {"reason", why}, {"file", moved ? *moved : std::string()}});
}

bool Manager::canonicalize(Record& rec) const {
  bool changed = false;
  if (!rec.pending_pod.empty()) {
    auto canonical = canonical_recorded(rec.pending_pod, target_kind(rec.mode));
    if (!canonical.empty() && canonical != rec.pending_pod) {
      rec.pending_pod = canonical;
      changed = true;
    }
  }
  if (rec.mode != Mode::agent && !rec.staging.empty()) {
    auto canonical = canonical_recorded(rec.staging, staging_kind(rec.mode));
    if (!canonical.empty() && canonical != rec.staging) {
      rec.staging = canonical;
      changed = true;
    }
  }
  return changed;
}

bool Manager::nothing_to_undo(const Record& rec) const {
  return !rec.acl_added && rec.epoch == 0 && rec.target.serial.empty() && rec.map.empty() &&
         rec.pods.empty() && (rec.staging.empty() || !mount_at(rec.staging));
}

Status Manager::check_record(const Record& rec) const {
  if (!edf::is_valid_name(rec.volume)) return Error{"'" + rec.volume + "' is not a volume name"};
  const bool agent_staging = rec.staging == fs::join(options_.staging_dir, rec.volume);
  const bool kubelet_staging =
      rec.mode != Mode::agent && !canonical_recorded(rec.staging, staging_kind(rec.mode)).empty();
  if (!rec.staging.empty() && !agent_staging && !kubelet_staging) {
    return Error{"staging path " + rec.staging + " is neither " +
                 fs::join(options_.staging_dir, rec.volume) + " nor kubelet's staging path for " +
                 to_string(rec.mode) + " mode"};
  }
  if (rec.block && rec.mode != Mode::csi) return Error{"only CSI volumes can be raw block"};
  for (const auto& p : rec.pods) {
    if (canonical_recorded(p.dir, target_kind(rec.mode)).empty()) {
      return Error{"pod mount " + p.dir + " is not a pod volume dir of this driver"};
    }
  }
  if (!rec.pending_pod.empty() &&
      canonical_recorded(rec.pending_pod, target_kind(rec.mode)).empty()) {
    return Error{"pending pod " + rec.pending_pod + " is not a pod volume dir of this driver"};
  }
  if (!rec.device.empty() &&
      (rec.device.rfind("/dev/", 0) != 0 || normal_path(rec.device) != rec.device ||
       datera::json::has_control_char(rec.device))) {
    return Error{"device '" + rec.device + "' is not a path under /dev"};
  }
  if (!rec.map.empty() && (rec.map.rfind("datera-", 0) != 0 || !edf::is_valid_name(rec.map))) {
    return Error{"map '" + rec.map + "' is not one of this agent's maps"};
  }
  if (rec.fs_type != "xfs" && rec.fs_type != "ext4") {
    return Error{"filesystem '" + rec.fs_type + "' is not xfs or ext4"};
  }
  if (auto st = mount::validate_mount_options(rec.fs_type, rec.mount_options, false); !st) {
    return st.error();
  }
  for (const std::string* text :
       {&rec.initiator_iqn, &rec.target.iqn, &rec.target.serial, &rec.backend.host}) {
    if (datera::json::has_control_char(*text)) return Error{"a field holds a control character"};
  }
  for (const auto& p : rec.target.portals) {
    if (datera::json::has_control_char(p)) return Error{"a portal holds a control character"};
  }
  return ok_status();
}

// ---------------------------------------------------------------------------------------------
// the multipath map, and access IP changes
// ---------------------------------------------------------------------------------------------

const char* to_string(Access a) {
  switch (a) {
    case Access::unchanged:
      return "unchanged";
    case Access::moved:
      return "moved";
    case Access::deferred:
      return "deferred";
    case Access::failed:
      return "failed";
    case Access::refused:
      return "refused";
    case Access::error:
      return "error";
    case Access::reinstated:
      return "reinstated";
  }
  return "unknown";
}

asio::awaitable<Result<initiator::Device>> Manager::map_device(Record& rec,
                                                               const initiator::Device& dev) {
  // A volume staged on the raw disk (before maps, or multipath off then) stays there: a map cannot
  // be slid under a live mount.
  const bool staged_raw = rec.map.empty() && mount_at(rec.staging).has_value();
  if (staged_raw || (rec.map.empty() && (!multipath_ || !multipath_->available()))) {
    co_return dev;
  }
  if (!multipath_) {
    co_return Error{"the journal names map " + rec.map + " but this agent runs without multipath"};
  }
  if (rec.map.empty()) {
    auto name = multipath::map_name(rec.target.serial);
    if (!name) co_return name.error();
    rec.map = *name;
    if (auto st = co_await journal_.save(rec); !st) co_return st.error();
  }
  const std::vector<multipath::PathDevice> paths{{dev.path, dev.major, dev.minor}};
  const std::string uuid = multipath::map_uuid(rec.target.serial);
  auto map = co_await multipath_->ensure(rec.map, uuid, paths);
  if (!map) co_return map.error();
  co_return initiator::Device{map->device, dev.serial, map->major, map->minor};
}

namespace {

/// "10.0.0.5" -> "10.0.0.5:3260": sessions report ip:port, EDF lists bare IPs. The initiator's
/// own parser, so both sides are written the same way (IPv6 in brackets).
std::string with_port(const std::string& p) {
  auto parsed = initiator::parse_portal(p);
  return parsed ? parsed->str() : p;
}

std::set<std::string> portal_set(const std::vector<std::string>& ps) {
  std::set<std::string> out;
  for (const auto& p : ps) out.insert(with_port(p));
  return out;
}

std::string joined(const std::set<std::string>& ps) {
  std::string out;
  for (const auto& p : ps) out += (out.empty() ? "" : ",") + p;
  return out.empty() ? "(none)" : out;
}

/// Where the array exports an attached volume, against what the host has.
struct Exported {
  std::set<std::string> want;                ///< the array's portals (ip:port)
  std::set<std::string> had;                 ///< the record's
  bool stale = false;                        ///< a session on a portal the array no longer lists
  std::optional<initiator::Device> current;  ///< the disk of a session on a listed portal
  /// Whether the map needs looking at: on multipath, nothing else changed.
  bool map_matters(const Record& rec, bool have_multipath) const {
    return !rec.map.empty() && have_multipath && !stale && want == had;
  }
};

/// `sessions`: the initiator's sessions of the volume's target (others are skipped).
Exported exported(const Record& rec, const edf::AppInstance& ai,
                  const std::vector<const initiator::Session*>& sessions) {
  Exported e{portal_set(ai.ips), portal_set(rec.target.portals), false, std::nullopt};
  for (const auto* s : sessions) {
    if (s->target_iqn != rec.target.iqn || s->portal.empty()) continue;
    if (!e.want.count(with_port(s->portal))) {
      e.stale = true;
    } else if (s->device) {
      e.current = s->device;
    }
  }
  return e;
}

/// A live map that is not exactly the one path `current`, not in the standing queue mode `hold`
/// (initiator.io_hold: a crash mid-move left queueing on, or an expired hold turned it off), or
/// with its path failed: to be fixed.
bool map_wrong(const Result<std::optional<multipath::Map>>& map,
               const std::optional<initiator::Device>& current, bool hold) {
  return !map || !*map || (*map)->queueing != hold || !(*map)->failed.empty() || !current ||
         (*map)->paths != std::vector<std::string>{
                              multipath::PathDevice{"", current->major, current->minor}.dev_t()};
}

/// The map is exactly the one path `current` and only that path is failed: nothing moved, the
/// path only needs reinstating (once its session is back).
/// Queueing either way: the map holds I/O while its path is failed (a hold not yet expired), or
/// an expired hold failed it; reinstating the path is all it needs in both cases.
bool only_path_failed(const Result<std::optional<multipath::Map>>& map,
                      const std::optional<initiator::Device>& current) {
  if (!map || !*map || !current) return false;
  const std::string dev = multipath::PathDevice{"", current->major, current->minor}.dev_t();
  return (*map)->paths == std::vector<std::string>{dev} &&
         (*map)->failed == std::vector<std::string>{dev};
}

/// The session whose disk is `dev` is logged in and its disk running.
bool session_up(const std::vector<const initiator::Session*>& sessions,
                const initiator::Device& dev) {
  for (const auto* s : sessions) {
    if (s->device && s->device->major == dev.major && s->device->minor == dev.minor &&
        s->state == "LOGGED_IN" && (s->device_state.empty() || s->device_state == "running")) {
      return true;
    }
  }
  return false;
}

/// The poll's cheap look: the array's listing and the host's sessions and maps agree with the
/// record (or the array exports the volume nowhere right now). False: check_access() decides.
bool looks_unchanged(const Record& rec,
                     const std::unordered_map<std::string, edf::AppInstance>& found,
                     const std::vector<const initiator::Session*>& mine,
                     const Result<std::map<std::string, multipath::Map>>& live_maps,
                     const multipath::Multipath* multipath) {
  auto ai = found.find(rec.volume);
  if (ai == found.end() || ai->second.volume_uuid != rec.target.serial) return false;
  const Exported e = exported(rec, ai->second, mine);
  bool wrong = false;
  if (e.map_matters(rec, multipath != nullptr)) {
    Result<std::optional<multipath::Map>> map = std::optional<multipath::Map>();
    if (!live_maps) {
      map = live_maps.error();
    } else if (auto m = live_maps->find(rec.map); m != live_maps->end()) {
      map = std::optional<multipath::Map>(m->second);
    }
    wrong = map_wrong(map, e.current, multipath->holds_io());
  }
  return ai->second.ips.empty() || (e.want == e.had && !e.stale && !wrong);
}

}  // namespace

asio::awaitable<Access> Manager::check_access(std::string volume, std::string reason) {
  auto done = [&](Access a) {
    metrics_.access_check(to_string(a));
    return a;
  };
  // The array is asked before the volume's lock is taken, through the bounded client: an array
  // that does not answer must not hold up the volume's lease renewal, mounts or unmounts.
  const Record* before = attached_record(volume);
  if (!before) co_return Access::unchanged;
  auto array = arrays_.get_for_leases(before->backend);
  if (!array) {
    log_->warn("volume {}: cannot check its access IPs ({}): {}", volume, reason,
               array.error().message);
    co_return done(Access::error);
  }
  auto found = co_await (*array)->find_volume(volume);
  if (!found || !*found) {
    log_->warn("volume {}: cannot check its access IPs ({}): {}", volume, reason,
               found ? "the array has no such app instance" : found.error().message);
    co_return done(Access::error);
  }
  log_->debug("volume {}: access check ({}): waiting for the volume's lock", volume, reason);
  auto guard = co_await locks_.lock(volume);
  log_->debug("volume {}: access check ({}): looking at the host", volume, reason);
  Record* current_rec = attached_record(volume);
  if (!current_rec) co_return Access::unchanged;
  const edf::AppInstance& ai = **found;
  if (ai.volume_uuid != current_rec->target.serial) {
    log_->error(
        "volume {}: the array's volume uuid is now {}, not the mounted {}; not following "
        "it anywhere. Check the app instance on the array",
        volume, ai.volume_uuid, current_rec->target.serial);
    co_return done(Access::refused);
  }
  if (ai.ips.empty()) co_return done(Access::unchanged);  // not exported right now; nothing to do
  const Access a = co_await access_on_host(*current_rec, ai, reason);
  co_return done(a);
}

asio::awaitable<Access> Manager::access_on_host(Record& rec, const edf::AppInstance& ai,
                                                const std::string& reason) {
  const std::string& volume = rec.volume;
  // What the host has: sessions to the target on portals the array no longer lists, and whether
  // the map still runs on a disk of a listed portal.
  std::vector<const initiator::Session*> mine;
  auto sessions = co_await initiator_.sessions();
  if (sessions) {
    for (const auto& s : *sessions) mine.push_back(&s);
  }
  const Exported ex = exported(rec, ai, mine);
  bool wrong = false;
  bool reinstate = false;
  if (ex.map_matters(rec, multipath_ != nullptr)) {
    auto map = co_await multipath_->find(rec.map);
    wrong = map_wrong(map, ex.current, multipath_->holds_io());
    reinstate = only_path_failed(map, ex.current);
  }
  log_->debug("volume {}: access check ({}): map to fix={}, only its path failed={}", volume,
              reason, wrong, reinstate);
  if (ex.want == ex.had && !ex.stale && !wrong) co_return Access::unchanged;
  if (reinstate) {
    co_return co_await reinstate_path(rec, *ex.current, session_up(mine, *ex.current), reason);
  }
  if (rec.map.empty() || !multipath_) {
    log_->warn(
        "volume {}: the array now exports it at {} (this node uses {}), but it is mounted on the "
        "raw session disk without dm-multipath, which cannot change under a mount. It stays on "
        "the old portal until its pods leave this node; enable dm-multipath (initiator.multipath) "
        "to move volumes live",
        volume, joined(ex.want), joined(ex.had));
    co_return Access::deferred;
  }
  co_return co_await move_session(rec, ai, joined(ex.want), joined(ex.had), reason);
}

asio::awaitable<Access> Manager::reinstate_path(Record& rec, const initiator::Device& current,
                                                bool session_is_up, const std::string& reason) {
  // The session was down long enough for the kernel to fail the map's path (I/O errors reached
  // the filesystem), and the path stays failed after the session is back: the job of
  // multipathd's path checker, done once the session is logged in and its disk running.
  if (!session_is_up) {
    log_->debug("volume {}: its map's path is failed; its session is not back yet", rec.volume);
    co_return Access::unchanged;
  }
  auto on = co_await map_device(rec, current);
  if (!on) {
    log_->error("volume {}: its session is back but the map's path stays failed: {}", rec.volume,
                on.error().message);
    co_return Access::failed;
  }
  log_->warn(
      "volume {}: reinstated the failed path {} of map {} ({}); I/O errors may have reached "
      "the filesystem while it was failed",
      rec.volume, current.path, rec.map, reason);
  co_return Access::reinstated;
}

asio::awaitable<Access> Manager::move_session(Record& rec, const edf::AppInstance& ai,
                                              const std::string& want, const std::string& had,
                                              const std::string& reason) {
  const std::string& volume = rec.volume;
  const auto start = Clock::now();
  log_->warn("volume {}: access moved on the array ({}): {} -> {}; moving the session", volume,
             reason, had, want);
  // The new portals first, in the journal: a crash from here on is finished by the next check.
  rec.target.portals.assign(ai.ips.begin(), ai.ips.end());
  if (auto st = co_await journal_.save(rec); !st) {
    log_->error("volume {}: journal: {}", volume, st.error().message);
    co_return Access::failed;
  }
  auto fail = [&](Step step, const Error& e) {
    log_->error(
        "volume {}: moving to {} failed at {}: {}. The old path is left as it was; the "
        "next check retries",
        volume, want, to_string(step), e.message);
    return Access::failed;
  };
  // 1. Log in on the new portal; connect() verifies the LUN's serial is this volume's.
  auto dev = co_await initiator_.connect(rec.target, options_.connect_timeout);
  if (!dev) co_return fail(Step::login, dev.error());
  crash_point(Operation::move, Step::login);
  // 2. Hold I/O inside the map, 3. log out of the old portal (its stuck I/O fails back into the
  // map's queue), 4. swap the map onto the new disk (ensure() ends in the standing queue mode).
  if (auto st = co_await multipath_->set_queueing(rec.map, true); !st)
    co_return fail(Step::queue, st.error());
  if (auto st = co_await initiator_.prune(rec.target); !st) {
    (void)co_await multipath_->set_queueing(rec.map, multipath_->holds_io());
    co_return fail(Step::prune, st.error());
  }
  crash_point(Operation::move, Step::prune);
  auto swapped = co_await map_device(rec, *dev);
  if (!swapped) co_return fail(Step::swap, swapped.error());
  (void)co_await journal_.save(rec);
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  metrics_.portal_changed(took);
  log_->warn(
      "volume {}: now on {} through {} (map {}), moved in {:.2f} s with I/O held, none failed",
      volume, want, dev->path, rec.map, took);
  co_return Access::moved;
}

asio::awaitable<Result<Manager::AppInstances>> Manager::exported_volumes(
    const std::string& key, const edf::BackendTarget& backend,
    const std::vector<std::string>& names) {
  auto array = arrays_.get_for_leases(backend);
  if (!array) co_return array.error();
  AppInstances found;
  if (size_t& pages = listing_pages_[key]; names.size() > std::max<size_t>(pages, 1)) {
    auto all = co_await (*array)->list_volumes();
    if (!all) co_return all.error();
    pages = (all->size() + edf::Client::kListPage - 1) / edf::Client::kListPage;
    for (auto& ai : *all) found.emplace(ai.name, std::move(ai));
    co_return found;
  }
  for (const auto& name : names) {
    auto one = co_await (*array)->find_volume(name);
    if (one && *one) found.emplace(name, std::move(**one));
  }
  co_return found;
}

asio::awaitable<void> Manager::check_access_all(std::vector<std::string> volumes) {
  // By array: one listing each (or one GET per volume, when that is fewer requests).
  std::map<std::string, std::pair<edf::BackendTarget, std::vector<std::string>>> by_array;
  std::vector<std::string> maps;
  for (const auto& v : volumes) {
    const Record* rec = attached_record(v);
    if (!rec) continue;
    // Per array and account: another account on the same array may not see these volumes.
    auto& entry = by_array[rec->backend.server() + " " + rec->backend.credentials.user +
                           (rec->backend.is_default ? " (agent)" : "")];
    entry.first = rec->backend;
    entry.second.push_back(v);
    if (!rec->map.empty()) maps.push_back(rec->map);
  }
  if (by_array.empty()) co_return;
  // One look at the host for all of them: sessions (indexed by target) and maps.
  auto sessions = co_await initiator_.sessions();
  std::unordered_map<std::string, std::vector<const initiator::Session*>> by_target;
  if (sessions) {
    for (const auto& s : *sessions) by_target[s.target_iqn].push_back(&s);
  }
  Result<std::map<std::string, multipath::Map>> live_maps = std::map<std::string, multipath::Map>{};
  if (multipath_ && !maps.empty()) live_maps = co_await multipath_->find_all(maps);

  for (auto& [server, entry] : by_array) {
    const auto& names = entry.second;
    auto found = co_await exported_volumes(server, entry.first, names);
    if (!found) {
      log_->warn("cannot check the access IPs of {} volume(s) on {} (poll): {}", names.size(),
                 entry.first.server(), found.error().message);
      for (size_t i = 0; i < names.size(); ++i) metrics_.access_check(to_string(Access::error));
      continue;
    }
    for (const auto& name : names) {
      const Record* rec = attached_record(name);  // looked up again: the awaits above yielded
      if (!rec) continue;
      const bool unchanged =
          looks_unchanged(*rec, *found, by_target[rec->target.iqn], live_maps, multipath_);
      if (unchanged) {
        metrics_.access_check(to_string(Access::unchanged));
        continue;
      }
      // Something differs (or the listing lacks it): the full check, under the volume's lock,
      // asks again and decides.
      (void)co_await check_access(name, "poll");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ownership leases
// ---------------------------------------------------------------------------------------------

asio::awaitable<void> Manager::renew_leases(std::chrono::milliseconds spread) {
  // Granted volumes (controller mode, CSI): the check that the grant still stands.
  co_await check_grants();
  if (!coordinator_) co_return;
  std::vector<std::string> names;
  for (const auto& [name, rec] : records_) {
    if (rec.mode == Mode::agent && rec.epoch != 0 && rec.phase == Phase::attached) {
      names.push_back(name);
    }
  }
  if (names.empty()) co_return;
  // Spread over `spread` rather than all at once (an array serving hundreds of nodes sees an even
  // trickle), with a few in flight so a round at hundreds of volumes still ends in time: the
  // i-th renewal starts no earlier than start + spread * i / n.
  const auto start = Clock::now();
  size_t next = 0;
  auto lane = [&]() -> asio::awaitable<void> {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (size_t i; (i = next++) < names.size();) {
      const auto at = start + spread * static_cast<int64_t>(i) / static_cast<int64_t>(names.size());
      if (at > Clock::now()) {
        timer.expires_at(at);
        boost::system::error_code ec;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      co_await renew_lease(names[i]);
    }
  };
  using namespace asio::experimental::awaitable_operators;
  static_assert(kRenewLanes == 4, "one lane per kRenewLanes below");
  co_await (lane() && lane() && lane() && lane());
  update_gauges();
}

// Controller mode and CSI: the grant check that stands in for the lease renewal.
asio::awaitable<void> Manager::check_grants() {
  std::vector<std::string> names;
  for (const auto& [name, rec] : records_) {
    if (rec.mode != Mode::agent && rec.epoch != 0 && rec.phase != Phase::detaching) {
      names.push_back(name);
    }
  }
  for (const auto& name : names) {
    auto guard = co_await locks_.lock(name);
    auto it = records_.find(name);
    if (it == records_.end() || it->second.epoch == 0 || it->second.phase == Phase::detaching) {
      continue;
    }
    Record& rec = it->second;
    auto array = arrays_.get_for_leases(rec.backend);
    Result<edf::Metadata> md =
        array.ok() ? Result<edf::Metadata>(edf::Metadata{}) : Result<edf::Metadata>(array.error());
    if (array) md = co_await (*array)->metadata(name);
    if (!md) {
      metrics_.lease_renewal_failed(Metrics::renewal_failure_reason(md.error()));
      log_->warn("volume {}: cannot check that it is still attached to this node: {}", name,
                 md.error().message);
      continue;
    }
    const ownership::Lease lease = ownership::decode(*md);
    if (lease.owner == options_.node_name && lease.epoch == rec.epoch) {
      maybe_freeze(co_await asio::this_coro::executor, name, *md);
      continue;
    }
    const std::string now = lease.free() ? "no node" : "node " + lease.owner;
    if (rec.pods.empty() && !staged(rec)) {
      // Detached while not staged here (kubelet skips unmountdevice for what is not mounted).
      if (auto st = co_await release(rec, Operation::detached); !st) {
        log_->error("volume {}: detached by the controller, but logging out failed at {}: {}", name,
                    to_string(st.error().step), st.error().message());
      } else {
        log_->info("volume {}: detached by the controller (now {}); logged out", name, now);
      }
      continue;
    }
    log_->error("volume {}: the controller attached it to {} (epoch {}, this node had {})", name,
                now, lease.epoch, rec.epoch);
    if (auto st = co_await self_fence(rec); !st) {
      log_->error("volume {}: self-fencing incomplete: {}; retried at the next check", name,
                  st.error().message);
    }
  }
  update_gauges();
}

asio::awaitable<void> Manager::renew_lease(const std::string& name) {
  auto guard = co_await locks_.lock(name);
  auto it = records_.find(name);
  if (it == records_.end() || it->second.epoch == 0 || it->second.phase != Phase::attached) {
    co_return;
  }
  Record& rec = it->second;
  auto array = arrays_.get_for_leases(rec.backend);
  if (!array) {
    metrics_.lease_renewal_failed(Metrics::renewal_failure_reason(array.error()));
    log_->warn("volume {}: lease renewal failed: {}", name, array.error().message);
    co_return;
  }
  ArrayStore store(**array);
  const std::string in_use = rec.pods.empty() ? "" : pods_text(rec.pods) + " use it there";
  auto r = co_await coordinator_->renew(name, store, rec.epoch, in_use);
  if (!r) {
    const char* reason = Metrics::renewal_failure_reason(r.error());
    metrics_.lease_renewal_failed(reason);
    log_->warn(
        "volume {}: lease renewal failed ({}): {} (the owner's lease expires after {} s "
        "without renewal; another node may then take the volume over{})",
        name, reason, r.error().message,
        std::chrono::duration_cast<std::chrono::seconds>(coordinator_->options().ttl).count(),
        std::string(reason) == "unauthorized"
            ? "; the array refused the credentials: fix backend.password_file (and restart the "
              "agent) or the volume's secret"
            : "");
    co_return;
  }
  if (*r == ownership::Renewal::handoff) {
    if (auto st = co_await release(rec, Operation::handoff); !st) {
      log_->error("volume {}: handing it over failed at {}: {}", name, to_string(st.error().step),
                  st.error().message());
      metrics_.handoff("release_failed", -1);
    } else {
      log_->info("volume {}: handed over on request (no pod used it here)", name);
      metrics_.handoff("released", -1);
    }
  } else if (*r == ownership::Renewal::superseded) {
    if (auto st = co_await self_fence(rec); !st) {
      log_->error("volume {}: self-fencing incomplete: {}; retried at the next renewal", name,
                  st.error().message);
    }
  }
}

asio::awaitable<Status> Manager::self_fence(Record& rec) {
  const std::string name = rec.volume;
  log_->error(
      "volume {}: another node holds its lease now; this node stops using it: its pod "
      "mounts, staging mount and session here are torn down (the pods see their volume "
      "gone and must be rescheduled)",
      name);
  metrics_.fencing("self_fenced");
  std::optional<Error> first;
  for (const auto& p : rec.pods) {
    if (auto st = co_await mounter_.unmount(p.dir); !st && !first) first = st.error();
  }
  if (first) co_return *first;  // never log out under a mount; the next renewal retries
  if (auto st = co_await leave_host(rec, Operation::self_fence); !st) co_return st.error().cause;
  // The ACL and the lease are the new owner's: not touched.
  if (auto st = co_await journal_.remove(name); !st) co_return st;
  records_.erase(name);
  co_return ok_status();
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

namespace {
/// Staged, with a known target: what access checks and the session keeper look at (a volume
/// released or still mounting is nothing of ours to move or watch).
bool is_attached(const Record& rec) {
  return rec.phase == Phase::attached && !rec.target.serial.empty();
}
}  // namespace

Record* Manager::attached_record(const std::string& volume) {
  auto it = records_.find(volume);
  return it != records_.end() && is_attached(it->second) ? &it->second : nullptr;
}

std::optional<mount::MountEntry> Manager::mount_at(const std::string& target) const {
  auto table = mounter_.mounts();
  if (!table) return std::nullopt;
  const mount::MountEntry* found = (*table)->at(target);
  return found ? std::optional<mount::MountEntry>(*found) : std::nullopt;
}

bool Manager::is_mounted_at(const std::string& target) const {
  return mount_at(target).has_value();
}

std::string Manager::find_volume_of_pod(const std::string& pod_dir) const {
  for (const auto& [name, rec] : records_) {
    if (rec.has_pod(pod_dir) || rec.pending_pod == pod_dir) return name;
  }
  const auto it = leftover_pods_.find(pod_dir);
  return it != leftover_pods_.end() && records_.count(it->second) ? it->second : "";
}

bool Manager::forget_gone_pods(Record& rec) {
  auto table = mounter_.mounts();
  if (!table) {
    log_->warn("volume {}: cannot read the mount table ({}); keeping its pod mounts", rec.volume,
               table.error().message);
    return false;
  }
  bool changed = false;
  // Recorded paths in canonical form (an older agent recorded kubelet_root as configured, which
  // may be a symlink; mountinfo shows the resolved path).
  for (auto& p : rec.pods) {
    if (auto canonical = canonical_recorded(p.dir, target_kind(rec.mode));
        !canonical.empty() && canonical != p.dir) {
      p.dir = canonical;
      changed = true;
    }
  }
  // Every mount of the volume's filesystem other than its staging mount is a user of it, whatever
  // the journal says: a path that does not match is adopted, never a reason to release the volume
  // under a running pod.
  const mount::MountTable& mounts = **table;
  const mount::MountEntry* staged = rec.staging.empty() ? nullptr : mounts.at(rec.staging);
  const auto same_fs = staged               ? mounts.of_device(staged->major, staged->minor)
                       : rec.device.empty() ? std::vector<const mount::MountEntry*>{}
                                            : mounts.of_source(rec.device);
  for (const auto* m : same_fs) {
    if (m->target == rec.staging || rec.has_pod(m->target)) continue;
    log_->warn(
        "volume {}: its filesystem is mounted at {}, which the journal does not list; keeping "
        "it as a user of the volume",
        rec.volume, m->target);
    metrics_.reconcile("pod_adopted");
    rec.pods.push_back(PodMount{m->target, m->read_only});
    changed = true;
  }
  std::erase_if(rec.pods, [&](const PodMount& p) {
    // Mounted with something else (a stale bind from another device) still counts as in use;
    // only a path where nothing is mounted any more is forgotten.
    if (mounts.at(p.dir)) return false;
    log_->warn("volume {}: pod mount {} is gone; forgetting it", rec.volume, p.dir);
    metrics_.reconcile("pod_forgotten");
    changed = true;
    return true;
  });
  return changed;
}

void Manager::update_gauges() {
  double set_aside = static_cast<double>(set_aside_.size());
  for (const auto& [_, retry] : retries_) set_aside += retry.set_aside ? 1 : 0;
  metrics_.set_aside(set_aside);
  double attaching = 0, attached = 0, detaching = 0, pods = 0;
  for (const auto& [_, rec] : records_) {
    (rec.phase == Phase::attaching  ? attaching
     : rec.phase == Phase::attached ? attached
                                    : detaching) += 1;
    pods += static_cast<double>(rec.pods.size());
  }
  metrics_.phases(attaching, attached, detaching, pods);
}

std::vector<Manager::Attached> Manager::attached() const {
  std::vector<Attached> out;
  for (const auto& [name, rec] : records_) {
    if (is_attached(rec)) {
      out.push_back({name, rec.target, rec.device, !rec.map.empty() && multipath_ != nullptr});
    }
  }
  return out;
}

bool Manager::staged(const Record& rec) const {
  if (rec.staging.empty()) return false;
  if (rec.block) return rec.phase == Phase::attached && !rec.device.empty();
  return mount_at(rec.staging).has_value();
}

std::optional<Manager::Served> Manager::served(const std::string& volume) const {
  const auto it = records_.find(volume);
  if (it == records_.end()) return std::nullopt;
  const Record& rec = it->second;
  return Served{rec.volume,  rec.mode,    rec.phase,  rec.block,
                staged(rec), rec.staging, rec.device, rec.pods};
}

std::optional<std::string> Manager::attached_map(const std::string& volume) {
  const Record* rec = attached_record(volume);
  if (!rec || rec->map.empty() || !multipath_) return std::nullopt;
  return rec->map;  // a copy: the record may change while dmsetup runs
}

asio::awaitable<std::optional<bool>> Manager::map_paths_active(std::string volume) {
  const auto map = attached_map(volume);
  if (!map) co_return std::nullopt;
  auto found = co_await multipath_->find(*map);
  if (!found || !*found) co_return std::nullopt;
  co_return (*found)->failed.empty();
}

asio::awaitable<bool> Manager::release_held_io(std::string volume) {
  const auto found = attached_map(volume);
  if (!found) co_return false;
  const std::string& map = *found;
  auto st = co_await multipath_->set_queueing(map, false);
  if (!st) {
    log_->error("volume {}: cannot fail the I/O its map {} holds: {}", volume, map,
                st.error().message);
    co_return false;
  }
  log_->warn(
      "volume {}: map {} no longer holds I/O; queued and new I/O fail until its path is "
      "back",
      volume, map);
  co_return true;
}

nlohmann::json Manager::volumes() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, rec] : records_) {
    auto v = rec.public_json();
    if (auto it = retries_.find(name); it != retries_.end()) {
      v["release_failures"] = it->second.failures;
      v["last_error"] = it->second.last_error;
      v["set_aside"] = it->second.set_aside;
    }
    out.push_back(std::move(v));
  }
  for (const auto& aside : set_aside_) {
    out.push_back({{"volume", aside["volume"]},
                   {"phase", "set_aside"},
                   {"set_aside", true},
                   {"last_error", aside["reason"]},
                   {"record", aside["file"]},
                   {"pods", nlohmann::json::array()}});
  }
  return out;
}

}  // namespace datera::volume

#include "plugins/initiator/open_iscsi.h"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <set>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "base/blocking.h"
#include "base/fs.h"

namespace datera::initiator {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

const char* iscsiadm_rc_name(int rc) {
  switch (rc) {
    case 0:
      return "SUCCESS";
    case 1:
      return "GENERIC";
    case 2:
      return "SESS_NOT_FOUND";
    case 3:
      return "NOMEM";
    case 4:
      return "TRANS";
    case 5:
      return "LOGIN";
    case 6:
      return "IDBM";
    case 7:
      return "INVAL";
    case 8:
      return "TRANS_TIMEOUT";
    case 9:
      return "INTERNAL";
    case 10:
      return "LOGOUT";
    case 11:
      return "PDU_TIMEOUT";
    case 12:
      return "TRANS_NOT_FOUND";
    case 13:
      return "ACCESS";
    case 14:
      return "TRANS_CAPS";
    case 15:
      return "SESS_EXISTS";
    case 16:
      return "INVALID_MGMT_REQ";
    case 17:
      return "ISNS_UNAVAILABLE";
    case 18:
      return "ISCSID_COMM_ERR";
    case 19:
      return "FATAL_LOGIN";
    case 20:
      return "ISCSID_NOTCONN";
    case 21:
      return "NO_OBJS_FOUND";
    case 22:
      return "SYSFS_LOOKUP";
    case 23:
      return "HOST_NOT_FOUND";
    case 24:
      return "LOGIN_AUTH_FAILED";
    case 25:
      return "ISNS_QUERY";
    case 26:
      return "ISNS_REG_FAILED";
    case 27:
      return "OP_NOT_SUPP";
    case 28:
      return "BUSY";
    case 29:
      return "AGAIN";
    case 30:
      return "UNKNOWN_DISCOVERY_TYPE";
    case 31:
      return "CHILD_TERMINATED";
    case 32:
      return "SESSION_NOT_CONNECTED";
    case 33:
      return "REQ_TIMEDOUT";
    default:
      return "UNKNOWN";
  }
}

const char* iscsiadm_rc_advice(int rc) {
  switch (rc) {
    case 5:
      return "the target refused or dropped the login: check that the portal is reachable from "
             "this node and the volume's app instance is online";
    case 19:
      return "the target does not accept this login (e.g. target not found): check the IQN and "
             "that the app instance is online and exported on this portal";
    case 6:
      return "the open-iscsi node database (/etc/iscsi/nodes) could not be used: check that it is "
             "writable and not held by another iscsiadm";
    case 8:
    case 11:
    case 33:
      return "the portal did not answer in time: check the network path (routes, MTU, firewall) "
             "to the access IP";
    case 9:
      return "iscsid reported an internal error; restarting iscsid on the host has fixed this "
             "with Datera targets";
    case 12:
      return "the iSCSI transport is missing: load the iscsi_tcp kernel module on the host";
    case 13:
      return "permission denied: iscsiadm must run as root in the host's namespaces";
    case 18:
    case 20:
      return "iscsid is not reachable: start iscsid on the host (systemctl start iscsid) and run "
             "the agent in the host network namespace";
    case 24:
      return "the target refused this initiator (CHAP or ACL): check that this node's initiator "
             "IQN is in the volume's ACL";
    case 28:
    case 29:
      return "iscsid is busy; try again";
    case 32:
      return "the session is reconnecting and cannot be logged out now; try again once the "
             "portal is reachable";
    default:
      return "";
  }
}

namespace {

/// The most telling line iscsiadm printed (its errors end with the reason), bounded.
std::string last_line(const process::Outcome& o) {
  std::string text = o.err.find_first_not_of(" \t\r\n") != std::string::npos ? o.err : o.out;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  const size_t nl = text.rfind('\n');
  if (nl != std::string::npos) text = text.substr(nl + 1);
  if (text.size() > 300) text = text.substr(0, 300) + "...";
  return text;
}

bool says_database_failure(const process::Outcome& o) {
  return o.err.find("database failure") != std::string::npos ||
         o.out.find("database failure") != std::string::npos;
}

std::string seconds(milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

bool same_address(const std::string& a, const std::string& b) {
  if (a == b) return true;
  boost::system::error_code ea, eb;
  const auto x = asio::ip::make_address(a, ea);
  const auto y = asio::ip::make_address(b, eb);
  return !ea && !eb && x == y;
}

bool is_session_for(const SysfsSession& s, const std::string& iqn, const Portal& p) {
  return s.target_iqn == iqn && s.port == static_cast<int>(p.port) &&
         same_address(s.address, p.address);
}

std::string portal_of(const SysfsSession& s) {
  if (s.address.empty()) return "";
  const bool v6 = s.address.find(':') != std::string::npos;
  return (v6 ? "[" + s.address + "]" : s.address) + ":" + std::to_string(s.port);
}

std::string describe(const Target& t) {
  return "target " + t.iqn + (t.volume.empty() ? "" : " (volume " + t.volume + ")");
}

/// The target's portals, parsed, without duplicates, in the given order.
Result<std::vector<Portal>> portals_of(const Target& t) {
  std::vector<Portal> out;
  for (const auto& text : t.portals) {
    auto p = parse_portal(text);
    if (!p) return p.error();
    if (std::find(out.begin(), out.end(), *p) == out.end()) out.push_back(*p);
  }
  return out;
}

}  // namespace

// ---- lock -----------------------------------------------------------------------------------

/// Holds the flock while alive (closing the descriptor releases it).
class OpenIscsi::Lock {
 public:
  Lock() = default;
  explicit Lock(int fd) : fd_(fd) {}
  Lock(Lock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Lock& operator=(Lock&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  ~Lock() { reset(); }
  int fd() const { return fd_; }

 private:
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

struct OpenIscsi::Step {
  std::vector<std::string> args;
  milliseconds timeout{30'000};
  std::string what;         ///< "logging in to target X at portal Y": starts every error
  std::vector<int> accept;  ///< exit codes that count as success besides 0
};

OpenIscsi::OpenIscsi(process::ProcessRunner& runner, asio::thread_pool& pool,
                     OpenIscsiOptions options, LoggerPtr log)
    : runner_(runner),
      pool_(pool),
      options_(std::move(options)),
      log_(log ? std::move(log) : null_logger()),
      sysfs_(options_.root) {
  options_.max_attempts = std::max(options_.max_attempts, 1);
}

OpenIscsi::~OpenIscsi() = default;

asio::awaitable<void> OpenIscsi::pause(milliseconds d, bool event_hook) {
  if (event_hook && options_.wait_for_event) {
    co_await options_.wait_for_event(d);
    co_return;
  }
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(d);
  boost::system::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<Result<OpenIscsi::Lock>> OpenIscsi::lock(const std::string& what) {
  if (options_.lock_file.empty()) co_return Lock{};
  const std::string& file = options_.lock_file;
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    co_return Error::from_errno(what + ": opening the iscsiadm lock file " + file, errno);
  }
  Lock held(fd);
  const auto deadline = Clock::now() + options_.lock_timeout;
  for (;;) {
    if (::flock(held.fd(), LOCK_EX | LOCK_NB) == 0) co_return std::move(held);
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) {
      co_return Error::from_errno(what + ": locking " + file, errno);
    }
    if (Clock::now() >= deadline) {
      co_return Error{what + ": the iscsiadm lock " + file + " was still held after " +
                          seconds(options_.lock_timeout) +
                          " (another login may be hanging; see which process holds it with "
                          "`fuser " +
                          file + "`)",
                      errno_code(ETIMEDOUT)};
    }
    co_await pause(options_.lock_poll, false);
  }
}

// ---- iscsiadm -------------------------------------------------------------------------------

asio::awaitable<Result<int>> OpenIscsi::iscsiadm(const Step& step) {
  for (int attempt = 1;; ++attempt) {
    process::Command cmd;
    cmd.program = options_.iscsiadm;
    cmd.args = step.args;
    cmd.timeout = step.timeout;
    cmd.max_output = 256 << 10;
    log_->debug("{}: running {} {}", step.what, options_.iscsiadm, fmt::join(step.args, " "));
    auto ran = co_await runner_.run(std::move(cmd));
    if (!ran) {
      co_return ran.error().wrap(step.what + ": cannot run " + options_.iscsiadm +
                                 " (is open-iscsi installed on the host?)");
    }
    const process::Outcome& o = *ran;
    if (o.timed_out) {
      co_return Error{step.what + ": iscsiadm did not finish within " + seconds(step.timeout) +
                          " and was killed; check that iscsid is running and the portal is "
                          "reachable",
                      errno_code(ETIMEDOUT)};
    }
    if (o.signal != 0) {
      co_return Error{step.what + ": iscsiadm was " + o.describe(), errno_code(EINTR)};
    }
    const int rc = o.exit_code;
    if (rc == 0 || std::find(step.accept.begin(), step.accept.end(), rc) != step.accept.end()) {
      co_return rc;
    }
    const bool retryable = rc == 6 || rc == 28 || rc == 29 || says_database_failure(o);
    if (retryable && attempt < options_.max_attempts) {
      log_->warn("{}: iscsiadm exited with code {} ({}): {}; retrying ({}/{})", step.what, rc,
                 iscsiadm_rc_name(rc), last_line(o), attempt, options_.max_attempts - 1);
      co_await pause(options_.retry_delay, false);
      continue;
    }
    std::string msg = step.what + ": iscsiadm exited with code " + std::to_string(rc) + " (" +
                      iscsiadm_rc_name(rc) + ")";
    if (const auto line = last_line(o); !line.empty()) msg += ": " + line;
    if (const std::string advice = iscsiadm_rc_advice(rc); !advice.empty()) msg += "; " + advice;
    if (attempt > 1) msg += " (gave up after " + std::to_string(attempt) + " attempts)";
    std::error_code code;
    if (rc == 8 || rc == 11 || rc == 33) code = errno_code(ETIMEDOUT);
    if (rc == 24 || rc == 13) code = errno_code(EACCES);
    co_return Error{std::move(msg), code};
  }
}

// ---- identity -------------------------------------------------------------------------------

Result<std::string> OpenIscsi::initiator_iqn() const {
  if (!options_.initiator_iqn.empty()) {
    if (auto st = validate_iqn(options_.initiator_iqn); !st) {
      return st.error().wrap("the configured initiator IQN");
    }
    return options_.initiator_iqn;
  }
  const std::string& file = options_.initiator_name_file;
  auto text = fs::read_file(file, 64 << 10);
  if (!text) {
    return text.error().wrap(
        "reading this node's initiator name (install open-iscsi on the host, which generates " +
        file + ", or configure the initiator IQN)");
  }
  auto name = parse_initiator_name(*text);
  if (!name) return name.error().wrap(file);
  return name;
}

// ---- sessions -------------------------------------------------------------------------------

bool OpenIscsi::mine(const SysfsSession& s) const {
  // Another iface's sessions belong to another initiator identity (another agent as a "node" in
  // tests, or an admin's own sessions): never listed, reused or logged out here.
  return s.iface.empty() || s.iface == options_.iface;
}

asio::awaitable<Result<std::vector<SysfsSession>>> OpenIscsi::read_sessions() {
  auto fn = [this]() -> Result<std::vector<SysfsSession>> {
    auto all = sysfs_.sessions();
    if (!all) return all;
    std::erase_if(*all, [this](const SysfsSession& s) { return !mine(s); });
    return all;
  };
  co_return co_await run_blocking(pool_, std::move(fn));
}

asio::awaitable<Result<std::vector<Session>>> OpenIscsi::sessions() {
  auto fn = [this]() -> Result<std::vector<Session>> {
    std::lock_guard lock(known_mu_);
    const std::string class_dir = sysfs_.path("/sys/class/iscsi_session");
    // The quick look: the same sessions as last time, each disk where it was: two states each.
    if (!known_ids_.empty() && sysfs_.session_ids() == known_ids_) {
      std::vector<Session> out;
      bool same = true;
      for (auto& [sid, k] : known_) {
        auto state = sysfs_.attr(class_dir + "/session" + std::to_string(sid) + "/state");
        if (!state || k.lun_dir.empty()) {
          same = false;
          break;
        }
        auto disk = sysfs_.attr(k.lun_dir + "/state");
        auto devno = sysfs_.attr(k.lun_dir + "/block/" + k.block + "/dev");
        if (!disk || devno != k.devno) {
          same = false;
          break;
        }
        Session session = k.session;
        session.state = *state;
        session.device_state = *disk;
        out.push_back(std::move(session));
      }
      if (same) return out;
    }
    // The full look: every session's tree, remembered for the next looks.
    auto found = sysfs_.sessions();
    if (!found) return found.error().wrap("listing iSCSI sessions");
    std::vector<Session> out;
    std::map<int, Known> known;
    std::vector<int> ids;
    bool complete = true;
    for (const SysfsSession& s : *found) {
      ids.push_back(s.sid);
      if (s.target_iqn.rfind(options_.session_prefix, 0) != 0 || !mine(s)) continue;
      Session session;
      session.target_iqn = s.target_iqn;
      session.portal = portal_of(s);
      session.state = s.state;
      session.id = s.sid;
      Known k;
      for (const SysfsLun& lun : sysfs_.luns(s.sid)) {
        if (lun.block.empty()) continue;
        Device d;
        d.path = sysfs_.path("/dev/" + lun.block);
        d.serial = sysfs_.serial(lun).value_or("");
        d.major = lun.major;
        d.minor = lun.minor;
        session.device = std::move(d);
        session.device_state = lun.scsi_state;
        k.lun_dir = lun.dir;
        k.block = lun.block;
        k.devno = std::to_string(lun.major) + ":" + std::to_string(lun.minor);
        break;  // Datera exports one LUN per target; the lowest one stands for the session
      }
      // A session without its disk (yet), or whose serial could not be read, is not remembered:
      // the next look is a full one again.
      if (k.lun_dir.empty() || session.device->serial.empty()) complete = false;
      k.session = session;
      known.emplace(s.sid, std::move(k));
      out.push_back(std::move(session));
    }
    std::sort(ids.begin(), ids.end());
    known_ = std::move(known);
    known_ids_ = complete ? std::move(ids) : std::vector<int>{};
    return out;
  };
  co_return co_await run_blocking(pool_, std::move(fn));
}

// ---- connect --------------------------------------------------------------------------------

asio::awaitable<Result<int>> OpenIscsi::login(const Target& target, const Portal& portal) {
  const std::string where = "target " + target.iqn + " at portal " + portal.str() +
                            (target.volume.empty() ? "" : " (volume " + target.volume + ")");
  const auto find = [&](const std::vector<SysfsSession>& all) -> std::optional<int> {
    for (const auto& s : all) {
      if (is_session_for(s, target.iqn, portal)) return s.sid;
    }
    return std::nullopt;
  };
  auto before = co_await read_sessions();
  if (!before) co_return before.error().wrap("logging in to " + where);
  if (auto sid = find(*before)) {
    log_->debug("{}: session {} already exists", where, *sid);
    co_return *sid;
  }

  std::vector<std::string> node = {"-m", "node",       "-T", target.iqn,
                                   "-p", portal.str(), "-I", options_.iface};
  {
    // `-o new` on an existing record resets it to the iscsid.conf defaults: it and every update
    // run as one unit under the lock, so the record always ends up with our settings.
    auto held = co_await lock("creating the node record for " + where);
    if (!held) co_return held.error();
    std::vector<std::pair<std::string, std::string>> settings = {
        {"node.startup", "manual"},
        {"node.session.scan", "manual"},
        {"node.session.timeo.replacement_timeout", std::to_string(options_.replacement_timeout)},
        {"node.conn[0].timeo.noop_out_interval", std::to_string(options_.noop_out_interval)},
        {"node.conn[0].timeo.noop_out_timeout", std::to_string(options_.noop_out_timeout)},
    };
    Step create;
    create.args = node;
    create.args.insert(create.args.end(), {"-o", "new"});
    create.timeout = options_.command_timeout;
    create.what = "creating the node record for " + where;
    if (auto rc = co_await iscsiadm(create); !rc) co_return rc.error();
    for (const auto& [key, value] : settings) {
      Step update;
      update.args = node;
      update.args.insert(update.args.end(), {"-o", "update", "-n", key, "-v", value});
      update.timeout = options_.command_timeout;
      update.what = "setting " + key + "=" + value + " in the node record for " + where;
      if (auto rc = co_await iscsiadm(update); !rc) co_return rc.error();
    }
  }
  int rc = 0;
  {
    auto held = co_await lock("logging in to " + where);
    if (!held) co_return held.error();
    Step login;
    login.args = node;
    login.args.push_back("--login");
    login.timeout = options_.login_timeout;
    login.what = "logging in to " + where;
    login.accept = {15};
    auto r = co_await iscsiadm(login);
    if (!r) co_return r.error();
    rc = *r;
  }
  auto after = co_await read_sessions();
  if (!after) co_return after.error().wrap("logging in to " + where);
  if (auto sid = find(*after)) {
    log_->info("logged in to {} (session {}{})", where, *sid,
               rc == 15 ? ", which iscsiadm reported as already present" : "");
    co_return *sid;
  }
  if (rc == 15) {
    co_return Error{"logging in to " + where +
                        ": iscsiadm says a session already exists (15, SESS_EXISTS), but sysfs "
                        "shows no session to this target from this portal; refusing to use a "
                        "session that is not ours",
                    errno_code(EEXIST)};
  }
  co_return Error{"logging in to " + where +
                      ": iscsiadm reported success, but sysfs shows no session to this target "
                      "from this portal",
                  errno_code(ENOENT)};
}

namespace {

/// What one look at sysfs found while waiting for the device.
struct Look {
  std::optional<Device> device;
  std::optional<Error> refused;  ///< a device with another serial: stop at once
  std::optional<Error> failed;   ///< sysfs could not be read, or a scan failed
  std::string waiting_for;       ///< why not yet, for the timeout message
};

}  // namespace

asio::awaitable<Result<Device>> OpenIscsi::wait_device(const Target& target,
                                                       const std::vector<int>& sids,
                                                       Clock::time_point deadline) {
  std::set<int> scanned;
  const auto started = Clock::now();
  for (;;) {
    auto fn = [&]() -> Look {
      Look look;
      auto all = sysfs_.sessions();
      if (!all) {
        look.failed = all.error();
        return look;
      }
      for (const int sid : sids) {
        const auto s = std::find_if(all->begin(), all->end(),
                                    [&](const SysfsSession& x) { return x.sid == sid; });
        if (s == all->end()) {
          look.waiting_for = "session " + std::to_string(sid) + " has gone away";
          continue;
        }
        const auto luns = sysfs_.luns(sid);
        const auto l = std::find_if(luns.begin(), luns.end(),
                                    [&](const SysfsLun& x) { return x.lun == target.lun; });
        if (l == luns.end()) {
          if (!scanned.contains(sid) && s->host >= 0) {
            // node.session.scan=manual: the kernel creates only the LUNs we ask for.
            scanned.insert(sid);
            if (auto st = sysfs_.scan_lun(s->host, target.lun); !st) {
              look.failed = st.error().wrap("scanning LUN " + std::to_string(target.lun) +
                                            " of session " + std::to_string(sid));
              return look;
            }
          }
          look.waiting_for = "no SCSI device for LUN " + std::to_string(target.lun) +
                             " in session " + std::to_string(sid) + " (state " + s->state + ")";
          continue;
        }
        if (l->block.empty()) {
          look.waiting_for = "SCSI device " + std::to_string(l->host) + ":" +
                             std::to_string(l->channel) + ":" + std::to_string(l->target) + ":" +
                             std::to_string(l->lun) + " has no block device yet";
          continue;
        }
        const std::string dev = sysfs_.path("/dev/" + l->block);
        struct stat st {};
        if (::stat(dev.c_str(), &st) != 0) {
          look.waiting_for = dev + " does not exist yet";
          continue;
        }
        if (options_.require_block_device &&
            (!S_ISBLK(st.st_mode) || ::major(st.st_rdev) != l->major ||
             ::minor(st.st_rdev) != l->minor)) {
          look.waiting_for = dev + " is not yet the block device " + std::to_string(l->major) +
                             ":" + std::to_string(l->minor);
          continue;
        }
        const auto serial = sysfs_.serial(*l);
        if (!serial) {
          look.waiting_for =
              dev + " shows no unit serial yet (vpd_pg80, wwid '" + sysfs_.wwid(*l) + "')";
          continue;
        }
        if (!serials_match(*serial, target.serial)) {
          look.refused =
              Error{"connecting " + describe(target) + ": LUN " + std::to_string(target.lun) +
                        " appeared as " + dev + " with serial '" + *serial +
                        "', but the volume's serial is '" + target.serial +
                        "'; refusing that device, nothing was mounted (the portal may "
                        "export another volume at this LUN)",
                    errno_code(EIO)};
          return look;
        }
        Device d;
        d.path = dev;
        d.serial = *serial;
        d.major = l->major;
        d.minor = l->minor;
        look.device = std::move(d);
        return look;
      }
      return look;
    };
    Look look = co_await run_blocking(pool_, std::move(fn));
    if (look.device) co_return std::move(*look.device);
    if (look.refused) co_return std::move(*look.refused);
    if (look.failed) co_return look.failed->wrap("connecting " + describe(target));
    const auto now = Clock::now();
    if (now >= deadline) {
      co_return Error{"connecting " + describe(target) + ": no usable device for LUN " +
                          std::to_string(target.lun) + " after " +
                          seconds(std::chrono::duration_cast<milliseconds>(now - started)) +
                          " (last: " + look.waiting_for + ")",
                      errno_code(ETIMEDOUT)};
    }
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - now);
    co_await pause(std::max(milliseconds(1), std::min(left, options_.device_poll)), true);
  }
}

asio::awaitable<Result<Device>> OpenIscsi::connect(const Target& target, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string what = "connecting " + describe(target);
  if (auto st = validate_iqn(target.iqn); !st) co_return st.error().wrap(what);
  if (auto st = validate_lun(target.lun); !st) co_return st.error().wrap(what);
  if (auto st = validate_serial(target.serial); !st) co_return st.error().wrap(what);
  if (target.portals.empty())
    co_return Error{what + ": the target has no portal", errno_code(EINVAL)};
  auto parsed = portals_of(target);
  if (!parsed) co_return parsed.error().wrap(what);
  std::vector<Portal> portals = std::move(*parsed);

  // Without multipath, one session per volume: two sessions would give two sdX for one LUN
  // that only dm-multipath would join. A portal that already has a session goes first, so a retry
  // reuses it.
  if (!options_.all_portals) {
    if (auto existing = co_await read_sessions()) {
      std::stable_partition(portals.begin(), portals.end(), [&](const Portal& p) {
        return std::any_of(existing->begin(), existing->end(), [&](const SysfsSession& s) {
          return s.target_iqn == target.iqn && s.address == p.address &&
                 s.port == static_cast<int>(p.port);
        });
      });
    }
  }
  std::vector<int> sids;
  std::vector<Error> failures;
  for (const Portal& portal : portals) {
    auto sid = co_await login(target, portal);
    if (sid) {
      sids.push_back(*sid);
      if (!options_.all_portals) break;
      continue;
    }
    failures.push_back(sid.error());
    if (portals.size() > 1) log_->warn("{}", sid.error().message);
  }
  if (sids.empty()) {
    if (failures.size() == 1) co_return failures.front();
    // The code of the first failure is kept when every portal failed the same way.
    std::error_code code = failures.front().code;
    std::string msg = what + ": login failed on every portal: ";
    for (size_t i = 0; i < failures.size(); ++i) {
      if (failures[i].code != code) code = {};
      msg += (i ? "; " : "") + failures[i].message;
    }
    co_return Error{std::move(msg), code};
  }
  co_return co_await wait_device(target, sids, deadline);
}

// ---- disconnect -----------------------------------------------------------------------------

asio::awaitable<Status> OpenIscsi::refresh(const Target& target) {
  auto sessions = co_await read_sessions();
  if (!sessions) co_return sessions.error();
  int rescanned = 0;
  std::optional<Error> failure;
  for (const auto& s : *sessions) {
    if (s.target_iqn != target.iqn) continue;
    const int sid = s.sid;
    auto list = [&]() { return sysfs_.luns(sid); };
    const auto luns = co_await run_blocking(pool_, list);
    for (const auto& lun : luns) {
      if (lun.lun != target.lun) continue;
      auto rescan = [&]() { return sysfs_.rescan(lun); };
      if (auto st = co_await run_blocking(pool_, rescan); !st) {
        failure = st.error();
      } else {
        ++rescanned;
      }
    }
  }
  if (failure) co_return failure->wrap("rescanning volume " + target.volume);
  if (rescanned == 0) {
    co_return Error{"volume " + target.volume + ": no session to " + target.iqn +
                    " to rescan; is it logged in?"};
  }
  log_->info("volume {}: rescanned {} SCSI device(s) for the new size", target.volume, rescanned);
  co_return ok_status();
}

asio::awaitable<Status> OpenIscsi::logout_session(int sid, const std::string& about) {
  auto held = co_await lock("logging out of session " + std::to_string(sid));
  if (!held) co_return held.error();
  Step logout;
  logout.args = {"-m", "session", "-r", std::to_string(sid), "--logout"};
  logout.timeout = options_.login_timeout;
  logout.what = "logging out of session " + std::to_string(sid) + " " + about;
  logout.accept = {21, 2, 22};  // gone already
  if (auto rc = co_await iscsiadm(logout); !rc) co_return rc.error();
  co_return ok_status();
}

asio::awaitable<Status> OpenIscsi::prune(const Target& target) {
  const std::string what = "logging out of old portals of " + describe(target);
  if (auto st = validate_iqn(target.iqn); !st) co_return st.error().wrap(what);
  auto keep = portals_of(target);
  if (!keep) co_return keep.error().wrap(what);
  auto all = co_await read_sessions();
  if (!all) co_return all.error().wrap(what);
  for (const auto& s : *all) {
    if (s.target_iqn != target.iqn) continue;
    const bool listed = std::any_of(keep->begin(), keep->end(), [&](const Portal& p) {
      return is_session_for(s, target.iqn, p);
    });
    if (listed) continue;
    const std::string old = portal_of(s);
    if (auto st =
            co_await logout_session(s.sid, "at old portal " + old + " of " + describe(target));
        !st) {
      co_return st;
    }
    if (!old.empty()) {
      Step remove;
      remove.args = {"-m", "node", "-T",           target.iqn, "-p",
                     old,  "-I",   options_.iface, "-o",       "delete"};
      remove.timeout = options_.command_timeout;
      remove.what = "deleting the node record of " + describe(target) + " at old portal " + old;
      remove.accept = {21};
      if (auto rc = co_await iscsiadm(remove); !rc) co_return rc.error();
    }
    log_->info("{}: logged out of session {} at old portal {} ({})", describe(target), s.sid, old,
               s.state);
  }
  co_return ok_status();
}

asio::awaitable<Status> OpenIscsi::disconnect(const Target& target) {
  const std::string what = "disconnecting " + describe(target);
  if (auto st = validate_iqn(target.iqn); !st) co_return st.error().wrap(what);
  {
    // By IQN without a portal: every session to the target, also those to portals EDF no longer
    // lists (old sessions keep their portal). 21 = no session (and 2, from older iscsiadm) means
    // nothing to do.
    auto held = co_await lock("logging out of " + describe(target));
    if (!held) co_return held.error();
    Step logout;
    logout.args = {"-m", "node", "-T", target.iqn, "-I", options_.iface, "--logout"};
    logout.timeout = options_.login_timeout;
    logout.what = "logging out of " + describe(target);
    logout.accept = {21, 2};
    if (auto rc = co_await iscsiadm(logout); !rc) co_return rc.error();
    Step remove;
    remove.args = {"-m", "node", "-T", target.iqn, "-I", options_.iface, "-o", "delete"};
    remove.timeout = options_.command_timeout;
    remove.what = "deleting the node records of " + describe(target);
    remove.accept = {21};
    if (auto rc = co_await iscsiadm(remove); !rc) co_return rc.error();
  }

  // Confirm, giving sysfs a moment; a session iscsiadm did not match by record is logged out by
  // its sid once.
  const auto deadline = Clock::now() + options_.logout_settle;
  bool by_sid = false;
  for (;;) {
    auto all = co_await read_sessions();
    if (!all) co_return all.error().wrap(what);
    std::vector<SysfsSession> left;
    for (const auto& s : *all) {
      if (s.target_iqn == target.iqn) left.push_back(s);
    }
    if (left.empty()) co_return ok_status();
    if (!by_sid) {
      by_sid = true;
      for (const auto& s : left) {
        if (auto st = co_await logout_session(s.sid, "to " + describe(target)); !st) co_return st;
      }
      continue;
    }
    if (Clock::now() >= deadline) {
      std::string msg = what + ": iscsiadm logged out, but " + std::to_string(left.size()) +
                        " session(s) remain:";
      for (const auto& s : left) {
        msg += " session" + std::to_string(s.sid) + " at " + portal_of(s) + " (" + s.state + ")";
      }
      co_return Error{std::move(msg), errno_code(EBUSY)};
    }
    co_await pause(options_.device_poll, true);
  }
}

InitiatorPtr make_open_iscsi(process::ProcessRunner& runner, asio::thread_pool& pool,
                             OpenIscsiOptions options, LoggerPtr log) {
  return std::make_unique<OpenIscsi>(runner, pool, std::move(options), std::move(log));
}

}  // namespace datera::initiator

#include "agent/multipath/dmsetup.h"

#include <algorithm>
#include <dirent.h>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <climits>

#include "base/blocking.h"

namespace datera::multipath {

namespace asio = boost::asio;

Metrics::Metrics(prometheus::Registry& registry)
    : available_(prometheus::BuildGauge()
                     .Name("datera_agent_multipath_available")
                     .Help("1 when volumes are mounted on per-volume dm-multipath maps (live "
                           "portal changes possible), 0 when on the raw session disk")
                     .Register(registry)
                     .Add({})),
      operations_(prometheus::BuildCounter()
                      .Name("datera_agent_multipath_operations_total")
                      .Help("dm-multipath map operations by result")
                      .Register(registry)) {}

void Metrics::available(bool yes) {
  available_.Set(yes ? 1 : 0);
}
void Metrics::operation(const std::string& op, bool ok) {
  operations_.Add({{"op", op}, {"result", ok ? "ok" : "error"}}).Increment();
}

Dmsetup::Dmsetup(process::ProcessRunner& runner, asio::thread_pool& pool, DmsetupOptions options,
                 Metrics& probe, LoggerPtr log)
    : runner_(runner),
      pool_(pool),
      options_(std::move(options)),
      metrics_(probe),
      log_(std::move(log)) {
  if (options_.root.empty() || options_.root.back() != '/') options_.root += '/';
}

namespace {
/// The kernel modules the maps need, and whether one is loaded (or built in).
constexpr const char* kModules[] = {"dm_multipath", "dm_round_robin"};
bool module_loaded(const std::string& root, const char* module) {
  struct stat st {};
  return ::stat((root + "sys/module/" + module).c_str(), &st) == 0;
}
}  // namespace

bool Dmsetup::detect(std::string* why_not) {
  std::string missing;
  for (const char* m : kModules) {
    if (!module_loaded(options_.root, m)) {
      missing += std::string(missing.empty() ? "" : ", ") + "kernel module " + m;
    }
  }
  if (::access(options_.dmsetup.c_str(), X_OK) != 0) {
    missing += std::string(missing.empty() ? "" : ", ") + options_.dmsetup;
  }
  available_ = missing.empty();
  metrics_.available(available_);
  if (why_not) *why_not = missing.empty() ? "" : "missing " + missing;
  return available_;
}

asio::awaitable<Result<process::Outcome>> Dmsetup::dmsetup(std::vector<std::string> args) {
  process::Command cmd;
  cmd.program = options_.dmsetup;
  cmd.args = std::move(args);
  cmd.timeout = options_.timeout;
  // No udev rules in play: where udevd runs, let it make /dev/mapper links without waiting on it.
  cmd.args.insert(cmd.args.begin(), "--noudevsync");
  co_return co_await runner_.run(std::move(cmd));
}

namespace {

std::string describe(const std::vector<std::string>& args) {
  std::string out = "dmsetup";
  for (const auto& a : args) out += " " + a;
  return out;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool says_absent(const process::Outcome& o) {
  return o.err.find("No such device or address") != std::string::npos ||
         o.err.find("does not exist") != std::string::npos;
}

}  // namespace

asio::awaitable<Status> Dmsetup::must(std::vector<std::string> args, const std::string& what) {
  const std::string cmd = describe(args);
  auto out = co_await dmsetup(args);
  if (!out) co_return out.error().wrap(what + ": " + cmd);
  if (!out->success()) {
    co_return Error{what + ": " + cmd + " failed (" + out->describe() + "): " + trimmed(out->err)};
  }
  co_return ok_status();
}

asio::awaitable<Result<std::string>> Dmsetup::output(std::vector<std::string> args,
                                                     const std::string& what) {
  const std::string verb = args.front();
  auto out = co_await dmsetup(std::move(args));
  if (!out) co_return out.error().wrap(what);
  if (!out->success()) {
    co_return Error{what + ": dmsetup " + verb + " failed (" + out->describe() +
                    "): " + trimmed(out->err)};
  }
  co_return std::move(out->out);
}

std::optional<std::string> Dmsetup::foreign_holder(const PathDevice& p,
                                                   const std::string& uuid) const {
  const std::string dir = options_.root + "sys/dev/block/" + p.dev_t() + "/holders";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return std::nullopt;
  std::optional<std::string> out;
  int seen = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string holder = e->d_name;
    if (holder == "." || holder == ".." || holder.size() > 32 || ++seen > 64) continue;
    auto read = [&](const char* what) {
      std::ifstream in(options_.root + "sys/block/" + holder + "/dm/" + what);
      std::string v;
      std::getline(in, v);
      return v.substr(0, 256);
    };
    const std::string their_uuid = read("uuid");
    if (their_uuid == uuid) continue;  // ours
    const std::string name = read("name");
    const std::string map = name.empty() ? holder : name;
    // multipathd's maps are "mpath-<wwid>"; anything else (LVM, another tool) is named as it is.
    const bool multipathd = their_uuid.rfind("mpath-", 0) == 0;
    out = p.path + " (" + p.dev_t() + ") is held by " +
          (multipathd ? "multipathd's map " : "device-mapper map ") +
          (name.empty() ? holder : name + " (" + holder + ")") +
          (multipathd ? ": multipathd claims Datera disks on this node. Keep it off them with the "
                        "blacklist drop-in (systemd/datera-agent-multipath.conf as "
                        "/etc/multipath/conf.d/datera-agent.conf, then `multipathd reconfigure` "
                        "and `multipath -f " +
                            map +
                            "`), or set initiator.multipath: off; `datera-agentctl doctor` checks "
                            "it"
                      : ": something else on this node uses the volume's disk; find what with "
                        "`dmsetup info " +
                            map + "`");
    break;
  }
  ::closedir(d);
  return out;
}

Result<uint64_t> Dmsetup::sectors_of(const PathDevice& p) const {
  const std::string file = options_.root + "sys/dev/block/" + p.dev_t() + "/size";
  std::ifstream in(file);
  uint64_t n = 0;
  if (!(in >> n) || n == 0) return Error{"cannot read the size of " + p.path + " from " + file};
  return n;
}

asio::awaitable<Result<std::optional<Map>>> Dmsetup::find(const std::string& name) {
  const std::string what = "reading device-mapper map " + name;
  // Named, then assigned: GCC 12 mishandles braced temporaries and braced initialization of
  // locals in coroutines (PR 100611; "array used as initializer").
  std::vector<std::string> info_args;
  info_args = {"info", "-c", "--noheadings", "--separator", " ", "-o", "major,minor,uuid", name};
  auto info = co_await dmsetup(std::move(info_args));
  if (!info) co_return info.error().wrap(what);
  if (!info->success()) {
    if (says_absent(*info)) co_return std::optional<Map>{};
    co_return Error{what + ": dmsetup info failed (" + info->describe() +
                    "): " + trimmed(info->err)};
  }
  Map m;
  m.name = name;
  std::string uuid;
  std::istringstream line(info->out);
  if (!(line >> m.major >> m.minor >> uuid)) {
    co_return Error{what + ": unexpected dmsetup info output '" + trimmed(info->out) + "'"};
  }
  if (uuid.rfind("DATERA-", 0) != 0) {
    co_return Error{what + ": a map of that name exists with dm uuid '" + uuid +
                    "', which is not the agent's; remove or rename it by hand"};
  }
  std::vector<std::string> table_args;
  table_args = {"table", name};
  auto table = co_await output(std::move(table_args), what);
  if (!table) co_return table.error();
  auto t = decode_table(trimmed(*table));
  if (!t) co_return t.error().wrap(what);
  m.sectors = t->sectors;
  m.paths = t->paths;
  m.queueing = t->queue;
  std::vector<std::string> status_args;
  status_args = {"status", name};
  auto status = co_await output(std::move(status_args), what);
  if (!status) co_return status.error();
  auto failed = decode_failed_paths(trimmed(*status));
  if (!failed) co_return failed.error().wrap(what);
  m.failed = std::move(*failed);
  // devtmpfs names the node after the kernel's disk name, dm-<minor>.
  m.device = options_.root + "dev/dm-" + std::to_string(m.minor);
  co_return std::optional<Map>{std::move(m)};
}

asio::awaitable<Result<std::map<std::string, Map>>> Dmsetup::find_all(
    std::vector<std::string> names) {
  const std::string what = "listing device-mapper maps";
  std::set<std::string> wanted(names.begin(), names.end());
  std::vector<std::string> info_args;
  info_args = {"info", "-c", "--noheadings", "--separator", " ", "-o", "name,major,minor,uuid"};
  auto info = co_await output(std::move(info_args), what);
  if (!info) co_return info.error();
  std::map<std::string, Map> out;
  std::istringstream lines(*info);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    Map m;
    std::string uuid;
    // "No devices found", or a map that is not ours: skipped (find() names a foreign map with
    // our name as an error; the full check that follows a mismatch does so).
    if (!(fields >> m.name >> m.major >> m.minor >> uuid) || !wanted.count(m.name)) continue;
    if (uuid.rfind("DATERA-", 0) != 0) continue;
    m.device = options_.root + "dev/dm-" + std::to_string(m.minor);
    out.emplace(m.name, std::move(m));
  }
  auto tables = co_await multipath_lines("table", what);
  if (!tables) co_return tables.error();
  auto statuses = co_await multipath_lines("status", what);
  if (!statuses) co_return statuses.error();
  for (auto it = out.begin(); it != out.end();) {
    auto table = tables->find(it->first);
    auto status = statuses->find(it->first);
    // A map without a multipath table or status (being created, or not a multipath map): as
    // find() would fail on it, leave it out so the caller's full check looks at it alone.
    if (table == tables->end() || status == statuses->end()) {
      it = out.erase(it);
      continue;
    }
    auto t = decode_table(table->second);
    if (!t) co_return t.error().wrap(what + " (map " + it->first + ")");
    auto failed = decode_failed_paths(status->second);
    if (!failed) co_return failed.error().wrap(what + " (map " + it->first + ")");
    it->second.sectors = t->sectors;
    it->second.paths = t->paths;
    it->second.queueing = t->queue;
    it->second.failed = std::move(*failed);
    ++it;
  }
  co_return out;
}

asio::awaitable<Result<std::map<std::string, std::string>>> Dmsetup::multipath_lines(
    std::string verb, const std::string& what) {
  std::vector<std::string> args;
  args = {verb, "--target", "multipath"};
  auto listed = co_await output(std::move(args), what);
  if (!listed) co_return listed.error();
  std::map<std::string, std::string> out;
  std::istringstream lines(*listed);
  for (std::string line; std::getline(lines, line);) {
    const auto colon = line.find(": ");
    if (colon != std::string::npos) out[line.substr(0, colon)] = trimmed(line.substr(colon + 2));
  }
  co_return out;
}

asio::awaitable<Result<Map>> Dmsetup::ensure(const std::string& name, const std::string& uuid,
                                             const std::vector<PathDevice>& paths) {
  const std::string what = "setting up device-mapper map " + name;
  if (paths.empty()) co_return Error{what + ": no path"};
  Table want;
  want.queue = options_.hold_io;
  for (const auto& p : paths) {
    // A disk another map holds must not join ours: the kernel would let it (below), leaving two
    // maps over one LUN; most often multipathd, which claims every disk it is not told to leave
    // alone.
    auto read = [&]() -> Result<uint64_t> {
      if (auto held = foreign_holder(p, uuid)) return Error{*held};
      return sectors_of(p);
    };
    auto n = co_await run_blocking(pool_, read);
    if (!n) co_return n.error().wrap(what);
    if (want.sectors != 0 && *n != want.sectors) {
      co_return Error{what + ": paths differ in size (" + std::to_string(want.sectors) + " and " +
                      std::to_string(*n) + " sectors); refusing to join them"};
    }
    want.sectors = *n;
    want.paths.push_back(p.dev_t());
  }
  auto current = co_await find(name);
  if (!current) co_return current.error();
  const bool creating = !*current;
  const bool swapping =
      !creating && ((*current)->paths != want.paths || (*current)->sectors != want.sectors);
  if (creating) {
    std::vector<std::string> args;
    args = {"create", name, "-u", uuid, "--table", encode_table(want)};
    auto st = co_await must(args, what);
    metrics_.operation("create", st.ok());
    if (!st) co_return st.error();
    log_->info("map {}: created over {} ({} sectors)", name, paths.front().path, want.sectors);
  } else if (swapping) {
    Table swap = want;
    swap.queue = true;  // a path that fails during the swap must not fail the I/O
    std::vector<std::string> reload;
    reload = {"reload", name, "--table", encode_table(swap)};
    std::vector<std::string> resume;
    resume = {"resume", "--noflush", "--nolockfs", name};
    auto st = co_await must(reload, what);
    if (st) st = co_await must(resume, what);
    metrics_.operation("swap", st.ok());
    if (!st) co_return st.error();
    std::string was;
    for (const auto& p : (*current)->paths) was += (was.empty() ? "" : ",") + p;
    log_->info("map {}: now over {} ({} sectors; was {}, {} sectors)", name, want.paths.front(),
               want.sectors, was, (*current)->sectors);
  }
  // The same table with a path the kernel failed (I/O errors while its session was down): it
  // stays failed, and the map fails all I/O, until reinstated, even with the session back.
  // multipathd's path checker would reinstate it; the agent does instead. A swapped table's
  // paths start active.
  std::vector<std::string> reinstate;
  if (*current && (*current)->paths == want.paths) reinstate = (*current)->failed;
  for (const auto& dev : reinstate) {
    std::vector<std::string> args;
    args = {"message", name, "0", "reinstate_path", dev};
    auto st = co_await must(args, "reinstating path " + dev + " of map " + name);
    metrics_.operation("reinstate", st.ok());
    if (!st) co_return st.error();
    log_->warn("map {}: path {} was failed; reinstated", name, dev);
  }
  // Back to the standing queue mode, after the paths: a swap's table queues, a crash mid-move may
  // have left queueing on, an expired hold (the keeper's) turned it off.
  const bool queueing = swapping || (creating ? want.queue : (*current)->queueing);
  if (queueing != want.queue) {
    if (auto st = co_await set_queueing(name, want.queue); !st) co_return st.error();
  }
  // Again after the change: the kernel lets two maps share a disk (dm claims disks for all maps
  // alike), so a multipathd that claimed the disk meanwhile leaves two maps over one LUN, and
  // nothing fails. A map made just now is taken back; the volume is not used through a disk
  // another map holds.
  for (const auto& p : paths) {
    auto look = [&]() { return foreign_holder(p, uuid); };
    auto held = co_await run_blocking(pool_, look);
    if (!held) continue;
    if (creating) {
      std::vector<std::string> args;
      args = {"remove", name};
      if (auto st = co_await must(args, "removing map " + name); !st) {
        log_->error("map {}: cannot take it back: {}", name, st.error().message);
      }
    }
    co_return Error{what + ": " + *held};
  }
  auto now = co_await find(name);
  if (!now) co_return now.error();
  if (!*now) co_return Error{what + ": the map vanished right after it was set up"};
  if (!(*now)->failed.empty()) {
    std::string failed;
    for (const auto& p : (*now)->failed) failed += (failed.empty() ? "" : ",") + p;
    co_return Error{what + ": path " + failed + " is still failed after reinstate_path; its " +
                    "disk refuses I/O (check the session with `iscsiadm -m session -P 3`)"};
  }
  // The node must be the map's, by number, before anything is mounted from it.
  if (!options_.require_block_device) co_return std::move(**now);
  struct stat sb {};
  const std::string dev = (*now)->device;
  auto look = [&]() { return ::stat(dev.c_str(), &sb); };
  if (co_await run_blocking(pool_, look) != 0 || !S_ISBLK(sb.st_mode) ||
      major(sb.st_rdev) != (*now)->major || minor(sb.st_rdev) != (*now)->minor) {
    co_return Error{what + ": " + dev + " is not the map's block device " +
                    std::to_string((*now)->major) + ":" + std::to_string((*now)->minor)};
  }
  co_return std::move(**now);
}

asio::awaitable<Status> Dmsetup::set_queueing(const std::string& name, bool queue) {
  std::vector<std::string> args;
  args = {"message", name, "0", queue ? "queue_if_no_path" : "fail_if_no_path"};
  auto st = co_await must(
      args, std::string(queue ? "holding" : "releasing") + " I/O queueing on map " + name);
  metrics_.operation("queue", st.ok());
  co_return st;
}

asio::awaitable<Status> Dmsetup::remove(const std::string& name) {
  const std::string what = "removing device-mapper map " + name;
  std::vector<std::string> args;
  args = {"remove", "--retry", name};
  auto out = co_await dmsetup(std::move(args));
  if (!out) co_return out.error().wrap(what);
  const bool absent = !out->success() && says_absent(*out);
  metrics_.operation("remove", out->success() || absent);
  if (out->success() || absent) co_return ok_status();
  co_return Error{
      what + ": dmsetup remove failed (" + out->describe() + "): " + trimmed(out->err) +
          (out->err.find("in use") != std::string::npos
               ? " (something still has it open: check `findmnt` and `dmsetup info " + name + "`)"
               : ""),
      errno_code(EBUSY)};
}

asio::awaitable<void> load_modules(process::ProcessRunner& runner, const std::string& root,
                                   const std::string& modprobe, LoggerPtr log) {
  for (const char* m : kModules) {
    if (module_loaded(root, m)) continue;
    process::Command cmd;
    cmd.program = modprobe;
    cmd.args = {m};
    cmd.timeout = std::chrono::seconds(10);
    auto out = co_await runner.run(std::move(cmd));
    if (out && out->success()) {
      log->info("loaded kernel module {} (modprobe)", m);
    } else {
      log->warn("cannot load kernel module {} with {}: {}", m, modprobe,
                out ? out->describe() + ": " + trimmed(out->err) : out.error().message);
    }
  }
}

bool multipathd_present(const std::string& root) {
  std::ifstream unix_sockets(root + "proc/net/unix");
  std::string line;
  while (std::getline(unix_sockets, line)) {
    if (line.find("@/org/kernel/linux/storage/multipathd") != std::string::npos) return true;
  }
  DIR* d = ::opendir((root + "proc").c_str());
  if (!d) return false;
  bool found = false;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream comm(root + "proc/" + e->d_name + "/comm");
    std::string name;
    if (std::getline(comm, name) && name == "multipathd") {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace datera::multipath

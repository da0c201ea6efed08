// The Linux Mounter. See linux_mounter.h for the contract; the rules that protect data are:
//  - mkfs only when libblkid finds no signature at all (filesystem, RAID/LVM member, partition
//    table) on a device that is not mounted; the mkfs tools are run without their "force" flags;
//  - a read-write mount that the kernel downgrades to read-only is unmounted and reported
//    (libmount's rwonly mode, then forced_rdonly and mountinfo are both checked);
//  - a device mounted at another target is refused, and so is a target holding another device;
//  - unmount is umount2(target, 0): never MNT_DETACH, and EBUSY names the processes holding it;
//  - a filesystem is repaired, never reformatted: fsck.ext4 -p before a read-write ext4 mount of a
//    device mounted nowhere, xfs_repair (never -L) only when the xfs mount fails with EUCLEAN.

#include "agent/mount/linux_mounter.h"

#include <algorithm>
#include <blkid/blkid.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <mutex>
#include <poll.h>
#include <set>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <type_traits>
#include <unistd.h>
#include <utility>

#include <libmount/libmount.h>

#include "base/blocking.h"
#include "base/fs.h"
#include "base/unique_fd.h"
#include "base/utf8.h"

namespace datera::mount {
namespace {

namespace asio = boost::asio;

// ---------------------------------------------------------------------------------------------
// C handles

struct ContextDeleter {
  void operator()(libmnt_context* cx) const { mnt_free_context(cx); }
};
struct TableDeleter {
  void operator()(libmnt_table* tb) const { mnt_unref_table(tb); }
};
struct ProbeDeleter {
  void operator()(blkid_probe pr) const { blkid_free_probe(pr); }
};
struct DirDeleter {
  void operator()(DIR* d) const { ::closedir(d); }
};
struct IterDeleter {
  void operator()(libmnt_iter* it) const { mnt_free_iter(it); }
};
using DirPtr = std::unique_ptr<DIR, DirDeleter>;
using ContextPtr = std::unique_ptr<libmnt_context, ContextDeleter>;
using TablePtr = std::unique_ptr<libmnt_table, TableDeleter>;
using ProbePtr = std::unique_ptr<std::remove_pointer_t<blkid_probe>, ProbeDeleter>;

using Fd = UniqueFd;

// ---------------------------------------------------------------------------------------------
// Small helpers

const std::set<std::string> kFsTypes = {"xfs", "ext4"};

std::string devno_text(dev_t d) {
  return std::to_string(major(d)) + ":" + std::to_string(minor(d));
}

dev_t entry_devno(const MountEntry& e) {
  return makedev(e.major, e.minor);
}

bool is_under(const std::string& path, const std::string& dir) {
  if (path == dir) return true;
  if (dir == "/") return true;
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

using fs::real_path;

std::string read_link(const std::string& path) {
  char buf[4096];
  const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  if (n <= 0) return {};
  return std::string(buf, static_cast<size_t>(n));
}

std::string join_dirs(const std::vector<std::string>& dirs) {
  std::string out;
  for (const auto& d : dirs) out += (out.empty() ? "" : ":") + d;
  return out;
}

/// How much of a repair tool's output goes into a log line, and into an error message.
// FIFREEZE / FITHAW from <linux/fs.h>, which clashes with <sys/mount.h> on this glibc.
constexpr unsigned long kFreeze = _IOWR('X', 119, int);
constexpr unsigned long kThaw = _IOWR('X', 120, int);

constexpr size_t kLogSummary = 400;
constexpr size_t kErrorSummary = 600;

/// `text` ending in a full stop, for a message that goes on after it.
std::string sentence(std::string text) {
  if (text.empty() || text.back() != '.') text += '.';
  return text;
}

/// The last lines of a tool's stderr (or stdout), for error messages.
std::string tail(const process::Outcome& o) {
  std::string text = o.err.empty() ? o.out : o.err;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  constexpr size_t kMax = 600;
  if (text.size() > kMax) text = "..." + text.substr(text.size() - kMax);
  for (auto& c : text)
    if (c == '\n') c = ' ';
  return text;
}

// ---------------------------------------------------------------------------------------------
// Mount options

bool all_of_chars(const std::string& s, const char* allowed_extra) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || std::strchr(allowed_extra, c);
  });
}

bool digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// Digits with an optional k/m/g suffix ("32k", "64m").
bool size_value(const std::string& s) {
  if (s.empty()) return false;
  const char last = s.back();
  if (last == 'k' || last == 'm' || last == 'g') return digits(s.substr(0, s.size() - 1));
  return digits(s);
}

const std::set<std::string> kCommonFlags = {
    "noatime",   "nodiratime", "relatime", "strictatime", "lazytime", "nolazytime", "discard",
    "nodiscard", "sync",       "async",    "dirsync",     "noexec",   "nosuid",     "nodev"};
const std::set<std::string> kXfsFlags = {"inode64",  "inode32", "nouuid",   "largeio",  "nolargeio",
                                         "noquota",  "quota",   "uquota",   "usrquota", "gquota",
                                         "grpquota", "pquota",  "prjquota", "wsync"};
const std::set<std::string> kExt4Flags = {"acl",
                                          "noacl",
                                          "user_xattr",
                                          "nouser_xattr",
                                          "delalloc",
                                          "nodelalloc",
                                          "journal_checksum",
                                          "nojournal_checksum",
                                          "dioread_nolock",
                                          "dioread_lock",
                                          "auto_da_alloc",
                                          "noauto_da_alloc",
                                          "init_itable",
                                          "noinit_itable",
                                          "block_validity",
                                          "noblock_validity"};

bool value_allowed(const std::string& fstype, const std::string& key, const std::string& value) {
  if (fstype == "xfs") {
    if (key == "logbufs") return digits(value);
    if (key == "logbsize" || key == "allocsize") return size_value(value);
    return false;
  }
  if (key == "data") return value == "ordered" || value == "writeback" || value == "journal";
  if (key == "errors") return value == "remount-ro" || value == "continue";  // never "panic"
  if (key == "commit" || key == "stripe" || key == "max_batch_time" || key == "min_batch_time")
    return digits(value);
  return false;
}

/// libmount's option string: "rw"/"ro" first, then the validated extras.
std::string option_string(const std::vector<std::string>& options, bool read_only) {
  std::string out = read_only ? "ro" : "rw";
  for (const auto& o : options) {
    if (o == "ro" || o == "rw") continue;
    out += "," + o;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The mount table

Result<std::vector<MountEntry>> read_mount_table(const std::string& path) {
  errno = 0;
  TablePtr tb(mnt_new_table_from_file(path.c_str()));
  if (!tb) return Error::from_errno("reading the mount table " + path, errno != 0 ? errno : EIO);
  std::unique_ptr<libmnt_iter, IterDeleter> it(mnt_new_iter(MNT_ITER_FORWARD));
  if (!it) return Error::from_errno("reading the mount table " + path, ENOMEM);
  std::vector<MountEntry> out;
  libmnt_fs* fs = nullptr;
  while (mnt_table_next_fs(tb.get(), it.get(), &fs) == 0) {
    auto str = [](const char* s) { return s != nullptr ? std::string(s) : std::string(); };
    MountEntry e;
    e.source = str(mnt_fs_get_source(fs));
    e.target = str(mnt_fs_get_target(fs));
    e.fstype = str(mnt_fs_get_fstype(fs));
    e.root = str(mnt_fs_get_root(fs));
    e.options = str(mnt_fs_get_options(fs));
    const char* vfs = mnt_fs_get_vfs_options(fs);
    e.read_only = vfs != nullptr && mnt_optstr_get_option(vfs, "ro", nullptr, nullptr) == 0;
    const dev_t d = mnt_fs_get_devno(fs);
    e.major = major(d);
    e.minor = minor(d);
    out.push_back(std::move(e));
  }
  return out;
}

/// The mount on top at `target` (the last one listed), or nullptr.
const MountEntry* top_mount(const std::vector<MountEntry>& entries, const std::string& target) {
  for (auto it = entries.rbegin(); it != entries.rend(); ++it)
    if (it->target == target) return &*it;
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// libblkid

Result<std::optional<std::string>> probe_blocking(const std::string& device) {
  const std::string what = "probing " + device + " for filesystem signatures";
  // A disk the initiator has just found may not open yet: the kernel shows it in sysfs before it
  // registers the block device, and open() says ENXIO in between (the kernel tier's handoff hit
  // it under load). Retried for up to 3 s; a disk that is gone stays ENXIO and fails after that.
  int raw = -1;
  for (int attempt = 0;; ++attempt) {
    raw = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
    if (raw >= 0 || errno != ENXIO || attempt >= 30) break;
    ::usleep(100'000);
  }
  Fd fd(raw);
  if (fd.get() < 0) return Error::from_errno(what + ": cannot open it", errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::from_errno(what + ": fstat", errno);
  if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
    return Error{what + ": not a block device or an image file", errno_code(ENOTBLK)};
  // An unreadable device must never look empty: read the first block ourselves so an I/O error
  // (a dead iSCSI path) is reported as such, whatever libblkid makes of it.
  char block[4096];
  const ssize_t n = ::pread(fd.get(), block, sizeof block, 0);
  if (n < 0) return Error::from_errno(what + ": reading its first block failed", errno);
  ProbePtr pr(blkid_new_probe());
  if (!pr) return Error::from_errno(what + ": blkid_new_probe", ENOMEM);
  if (blkid_probe_set_device(pr.get(), fd.get(), 0, 0) != 0)
    return Error::from_errno(what + ": blkid_probe_set_device", errno != 0 ? errno : EIO);
  if (blkid_probe_get_size(pr.get()) <= 0 || n == 0)
    return Error{what +
                     ": the device has size 0 (a detached loop device, or a disk that went "
                     "away?); check that it is attached",
                 errno_code(EIO)};
  blkid_probe_enable_superblocks(pr.get(), 1);
  blkid_probe_set_superblocks_flags(pr.get(), BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE);
  blkid_probe_enable_partitions(pr.get(), 1);
  blkid_probe_set_partitions_flags(pr.get(), BLKID_PARTS_MAGIC);
  errno = 0;
  const int rc = blkid_do_safeprobe(pr.get());
  if (rc == -2)
    return Error{what +
                     ": more than one signature found (ambivalent result); refusing to guess. "
                     "Inspect it with `wipefs -n " +
                     device + "`",
                 errno_code(EEXIST)};
  if (rc < 0)
    return Error::from_errno(what + ": libblkid could not read it", errno != 0 ? errno : EIO);
  if (rc == 1) return std::optional<std::string>{};
  const char* value = nullptr;
  if (blkid_probe_lookup_value(pr.get(), "TYPE", &value, nullptr) == 0 && value != nullptr)
    return std::optional<std::string>{std::string(value)};
  if (blkid_probe_lookup_value(pr.get(), "PTTYPE", &value, nullptr) == 0 && value != nullptr)
    return std::optional<std::string>{"partition-table:" + std::string(value)};
  return std::optional<std::string>{"unknown"};
}

// ---------------------------------------------------------------------------------------------
// Busy mounts: who holds them

struct Holder {
  int pid = 0;
  std::string comm;
  std::string how;  // "cwd /mnt/x", "fd 3 -> /mnt/x/file", "root /mnt/x"
};

std::vector<Holder> find_holders(const std::string& proc_root, const std::string& target,
                                 size_t max_pids, size_t max_fds, size_t max_found) {
  std::vector<Holder> out;
  DirPtr proc(::opendir(proc_root.c_str()));
  if (!proc) return out;
  size_t pids = 0;
  while (dirent* de = ::readdir(proc.get())) {
    if (!digits(de->d_name)) continue;
    if (++pids > max_pids || out.size() >= max_found) break;
    const std::string base = proc_root + "/" + de->d_name;
    auto found = [&](std::string how) {
      auto comm = fs::read_file(base + "/comm", 256);
      std::string c = comm ? *comm : std::string();
      while (!c.empty() && c.back() == '\n') c.pop_back();
      out.push_back(Holder{std::atoi(de->d_name), c, std::move(how)});
    };
    bool held = false;
    for (const char* link : {"cwd", "root"}) {
      const std::string to = read_link(base + "/" + link);
      if (!held && !to.empty() && is_under(to, target)) {
        found(std::string(link) + " " + to);
        held = true;
      }
    }
    if (held) continue;
    DirPtr fds(::opendir((base + "/fd").c_str()));
    if (!fds) continue;
    size_t n = 0;
    while (dirent* fe = ::readdir(fds.get())) {
      if (!digits(fe->d_name)) continue;
      if (++n > max_fds) break;
      const std::string to = read_link(base + "/fd/" + fe->d_name);
      if (!to.empty() && to.front() == '/' && is_under(to, target)) {
        found("fd " + std::string(fe->d_name) + " -> " + to);
        break;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The Mounter

class LinuxMounter : public Mounter {
 public:
  LinuxMounter(asio::any_io_executor executor, asio::thread_pool& pool,
               process::ProcessRunner& runner, MounterOptions options, Metrics& probe,
               LoggerPtr log)
      : executor_(std::move(executor)),
        pool_(pool),
        runner_(runner),
        opts_(std::move(options)),
        metrics_(probe),
        log_(log ? std::move(log) : null_logger()) {}

  asio::awaitable<Result<std::optional<std::string>>> probe(const std::string& device) override {
    auto fn = [&] { return probe_blocking(device); };
    co_return co_await run_blocking(pool_, fn);
  }

  asio::awaitable<Status> format(const std::string& device, const std::string& fstype) override {
    const std::string what = "formatting " + device + " as " + fstype;
    if (kFsTypes.count(fstype) == 0)
      co_return Error{what + ": only xfs and ext4 are supported", errno_code(EINVAL)};
    auto checks = [&]() -> Status {
      struct stat st {};
      if (::stat(device.c_str(), &st) != 0) return Error::from_errno(what + ": stat", errno);
      if (!S_ISBLK(st.st_mode)) return Error{what + ": not a block device", errno_code(ENOTBLK)};
      auto table = read_mount_table(opts_.mountinfo_path);
      if (!table) return table.error().wrap(what);
      for (const auto& e : *table)
        if (entry_devno(e) == st.st_rdev)
          return Error{what + ": refused, the device is mounted at " + e.target, errno_code(EBUSY)};
      return ok_status();
    };
    if (auto st = co_await run_blocking(pool_, checks); !st) co_return st;
    auto found = co_await probe(device);
    if (!found) co_return found.error().wrap(what);
    if (found->has_value())
      co_return Error{what + ": refused, blkid found an existing " + **found +
                          " signature on it (a device is never reformatted; wipe it by hand "
                          "only if its data is known to be unwanted)",
                      errno_code(EEXIST)};
    const std::string tool = "mkfs." + fstype;
    auto program = find_tool(tool);
    if (!program) co_return program.error().wrap(what);
    process::Command cmd;
    cmd.program = *program;
    // No -f (xfs) or -F (ext4): the tools' own signature checks stay on as a second guard. No
    // discard pass: the volume is new (thin) and discarding a large LUN can take minutes.
    if (fstype == "xfs")
      cmd.args = {"-K", device};
    else
      cmd.args = {"-E", "nodiscard", device};
    cmd.timeout = opts_.mkfs_timeout;
    log_->debug("running {} on {}", *program, device);
    auto outcome = co_await runner_.run(std::move(cmd));
    if (!outcome) co_return outcome.error().wrap(what);
    if (!outcome->success())
      co_return Error{
          what + ": " + tool + " failed (" + outcome->describe() + "): " + tail(*outcome),
          errno_code(EIO)};
    auto after = co_await probe(device);
    if (!after) co_return after.error().wrap(what + ": checking the result");
    if (!after->has_value() || **after != fstype)
      co_return Error{what + ": " + tool + " succeeded but blkid then finds " +
                          (after->has_value() ? **after : std::string("no signature")),
                      errno_code(EIO)};
    log_->debug("formatted {} as {}", device, fstype);
    co_return ok_status();
  }

  asio::awaitable<Status> mount(const MountRequest& req) override {
    const std::string what = "mounting " + req.device + " at " + req.target + " (" + req.fstype +
                             (req.read_only ? ", read-only)" : ", read-write)");
    if (kFsTypes.count(req.fstype) == 0)
      co_return Error{what + ": only xfs and ext4 are supported", errno_code(EINVAL)};
    if (req.device.empty() || req.device.front() != '/' || req.target.empty() ||
        req.target.front() != '/')
      co_return Error{what + ": device and target must be absolute paths", errno_code(EINVAL)};
    if (auto valid = validate_mount_options(req.fstype, req.options, req.read_only); !valid)
      co_return valid.error().wrap(what);
    // Look first: already mounted there is done, and mounted anywhere else is refused, so a check
    // or repair below only ever meets a device that nothing has mounted. mount_blocking() looks
    // again under the lock; the tools open the device exclusively, so a mount racing in meets
    // EBUSY rather than a filesystem being repaired.
    auto look = [&] {
      std::lock_guard lock(mu_);
      return plan_mount(req, what);
    };
    auto plan = co_await run_blocking(pool_, look);
    if (!plan) co_return plan.error();
    if (plan->done) co_return ok_status();
    if (req.fstype == "ext4" && !req.read_only) {
      // ext4 mounts a filesystem with errors recorded and carries them on: check it first.
      if (auto checked = co_await check_ext4(req.device, what); !checked) co_return checked;
    }
    auto fn = [&] {
      std::lock_guard lock(mu_);
      return mount_blocking(req, what);
    };
    auto mounted = co_await run_blocking(pool_, fn);
    // xfs replays its log at mount, which is all an xfs shutdown needs; only a mount the kernel
    // refused as corrupt (EFSCORRUPTED is EUCLEAN) calls for xfs_repair.
    if (mounted || req.fstype != "xfs" || req.read_only ||
        mounted.error().code != errno_code(EUCLEAN))
      co_return mounted;
    if (auto repaired = co_await repair_xfs(req.device, what); !repaired) co_return repaired;
    auto again = co_await run_blocking(pool_, fn);
    if (!again)
      co_return Error{again.error().message +
                          " (after xfs_repair repaired it; nothing more is tried: see dmesg, and "
                          "run `xfs_repair -n " +
                          req.device + "` on the node, which changes nothing)",
                      again.error().code};
    co_return ok_status();
  }

  asio::awaitable<Status> bind(const std::string& source, const std::string& target,
                               bool read_only) override {
    const std::string what = "bind-mounting " + source + " at " + target +
                             (read_only ? " (read-only)" : " (read-write)");
    if (source.empty() || source.front() != '/' || target.empty() || target.front() != '/')
      co_return Error{what + ": source and target must be absolute paths", errno_code(EINVAL)};
    auto fn = [&] {
      std::lock_guard lock(mu_);
      return bind_blocking(source, target, read_only, what);
    };
    co_return co_await run_blocking(pool_, fn);
  }

  asio::awaitable<Status> unmount(const std::string& target) override {
    if (target.empty() || target.front() != '/')
      co_return Error{"unmounting " + target + ": the target must be an absolute path",
                      errno_code(EINVAL)};
    auto fn = [&] {
      std::lock_guard lock(mu_);
      return unmount_blocking(target);
    };
    co_return co_await run_blocking(pool_, fn);
  }

  asio::awaitable<Status> freeze(const std::string& target) override {
    // Not under mu_: a freeze syncs the filesystem, which may take seconds, and must not hold up
    // other volumes' mounts.
    auto fn = [&] { return freeze_blocking(target, true); };
    co_return co_await run_blocking(pool_, fn);
  }

  asio::awaitable<Status> thaw(const std::string& target) override {
    auto fn = [&] { return freeze_blocking(target, false); };
    co_return co_await run_blocking(pool_, fn);
  }

  asio::awaitable<Status> grow(const std::string& device, const std::string& target,
                               const std::string& fstype) override {
    const std::string what = "growing the " + fstype + " filesystem of " + device + " at " + target;
    if (kFsTypes.count(fstype) == 0)
      co_return Error{what + ": only xfs and ext4 are supported", errno_code(EINVAL)};
    auto check = [&]() -> Status {
      struct stat st {};
      if (::stat(device.c_str(), &st) != 0) return Error::from_errno(what + ": stat", errno);
      auto canon = real_path(target);
      if (!canon) return canon.error().wrap(what);
      auto table = read_mount_table(opts_.mountinfo_path);
      if (!table) return table.error().wrap(what);
      const MountEntry* top = top_mount(*table, *canon);
      if (top == nullptr || entry_devno(*top) != st.st_rdev)
        return Error{what + ": the device is not mounted there", errno_code(EINVAL)};
      if (top->read_only) return Error{what + ": it is mounted read-only", errno_code(EROFS)};
      return ok_status();
    };
    if (auto st = co_await run_blocking(pool_, check); !st) co_return st;
    const std::string tool = fstype == "xfs" ? "xfs_growfs" : "resize2fs";
    auto program = find_tool(tool);
    if (!program) co_return program.error().wrap(what);
    process::Command cmd;
    cmd.program = *program;
    cmd.args = {fstype == "xfs" ? target : device};
    cmd.timeout = opts_.grow_timeout;
    auto outcome = co_await runner_.run(std::move(cmd));
    if (!outcome) co_return outcome.error().wrap(what);
    if (!outcome->success())
      co_return Error{
          what + ": " + tool + " failed (" + outcome->describe() + "): " + tail(*outcome),
          errno_code(EIO)};
    log_->debug("grew {} at {}", device, target);
    co_return ok_status();
  }

  Result<MountTablePtr> mounts() const override {
    std::lock_guard lock(table_mu_);
    // The kernel flags a mountinfo fd with POLLPRI|POLLERR once the namespace's mounts changed
    // since the fd last looked (proc(5)); polling also clears the flag. So: look first, then read,
    // and an unchanged table costs one poll(2) instead of a parse of every mount on the node.
    if (table_ && watch_.get() >= 0) {
      pollfd p{watch_.get(), POLLPRI, 0};
      const int n = ::poll(&p, 1, 0);
      if (n == 0) return table_;
      if (n < 0) watch_ = Fd();  // cannot watch: read every time from now on
    } else if (!table_) {
      watch_ = Fd(::open(opts_.mountinfo_path.c_str(), O_RDONLY | O_CLOEXEC));
      // Only procfs flags changes; any other file (a test's table) is read every time.
      struct statfs sfs {};
      if (watch_.get() >= 0 &&
          (::fstatfs(watch_.get(), &sfs) != 0 || sfs.f_type != PROC_SUPER_MAGIC))
        watch_ = Fd();
    }
    auto read = read_mount_table(opts_.mountinfo_path);
    if (!read) {
      table_.reset();
      return read.error();
    }
    table_ = std::make_shared<const MountTable>(std::move(*read));
    return table_;
  }

  Result<std::string> resolve_beneath(const std::string& root,
                                      const std::string& path) const override {
    if (path == root || !is_under(path, root)) {
      return Error{path + " is not below " + root, errno_code(EXDEV)};
    }
    // An O_NOFOLLOW walk: each component is opened relative to its parent's descriptor, so no
    // symlink anywhere below `root` is ever followed, even one swapped in during the walk.
    Fd dir(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0 && errno == ENOENT) return path;  // nothing below it exists either
    if (dir.get() < 0) return Error::from_errno("opening " + root, errno);
    std::string walked = root;
    size_t start = root.size() + 1;
    while (start <= path.size()) {
      const size_t slash = std::min(path.find('/', start), path.size());
      const std::string part = path.substr(start, slash - start);
      start = slash + 1;
      if (part.empty()) continue;
      walked += "/" + part;
      Fd next(::openat(dir.get(), part.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
      if (next.get() < 0) {
        if (errno == ENOENT) return path;  // the rest does not exist yet
        return Error::from_errno("resolving " + walked, errno);
      }
      struct stat st {};
      if (::fstat(next.get(), &st) != 0) {
        const int err = errno;
        // A filesystem the kernel shut down (xfs after a failed log write) answers EIO to stat
        // of its root; the pod's or staging mount point is exactly that, and unmounting it is
        // how the volume comes back. The O_NOFOLLOW open above crossed into the mount, so it
        // is the mount's root, never a symlink.
        if (err == EIO && slash >= path.size() && is_mount_point(walked)) return path;
        return Error::from_errno("resolving " + walked, err);
      }
      if (S_ISLNK(st.st_mode)) {
        return Error{walked + " is a symbolic link; refusing to follow it", errno_code(ELOOP)};
      }
      if (slash < path.size() && !S_ISDIR(st.st_mode)) {
        return Error{walked + " is not a directory", errno_code(ENOTDIR)};
      }
      dir = std::move(next);
    }
    return path;
  }

 private:
  bool is_mount_point(const std::string& path) const {
    auto table = mounts();
    return table && (*table)->at(path) != nullptr;
  }

  /// Counts a failed check or repair and hands its error on.
  Error repair_failed(const std::string& fs, Error err) {
    metrics_.repair(fs, "failed");
    return err;
  }

  /// A repair tool found and run (bounded by repair_timeout); one that cannot be found or run
  /// counts as a failed repair of `fs`.
  asio::awaitable<Result<process::Outcome>> run_repair_tool(const std::string& tool,
                                                            std::vector<std::string> args,
                                                            const std::string& fs,
                                                            const std::string& what) {
    auto program = find_tool(tool);
    if (!program) co_return repair_failed(fs, program.error().wrap(what));
    process::Command cmd;
    cmd.program = *program;
    cmd.args = std::move(args);
    cmd.timeout = opts_.repair_timeout;
    log_->debug("running {} on {}", *program, cmd.args.back());
    auto outcome = co_await runner_.run(std::move(cmd));
    if (!outcome) co_return repair_failed(fs, outcome.error().wrap(what + ": running " + tool));
    co_return std::move(*outcome);
  }

  /// fsck.ext4 -p on an unmounted device: clean and repaired mount; anything else is an Error that
  /// tells the operator what to run. Never mkfs.
  asio::awaitable<Status> check_ext4(const std::string& device, const std::string& what) {
    std::vector<std::string> args;
    args = {"-p", device};
    auto outcome = co_await run_repair_tool("fsck.ext4", std::move(args), "ext4", what);
    if (!outcome) co_return outcome.error();
    switch (fsck_ext4_verdict(*outcome)) {
      case RepairVerdict::clean:
        metrics_.repair("ext4", "clean");
        co_return ok_status();
      case RepairVerdict::repaired:
        metrics_.repair("ext4", "repaired");
        log_->warn("{}: fsck.ext4 -p repaired the filesystem before mounting: {}", device,
                   repair_summary(*outcome, kLogSummary));
        co_return ok_status();
      case RepairVerdict::dirty_log:
      case RepairVerdict::failed:
        break;
    }
    co_return repair_failed(
        "ext4",
        Error{what + ": fsck.ext4 -p could not repair the filesystem on " + device + " (" +
                  outcome->describe() + "): " + sentence(repair_summary(*outcome, kErrorSummary)) +
                  " It was not mounted. On the node, run `fsck.ext4 -f " + device +
                  "` by hand (it asks before each fix), then restart the pod; the agent never "
                  "reformats a volume",
              errno_code(EUCLEAN)});
  }

  /// xfs_repair after the kernel refused the mount with EUCLEAN. Never -L: zeroing the log throws
  /// away its last updates, and that is the operator's call, not the agent's.
  asio::awaitable<Status> repair_xfs(const std::string& device, const std::string& what) {
    const std::string refused = what +
                                ": the mount failed with \"Structure needs cleaning\" (the kernel "
                                "found the filesystem corrupt)";
    log_->warn("{}: the xfs mount failed with \"Structure needs cleaning\"; running xfs_repair",
               device);
    std::vector<std::string> args;
    args = {device};
    auto outcome = co_await run_repair_tool("xfs_repair", std::move(args), "xfs", refused);
    if (!outcome) co_return outcome.error();
    const std::string summary = repair_summary(*outcome, kErrorSummary);
    const std::string never = " The agent never runs xfs_repair -L and never reformats a volume";
    switch (xfs_repair_verdict(*outcome)) {
      case RepairVerdict::repaired:
        metrics_.repair("xfs", "repaired");
        log_->warn("{}: xfs_repair repaired the filesystem after the mount failed: {}", device,
                   repair_summary(*outcome, kLogSummary));
        co_return ok_status();
      case RepairVerdict::dirty_log:
        co_return repair_failed(
            "xfs",
            Error{refused + ", and xfs_repair could not repair " + device +
                      " (exit code 2: its log holds metadata changes that only a mount "
                      "replays): " +
                      sentence(summary) + " On the node: try `mount " + device +
                      " /mnt && umount /mnt` to "
                      "replay the log, then `xfs_repair " +
                      device + "`, then restart the pod. If it will not mount, `xfs_repair -L " +
                      device +
                      "` zeroes the log and so loses its last updates: decide, run it, "
                      "and the next pod start mounts the volume." +
                      never,
                  errno_code(EUCLEAN)});
      case RepairVerdict::clean:
      case RepairVerdict::failed:
        break;
    }
    co_return repair_failed(
        "xfs",
        Error{refused + ", and xfs_repair could not repair " + device + " (" + outcome->describe() +
                  "): " + sentence(summary) + " On the node: `xfs_repair -n " + device +
                  "` shows what is wrong without changing anything; repair it by hand "
                  "(`xfs_repair -L` zeroes the log and loses its last updates: your "
                  "decision), then restart the pod." +
                  never,
              errno_code(EUCLEAN)});
  }

  Result<std::string> find_tool(const std::string& name) const {
    for (const auto& dir : opts_.tool_dirs) {
      const std::string path = dir + "/" + name;
      if (::access(path.c_str(), X_OK) == 0) return path;
    }
    return Error{name + " not found in " + join_dirs(opts_.tool_dirs) +
                     " (install xfsprogs / e2fsprogs on the node)",
                 errno_code(ENOENT)};
  }

  /// Mounts and reports; on a failed verification after a successful mount, unmounts again.
  Status undo_mount(const std::string& target, Error err) {
    if (::umount2(target.c_str(), UMOUNT_NOFOLLOW) != 0) {
      const int e = errno;
      return Error{err.message + "; undoing the mount also failed (" + std::strerror(e) +
                       "), so it is still mounted: unmount it by hand",
                   err.code};
    }
    return err;
  }

  /// What mounting `req` needs: nothing (`done`: already mounted there), or a mount of `dev` at
  /// `target`. Refusals (the target holds something else, the device is mounted elsewhere) are
  /// Errors.
  struct MountPlan {
    bool done = false;
    dev_t dev = 0;
    std::string target;  ///< canonical
  };

  Result<MountPlan> plan_mount(const MountRequest& req, const std::string& what) {
    struct stat st {};
    if (::stat(req.device.c_str(), &st) != 0)
      return Error::from_errno(what + ": the device cannot be found", errno);
    if (!S_ISBLK(st.st_mode)) return Error{what + ": not a block device", errno_code(ENOTBLK)};
    const dev_t dev = st.st_rdev;
    if (!fs::exists(req.target)) {
      if (auto made = fs::ensure_dir(req.target, 0750); !made) return made.error().wrap(what);
    }
    auto canon = real_path(req.target);
    if (!canon) return canon.error().wrap(what);
    struct stat tst {};
    if (::stat(canon->c_str(), &tst) != 0 || !S_ISDIR(tst.st_mode))
      return Error{what + ": the target is not a directory", errno_code(ENOTDIR)};

    auto table = read_mount_table(opts_.mountinfo_path);
    if (!table) return table.error().wrap(what);
    if (const MountEntry* top = top_mount(*table, *canon)) {
      if (entry_devno(*top) != dev)
        return Error{what + ": the target already holds " + top->source + " (" +
                         devno_text(entry_devno(*top)) + "); unmount it first",
                     errno_code(EBUSY)};
      if (top->root != "/")
        return Error{what + ": the target holds a bind mount of " + top->root +
                         " from this device, not the whole filesystem; unmount it first",
                     errno_code(EBUSY)};
      if (top->fstype != req.fstype)
        return Error{what + ": already mounted there as " + top->fstype, errno_code(EINVAL)};
      if (top->read_only != req.read_only)
        return Error{what + ": already mounted there " +
                         (top->read_only ? std::string("read-only (the filesystem may have hit "
                                                       "errors; see dmesg)")
                                         : std::string("read-write")) +
                         "; unmount it first",
                     errno_code(top->read_only ? EROFS : EBUSY)};
      log_->debug("{} is already mounted at {}", req.device, *canon);
      return MountPlan{true, dev, *canon};
    }
    for (const auto& e : *table)
      if (entry_devno(e) == dev)
        return Error{what + ": refused, the device (" + devno_text(dev) +
                         ") is already mounted at " + e.target +
                         "; a second mount of the same filesystem would corrupt it when it is "
                         "also used elsewhere (use bind() for another path on this node)",
                     errno_code(EBUSY)};
    return MountPlan{false, dev, *canon};
  }

  Status mount_blocking(const MountRequest& req, const std::string& what) {
    auto plan = plan_mount(req, what);
    if (!plan) return plan.error();
    if (plan->done) return ok_status();
    const dev_t dev = plan->dev;
    const std::string& target = plan->target;

    ContextPtr cx(mnt_new_context());
    if (!cx) return Error{what + ": mnt_new_context failed", errno_code(ENOMEM)};
    const std::string opts = option_string(req.options, req.read_only);
    mnt_context_disable_helpers(cx.get(), 1);
    mnt_context_disable_mtab(cx.get(), 1);
    mnt_context_set_optsmode(cx.get(), MNT_OMODE_IGNORE | MNT_OMODE_NOTAB);
    if (mnt_context_set_source(cx.get(), req.device.c_str()) != 0 ||
        mnt_context_set_target(cx.get(), target.c_str()) != 0 ||
        mnt_context_set_fstype(cx.get(), req.fstype.c_str()) != 0 ||
        mnt_context_set_options(cx.get(), opts.c_str()) != 0)
      return Error{what + ": setting up the libmount context failed", errno_code(EINVAL)};
    // Without this, libmount silently retries read-only on EROFS/EACCES (write-protected source).
    if (!req.read_only) mnt_context_enable_rwonly_mount(cx.get(), 1);
    const int rc = mnt_context_mount(cx.get());
    if (rc != 0 || mnt_context_get_status(cx.get()) != 1) {
      char buf[1024] = {0};
      mnt_context_get_excode(cx.get(), rc, buf, sizeof buf);
      int err = mnt_context_get_syscall_errno(cx.get());
      if (err == 0) err = rc > 0 ? rc : (rc < 0 && -rc < 4096 ? -rc : EIO);
      std::string msg = buf[0] != '\0' ? std::string(buf) : std::strerror(err);
      return Error{what + ": " + msg, errno_code(err)};
    }
    if (!req.read_only && mnt_context_forced_rdonly(cx.get()) == 1)
      return undo_mount(target, Error{what + ": the kernel mounted it read-only (write-protected "
                                             "device?); unmounted again",
                                      errno_code(EROFS)});

    auto after = read_mount_table(opts_.mountinfo_path);
    if (!after) return undo_mount(target, after.error().wrap(what + ": verifying"));
    const MountEntry* top = top_mount(*after, target);
    if (top == nullptr || entry_devno(*top) != dev)
      return undo_mount(target, Error{what + ": mount succeeded but mountinfo does not show the "
                                             "device at the target",
                                      errno_code(EIO)});
    if (top->read_only != req.read_only)
      return undo_mount(target, Error{what + ": mountinfo shows it " +
                                          (top->read_only ? "read-only" : "read-write") +
                                          ", not as asked; unmounted again",
                                      errno_code(EROFS)});
    log_->debug("mounted {} at {} ({}, {})", req.device, target, req.fstype, opts);
    return ok_status();
  }

  Status bind_blocking(const std::string& source, const std::string& target, bool read_only,
                       const std::string& what) {
    struct stat st {};
    if (::stat(source.c_str(), &st) != 0)
      return Error::from_errno(what + ": the source cannot be found", errno);
    auto src = real_path(source);
    if (!src) return src.error().wrap(what);
    const bool is_dir = S_ISDIR(st.st_mode);
    if (!fs::exists(target)) {
      if (is_dir) {
        if (auto made = fs::ensure_dir(target, 0750); !made) return made.error().wrap(what);
      } else {
        if (auto made = fs::ensure_dir(fs::dirname(target), 0750); !made)
          return made.error().wrap(what);
        Fd f(::open(target.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0640));
        if (f.get() < 0) return Error::from_errno(what + ": creating the target file", errno);
      }
    }
    auto dst = real_path(target);
    if (!dst) return dst.error().wrap(what);
    if (*dst == *src)
      return Error{what + ": source and target are the same path", errno_code(EINVAL)};
    const dev_t fsdev = st.st_dev;

    auto table = read_mount_table(opts_.mountinfo_path);
    if (!table) return table.error().wrap(what);
    bool bound_now = false;
    if (const MountEntry* top = top_mount(*table, *dst)) {
      if (entry_devno(*top) != fsdev)
        return Error{what + ": the target already holds " + top->source + " (" +
                         devno_text(entry_devno(*top)) + "), not the source's filesystem (" +
                         devno_text(fsdev) + "); unmount it first",
                     errno_code(EBUSY)};
      if (top->read_only == read_only) {
        log_->debug("{} is already bound at {}", *src, *dst);
        return ok_status();
      }
      if (!read_only)
        return Error{what + ": already bound there read-only; unmount it first", errno_code(EROFS)};
      // Bound read-write but read-only asked: a bind whose remount did not happen. Finish it.
    } else {
      if (::mount(src->c_str(), dst->c_str(), nullptr, MS_BIND, nullptr) != 0)
        return Error::from_errno(what + ": mount(MS_BIND)", errno);
      bound_now = true;
    }
    auto fail = [&](Error err) -> Status {
      if (!bound_now) return err;
      return undo_mount(*dst, std::move(err));
    };
    if (read_only) {
      // Keep the source mount's nosuid/nodev/noexec/atime flags: a remount replaces them all.
      unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY;
      struct statvfs sv {};
      if (::statvfs(src->c_str(), &sv) == 0) {
        if (sv.f_flag & ST_NOSUID) flags |= MS_NOSUID;
        if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
        if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
        if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
        if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
        if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
      }
      if (::mount(nullptr, dst->c_str(), nullptr, flags, nullptr) != 0)
        return fail(Error::from_errno(what + ": read-only remount of the bind", errno));
    }
    auto after = read_mount_table(opts_.mountinfo_path);
    if (!after) return fail(after.error().wrap(what + ": verifying"));
    const MountEntry* top = top_mount(*after, *dst);
    if (top == nullptr || entry_devno(*top) != fsdev || top->read_only != read_only)
      return fail(Error{what + ": mountinfo does not show the expected bind at the target",
                        errno_code(EIO)});
    log_->debug("bound {} at {}{}", *src, *dst, read_only ? " read-only" : "");
    return ok_status();
  }

  Status freeze_blocking(const std::string& target, bool freeze) {
    const std::string what =
        std::string(freeze ? "freezing" : "thawing") + " the filesystem mounted at " + target;
    if (target.empty() || target.front() != '/')
      return Error{what + ": the target must be an absolute path", errno_code(EINVAL)};
    // The mount point itself (no symlink as its last component), and a mount point indeed: FIFREEZE
    // acts on whatever filesystem holds the directory.
    const UniqueFd fd(::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return Error::from_errno(what + ": open", errno);
    auto table = read_mount_table(opts_.mountinfo_path);
    if (!table) return table.error().wrap(what);
    if (top_mount(*table, target) == nullptr)
      return Error{what + ": nothing is mounted there", errno_code(EINVAL)};
    if (::ioctl(fd.get(), freeze ? kFreeze : kThaw, 0) == 0) return ok_status();
    const int err = errno;
    if (!freeze && err == EINVAL) return ok_status();  // not frozen
    if (freeze && err == EBUSY)
      return Error{what + ": it is frozen already (fsfreeze by someone else?); left as it is",
                   errno_code(EBUSY)};
    return Error::from_errno(what, err);
  }

  Status unmount_blocking(const std::string& target) {
    std::string what = "unmounting " + target;
    std::string canon = target;
    if (auto real = real_path(target)) {
      canon = *real;
    } else if (real.error().code == errno_code(ENOENT)) {
      return ok_status();  // nothing there, so nothing mounted there
    }                      // other errors (EIO on a dead filesystem): go on with the path as given
    constexpr int kMaxStacked = 8;
    for (int i = 0; i < kMaxStacked; ++i) {
      auto table = read_mount_table(opts_.mountinfo_path);
      if (!table) return table.error().wrap(what);
      if (top_mount(*table, canon) == nullptr) return ok_status();
      if (::umount2(canon.c_str(), UMOUNT_NOFOLLOW) == 0) {
        log_->debug("unmounted {}", canon);
        continue;  // another mount may be stacked below
      }
      const int err = errno;
      if (err == EINVAL) {
        auto again = read_mount_table(opts_.mountinfo_path);
        if (again && top_mount(*again, canon) == nullptr) return ok_status();
        return Error::from_errno(what, err);
      }
      if (err == EBUSY) return busy_error(canon, *table);
      return Error::from_errno(what, err);
    }
    return Error{what + ": still mounted after " + std::to_string(kMaxStacked) +
                     " unmounts (mounts stacked on it?)",
                 errno_code(EBUSY)};
  }

  Error busy_error(const std::string& target, const std::vector<MountEntry>& table) const {
    std::string msg = "unmounting " + target + ": target is busy";
    std::vector<std::string> subs;
    for (const auto& e : table)
      if (e.target != target && is_under(e.target, target)) subs.push_back(e.target);
    if (!subs.empty()) {
      msg += "; mounts below it: ";
      for (size_t i = 0; i < subs.size() && i < 5; ++i) msg += (i ? ", " : "") + subs[i];
    }
    constexpr size_t kMaxNamed = 5;
    auto holders = find_holders(opts_.proc_root, target, opts_.holder_scan_max_pids,
                                opts_.holder_scan_max_fds, kMaxNamed);
    if (!holders.empty()) {
      msg += "; held by ";
      for (size_t i = 0; i < holders.size(); ++i)
        msg += (i ? ", " : "") + std::string("pid ") + std::to_string(holders[i].pid) + " (" +
               holders[i].comm + ", " + holders[i].how + ")";
    } else if (subs.empty()) {
      msg += "; no process found holding it (kernel users such as swap, loop or nfsd exports?)";
    }
    msg += ". Stop the users and retry; lazy unmount is never used";
    return Error{msg, errno_code(EBUSY)};
  }

  asio::any_io_executor executor_;
  asio::thread_pool& pool_;
  process::ProcessRunner& runner_;
  MounterOptions opts_;
  Metrics& metrics_;
  LoggerPtr log_;
  std::mutex mu_;  // serialises mount, bind and unmount (check-then-act on the mount table)
  mutable std::mutex table_mu_;
  mutable Fd watch_;  ///< mountinfo, polled for changes (see mounts())
  mutable MountTablePtr table_;
};

}  // namespace

Status validate_mount_options(const std::string& fstype, const std::vector<std::string>& options,
                              bool read_only) {
  for (const auto& o : options) {
    if (o.empty()) return Error{"empty mount option", errno_code(EINVAL)};
    if (!all_of_chars(o, "_=-"))
      return Error{"mount option \"" + o +
                       "\" has characters outside [a-z0-9_=-] (one option per entry, no commas)",
                   errno_code(EINVAL)};
    if (o == "ro" || o == "rw") {
      if ((o == "ro") != read_only)
        return Error{"mount option \"" + o + "\" contradicts the requested " +
                         (read_only ? "read-only" : "read-write") + " mode",
                     errno_code(EINVAL)};
      continue;
    }
    const auto eq = o.find('=');
    if (eq == std::string::npos) {
      if (kCommonFlags.count(o) != 0) continue;
      if (fstype == "xfs" && kXfsFlags.count(o) != 0) continue;
      if (fstype == "ext4" && kExt4Flags.count(o) != 0) continue;
      return Error{"mount option \"" + o + "\" is not allowed for " + fstype, errno_code(EINVAL)};
    }
    const std::string key = o.substr(0, eq);
    const std::string value = o.substr(eq + 1);
    if (!value_allowed(fstype, key, value))
      return Error{"mount option \"" + o + "\" is not allowed for " + fstype, errno_code(EINVAL)};
  }
  return ok_status();
}

RepairVerdict fsck_ext4_verdict(const process::Outcome& outcome) {
  if (outcome.timed_out || outcome.signal != 0 || outcome.exit_code < 0)
    return RepairVerdict::failed;
  if (outcome.exit_code == 0) return RepairVerdict::clean;
  // Bit 4 (uncorrected), 8 (operational error), 16 (usage), 32 (cancelled), 128 (library error).
  if ((outcome.exit_code & ~3) == 0) return RepairVerdict::repaired;
  return RepairVerdict::failed;
}

RepairVerdict xfs_repair_verdict(const process::Outcome& outcome) {
  if (outcome.timed_out || outcome.signal != 0) return RepairVerdict::failed;
  if (outcome.exit_code == 0) return RepairVerdict::repaired;
  if (outcome.exit_code == 2) return RepairVerdict::dirty_log;
  return RepairVerdict::failed;
}

std::string repair_summary(const process::Outcome& outcome, size_t max_bytes) {
  std::string joined;
  auto add = [&](std::string_view text) {
    size_t start = 0;
    while (start < text.size()) {
      const size_t end = std::min(text.find('\n', start), text.size());
      const std::string_view line = text.substr(start, end - start);
      start = end + 1;
      // Printable UTF-8 only, runs of blanks as one space: tool output is not trusted text.
      std::string clean;
      for (size_t i = 0; i < line.size();) {
        const size_t n = utf8::sequence_length(line, i);
        if (n == 0) {
          ++i;
          continue;
        }
        const bool blank = line[i] == ' ' || line[i] == '\t';
        if (blank) {
          if (!clean.empty() && clean.back() != ' ') clean += ' ';
        } else if (!utf8::is_control_at(line, i, n)) {
          clean.append(line.substr(i, n));
        }
        i += n;
      }
      while (!clean.empty() && clean.back() == ' ') clean.pop_back();
      // xfs_repair's progress ("Phase 3 - ...", "        - agno = 0", "done") says nothing.
      if (clean.empty() || clean == "done" || clean.rfind("Phase ", 0) == 0 ||
          clean.rfind("- ", 0) == 0)
        continue;
      if (!joined.empty()) joined += " | ";
      joined += clean;
    }
  };
  add(outcome.out);
  add(outcome.err);
  if (outcome.truncated) joined += " (output truncated)";
  if (joined.empty()) return "(no output)";
  if (joined.size() > max_bytes) {
    // Both ends: xfs_repair says what it found first, fsck.ext4 its verdict last. Never cut
    // inside a character.
    auto inside = [&](size_t i) { return (static_cast<unsigned char>(joined[i]) & 0xC0) == 0x80; };
    size_t head = max_bytes / 2;
    while (head > 0 && inside(head)) --head;
    size_t from = joined.size() - (max_bytes - max_bytes / 2);
    while (from < joined.size() && inside(from)) ++from;
    joined = joined.substr(0, head) + " ... " + joined.substr(from);
  }
  return joined;
}

MounterPtr make_linux_mounter(asio::any_io_executor executor, asio::thread_pool& pool,
                              process::ProcessRunner& runner, MounterOptions options,
                              Metrics& probe, LoggerPtr log) {
  return std::make_unique<LinuxMounter>(std::move(executor), pool, runner, std::move(options),
                                        probe, std::move(log));
}

}  // namespace datera::mount

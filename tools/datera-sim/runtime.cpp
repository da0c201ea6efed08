#include "tools/datera-sim/runtime.h"

#include <algorithm>
#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <map>
#include <set>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "base/blocking.h"
#include "base/fs.h"
#include "base/unique_fd.h"

namespace datera::sim {

namespace asio = boost::asio;

// --- file backend ---

Status FileBackend::prepare() const {
  return fs::ensure_dir(dir_, 0750);
}

std::string FileBackend::path_for(const ExportView& e) const {
  return fs::join(dir_, e.uuid + ".img");
}

std::string FileBackend::snapshot_path(const std::string& volume_uuid,
                                       const std::string& utc_ts) const {
  return fs::join(dir_, "snap-" + volume_uuid + "-" + utc_ts + ".img");
}

namespace {

/// Copies [from, to) of `in` to the same offsets of `out`.
Status copy_range(int in, int out, off_t from, off_t to, const std::string& what) {
  std::vector<char> buf(1 << 20);
  for (off_t pos = from; pos < to;) {
    const auto want =
        static_cast<size_t>(std::min<off_t>(to - pos, static_cast<off_t>(buf.size())));
    const ssize_t n = ::pread(in, buf.data(), want, pos);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno("reading " + what, errno);
    if (n == 0) break;  // the source shrank under us: the rest stays a hole
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = ::pwrite(out, buf.data() + done, static_cast<size_t>(n - done), pos + done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return Error::from_errno("writing the copy of " + what, errno);
      done += w;
    }
    pos += n;
  }
  return ok_status();
}

/// `to` becomes a copy of `from`, at least `bytes` long. FICLONE first: atomic and sharing
/// extents (btrfs, XFS with reflink). Else only the data extents are copied (SEEK_DATA/SEEK_HOLE),
/// so a sparse volume gives a sparse copy; that copy is not atomic against concurrent writers. The
/// copy goes to a temporary name and is renamed into place, so a crash leaves no half copy.
Status copy_file(const std::string& from, const std::string& to, off_t bytes) {
  const std::string tmp = to + ".tmp";
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return Error::from_errno("opening " + from, errno);
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!out) return Error::from_errno("creating " + tmp, errno);
  struct stat sb {};
  if (::fstat(in.get(), &sb) != 0) return Error::from_errno("reading the size of " + from, errno);
  if (::ioctl(out.get(), FICLONE, in.get()) != 0) {
    for (off_t pos = 0;;) {
      const off_t data = ::lseek(in.get(), pos, SEEK_DATA);
      if (data < 0 && errno == ENXIO) break;  // no data after pos
      if (data < 0) return Error::from_errno("finding data in " + from, errno);
      off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
      if (hole < 0) return Error::from_errno("finding holes in " + from, errno);
      if (auto st = copy_range(in.get(), out.get(), data, hole, from); !st) return st;
      pos = hole;
    }
  }
  const off_t size = std::max<off_t>(bytes, sb.st_size);
  if (::ftruncate(out.get(), size) != 0) return Error::from_errno("sizing " + tmp, errno);
  if (::fsync(out.get()) != 0) return Error::from_errno("syncing " + tmp, errno);
  if (::rename(tmp.c_str(), to.c_str()) != 0) {
    return Error::from_errno("renaming " + tmp + " to " + to, errno);
  }
  return ok_status();
}

/// A new sparse file, or an existing one grown to `bytes` (never shrunk: that destroys data).
Status ensure_sized(const std::string& path, off_t bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640));
  if (!fd) return Error::from_errno("opening " + path, errno);
  struct stat sb {};
  if (::fstat(fd.get(), &sb) != 0) return Error::from_errno("sizing " + path, errno);
  if (sb.st_size < bytes && ::ftruncate(fd.get(), bytes) != 0) {
    return Error::from_errno("sizing " + path, errno);
  }
  return ok_status();
}

/// "snap-<volume uuid>-<utc_ts>.img" -> true (only names this backend makes).
bool is_snapshot_file(const std::string& name) {
  constexpr size_t kHead = 5 + 36 + 1;  // "snap-" uuid "-"
  if (name.size() <= kHead + 4 || name.rfind("snap-", 0) != 0 || name[kHead - 1] != '-' ||
      name.substr(name.size() - 4) != ".img") {
    return false;
  }
  return Model::valid_uuid(name.substr(5, 36)) &&
         Model::valid_utc_ts(name.substr(kHead, name.size() - kHead - 4));
}

}  // namespace

Status FileBackend::reconcile(const std::vector<ExportView>& exports,
                              const std::vector<SnapshotView>& snapshots) {
  // Never build a path from anything but a uuid and a utc_ts.
  std::set<std::string> keep;                        // file names
  std::map<std::string, const ExportView*> volumes;  // by uuid
  for (const auto& e : exports) {
    if (Model::valid_uuid(e.uuid)) volumes[e.uuid] = &e;
  }
  // Order matters: plain volumes first (sources), then new snapshots (copies of their volume as it
  // is now), then clones (copies of a volume or snapshot), and only then removals, so a source that
  // goes away in the same batch is still there to copy from.
  for (const auto& [uuid, e] : volumes) {
    keep.insert(uuid + ".img");
    const std::string path = path_for(*e);
    if (!e->clone_of_volume.empty() && !fs::exists(path)) continue;  // a new clone: below
    if (auto st = ensure_sized(path, static_cast<off_t>(e->size) << 30); !st) return st;
  }
  // Twice: a snapshot of a clone made in the same batch waits until the clone's file exists.
  const auto copy_snapshots = [&](bool last_pass) -> Status {
    for (const auto& s : snapshots) {
      if (!Model::valid_uuid(s.volume_uuid) || !Model::valid_utc_ts(s.utc_ts)) continue;
      const std::string path = snapshot_path(s.volume_uuid, s.utc_ts);
      keep.insert("snap-" + s.volume_uuid + "-" + s.utc_ts + ".img");
      const std::string volume = fs::join(dir_, s.volume_uuid + ".img");
      if (fs::exists(path) || (!last_pass && !fs::exists(volume))) continue;
      if (auto st = copy_file(volume, path, static_cast<off_t>(s.size) << 30); !st) {
        return st.error().wrap("snapshot " + s.utc_ts + " of volume " + s.volume_uuid);
      }
    }
    return ok_status();
  };
  if (auto st = copy_snapshots(false); !st) return st;
  // In creation order: a clone of a clone made in the same batch finds its source's file made.
  for (const auto& export_view : exports) {
    const ExportView* e = &export_view;
    if (!Model::valid_uuid(e->uuid)) continue;
    const std::string path = path_for(*e);
    if (e->clone_of_volume.empty() || fs::exists(path)) continue;
    const off_t bytes = static_cast<off_t>(e->size) << 30;
    std::string source = fs::join(dir_, e->clone_of_volume + ".img");
    if (!e->clone_of_snapshot.empty())
      source = snapshot_path(e->clone_of_volume, e->clone_of_snapshot);
    const bool usable = Model::valid_uuid(e->clone_of_volume) &&
                        (e->clone_of_snapshot.empty() || Model::valid_utc_ts(e->clone_of_snapshot));
    // A source whose file is gone (removed by hand) leaves the clone empty rather than stuck.
    const Status st =
        usable && fs::exists(source) ? copy_file(source, path, bytes) : ensure_sized(path, bytes);
    if (!st) return st.error().wrap("clone " + e->app_instance);
  }
  if (auto st = copy_snapshots(true); !st) return st;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return Error::from_errno("listing " + dir_, errno);
  std::vector<std::string> stale;
  while (const dirent* ent = ::readdir(d)) {
    const std::string name = ent->d_name;
    const bool volume =
        name.size() == 40 && name.substr(36) == ".img" && Model::valid_uuid(name.substr(0, 36));
    if (!volume && !is_snapshot_file(name)) continue;  // not ours
    if (!keep.count(name)) stale.push_back(name);
  }
  ::closedir(d);
  for (const auto& name : stale) {
    const std::string path = fs::join(dir_, name);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Error::from_errno("removing " + path, errno);
    }
  }
  return ok_status();
}

// --- committer ---

Committer::Committer(asio::any_io_executor executor, asio::thread_pool& pool, Model& model,
                     std::string state_path, ExportBackend* backend, LoggerPtr log)
    : pool_(pool),
      model_(model),
      state_path_(std::move(state_path)),
      backend_(backend),
      log_(std::move(log)),
      written_signal_(executor) {
  written_signal_.expires_at(asio::steady_timer::time_point::max());
}

Status Committer::write(const std::string& state, const std::vector<ExportView>& exports,
                        const std::vector<SnapshotView>& snapshots) {
  if (!state_path_.empty()) {
    if (auto st = fs::atomic_write(state_path_, state, 0600); !st) {
      return st.error().wrap("saving the state to " + state_path_);
    }
  }
  if (backend_) {
    if (auto st = backend_->reconcile(exports, snapshots); !st) {
      return st.error().wrap("export backend");
    }
  }
  return ok_status();
}

Status Committer::save_now() {
  return write(state_path_.empty() ? std::string() : model_.to_json().dump(), model_.exports(),
               model_.snapshot_views());
}

asio::awaitable<void> Committer::commit() {
  if (state_path_.empty() && !backend_) co_return;
  const uint64_t mine = ++requested_;
  if (writing_) {
    // A write is running with an older snapshot; the writer loops until it has covered `mine`.
    while (written_ < mine) {
      boost::system::error_code ec;
      co_await written_signal_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return;
  }
  writing_ = true;
  while (written_ < requested_) {
    const uint64_t target = requested_;
    const std::string snapshot = state_path_.empty() ? std::string() : model_.to_json().dump();
    const std::vector<ExportView> exports = backend_ ? model_.exports() : std::vector<ExportView>{};
    const std::vector<SnapshotView> snapshots =
        backend_ ? model_.snapshot_views() : std::vector<SnapshotView>{};
    const Status st =
        co_await run_blocking(pool_, [&] { return write(snapshot, exports, snapshots); });
    if (!st) log_->error("{}", st.error().message);
    written_ = target;
    written_signal_.cancel();  // wakes every waiter; each re-checks written_
  }
  writing_ = false;
}

Status load_state(Model& model, const std::string& path) {
  if (!fs::exists(path)) return ok_status();
  auto text = fs::read_file(path);
  if (!text) return text.error();
  auto doc = nlohmann::json::parse(*text, nullptr, false);
  if (doc.is_discarded()) return Error{path + " is not JSON"};
  if (auto st = model.load_json(doc); !st) return st.error().wrap(path);
  return ok_status();
}

}  // namespace datera::sim

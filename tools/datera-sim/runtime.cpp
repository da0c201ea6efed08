#include "tools/datera-sim/runtime.h"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <map>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "base/blocking.h"
#include "base/fs.h"

namespace datera::sim {

namespace asio = boost::asio;

// --- file backend ---

Status FileBackend::prepare() const {
  return fs::ensure_dir(dir_, 0750);
}

std::string FileBackend::path_for(const ExportView& e) const {
  return fs::join(dir_, e.uuid + ".img");
}

Status FileBackend::reconcile(const std::vector<ExportView>& exports) {
  std::map<std::string, off_t> want;  // file name -> bytes
  for (const auto& e : exports) {
    if (!Model::valid_uuid(e.uuid)) continue;  // never build a path from anything else
    want[e.uuid + ".img"] = static_cast<off_t>(e.size) << 30;
  }
  for (const auto& [name, bytes] : want) {
    const std::string path = fs::join(dir_, name);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return Error::from_errno("opening " + path, errno);
    struct stat sb {};
    int rc = ::fstat(fd, &sb);
    // Grow only: a volume never shrinks, and truncating would destroy data.
    if (rc == 0 && sb.st_size < bytes) rc = ::ftruncate(fd, bytes);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return Error::from_errno("sizing " + path, err);
  }
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return Error::from_errno("listing " + dir_, errno);
  std::vector<std::string> stale;
  while (const dirent* ent = ::readdir(d)) {
    const std::string name = ent->d_name;
    if (name.size() != 40 || name.substr(36) != ".img" || !Model::valid_uuid(name.substr(0, 36))) {
      continue;  // not ours
    }
    if (!want.count(name)) stale.push_back(name);
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

Status Committer::write(const std::string& snapshot, const std::vector<ExportView>& exports) {
  if (!state_path_.empty()) {
    if (auto st = fs::atomic_write(state_path_, snapshot, 0600); !st) {
      return st.error().wrap("saving the state to " + state_path_);
    }
  }
  if (backend_) {
    if (auto st = backend_->reconcile(exports); !st) return st.error().wrap("export backend");
  }
  return ok_status();
}

Status Committer::save_now() {
  return write(state_path_.empty() ? std::string() : model_.to_json().dump(), model_.exports());
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
    const Status st = co_await run_blocking(pool_, [&] { return write(snapshot, exports); });
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

#include <cerrno>
#include <map>
#include <sys/inotify.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "agent/installer/file_watcher.h"

namespace datera::installer {
namespace {

namespace asio = boost::asio;

class InotifyWatcher : public FileWatcher {
 public:
  InotifyWatcher(asio::any_io_executor ex, int fd) : fd_(ex, fd) {}

  Status watch(const std::string& dir) override {
    const int wd =
        ::inotify_add_watch(fd_.native_handle(), dir.c_str(),
                            IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
    if (wd < 0) return Error::from_errno("inotify watch on " + dir, errno);
    dirs_[wd] = dir;
    return ok_status();
  }

  asio::awaitable<Result<std::vector<FileEvent>>> next() override {
    for (;;) {
      boost::system::error_code ec;
      co_await fd_.async_wait(asio::posix::descriptor_base::wait_read,
                              asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return Error{"inotify wait: " + ec.message(), errno_code(ec.value())};
      alignas(inotify_event) char buf[8192];
      const ssize_t n = ::read(fd_.native_handle(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        co_return Error::from_errno("reading inotify events", errno);
      }
      std::vector<FileEvent> out;
      for (ssize_t off = 0; off < n;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
        off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        const auto it = dirs_.find(ev->wd);
        if (it == dirs_.end()) continue;
        const std::string name = ev->len > 0 ? std::string(ev->name) : std::string();
        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
          out.push_back({it->second, "", FileEvent::Kind::dir_gone});
          if (ev->mask & IN_IGNORED) dirs_.erase(it);
        } else if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
          out.push_back({it->second, name, FileEvent::Kind::removed});
        } else {
          out.push_back({it->second, name, FileEvent::Kind::written});
        }
      }
      if (!out.empty()) co_return out;
    }
  }

  void close() override {
    boost::system::error_code ignored;
    fd_.close(ignored);
  }

 private:
  asio::posix::stream_descriptor fd_;
  std::map<int, std::string> dirs_;
};

}  // namespace

Result<std::unique_ptr<FileWatcher>> make_inotify_watcher(asio::any_io_executor executor) {
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return Error::from_errno("inotify_init1", errno);
  return std::unique_ptr<FileWatcher>(std::make_unique<InotifyWatcher>(std::move(executor), fd));
}

}  // namespace datera::installer

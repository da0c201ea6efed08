// /dev/kmsg: each read() returns one whole record; EAGAIN at the end (opened non-blocking), EPIPE
// when the ring buffer overwrote records not yet read (the next read continues after them).

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "agent/kmsg/kmsg.h"

namespace datera::kmsg {

namespace asio = boost::asio;

struct KernelLog::Impl {
  Impl(asio::any_io_executor ex, std::string p, Metrics& pr, LoggerPtr l)
      : path(std::move(p)), probe(pr), log(std::move(l)), fd(ex) {}
  std::string path;
  Metrics& probe;
  LoggerPtr log;
  asio::posix::stream_descriptor fd;
  bool stopping = false;
};

KernelLog::KernelLog(asio::any_io_executor executor, std::string path, Metrics& probe,
                     LoggerPtr log)
    : impl_(std::make_unique<Impl>(std::move(executor), std::move(path), probe, std::move(log))) {}

KernelLog::~KernelLog() = default;

void KernelLog::stop() {
  impl_->stopping = true;
  boost::system::error_code ec;
  impl_->fd.cancel(ec);
}

asio::awaitable<void> KernelLog::run(Sinks sinks) {
  Impl& s = *impl_;
  const int raw = ::open(s.path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (raw < 0) {
    const int err = errno;
    s.probe.readable(false);
    s.log->warn(
        "cannot read the kernel log {} ({}): filesystem failures (xfs shutdown, ext4 errors) "
        "will not be detected, and a volume whose filesystem failed is reported by its session "
        "alone",
        s.path, std::strerror(err));
    co_return;
  }
  s.fd.assign(raw);
  s.probe.readable(true);
  std::string buf(8192, '\0');  // larger than any record (the kernel's limit is 1 KiB of text)
  size_t lost = 0;
  bool live = false;  // past the backlog: failures from now on are counted
  while (!s.stopping) {
    const ssize_t n = ::read(s.fd.native_handle(), buf.data(), buf.size());
    if (n > 0) {
      const std::string_view record(buf.data(), static_cast<size_t>(n));
      if (auto e = fs_event_of(record)) {
        if (e->kind == FsEvent::Kind::failed && live) {
          s.probe.failure(e->fs);
          s.log->warn("kernel: the {} filesystem on {} failed: {}", e->fs, e->device, e->text);
        }
        if (sinks.fs) sinks.fs(*e);
      } else if (live && sinks.ping_timeout) {
        if (auto p = ping_timeout_of(record)) {
          s.log->debug("kernel: session {} silent for {:.2f} s (ping timeout)", p->sid,
                       p->silent_seconds);
          sinks.ping_timeout(*p);
        }
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EPIPE) {  // overwritten before we read them; carry on after
      if (++lost == 1) s.log->warn("kernel log: records were overwritten before they were read");
      continue;
    }
    if (n < 0 && errno == EAGAIN) {
      live = true;
      boost::system::error_code ec;
      co_await s.fd.async_wait(asio::posix::stream_descriptor::wait_read,
                               asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      continue;
    }
    s.probe.readable(false);
    s.log->warn("kernel log {}: reading stopped ({}); filesystem failures will not be detected",
                s.path, n < 0 ? std::strerror(errno) : "end of file");
    break;
  }
}

}  // namespace datera::kmsg

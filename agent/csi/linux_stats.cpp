#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>

#include "agent/csi/stats.h"
#include "base/blocking.h"
#include "base/unique_fd.h"

namespace datera::csi {

namespace {

// statvfs(2) answers from the superblock in memory (xfs and ext4 do no I/O for it), so a volume
// whose session is down does not hang it; it still runs on the pool, as every syscall on a
// volume's path does.
Result<Usage> statvfs_usage(const std::string& path) {
  struct statvfs sv {};
  if (::statvfs(path.c_str(), &sv) != 0) return Error::from_errno("statvfs " + path, errno);
  Usage u;
  const auto frsize = static_cast<int64_t>(sv.f_frsize);
  u.total_bytes = static_cast<int64_t>(sv.f_blocks) * frsize;
  u.available_bytes = static_cast<int64_t>(sv.f_bavail) * frsize;
  u.used_bytes = u.total_bytes - static_cast<int64_t>(sv.f_bfree) * frsize;
  u.total_inodes = static_cast<int64_t>(sv.f_files);
  u.free_inodes = static_cast<int64_t>(sv.f_ffree);
  u.used_inodes = u.total_inodes - u.free_inodes;
  return u;
}

Result<Usage> device_size(const std::string& device) {
  UniqueFd fd(::open(device.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return Error::from_errno("open " + device, errno);
  uint64_t bytes = 0;
  if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) != 0) {
    return Error::from_errno("BLKGETSIZE64 " + device, errno);
  }
  Usage u;
  u.total_bytes = static_cast<int64_t>(bytes);
  return u;
}

class LinuxStats final : public Stats {
 public:
  explicit LinuxStats(boost::asio::thread_pool& pool) : pool_(pool) {}
  boost::asio::awaitable<Result<Usage>> filesystem(std::string path) override {
    auto fn = [&path] { return statvfs_usage(path); };
    co_return co_await run_blocking(pool_, fn);
  }
  boost::asio::awaitable<Result<Usage>> block(std::string device) override {
    auto fn = [&device] { return device_size(device); };
    co_return co_await run_blocking(pool_, fn);
  }

 private:
  boost::asio::thread_pool& pool_;
};

}  // namespace

std::unique_ptr<Stats> make_linux_stats(boost::asio::thread_pool& pool) {
  return std::make_unique<LinuxStats>(pool);
}

}  // namespace datera::csi

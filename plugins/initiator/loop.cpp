#include "plugins/initiator/loop.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <map>
#include <mutex>
#include <optional>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/blocking.h"
#include "base/fs.h"
#include "base/hash.h"
#include "base/json.h"
#include "base/unique_fd.h"

namespace datera::initiator {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

using Fd = UniqueFd;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

/// The loop device's lo_file_name, which marks the devices this initiator attached: several agents
/// (nodes) may share one test host, and none may touch another's devices.
std::string owner_tag(const std::string& iqn) {
  return "datera-loop:" + fnv1a64_hex(iqn);
}

/// "/x/y/<uuid>.img" -> "<uuid>", "" when the name is not of that form.
std::string serial_of_backing(const std::string& backing) {
  std::string base = fs::basename(trim(backing));
  // The kernel appends " (deleted)" when the backing file is gone.
  if (base.size() < 5 || base.compare(base.size() - 4, 4, ".img") != 0) return "";
  return base.substr(0, base.size() - 4);
}

class LoopInitiator : public Initiator {
 public:
  LoopInitiator(edf::Transport& sim, asio::thread_pool& pool, LoopOptions options, LoggerPtr log)
      : sim_(sim), pool_(pool), options_(std::move(options)), log_(std::move(log)) {}

  std::string kind() const override { return "loop"; }

  Result<std::string> initiator_iqn() const override {
    if (options_.iqn.empty()) {
      return Error{"the loop initiator needs initiator.iqn in the agent config"};
    }
    return options_.iqn;
  }

  asio::awaitable<Result<Device>> connect(const Target& target,
                                          std::chrono::milliseconds timeout) override {
    (void)timeout;  // attaching a loop device does not wait for anything
    auto path = co_await export_path(target);
    if (!path) co_return path.error();
    // Already attached (a retry, or the agent restarted): use that device, once verified.
    auto found = co_await attached();
    if (!found) co_return found.error();
    for (const auto& s : *found) {
      if (s.device && s.device->serial == target.serial) co_return verify(target, *s.device);
    }
    const std::string file = *path;
    auto attach = [&]() { return attach_file(file); };
    auto dev = co_await run_blocking(pool_, attach);
    full_scan_ = true;  // a device became ours: the next look reads every device
    if (!dev) co_return dev.error().wrap("attaching volume " + target.volume);
    auto verified = verify(target, *dev);
    if (!verified) {
      // Never leave a wrong device attached.
      const std::string p = dev->path;
      auto detach = [&]() { return detach_device(p); };
      (void)co_await run_blocking(pool_, detach);
      co_return verified.error();
    }
    log_->info("volume {}: attached {} as {}", target.volume, file, dev->path);
    co_return verified;
  }

  asio::awaitable<Status> disconnect(const Target& target) override {
    auto found = co_await attached();
    if (!found) co_return found.error();
    for (const auto& s : *found) {
      if (!s.device || s.device->serial != target.serial) continue;
      const std::string p = s.device->path;
      auto detach = [&]() { return detach_device(p); };
      auto st = co_await run_blocking(pool_, detach);
      full_scan_ = true;
      if (!st) co_return st.error().wrap("detaching volume " + target.volume);
      log_->info("volume {}: detached {}", target.volume, p);
    }
    co_return ok_status();
  }

  // A loop device has no portal to leave.
  asio::awaitable<Status> prune(const Target&) override { co_return ok_status(); }

  asio::awaitable<Status> refresh(const Target& target) override {
    auto found = co_await attached();
    if (!found) co_return found.error();
    for (const auto& s : *found) {
      if (!s.device || s.device->serial != target.serial) continue;
      const std::string p = s.device->path;
      auto grow = [&]() -> Status {
        Fd loop(::open(p.c_str(), O_RDWR | O_CLOEXEC));
        if (loop.get() < 0) return Error::from_errno("opening " + p, errno);
        if (::ioctl(loop.get(), LOOP_SET_CAPACITY, 0) != 0) {
          return Error::from_errno("LOOP_SET_CAPACITY " + p, errno);
        }
        return ok_status();
      };
      co_return co_await run_blocking(pool_, grow);
    }
    co_return Error{"volume " + target.volume + " is not attached on this node"};
  }

  asio::awaitable<Result<std::vector<Session>>> sessions() override {
    co_return co_await attached();
  }

 private:
  /// Asks the simulator where the volume's data is, as this initiator (the ACL check).
  asio::awaitable<Result<std::string>> export_path(const Target& target) {
    auto iqn = initiator_iqn();
    if (!iqn) co_return iqn.error();
    edf::HttpRequest req{
        "GET", "/_sim/exports?initiator=" + url_encode(*iqn), {}, "", options_.request_timeout};
    auto res = co_await sim_.send(std::move(req));
    if (!res) co_return res.error().wrap("asking datera-sim for the exports of " + *iqn);
    if (res->status != 200) {
      co_return Error{"datera-sim answered " + std::to_string(res->status) +
                      " to GET /_sim/exports"};
    }
    auto parsed = datera::json::parse_bounded(res->body);
    json body = parsed ? std::move(*parsed) : json();
    if (!body.is_object() || !body.contains("exports")) {
      co_return Error{"datera-sim's /_sim/exports reply is not understood"};
    }
    if (body.value("backend", "") != "file") {
      co_return Error{"the loop initiator needs datera-sim --backend file (it runs '" +
                      body.value("backend", "?") + "')"};
    }
    for (const auto& e : body["exports"]) {
      if (e.value("iqn", "") == target.iqn && !e.value("path", "").empty()) {
        co_return e["path"].get<std::string>();
      }
    }
    co_return Error{"volume " + target.volume + " (target " + target.iqn +
                    ") is not exported to initiator " + *iqn +
                    ": the node is not in its ACL or the volume is offline"};
  }

  static std::string url_encode(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (const unsigned char c : s) {
      if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
        out += static_cast<char>(c);
      } else {
        out += '%';
        out += hex[c >> 4];
        out += hex[c & 15];
      }
    }
    return out;
  }

  Result<Device> verify(const Target& target, const Device& dev) const {
    if (dev.serial != target.serial) {
      return Error{"refusing " + dev.path + " for volume " + target.volume + ": its serial is '" +
                   dev.serial + "' but the volume's uuid is '" + target.serial +
                   "'; the export points at another volume's data. Nothing " +
                   "was mounted; check the array's export of " + target.iqn};
    }
    return dev;
  }

  /// Every loop device whose backing file looks like a file-backend volume.
  asio::awaitable<Result<std::vector<Session>>> attached() {
    auto scan = [&]() { return scan_loops(); };
    co_return co_await run_blocking(pool_, scan);
  }

  Result<std::vector<Session>> scan_loops() const {
    std::vector<Session> out;
    const std::string block = options_.sysfs_root + "/block";
    std::lock_guard lock(seen_mu_);
    // Between the agent's own attaches and detaches, only its own devices can change as far as it
    // is concerned (another user's loop device never becomes ours): a look reads one number per
    // device of ours, through a descriptor kept open, however many loop devices the node has.
    const bool full = full_scan_.exchange(false);
    std::vector<std::string> names;
    if (full) {
      DIR* d = ::opendir(block.c_str());
      if (!d) return Error::from_errno("listing " + block, errno);
      while (auto* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, "loop", 4) == 0) names.emplace_back(e->d_name);
      }
      ::closedir(d);
    } else {
      for (const auto& [name, _] : seen_) names.push_back(name);
    }
    std::map<std::string, Seen> seen;
    for (const auto& name : names) {
      const auto it = seen_.find(name);
      const bool ours = it != seen_.end() && it->second.device.has_value();
      if (!full && !ours) {
        seen.emplace(name, it->second);
        continue;
      }
      // The disk sequence number changes at every attach and detach: a device whose number did
      // not change since the last look is as it was then, and costs one read. Without diskseq
      // (older kernels) every look is a full one. Only our own devices keep a descriptor open.
      const std::string seq_path = block + "/" + name + "/diskseq";
      auto seq = ours ? held_.read(seq_path, 64) : fs::read_file(seq_path, 64);
      if (!seq && ours) full_scan_ = true;  // gone: the next look lists /sys/block again
      const std::string diskseq = seq ? *seq : "";
      Seen entry{diskseq, std::nullopt};
      if (!diskseq.empty() && it != seen_.end() && it->second.diskseq == diskseq) {
        entry = it->second;
      } else if (auto backing = fs::read_file(block + "/" + name + "/loop/backing_file", 4096)) {
        const std::string serial = serial_of_backing(*backing);
        if (!serial.empty()) {
          auto found = device_of(name, serial);
          auto mine = found ? owned(found->path) : std::nullopt;
          if (!mine) {  // could not tell: not remembered, and the next look is a full one
            full_scan_ = true;
            continue;
          }
          if (*mine) entry.device = *found;
        }
      }  // else not attached
      if (!diskseq.empty()) seen.emplace(name, entry);
      if (!entry.device) continue;
      Session s;
      s.state = "LOGGED_IN";
      s.device_state = "running";
      s.id = std::atoi(name.c_str() + 4);
      s.device = *entry.device;
      out.push_back(std::move(s));
    }
    seen_ = std::move(seen);
    if (!full) held_.drop_unread();  // descriptors of devices no longer ours
    return out;
  }

  /// True when `path` was attached by this initiator (its lo_file_name carries our tag); nullopt
  /// when it cannot be told (detached meanwhile, or not readable).
  std::optional<bool> owned(const std::string& path) const {
    Fd loop(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (loop.get() < 0) return std::nullopt;
    loop_info64 info{};
    if (::ioctl(loop.get(), LOOP_GET_STATUS64, &info) != 0) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(info.lo_file_name)) == owner_tag(options_.iqn);
  }

  Result<Device> device_of(const std::string& name, const std::string& serial) const {
    Device d;
    d.path = options_.dev_root + "/" + name;
    d.serial = serial;
    auto dev = fs::read_file(options_.sysfs_root + "/block/" + name + "/dev", 64);
    if (!dev) return dev.error();
    unsigned ma = 0, mi = 0;
    if (std::sscanf(dev->c_str(), "%u:%u", &ma, &mi) != 2) return Error{"bad dev for " + name};
    d.major = ma;
    d.minor = mi;
    return d;
  }

  /// Blocking: a free loop device bound to `file` (LOOP_CONFIGURE; retried when another process
  /// takes the same free device first).
  Result<Device> attach_file(const std::string& file) const {
    Fd backing(::open(file.c_str(), O_RDWR | O_CLOEXEC));
    if (backing.get() < 0) return Error::from_errno("opening " + file, errno);
    Fd control(::open((options_.dev_root + "/loop-control").c_str(), O_RDWR | O_CLOEXEC));
    if (control.get() < 0) return Error::from_errno("opening /dev/loop-control", errno);
    for (int attempt = 0; attempt < 16; ++attempt) {
      const int n = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
      if (n < 0) return Error::from_errno("LOOP_CTL_GET_FREE", errno);
      const std::string name = "loop" + std::to_string(n);
      const std::string path = options_.dev_root + "/" + name;
      Fd loop(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      if (loop.get() < 0) return Error::from_errno("opening " + path, errno);
      loop_config cfg{};
      cfg.fd = static_cast<uint32_t>(backing.get());
      const std::string tag = owner_tag(options_.iqn);
      std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), tag.c_str(), LO_NAME_SIZE - 1);
      if (::ioctl(loop.get(), LOOP_CONFIGURE, &cfg) != 0) {
        if (errno == EBUSY) continue;  // raced with another attach
        return Error::from_errno("LOOP_CONFIGURE " + path, errno);
      }
      // A block device's read-only flag (BLKROSET) outlives a loop attachment: a device another
      // user left read-only would make this volume read-only. Volumes attach read-write.
      int writable = 0;
      if (::ioctl(loop.get(), BLKROSET, &writable) != 0) {
        return Error::from_errno("BLKROSET 0 on " + path, errno);
      }
      // The serial comes from the kernel's view of the backing file, not from `file`.
      auto backing_now =
          fs::read_file(options_.sysfs_root + "/block/" + name + "/loop/backing_file", 4096);
      if (!backing_now) return backing_now.error().wrap("reading back " + name);
      return device_of(name, serial_of_backing(*backing_now));
    }
    return Error{"no free loop device after 16 attempts (all taken concurrently)"};
  }

  Status detach_device(const std::string& path) const {
    Fd loop(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (loop.get() < 0) {
      if (errno == ENOENT || errno == ENXIO) return ok_status();
      return Error::from_errno("opening " + path, errno);
    }
    if (::ioctl(loop.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) {
      return Error::from_errno("LOOP_CLR_FD " + path + " (still mounted or open?)", errno);
    }
    return ok_status();
  }

  edf::Transport& sim_;
  asio::thread_pool& pool_;
  LoopOptions options_;
  LoggerPtr log_;
  /// Loop devices as the last scan found them (scans run on the pool, possibly two at a time).
  struct Seen {
    std::string diskseq;
    std::optional<Device> device;  ///< attached by this initiator to a volume's file
  };
  mutable std::mutex seen_mu_;
  mutable std::map<std::string, Seen> seen_;
  mutable std::atomic<bool> full_scan_{true};
  mutable fs::HeldAttributes held_{4096};  ///< diskseq of our own devices; under seen_mu_
};

}  // namespace

InitiatorPtr make_loop_initiator(edf::Transport& sim, asio::thread_pool& pool, LoopOptions options,
                                 LoggerPtr log) {
  return std::make_unique<LoopInitiator>(sim, pool, std::move(options), std::move(log));
}

}  // namespace datera::initiator

#include "agent/kmsg/kmsg.h"

#include <charconv>

namespace datera::kmsg {
namespace {

/// "<prefix>(<device>): " at the start of `text`: the device, else "".
std::string_view device_after(std::string_view text, std::string_view prefix) {
  if (text.substr(0, prefix.size()) != prefix) return {};
  text.remove_prefix(prefix.size());
  const size_t close = text.find("): ");
  if (close == std::string_view::npos || close == 0 || close > 64) return {};
  return text.substr(0, close);
}

bool device_name_ok(std::string_view d) {
  if (d.empty() || d.size() > 64) return false;
  for (const char c : d) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool contains(std::string_view text, std::string_view what) {
  return text.find(what) != std::string_view::npos;
}

}  // namespace

std::optional<FsEvent> fs_event_of(std::string_view record) {
  const size_t semi = record.find(';');
  if (semi == std::string_view::npos) return std::nullopt;
  // "<pri>,<seq>,...": pri = facility * 8 + level. Facility 0 is the kernel's, which userspace
  // writing to /dev/kmsg cannot claim.
  const std::string_view head = record.substr(0, semi);
  unsigned pri = 0;
  const auto [end, ec] = std::from_chars(head.data(), head.data() + head.size(), pri);
  if (ec != std::errc() || end == head.data() || (end < head.data() + head.size() && *end != ',')) {
    return std::nullopt;
  }
  if ((pri >> 3) != 0) return std::nullopt;
  std::string_view text = record.substr(semi + 1);
  text = text.substr(0, text.find('\n'));
  if (text.size() > 1024) return std::nullopt;

  FsEvent e;
  std::string_view dev;
  if (!(dev = device_after(text, "XFS (")).empty()) {
    e.fs = "xfs";
    if (contains(text, "): Mounting V")) {
      e.kind = FsEvent::Kind::mounted;
    } else if (contains(text, "Shutting down filesystem") ||  // 6.x
               contains(text, "shutting down filesystem") ||
               contains(text, "Filesystem has been shut down") ||  // 6.1 after a log error
               contains(text, "Please unmount the filesystem and rectify")) {
      e.kind = FsEvent::Kind::failed;
    } else {
      return std::nullopt;
    }
  } else if (!(dev = device_after(text, "EXT4-fs (")).empty()) {
    e.fs = "ext4";
    if (contains(text, "): mounted filesystem")) {
      e.kind = FsEvent::Kind::mounted;
    } else if (contains(text, "Remounting filesystem read-only")) {
      e.kind = FsEvent::Kind::failed;
    } else {
      return std::nullopt;
    }
  } else if (!(dev = device_after(text, "EXT4-fs error (device ")).empty()) {
    e.fs = "ext4";
    e.kind = FsEvent::Kind::failed;
  } else {
    return std::nullopt;
  }
  if (!device_name_ok(dev)) return std::nullopt;
  e.device = std::string(dev);
  if (e.kind == FsEvent::Kind::failed) e.text = std::string(text);
  return e;
}

void FsFailures::feed(const FsEvent& e) {
  Entry& entry = devices_[e.device];
  entry.order = next_++;
  if (e.kind == FsEvent::Kind::mounted) {
    entry.failed.reset();
  } else if (!entry.failed) {
    entry.failed = e.text;  // the first line of an episode says why; the rest follow from it
  }
  while (devices_.size() > max_devices_) {
    auto oldest = devices_.begin();
    for (auto it = devices_.begin(); it != devices_.end(); ++it) {
      if (it->second.order < oldest->second.order) oldest = it;
    }
    devices_.erase(oldest);
  }
}

std::optional<std::string> FsFailures::failure(const std::string& device) const {
  auto it = devices_.find(device);
  if (it == devices_.end()) return std::nullopt;
  return it->second.failed;
}

Probe::Probe(prometheus::Registry& registry)
    : readable_(prometheus::BuildGauge()
                    .Name("datera_agent_kernel_log_readable")
                    .Help("1 when the agent reads the kernel log for filesystem failures")
                    .Register(registry)
                    .Add({})),
      failures_(prometheus::BuildCounter()
                    .Name("datera_agent_filesystem_failures_total")
                    .Help("Filesystem failures (xfs shutdown, ext4 error) read in the kernel log")
                    .Register(registry)) {
  for (const char* fs : {"xfs", "ext4"}) failures_.Add({{"fs", fs}});
}

}  // namespace datera::kmsg

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

/// Drops the entries fed longest ago (smallest `order`) until `entries` holds at most `max`. A
/// linear scan per eviction: only a node with more failing devices or sessions than the bound
/// ever evicts.
template <class Map>
void evict_oldest(Map& entries, size_t max) {
  while (entries.size() > max) {
    auto oldest = entries.begin();
    for (auto it = entries.begin(); it != entries.end(); ++it) {
      if (it->second.order < oldest->second.order) oldest = it;
    }
    entries.erase(oldest);
  }
}

bool contains(std::string_view text, std::string_view what) {
  return text.find(what) != std::string_view::npos;
}

/// The text of a record of the kernel's own facility, or nullopt. "<pri>,<seq>,...;<text>":
/// pri = facility * 8 + level; facility 0 is the kernel's, which userspace writing to /dev/kmsg
/// cannot claim.
std::optional<std::string_view> kernel_text(std::string_view record) {
  const size_t semi = record.find(';');
  if (semi == std::string_view::npos) return std::nullopt;
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
  return text;
}

/// The unsigned number right after `key` in `text`, at or after `from`; advances `from`.
std::optional<uint64_t> number_after(std::string_view text, std::string_view key, size_t& from) {
  const size_t at = text.find(key, from);
  if (at == std::string_view::npos) return std::nullopt;
  const char* begin = text.data() + at + key.size();
  const char* end = text.data() + text.size();
  uint64_t v = 0;
  const auto [p, ec] = std::from_chars(begin, end, v);
  if (ec != std::errc() || p == begin) return std::nullopt;
  from = static_cast<size_t>(p - text.data());
  return v;
}

}  // namespace

std::optional<PingTimeout> ping_timeout_of(std::string_view record) {
  const auto text = kernel_text(record);
  if (!text) return std::nullopt;
  constexpr std::string_view kWhat = ": ping timeout of ";
  const size_t what = text->find(kWhat);
  if (what == std::string_view::npos) return std::nullopt;
  // "...connection<sid>:<cid>" right before it (dev_printk may put a driver name in front).
  const std::string_view head = text->substr(0, what);
  const size_t conn = head.rfind("connection");
  if (conn == std::string_view::npos) return std::nullopt;
  size_t at = conn;
  const auto sid = number_after(head, "connection", at);
  if (!sid || at >= head.size() || head[at] != ':' || *sid > 1'000'000) return std::nullopt;
  ++at;
  const char* cid_end = head.data() + head.size();
  uint64_t cid = 0;
  const auto [p, ec] = std::from_chars(head.data() + at, cid_end, cid);
  if (ec != std::errc() || p != cid_end) return std::nullopt;

  size_t from = what;
  const auto ping = number_after(*text, kWhat, from);
  const auto recv = number_after(*text, "recv timeout ", from);
  const auto rx = number_after(*text, "last rx ", from);
  const auto last_ping = number_after(*text, "last ping ", from);
  const auto now = number_after(*text, "now ", from);
  if (!ping || !recv || !rx || !last_ping || !now || *ping + *recv == 0 || *ping > 3600 ||
      *recv > 3600) {
    return std::nullopt;
  }
  // The kernel fires when now >= last rx + (R + P) * HZ, a tick or a timer late at most: the
  // quotient is HZ or a little over, so the nearest configurable HZ below it is the kernel's.
  const uint64_t silent = *now - *rx;  // jiffies wrap as unsigned long
  const double hz_seen = static_cast<double>(silent) / static_cast<double>(*ping + *recv);
  double hz = 0;
  for (const double candidate : {100.0, 250.0, 300.0, 1000.0}) {
    if (hz_seen >= candidate * 0.98) hz = candidate;
  }
  if (hz == 0) return std::nullopt;
  PingTimeout out;
  out.sid = static_cast<int>(*sid);
  out.silent_seconds = static_cast<double>(silent) / hz;
  if (out.silent_seconds > 2.0 * 3600) return std::nullopt;  // not one stall
  return out;
}

void Silences::feed(const PingTimeout& p, TimePoint read_at) {
  const auto silent = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(p.silent_seconds));
  // By feeding order, not by time: records read in one burst share a time, and the one just fed
  // must never be the one evicted.
  sessions_[p.sid] = Entry{read_at, read_at - silent, next_++};
  evict_oldest(sessions_, max_sessions_);
}

std::optional<Silences::TimePoint> Silences::since(int sid, TimePoint after) const {
  auto it = sessions_.find(sid);
  if (it == sessions_.end() || it->second.declared < after) return std::nullopt;
  return it->second.silent_since;
}

std::optional<FsEvent> fs_event_of(std::string_view record) {
  const auto kernel = kernel_text(record);
  if (!kernel) return std::nullopt;
  const std::string_view text = *kernel;

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
  evict_oldest(devices_, max_devices_);
}

std::optional<std::string> FsFailures::failure(const std::string& device) const {
  auto it = devices_.find(device);
  if (it == devices_.end()) return std::nullopt;
  return it->second.failed;
}

Metrics::Metrics(prometheus::Registry& registry)
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

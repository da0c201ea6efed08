// Fuzz target kmsg_record: one /dev/kmsg record as the agent's kernel-log reader parses it
// (kmsg::fs_event_of, kmsg::ping_timeout_of), then fed to the per-device failure memory and the
// per-session silences.
// Invariants: an event names a device of at most 64 safe characters, a failure carries the
// record's text without its dictionary lines, and the memory stays within its bound.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agent/kmsg/kmsg.h"

using namespace datera;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  static kmsg::FsFailures memory(8);
  static kmsg::Silences silences(8);
  if (auto p = kmsg::ping_timeout_of(input)) {
    // A silence is one stall: never negative, never beyond two hours, of a real session number.
    if (p->sid < 0 || !(p->silent_seconds >= 0) || p->silent_seconds > 7200) std::abort();
    const auto at = std::chrono::steady_clock::time_point(std::chrono::hours(3));
    silences.feed(*p, at);
    const auto since = silences.since(p->sid, at);
    if (!since || *since > at) std::abort();
  }
  auto e = kmsg::fs_event_of(input);
  if (!e) return 0;
  if (e->device.empty() || e->device.size() > 64) std::abort();
  for (const char c : e->device) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) std::abort();
  }
  if (e->text.find('\n') != std::string::npos) std::abort();
  if (e->fs != "xfs" && e->fs != "ext4") std::abort();
  memory.feed(*e);
  // The newest entry is never the one evicted: a mount clears the device, a failure marks it.
  if (memory.failure(e->device).has_value() != (e->kind == kmsg::FsEvent::Kind::failed)) {
    std::abort();
  }
  return 0;
}

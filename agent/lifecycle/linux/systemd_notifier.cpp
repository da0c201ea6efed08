#include <systemd/sd-daemon.h>

#include "agent/lifecycle/notifier.h"

namespace datera::lifecycle {
namespace {

class SystemdNotifier : public Notifier {
 public:
  void ready(const std::string& s) override { send("READY=1\nSTATUS=" + s); }
  void status(const std::string& s) override { send("STATUS=" + s); }
  void stopping() override { send("STOPPING=1"); }
  void reloading() override { send("RELOADING=1"); }
  void watchdog() override { send("WATCHDOG=1"); }

  std::optional<std::chrono::microseconds> watchdog_interval() const override {
    uint64_t usec = 0;
    // unset_environment=0: children (mkfs...) do not inherit NOTIFY_SOCKET anyway, we pass env.
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) return std::chrono::microseconds(usec);
    return std::nullopt;
  }

 private:
  static void send(const std::string& msg) { sd_notify(0, msg.c_str()); }
};

}  // namespace

std::unique_ptr<Notifier> make_systemd_notifier() {
  return std::make_unique<SystemdNotifier>();
}

}  // namespace datera::lifecycle

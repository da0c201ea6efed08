#include "agent/keeper/metrics.h"

namespace datera::keeper {

Metrics::Metrics(prometheus::Registry& registry)
    : states_(prometheus::BuildGauge()
                  .Name("datera_agent_sessions")
                  .Help("Attached volumes by the health of their iSCSI session")
                  .Register(registry)),
      up_(prometheus::BuildGauge()
              .Name("datera_agent_session_up")
              .Help("1 when the volume's session is logged in and its disk running")
              .Register(registry)),
      recoveries_(prometheus::BuildCounter()
                      .Name("datera_agent_session_recoveries_total")
                      .Help("Sessions that recovered by themselves after a stall")
                      .Register(registry)
                      .Add({})),
      recovery_(prometheus::BuildHistogram()
                    .Name("datera_agent_session_recovery_duration_seconds")
                    .Help("How long I/O stalled before a session recovered")
                    .Register(registry)
                    .Add({}, prometheus::Histogram::BucketBoundaries{0.5, 1, 2, 3, 5, 10, 20, 30,
                                                                     60, 120})),
      blocked_(prometheus::BuildCounter()
                   .Name("datera_agent_session_io_blocked_seconds_total")
                   .Help("Seconds a volume's session was not healthy (I/O waiting or failing)")
                   .Register(registry)),
      offline_(prometheus::BuildCounter()
                   .Name("datera_agent_session_device_offline_total")
                   .Help("Times a volume's disk went offline (I/O errors reach the filesystem)")
                   .Register(registry)
                   .Add({})),
      hold_expired_(prometheus::BuildCounter()
                        .Name("datera_agent_io_hold_expired_total")
                        .Help("Times a map held I/O for initiator.io_hold without a usable path "
                              "and its I/O was failed")
                        .Register(registry)
                        .Add({})),
      transitions_(prometheus::BuildCounter()
                       .Name("datera_agent_session_transitions_total")
                       .Help("Session health changes")
                       .Register(registry)),
      poll_(prometheus::BuildHistogram()
                .Name("datera_agent_session_poll_seconds")
                .Help("One look at every attached volume's session (listing and matching)")
                .Register(registry)
                .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                                 0.025, 0.05, 0.1, 0.25, 0.5, 1})) {
  states(0, 0, 0, 0, 0);
}

void Metrics::states(double healthy, double recovering, double device_offline, double missing,
                     double fs_failed) {
  states_.Add({{"state", "healthy"}}).Set(healthy);
  states_.Add({{"state", "recovering"}}).Set(recovering);
  states_.Add({{"state", "device_offline"}}).Set(device_offline);
  states_.Add({{"state", "missing"}}).Set(missing);
  states_.Add({{"state", "fs_failed"}}).Set(fs_failed);
}

void Metrics::up(const std::string& volume, bool is_up) {
  up_.Add({{"volume", volume}}).Set(is_up ? 1 : 0);
  blocked_.Add({{"volume", volume}});  // 0 until the first stall, so rate() has a series
}

void Metrics::forget(const std::string& volume) {
  up_.Remove(&up_.Add({{"volume", volume}}));
}

void Metrics::recovered(double seconds) {
  recoveries_.Increment();
  recovery_.Observe(seconds);
}

void Metrics::blocked(const std::string& volume, double seconds) {
  blocked_.Add({{"volume", volume}}).Increment(seconds);
}

void Metrics::offline() {
  offline_.Increment();
}

void Metrics::transition(const std::string& from, const std::string& to) {
  transitions_.Add({{"from", from}, {"to", to}}).Increment();
}

}  // namespace datera::keeper

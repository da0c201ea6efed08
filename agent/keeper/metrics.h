#pragma once

// The session keeper's metrics:
//   datera_agent_sessions{state}                                 gauge (attached volumes by health)
//   datera_agent_session_up{volume}                              gauge (1 healthy, 0 otherwise)
//   datera_agent_session_recoveries_total                        counter
//   datera_agent_session_recovery_duration_seconds               histogram (stall length)
//   datera_agent_session_io_blocked_seconds_total{volume}        counter
//   datera_agent_session_device_offline_total                    counter (entries into offline)
//   datera_agent_io_hold_expired_total                           counter (maps whose held I/O
//                                                                was failed after io_hold)
//   datera_agent_session_transitions_total{from,to}              counter
//   datera_agent_session_poll_seconds                            histogram (one look at every
//                                                                volume: listing + matching)

#include <chrono>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace datera::keeper {

class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  void states(double healthy, double recovering, double device_offline, double missing,
              double fs_failed);
  void up(const std::string& volume, bool up);
  void forget(const std::string& volume);
  void recovered(double seconds);
  void blocked(const std::string& volume, double seconds);
  void offline();
  void hold_expired() { hold_expired_.Increment(); }
  void transition(const std::string& from, const std::string& to);
  void poll(double seconds) { poll_.Observe(seconds); }

 private:
  prometheus::Family<prometheus::Gauge>& states_;
  prometheus::Family<prometheus::Gauge>& up_;
  prometheus::Counter& recoveries_;
  prometheus::Histogram& recovery_;
  prometheus::Family<prometheus::Counter>& blocked_;
  prometheus::Counter& offline_;
  prometheus::Counter& hold_expired_;
  prometheus::Family<prometheus::Counter>& transitions_;
  prometheus::Histogram& poll_;
};

}  // namespace datera::keeper

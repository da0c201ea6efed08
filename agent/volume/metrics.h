#pragma once

// The volume manager's metrics:
//   datera_agent_volumes{phase}                                       gauge
//   datera_agent_volume_pods                                           gauge (bind mounts served)
//   datera_agent_volumes_set_aside                                     gauge (records set aside:
//                                                                      invalid, crashed the agent,
//                                                                      or release kept failing)
//   datera_agent_volume_step_duration_seconds{operation,step}          histogram
//   datera_agent_volume_operations_total{operation,result}             counter
//   datera_agent_volume_failures_total{operation,reason}               counter (reason = step)
//   datera_agent_volume_reconcile_actions_total{action}                counter
//   datera_agent_volume_access_checks_total{result}                    counter (unchanged, moved,
//                                                                      deferred, failed, refused,
//                                                                      error, reinstated: the
//                                                                      map's failed path)
//   datera_agent_portal_changes_total{result}                          counter (the same but
//                                                                      unchanged, error and
//                                                                      reinstated)
//   datera_agent_portal_change_duration_seconds                        histogram (login to swap)
//   datera_agent_handoffs_total{result}                                counter (claimed,
//                                                                      taken_over, refused,
//                                                                      failed, released...)
//   datera_agent_handoff_duration_seconds                              histogram (claim, incl.
//                                                                      the wait)
//   datera_agent_fencing_actions_total{kind}                           counter
//   datera_agent_lease_renewal_failures_total{reason}                  counter (unauthorized,
//                                                                      unreachable, error; also
//                                                                      failed grant checks;
//                                                                      slow_round: a round took
//                                                                      longer than ttl/3)
//   datera_agent_volume_releases_total{result}                         counter (operator's
//                                                                      release/drain: released,
//                                                                      not_here, in_use, staged,
//                                                                      failed)
//   datera_agent_volume_filesystems_created_total{fstype}              counter (mkfs ran)
//   datera_agent_volume_format_refused_total                           counter (mkfs refused: a
//                                                                      blank device whose app
//                                                                      instance says formatted)
//   datera_agent_volume_format_records_total{result}                   counter (the formatted
//                                                                      key: written, failed)
//   datera_agent_udev_events_total{subsystem,action}                   counter
//   datera_agent_udev_degraded                                         gauge (1 = polling only)
//   datera_agent_filesystem_freezes_total{result}                      counter (snapshot freezes:
//                                                                      frozen, failed, unstaged,
//                                                                      stale, thaw_failed,
//                                                                      thawed_at_start)
//   datera_agent_filesystem_frozen_seconds                             histogram

#include <chrono>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "base/result.h"

namespace datera::volume {

class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);

  void phases(double attaching, double attached, double detaching, double pods);
  void set_aside(double records);
  void step(const std::string& operation, const std::string& step, std::chrono::nanoseconds took);
  void operation(const std::string& operation, bool ok);
  void failure(const std::string& operation, const std::string& reason);
  void reconcile(const std::string& action);
  void access_check(const std::string& result);
  void portal_changed(double seconds);
  /// result: claimed, taken_over, refused, failed, released, release_failed; seconds < 0: none.
  void handoff(const std::string& result, double seconds);
  /// kind: fenced_expired_owner, stale_acl_entry, self_fenced.
  void fencing(const std::string& kind);
  /// reason: unauthorized (the array refused the credentials), unreachable, error, slow_round.
  void lease_renewal_failed(const std::string& reason);
  /// The reason label for a failed renewal's error.
  static const char* renewal_failure_reason(const Error& e);
  /// An operator's release of one volume (release / drain), by GiveUp outcome.
  void given_up(const std::string& result);
  /// mkfs ran (fstype: xfs or ext4).
  void filesystem_created(const std::string& fstype);
  /// The formatted guard refused mkfs.
  void format_refused();
  /// result: written (the formatted key), failed (it could not be read or written).
  void format_record(const std::string& result);
  void udev_event(const std::string& subsystem, const std::string& action);
  void udev_degraded(bool degraded);
  /// A freeze request for a snapshot (freeze.h), by result: frozen, failed, unstaged, stale,
  /// thaw_failed; seconds >= 0: how long the filesystem stayed frozen.
  void freeze(const std::string& result, double seconds);

 private:
  prometheus::Family<prometheus::Gauge>& volumes_;
  prometheus::Gauge& pods_;
  prometheus::Gauge& set_aside_;
  prometheus::Family<prometheus::Histogram>& steps_;
  prometheus::Family<prometheus::Counter>& operations_;
  prometheus::Family<prometheus::Counter>& failures_;
  prometheus::Family<prometheus::Counter>& reconcile_;
  prometheus::Family<prometheus::Counter>& access_;
  prometheus::Family<prometheus::Counter>& portal_changes_;
  prometheus::Histogram& portal_change_seconds_;
  prometheus::Family<prometheus::Counter>& handoffs_;
  prometheus::Histogram& handoff_seconds_;
  prometheus::Family<prometheus::Counter>& fencing_;
  prometheus::Family<prometheus::Counter>& renewal_failures_;
  prometheus::Family<prometheus::Counter>& releases_;
  prometheus::Family<prometheus::Counter>& filesystems_;
  prometheus::Counter& format_refused_;
  prometheus::Family<prometheus::Counter>& format_records_;
  prometheus::Family<prometheus::Counter>& udev_;
  prometheus::Gauge& udev_degraded_;
  prometheus::Family<prometheus::Counter>& freezes_;
  prometheus::Histogram& frozen_seconds_;
};

}  // namespace datera::volume

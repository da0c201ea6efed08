#include "agent/volume/metrics.h"

#include "agent/volume/array.h"

namespace datera::volume {

namespace {
/// Access check results that are about a portal change (a reinstated path moved nothing).
bool is_portal_change(const std::string& result) {
  return result != "unchanged" && result != "error" && result != "reinstated";
}
}  // namespace

namespace {

prometheus::Family<prometheus::Gauge>& gauge(prometheus::Registry& r, const char* name,
                                             const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}
prometheus::Family<prometheus::Counter>& counter(prometheus::Registry& r, const char* name,
                                                 const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}
prometheus::Family<prometheus::Histogram>& histogram(prometheus::Registry& r, const char* name,
                                                     const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r);
}

const prometheus::Histogram::BucketBoundaries kStepBuckets{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5,
                                                           1,     2.5,   5,    10,   30,  120};
}  // namespace

Metrics::Metrics(prometheus::Registry& registry)
    : volumes_(gauge(registry, "datera_agent_volumes", "Volumes this node serves, by phase")),
      pods_(gauge(registry, "datera_agent_volume_pods",
                  "Pod bind mounts of Datera volumes on this node")
                .Add({})),
      set_aside_(gauge(registry, "datera_agent_volumes_set_aside",
                       "Volume records the agent set aside and no longer manages: invalid, "
                       "crashed the agent at start-up, or their release kept failing")
                     .Add({})),
      steps_(histogram(registry, "datera_agent_volume_step_duration_seconds",
                       "Duration of each step of a volume operation")),
      operations_(
          counter(registry, "datera_agent_volume_operations_total", "Volume operations by result")),
      failures_(counter(registry, "datera_agent_volume_failures_total",
                        "Failed volume operations by the step that failed")),
      reconcile_(counter(registry, "datera_agent_volume_reconcile_actions_total",
                         "What start-up reconciliation did")),
      access_(counter(registry, "datera_agent_volume_access_checks_total",
                      "Checks of an attached volume's access IPs against the array, by result")),
      portal_changes_(counter(registry, "datera_agent_portal_changes_total",
                              "Access IP changes of attached volumes, by what the agent did")),
      portal_change_seconds_(histogram(registry, "datera_agent_portal_change_duration_seconds",
                                       "Moving a mounted volume to its new portal: login to swap")
                                 .Add({}, kStepBuckets)),
      handoffs_(counter(registry, "datera_agent_handoffs_total",
                        "Volume ownership claims and handoffs by result")),
      handoff_seconds_(histogram(registry, "datera_agent_handoff_duration_seconds",
                                 "Claiming a volume's lease, including waiting for its owner")
                           .Add({}, kStepBuckets)),
      fencing_(
          counter(registry, "datera_agent_fencing_actions_total",
                  "Fencing: expired owners removed from ACLs, stale ACL entries, self-fencing")),
      renewal_failures_(counter(registry, "datera_agent_lease_renewal_failures_total",
                                "Lease renewals (and grant checks) that failed, by reason")),
      releases_(counter(registry, "datera_agent_volume_releases_total",
                        "Volumes an operator asked this node to give up, by what happened")),
      filesystems_(counter(registry, "datera_agent_volume_filesystems_created_total",
                           "Filesystems this node made on blank volumes (mkfs ran)")),
      format_refused_(counter(registry, "datera_agent_volume_format_refused_total",
                              "mkfs refused: the device read blank but the app instance's "
                              "metadata says it holds a filesystem")
                          .Add({})),
      format_records_(counter(registry, "datera_agent_volume_format_records_total",
                              "Writes of the app instance's formatted record, by result")),
      udev_(counter(registry, "datera_agent_udev_events_total", "Kernel device events seen")),
      udev_degraded_(gauge(registry, "datera_agent_udev_degraded",
                           "1 when the udev monitor failed and the agent polls instead")
                         .Add({})),
      freezes_(counter(registry, "datera_agent_filesystem_freezes_total",
                       "Freeze requests for snapshots this node served, by result")),
      frozen_seconds_(histogram(registry, "datera_agent_filesystem_frozen_seconds",
                                "How long a filesystem stayed frozen for a snapshot")
                          .Add({}, kStepBuckets)) {
  // Closed label sets start at 0, so alerts on increase() see the first event and dashboards
  // show the series before anything happened.
  for (const char* r : {"claimed", "taken_over", "refused", "failed", "released", "release_failed"})
    handoffs_.Add({{"result", r}});
  for (const char* k : {"fenced_expired_owner", "stale_acl_entry", "self_fenced"})
    fencing_.Add({{"kind", k}});
  for (const char* r : {"unauthorized", "unreachable", "error", "slow_round"})
    renewal_failures_.Add({{"reason", r}});
  for (const char* r :
       {"unchanged", "moved", "deferred", "failed", "refused", "error", "reinstated"}) {
    access_.Add({{"result", r}});
    if (is_portal_change(r)) portal_changes_.Add({{"result", r}});
  }
  for (const char* r : {"released", "not_here", "in_use", "staged", "failed"})
    releases_.Add({{"result", r}});
  for (const char* r : {"frozen", "failed", "unstaged", "stale", "thaw_failed", "thawed_at_start"})
    freezes_.Add({{"result", r}});
  for (const char* fs : {"xfs", "ext4"}) filesystems_.Add({{"fstype", fs}});
  for (const char* r : {"written", "failed"}) format_records_.Add({{"result", r}});
  for (const char* op : {"mount", "unmount"}) {
    for (const char* r : {"success", "failure"})
      operations_.Add({{"operation", op}, {"result", r}});
  }
  phases(0, 0, 0, 0);
}

void Metrics::set_aside(double records) {
  set_aside_.Set(records);
}

void Metrics::phases(double attaching, double attached, double detaching, double pods) {
  volumes_.Add({{"phase", "attaching"}}).Set(attaching);
  volumes_.Add({{"phase", "attached"}}).Set(attached);
  volumes_.Add({{"phase", "detaching"}}).Set(detaching);
  pods_.Set(pods);
}

void Metrics::step(const std::string& operation, const std::string& step,
                   std::chrono::nanoseconds took) {
  steps_.Add({{"operation", operation}, {"step", step}}, kStepBuckets)
      .Observe(std::chrono::duration<double>(took).count());
}

void Metrics::operation(const std::string& operation, bool ok) {
  operations_.Add({{"operation", operation}, {"result", ok ? "success" : "failure"}}).Increment();
}

void Metrics::failure(const std::string& operation, const std::string& reason) {
  failures_.Add({{"operation", operation}, {"reason", reason}}).Increment();
}

void Metrics::reconcile(const std::string& action) {
  reconcile_.Add({{"action", action}}).Increment();
}

void Metrics::access_check(const std::string& result) {
  access_.Add({{"result", result}}).Increment();
  if (is_portal_change(result)) portal_changes_.Add({{"result", result}}).Increment();
}

void Metrics::portal_changed(double seconds) {
  portal_change_seconds_.Observe(seconds);
}

void Metrics::handoff(const std::string& result, double seconds) {
  handoffs_.Add({{"result", result}}).Increment();
  if (seconds >= 0) handoff_seconds_.Observe(seconds);
}

void Metrics::freeze(const std::string& result, double seconds) {
  freezes_.Add({{"result", result}}).Increment();
  if (seconds >= 0) frozen_seconds_.Observe(seconds);
}

void Metrics::fencing(const std::string& kind) {
  fencing_.Add({{"kind", kind}}).Increment();
}

void Metrics::lease_renewal_failed(const std::string& reason) {
  renewal_failures_.Add({{"reason", reason}}).Increment();
}

const char* Metrics::renewal_failure_reason(const Error& e) {
  if (is_unauthorized(e)) return "unauthorized";
  if (is_unreachable(e)) return "unreachable";
  return "error";
}

void Metrics::given_up(const std::string& result) {
  releases_.Add({{"result", result}}).Increment();
}

void Metrics::filesystem_created(const std::string& fstype) {
  filesystems_.Add({{"fstype", fstype}}).Increment();
}

void Metrics::format_refused() {
  format_refused_.Increment();
}

void Metrics::format_record(const std::string& result) {
  format_records_.Add({{"result", result}}).Increment();
}

void Metrics::udev_event(const std::string& subsystem, const std::string& action) {
  udev_.Add({{"subsystem", subsystem}, {"action", action}}).Increment();
}

void Metrics::udev_degraded(bool degraded) {
  udev_degraded_.Set(degraded ? 1 : 0);
}

}  // namespace datera::volume

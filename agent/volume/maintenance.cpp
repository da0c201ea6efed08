// The volume manager on an operator's request: give up volumes no pod on this node uses
// (datera-agentctl release / drain), so a node can be serviced holding no session, ACL entry or
// lease. The pod-driven paths (unmount, unmountdevice) release the same way; this is for what they
// left: a pod mount removed behind kubelet's back, a pod dir kubelet deleted while the agent was
// down, a volume logged in for a waitforattach that never got its mountdevice.

#include "agent/volume/internal.h"
#include "agent/volume/manager.h"
#include "plugins/edf/types.h"

namespace datera::volume {

namespace asio = boost::asio;

const char* to_string(GiveUp::Outcome o) {
  switch (o) {
    case GiveUp::Outcome::released:
      return "released";
    case GiveUp::Outcome::not_here:
      return "not_here";
    case GiveUp::Outcome::in_use:
      return "in_use";
    case GiveUp::Outcome::staged:
      return "staged";
    case GiveUp::Outcome::failed:
      return "failed";
  }
  return "unknown";
}

namespace {

std::string in_use_message(const std::string& volume, const std::vector<std::string>& pods) {
  std::string dirs;
  for (const auto& d : pods) dirs += (dirs.empty() ? "" : ", ") + d;
  return "volume " + volume + ": " + std::to_string(pods.size()) +
         " pod mount(s) on this node use it (" + dirs +
         "); kept. Move those pods off the node first (kubectl drain), then retry";
}

}  // namespace

nlohmann::json GiveUp::to_json() const {
  return {{"volume", volume}, {"result", to_string(outcome)}, {"message", message}, {"pods", pods}};
}

asio::awaitable<GiveUp> Manager::give_up(std::string volume, bool force) {
  GiveUp out;
  out.volume = volume;
  auto done = [&](GiveUp::Outcome o, std::string message) {
    out.outcome = o;
    out.message = std::move(message);
    metrics_.given_up(to_string(o));
    return out;
  };
  if (!edf::is_valid_name(volume)) {
    co_return done(GiveUp::Outcome::not_here,
                   "'" + volume + "' is not a Datera volume name; this node holds nothing by it");
  }
  auto guard = co_await locks_.lock(volume);
  auto it = records_.find(volume);
  if (it == records_.end()) {
    co_return done(GiveUp::Outcome::not_here,
                   "volume " + volume + ": this node holds nothing of it; nothing to do");
  }
  Record& rec = it->second;
  // Pod mounts whose bind is gone are forgotten, as start-up reconcile does; those still mounted
  // keep the volume.
  if (forget_gone_pods(rec)) {
    if (auto st = co_await journal_.save(rec); !st) {
      co_return done(GiveUp::Outcome::failed,
                     "volume " + volume + ": writing its journal record failed: " +
                         st.error().message + "; nothing was released, try again");
    }
  }
  for (const auto& p : rec.pods) out.pods.push_back(p.dir);
  if (!out.pods.empty()) {
    log_->info("volume {}: not released on request: {} pod mount(s) use it", volume,
               out.pods.size());
    co_return done(GiveUp::Outcome::in_use, in_use_message(volume, out.pods));
  }
  if (rec.mode != Mode::agent && staged(rec) && !force) {
    // kubelet's staging (controller mode's device mount, or CSI's): kubelet's own call ends it.
    co_return done(
        GiveUp::Outcome::staged,
        rec.mode == Mode::controller
            ? "volume " + volume + ": kept, it is kubelet's device mount at " + rec.staging +
                  " (controller mode). kubelet unmounts it (unmountdevice) once no pod here "
                  "uses it. Only if kubelet is gone for good: --force unstages it, and kubelet, "
                  "should it come back, would mount pods on a path that is no longer staged"
            : "volume " + volume + ": kept, it is kubelet's CSI staging at " + rec.staging +
                  ". kubelet unstages it (NodeUnstageVolume) once no pod here uses it. "
                  "Only if kubelet is gone for good: --force unstages it");
  }
  const Mode rec_mode = rec.mode;  // `rec` dangles once released
  if (auto st = co_await release(rec, Operation::release); !st) {
    const std::string step = to_string(st.error().step);
    log_->error("volume {}: giving it up on request failed at {}: {}", volume, step,
                st.error().message());
    co_return done(GiveUp::Outcome::failed,
                   "volume " + volume + ": giving it up failed at " + step + ": " +
                       st.error().message() +
                       ". What was done stays done; run release again (the agent also retries "
                       "at its next start)");
  }
  update_gauges();
  const std::string what = rec_mode != Mode::agent
                               ? "unstaged and logged out; its grant (ACL and ownership record) "
                                 "stays the controller's until Kubernetes detaches it"
                               : "unmounted, logged out, out of the ACL and its lease released";
  log_->info("volume {}: given up on request: {}", volume, what);
  co_return done(GiveUp::Outcome::released, "volume " + volume + ": " + what);
}

asio::awaitable<std::vector<GiveUp>> Manager::drain(bool force) {
  std::vector<std::string> names;
  for (const auto& [name, _] : records_) names.push_back(name);
  std::vector<GiveUp> out;
  for (const auto& name : names) {
    GiveUp one = co_await give_up(name, force);
    out.push_back(std::move(one));
  }
  co_return out;
}

}  // namespace datera::volume

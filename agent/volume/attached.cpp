// The volume manager in controller mode (attach: true): the node's half of kubelet's attachable
// volume flow. The grant itself (ACL and ownership record) is agent/controller's.

#include <cerrno>

#include "agent/ownership/lease.h"
#include "agent/volume/internal.h"
#include "agent/volume/manager.h"

namespace datera::volume {

namespace asio = boost::asio;
using detail::normal_path;
using detail::opt;
using detail::StepTimer;

asio::awaitable<flex::Json> Manager::waitforattach(const flex::Request& request) {
  Failed failed{"options", Error{}};
  auto dev = co_await do_waitforattach(request, false, failed);
  flex::Json reply = answer("waitforattach", dev, failed);
  if (dev) reply["device"] = *dev;
  co_return reply;
}

asio::awaitable<flex::Json> Manager::mountdevice(const flex::Request& request) {
  Failed failed{"options", Error{}};
  auto dev = co_await do_waitforattach(request, true, failed);
  co_return answer("mountdevice", dev, failed);
}

asio::awaitable<flex::Json> Manager::unmountdevice(const flex::Request& request) {
  Failed failed{"checks", Error{}};
  Status st;
  auto path = kubelet_path(request.arg("deviceMountPath").value_or(""), KubeletPath::device_mount);
  if (!path) {
    st = path.error().wrap("unmountdevice");
  } else {
    st = co_await do_unmountdevice(*path, failed);
  }
  co_return answer("unmountdevice", st, failed);
}

asio::awaitable<Result<std::string>> Manager::do_waitforattach(const flex::Request& request,
                                                               bool stage, Failed& failed) {
  const std::string op = stage ? "mountdevice" : "waitforattach";
  if (!options_.controller_attach) {
    co_return Error{op + " belongs to controller mode (attach: true); this agent runs without"};
  }
  std::string path;
  if (stage) {
    auto resolved =
        kubelet_path(request.arg("deviceMountPath").value_or(""), KubeletPath::device_mount);
    if (!resolved) co_return resolved.error().wrap(op);
    path = *resolved;
  }
  auto parsed = edf::parse_volume_options(request.options, options_.default_backend,
                                          options_.allowed_servers);
  if (!parsed) co_return parsed.error().wrap(op);
  const edf::VolumeOptions vo = std::move(*parsed);
  const std::string name = vo.spec.name;
  auto mount_options = detail::mount_options_of(request.options, vo.fs_type);
  if (!mount_options) co_return mount_options.error().wrap(op + " of volume " + name);
  auto say = [&](const std::string& step, const Error& e) {
    return failed.at(op + " of volume " + name + (stage ? " at " + path : std::string()), step, e);
  };

  auto guard = co_await locks_.lock(name);
  if (stage) {
    for (const auto& [other, r] : records_) {
      if (other != name && r.staging == path) {
        co_return say("checks", Error{"the path already holds volume " + other});
      }
    }
  }
  auto [it, fresh] = records_.try_emplace(name);
  Record& rec = it->second;
  if (fresh) {
    rec.volume = name;
    rec.phase = Phase::attaching;
  }
  if (stage && !rec.staging.empty() && rec.staging != path && mount_at(rec.staging)) {
    co_return say("checks", Error{"it is already staged at " + rec.staging});
  }
  const bool staged = !rec.staging.empty() && mount_at(rec.staging).has_value();
  if (rec.pods.empty() && !staged) {
    rec.backend = vo.backend;
    rec.fs_type = vo.fs_type;
    rec.mount_options = *mount_options;
    rec.delete_on_release = false;  // controller mode never deletes: detach has no options
  } else if (edf::same_server(rec.backend, vo.backend)) {
    rec.backend = vo.backend;  // the volume's current credentials (a rotated secret)
  }
  if (stage) rec.staging = path;
  if (auto st = co_await journal_.save(rec); !st) co_return say("journal", st.error());

  // A failure rolls back what this node holds unless something here uses the volume; kubelet
  // retries waitforattach and mountdevice.
  auto fail_and_roll_back = [&](const Error& e) -> asio::awaitable<Result<std::string>> {
    const std::string step = failed.step;
    Error out = say(step, e);
    if (rec.pods.empty() && (rec.staging.empty() || !mount_at(rec.staging))) {
      Failed ignored;
      if (auto st = co_await release(rec, op, ignored); !st) {
        log_->error("volume {}: rollback incomplete ({}); start-up reconcile will retry", name,
                    st.error().message);
      }
    }
    co_return out;
  };
  auto dev = co_await log_in(rec, failed);
  if (!dev) co_return co_await fail_and_roll_back(dev.error());
  if (!stage) {
    log_->info("volume {}: attached here as {} (epoch {})", name, dev->path, rec.epoch);
    co_return dev->path;
  }
  if (auto st = co_await stage_filesystem(rec, *dev, op, failed); !st) {
    co_return co_await fail_and_roll_back(st.error());
  }
  rec.phase = Phase::attached;
  if (auto st = co_await journal_.save(rec); !st) co_return say("journal", st.error());
  log_->info("volume {}: {} staged at {}", name, dev->path, path);
  co_return dev->path;
}

asio::awaitable<Result<initiator::Device>> Manager::log_in(Record& rec, Failed& failed) {
  const std::string& name = rec.volume;
  auto fail = [&](const std::string& step, Error e) -> Result<initiator::Device> {
    failed.step = step;
    return e;
  };
  auto iqn = initiator_.initiator_iqn();
  if (!iqn) co_return fail("initiator", iqn.error());
  rec.initiator_iqn = *iqn;
  auto array = arrays_.get(rec.backend);
  if (!array) co_return fail("array", array.error());
  if (auto st = co_await journal_.save(rec); !st) co_return fail("journal", st.error());
  {
    StepTimer t(probe_, "waitforattach", "grant");
    // Registered at start-up already; again here, cheaply, in case the array was replaced.
    const std::string label = edf::initiator_name_for_node(options_.node_name);
    if (auto st = co_await (*array)->ensure_initiator(*iqn, label); !st) {
      co_return fail("initiator", st.error());
    }
    auto md = co_await (*array)->metadata(name);
    // No such app instance yet: the controller's attach creates it.
    if (!md && !edf::is_not_found(md.error())) co_return fail("grant", md.error());
    const ownership::Lease lease = md ? ownership::decode(*md) : ownership::Lease{};
    if (lease.owner != options_.node_name || lease.owner_iqn != *iqn) {
      const std::string holder = !md            ? "nothing (the array has no such volume)"
                                 : lease.free() ? "no node"
                                                : "node " + lease.owner;
      co_return fail("grant",
                     Error{"the volume is not attached to this node (" + options_.node_name +
                               ") yet: the array's ownership record names " + holder +
                               ". The attach-detach controller attaches it through datera-agent "
                               "on the control plane; see that agent's log and the pod's events. "
                               "kubelet retries",
                           errno_code(EAGAIN)});
    }
    rec.epoch = lease.epoch;
  }
  edf::AppInstance ai;
  {
    StepTimer t(probe_, "waitforattach", "array");
    auto found = co_await (*array)->find_volume(name);
    if (!found) co_return fail("array", found.error());
    if (!*found) co_return fail("array", Error{"the array has no such volume"});
    ai = std::move(**found);
  }
  if (ai.iqn.empty() || ai.ips.empty() || ai.volume_uuid.empty()) {
    co_return fail("array", Error{"the array exports it nowhere yet (no target IQN, access IP or "
                                  "volume uuid); kubelet retries"});
  }
  if (!rec.target.serial.empty() && rec.target.serial != ai.volume_uuid) {
    co_return fail("verify", Error{"the array's volume uuid changed from " + rec.target.serial +
                                   " to " + ai.volume_uuid + "; refusing to mix them"});
  }
  rec.target = initiator::Target{name, ai.iqn, ai.ips, ai.volume_uuid, 0};
  if (auto st = co_await journal_.save(rec); !st) co_return fail("journal", st.error());
  initiator::Device dev;
  {
    StepTimer t(probe_, "waitforattach", "login");
    auto connected = co_await initiator_.connect(rec.target, options_.connect_timeout);
    if (!connected) co_return fail("login", connected.error());
    dev = std::move(*connected);
  }
  {
    StepTimer t(probe_, "waitforattach", "map");
    auto on = co_await map_device(rec, dev);
    if (!on) co_return fail("map", on.error());
    dev = std::move(*on);
  }
  rec.device = dev.path;
  if (auto st = co_await journal_.save(rec); !st) co_return fail("journal", st.error());
  co_return dev;
}

asio::awaitable<Result<std::string>> Manager::bind_staged(const std::string& pod_dir,
                                                          const flex::Json& options,
                                                          Failed& failed) {
  auto parsed =
      edf::parse_volume_options(options, options_.default_backend, options_.allowed_servers);
  if (!parsed) co_return parsed.error().wrap("mount " + pod_dir);
  const std::string name = parsed->spec.name;
  const bool read_only = opt(options, "kubernetes.io/readwrite") == "ro";
  auto say = [&](const std::string& step, const Error& e) {
    return failed.at("mount of volume " + name + " into " + pod_dir, step, e);
  };
  auto guard = co_await locks_.lock(name);
  auto it = records_.find(name);
  if (it == records_.end() || it->second.staging.empty() || !mount_at(it->second.staging)) {
    co_return say("checks", Error{"the volume is not staged on this node: with attach: true "
                                  "kubelet runs waitforattach and mountdevice before mount"});
  }
  Record& rec = it->second;
  if (const auto other = find_volume_of_pod(pod_dir); !other.empty() && other != name) {
    co_return say("checks", Error{"the pod dir already holds volume " + other});
  }
  if (rec.has_pod(pod_dir) && is_mounted_at(pod_dir)) co_return pod_dir;
  rec.pending_pod = pod_dir;
  if (auto st = co_await journal_.save(rec); !st) co_return say("journal", st.error());
  {
    StepTimer t(probe_, "mount", "bind");
    if (auto st = co_await mounter_.bind(rec.staging, pod_dir, read_only); !st) {
      rec.pending_pod.clear();
      (void)co_await journal_.save(rec);
      co_return say("bind", st.error());
    }
  }
  if (!rec.has_pod(pod_dir)) rec.pods.push_back(PodMount{pod_dir, read_only});
  rec.pending_pod.clear();
  if (auto st = co_await journal_.save(rec); !st) co_return say("journal", st.error());
  log_->info("volume {}: bound into {} ({}{} pod(s) on this node)", name, pod_dir,
             read_only ? "read-only, " : "", rec.pods.size());
  co_return pod_dir;
}

asio::awaitable<Status> Manager::do_unmountdevice(const std::string& path, Failed& failed) {
  std::string name;
  for (const auto& [n, r] : records_) {
    if (r.staging == path) name = n;
  }
  if (name.empty()) {
    if (!is_mounted_at(path)) {
      log_->info("unmountdevice {}: not a volume of this agent and not mounted; nothing to do",
                 path);
      co_return ok_status();
    }
    co_return Error{"unmountdevice " + path +
                    ": something is mounted there but the agent's "
                    "journal has no volume for it; refusing to guess. Check `findmnt " +
                    path + "`"};
  }
  auto guard = co_await locks_.lock(name);
  auto it = records_.find(name);
  if (it == records_.end() || it->second.staging != path) co_return ok_status();
  Record& rec = it->second;
  if (!rec.pods.empty()) {
    failed.step = "checks";
    co_return Error{"unmountdevice of volume " + name + " at " + path + ": " +
                    std::to_string(rec.pods.size()) +
                    " pod mount(s) still use it; kubelet unmounts them first"};
  }
  if (auto st = co_await release(rec, "unmountdevice", failed); !st) {
    co_return Error{"unmountdevice of volume " + name + " at " + path + " failed at " +
                        failed.step + ": " + st.error().message,
                    st.error().code};
  }
  log_->info("volume {}: unstaged from {} and logged out", name, path);
  co_return ok_status();
}

asio::awaitable<void> Manager::check_grants() {
  std::vector<std::string> names;
  for (const auto& [name, rec] : records_) {
    if (rec.epoch != 0 && rec.phase != Phase::detaching) names.push_back(name);
  }
  for (const auto& name : names) {
    auto guard = co_await locks_.lock(name);
    auto it = records_.find(name);
    if (it == records_.end() || it->second.epoch == 0 || it->second.phase == Phase::detaching) {
      continue;
    }
    Record& rec = it->second;
    auto array = arrays_.get_for_leases(rec.backend);
    Result<edf::Metadata> md =
        array.ok() ? Result<edf::Metadata>(edf::Metadata{}) : Result<edf::Metadata>(array.error());
    if (array) md = co_await (*array)->metadata(name);
    if (!md) {
      probe_.lease_renewal_failed(Probe::renewal_failure_reason(md.error().code));
      log_->warn("volume {}: cannot check that it is still attached to this node: {}", name,
                 md.error().message);
      continue;
    }
    const ownership::Lease lease = ownership::decode(*md);
    if (lease.owner == options_.node_name && lease.epoch == rec.epoch) continue;
    const std::string now = lease.free() ? "no node" : "node " + lease.owner;
    if (rec.pods.empty() && (rec.staging.empty() || !mount_at(rec.staging))) {
      // Detached while not staged here (kubelet skips unmountdevice for what is not mounted).
      Failed failed;
      if (auto st = co_await release(rec, "detached", failed); !st) {
        log_->error("volume {}: detached by the controller, but logging out failed at {}: {}", name,
                    failed.step, st.error().message);
      } else {
        log_->info("volume {}: detached by the controller (now {}); logged out", name, now);
      }
      continue;
    }
    log_->error("volume {}: the controller attached it to {} (epoch {}, this node had {})", name,
                now, lease.epoch, rec.epoch);
    if (auto st = co_await self_fence(rec); !st) {
      log_->error("volume {}: self-fencing incomplete: {}; retried at the next check", name,
                  st.error().message);
    }
  }
  update_gauges();
}

}  // namespace datera::volume

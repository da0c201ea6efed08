// The volume core's verbs: stage, publish, unpublish, unstage, expand, and release. One pipeline
// for both modes; the access policy (access.h) is the only difference between them.

#include "agent/volume/internal.h"
#include "agent/volume/manager.h"
#include "base/fs.h"

namespace datera::volume {

namespace asio = boost::asio;
using detail::StepTimer;

namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

/// Controller mode and CSI time the attach steps as waitforattach wherever kubelet runs them.
Operation attach_label(Mode mode, Operation op) {
  return mode != Mode::agent ? Operation::waitforattach : op;
}

// The app instance's record that it holds a filesystem: the very key and value Datera's own CSI
// driver writes, so the volumes it made carry the record (and the guard) here too.
constexpr const char* kFormattedKey = "formatted";
constexpr const char* kFormattedTrue = "true";

bool recorded_formatted(const edf::Metadata& md) {
  const auto it = md.find(kFormattedKey);
  return it != md.end() && it->second == kFormattedTrue;
}

}  // namespace

void Manager::crash_point(Operation op, Step step) const {
  if (!options_.crash_point) return;
  if (auto name = crash_point_name(op, step); !name.empty()) options_.crash_point(name);
}

bool Manager::in_use(const Record& rec) const {
  // Controller mode and CSI: kubelet's staging uses the volume until its unstage.
  return !rec.pods.empty() || (rec.mode != Mode::agent && staged(rec));
}

Status Manager::mode_conflict(const std::string& name, Mode mode) const {
  const auto it = records_.find(name);
  if (it == records_.end() || it->second.mode == mode || !in_use(it->second)) return ok_status();
  return Error{std::string("it is in use on this node in ") + to_string(it->second.mode) +
               " mode; unpublish and unstage it there first"};
}

void Manager::adopt(Record& rec, const StageRequest& req) const {
  if (!in_use(rec)) {
    rec.mode = req.mode;
    rec.block = req.block;
    rec.backend = req.volume.backend;
    rec.fs_type = req.volume.fs_type;
    rec.mount_options = req.mount_options;
    rec.delete_on_release = access(rec).applies_retain_policy() && req.volume.delete_on_release;
  } else if (edf::same_server(rec.backend, req.volume.backend)) {
    // The volume's current credentials (a rotated secret) come with each call: the next
    // release, lease renewal and access check use them.
    rec.backend = req.volume.backend;
  }
}

// ---------------------------------------------------------------------------------------------
// stage
// ---------------------------------------------------------------------------------------------

asio::awaitable<VolumeResult<std::string>> Manager::stage(StageRequest req) {
  if (req.block) req.filesystem = false;
  const bool at_path = req.filesystem || req.block;  // staged at kubelet's path (not waitforattach)
  const Operation op = req.filesystem ? Operation::mountdevice : Operation::waitforattach;
  const std::string op_name = to_string(op);
  if (req.mode == Mode::agent) {
    co_return VolumeError{
        Step::options,
        Error{op_name + " belongs to controller mode (attach: true); this agent runs without"}};
  }
  const std::string name = req.volume.spec.name;
  const std::string& path = req.staging_path;
  const std::string what = op_name + " of volume " + name + (at_path ? " at " + path : "");
  auto guard = co_await locks_.lock(name);
  if (const auto other = staging_taken(name, path); at_path && !other.empty()) {
    co_return VolumeError{Step::checks, Error{"the path already holds volume " + other}, what};
  }
  if (auto st = mode_conflict(name, req.mode); !st) {
    co_return VolumeError{Step::checks, st.error(), what};
  }
  auto [it, fresh] = records_.try_emplace(name);
  Record& rec = it->second;
  if (fresh) {
    rec.volume = name;
    rec.phase = Phase::attaching;
  }
  Run run{rec, op, what};
  if (at_path && !rec.staging.empty() && rec.staging != path && staged(rec)) {
    update_gauges();
    co_return run.fail(Step::checks, Error{"it is already staged at " + rec.staging});
  }
  if (staged(rec) && rec.block != req.block) {
    co_return run.fail(Step::checks, Error{std::string("it is already staged here as a ") +
                                           (rec.block ? "raw block device" : "filesystem")});
  }
  adopt(rec, req);
  if (at_path) rec.staging = path;
  auto done = co_await stage_locked(run, req);
  update_gauges();
  co_return done;
}

std::string Manager::staging_taken(const std::string& name, const std::string& path) const {
  for (const auto& [other, r] : records_) {
    if (other != name && r.staging == path) return other;
  }
  return "";
}

asio::awaitable<VolumeResult<std::string>> Manager::stage_locked(Run& run,
                                                                 const StageRequest& req) {
  Record& rec = run.rec;
  if (auto st = co_await step_intent(run); !st) co_return st.error();
  auto dev = co_await stage_steps(run, req);
  if (!dev) co_return co_await roll_back(run, dev.error());
  if (req.block) {
    rec.phase = Phase::attached;
    if (auto st = co_await journal_.save(rec); !st) co_return run.fail(Step::journal, st.error());
    log_->info("volume {}: {} staged as a raw block device (epoch {})", rec.volume, dev->path,
               rec.epoch);
    co_return dev->path;
  }
  if (!req.filesystem) {
    log_->info("volume {}: attached here as {} (epoch {})", rec.volume, dev->path, rec.epoch);
    co_return dev->path;
  }
  rec.phase = Phase::attached;
  if (auto st = co_await journal_.save(rec); !st) co_return run.fail(Step::journal, st.error());
  log_->info("volume {}: {} staged at {}", rec.volume, dev->path, rec.staging);
  co_return dev->path;
}

asio::awaitable<VolumeResult<initiator::Device>> Manager::stage_steps(Run& run,
                                                                      const StageRequest& req) {
  // Every step is idempotent: kubelet's retry runs them all again.
  auto array = co_await step_resolve(run);
  if (!array) co_return array.error();
  if (auto st = co_await step_gain(run, **array, req.volume.spec); !st) co_return st.error();
  auto dev = co_await step_login(run);
  if (!dev) co_return dev.error();
  auto on = co_await step_map(run, *dev);
  if (!on) co_return on.error();
  if (req.filesystem) {
    if (auto st = co_await step_filesystem(run, **array, *on); !st) co_return st.error();
  }
  co_return *on;
}

asio::awaitable<VolumeStatus> Manager::step_intent(Run& run) {
  {
    StepTimer t(metrics_, run.op, Step::intent);
    if (auto st = co_await journal_.save(run.rec); !st) {
      co_return run.fail(Step::intent, st.error());
    }
  }
  crash_point(run.op, Step::intent);
  co_return Done{};
}

asio::awaitable<VolumeResult<Array*>> Manager::step_resolve(Run& run) {
  Record& rec = run.rec;
  auto iqn = initiator_.initiator_iqn();
  if (!iqn) co_return run.fail(Step::initiator, iqn.error());
  rec.initiator_iqn = *iqn;
  auto array = arrays_.get(rec.backend);
  if (!array) co_return run.fail(Step::array, array.error());
  // Journal the IQN before the ACL can hold it: a crash after acl_add must still know what to
  // remove.
  if (auto st = co_await journal_.save(rec); !st) co_return run.fail(Step::journal, st.error());
  co_return *array;
}

asio::awaitable<VolumeStatus> Manager::step_gain(Run& run, Array& array,
                                                 const edf::VolumeSpec& spec) {
  Record& rec = run.rec;
  auto ai = co_await access(rec).gain(rec, array, spec, run.op);
  if (!ai) co_return run.fail(ai.error());
  crash_point(run.op, Step::array);
  rec.target = initiator::Target{rec.volume, ai->iqn, ai->ips, ai->volume_uuid, 0};
  if (auto st = co_await journal_.save(rec); !st) co_return run.fail(Step::target, st.error());
  crash_point(run.op, Step::target);
  co_return Done{};
}

asio::awaitable<VolumeResult<initiator::Device>> Manager::step_login(Run& run) {
  initiator::Device dev;
  {
    StepTimer t(metrics_, attach_label(run.rec.mode, run.op), Step::login);
    auto connected = co_await initiator_.connect(run.rec.target, options_.connect_timeout);
    if (!connected) co_return run.fail(Step::login, connected.error());
    dev = std::move(*connected);
  }
  crash_point(run.op, Step::login);
  co_return dev;
}

asio::awaitable<VolumeResult<initiator::Device>> Manager::step_map(Run& run,
                                                                   const initiator::Device& dev) {
  Record& rec = run.rec;
  initiator::Device on;
  {
    StepTimer t(metrics_, attach_label(rec.mode, run.op), Step::map);
    auto mapped = co_await map_device(rec, dev);
    if (!mapped) co_return run.fail(Step::map, mapped.error());
    on = std::move(*mapped);
  }
  if (!rec.map.empty()) crash_point(run.op, Step::map);
  rec.device = on.path;
  if (auto st = co_await journal_.save(rec); !st) co_return run.fail(Step::journal, st.error());
  co_return on;
}

asio::awaitable<VolumeStatus> Manager::step_filesystem(Run& run, Array& array,
                                                       const initiator::Device& dev) {
  Record& rec = run.rec;
  if (auto staged = mount_at(rec.staging)) {
    // Already staged: it must be this very device, or something is badly wrong.
    if (staged->major != dev.major || staged->minor != dev.minor) {
      co_return run.fail(Step::verify,
                         Error{"staging path " + rec.staging + " holds device " +
                               std::to_string(staged->major) + ":" + std::to_string(staged->minor) +
                               ", not " + dev.path + "; unmount it by hand after checking"});
    }
    co_return Done{};
  }
  auto fs_type = co_await step_format(run, array, dev);
  if (!fs_type) co_return fs_type.error();
  {
    StepTimer t(metrics_, run.op, Step::staging);
    const mount::MountRequest req{dev.path, rec.staging, *fs_type, rec.mount_options, false};
    if (auto st = co_await mounter_.mount(req); !st) co_return run.fail(Step::staging, st.error());
  }
  crash_point(run.op, Step::staging);
  co_return Done{};
}

asio::awaitable<VolumeResult<std::string>> Manager::step_format(Run& run, Array& array,
                                                                const initiator::Device& dev) {
  const std::string& name = run.rec.volume;
  std::string fs_type = run.rec.fs_type;
  StepTimer t(metrics_, run.op, Step::format);
  auto found = co_await mounter_.probe(dev.path);
  if (!found) co_return run.fail(Step::probe, found.error());
  // One read per stage (never per poll); a write only when the record is missing.
  auto md = co_await array.metadata(name);
  if (!*found) {
    // mkfs destroys whatever the device holds: without the array's word that it holds nothing
    // worth keeping, do not.
    if (!md) {
      co_return run.fail(Step::format,
                         md.error().wrap("reading app instance " + name +
                                         "'s metadata (its formatted record) before mkfs"));
    }
    if (recorded_formatted(*md)) {
      metrics_.format_refused();
      co_return run.fail(
          Step::format,
          format_refused(
              "refusing mkfs: " + dev.path +
              " reads blank (blkid finds no filesystem), but app "
              "instance " +
              name +
              "'s metadata says formatted: \"true\" (a filesystem was made "
              "on it). The node may see the wrong device (check the target, the LUN's serial and "
              "the map: `lsblk -o NAME,SERIAL`, `iscsiadm -m session -P 3`) or the array may be "
              "broken; nothing was written. Only if volume " +
              name +
              " really is meant to be "
              "empty, delete the key by hand (metadata PUT {\"formatted\": \"\"}) and retry"));
    }
    log_->info("volume {}: {} is blank, making {}", name, dev.path, fs_type);
    if (auto st = co_await mounter_.format(dev.path, fs_type); !st) {
      co_return run.fail(Step::format, st.error());
    }
    metrics_.filesystem_created(fs_type);
    crash_point(run.op, Step::format);
    co_await record_formatted(array, name);
    co_return fs_type;
  }
  if (**found != fs_type) {
    // Never reformat: mount what is there, and say so.
    log_->warn("volume {}: {} already holds {} (options ask for {}); mounting it as {}", name,
               dev.path, **found, fs_type, **found);
    fs_type = **found;
  }
  if (!md) {
    // Only the record is missing: the filesystem mounts, the next stage records it.
    metrics_.format_record("failed");
    log_->warn(
        "volume {}: cannot read its metadata to check its formatted record ({}); the next "
        "stage records it",
        name, md.error().message);
  } else if (!recorded_formatted(*md)) {
    // A volume formatted before the record existed (or through FlexVolume, or migrated).
    co_await record_formatted(array, name);
  }
  co_return fs_type;
}

asio::awaitable<void> Manager::record_formatted(Array& array, const std::string& name) {
  const edf::Metadata keys{{kFormattedKey, kFormattedTrue}};
  if (auto st = co_await array.put_metadata(name, keys); !st) {
    // The filesystem is there and mounts; only the guard against a later mkfs over it is not
    // armed yet. A warning, not a failed stage: the next stage writes it.
    metrics_.format_record("failed");
    log_->warn(
        "volume {}: its filesystem is not recorded on the array (metadata {}: {}) ({}); "
        "the next stage records it",
        name, kFormattedKey, kFormattedTrue, st.error().message);
    co_return;
  }
  metrics_.format_record("written");
  log_->info("volume {}: recorded on the array that it holds a filesystem ({}: {})", name,
             kFormattedKey, kFormattedTrue);
}

asio::awaitable<VolumeError> Manager::roll_back(Run& run, VolumeError e) {
  Record& rec = run.rec;
  if (!in_use(rec)) {
    // The failure is logged once, by the front end; this says what follows from it.
    const std::string name = rec.volume;
    log_->warn("volume {}: {} failed at {}; rolling back this node's attachment", name,
               to_string(run.op), to_string(e.step));
    if (auto st = co_await release(rec, run.op); !st) {  // `rec` dangles once released
      log_->error("volume {}: rollback incomplete ({}); start-up reconcile will retry", name,
                  st.error().message());
    }
  } else if (!rec.pending_pod.empty()) {
    rec.pending_pod.clear();
    (void)co_await journal_.save(rec);
  }
  co_return e;
}

// ---------------------------------------------------------------------------------------------
// publish
// ---------------------------------------------------------------------------------------------

asio::awaitable<VolumeResult<std::string>> Manager::publish(PublishRequest req) {
  if (req.stage) req.stage->mode = req.mode;
  auto pod = kubelet_path(req.pod_dir, target_kind(req.mode));
  if (!pod) co_return VolumeError{Step::options, pod.error().wrap("mount")};
  req.pod_dir = *pod;
  auto guard = co_await locks_.lock(req.volume);
  auto done = co_await publish_locked(req);
  update_gauges();
  co_return done;
}

asio::awaitable<VolumeResult<std::string>> Manager::publish_locked(const PublishRequest& req) {
  const std::string& name = req.volume;
  const std::string& pod_dir = req.pod_dir;
  const std::string what = "mount of volume " + name + " into " + pod_dir;
  if (auto it = records_.find(name); !req.stage && (it == records_.end() || !staged(it->second))) {
    co_return VolumeError{
        Step::checks,
        Error{req.mode == Mode::csi ? "the volume is not staged on this node: NodeStageVolume "
                                      "comes before NodePublishVolume"
                                    : "the volume is not staged on this node: with attach: true "
                                      "kubelet runs waitforattach and mountdevice before mount"},
        what};
  }
  if (auto st = mode_conflict(name, req.mode); !st) {
    co_return VolumeError{Step::checks, st.error(), what};
  }
  auto [it, fresh] = records_.try_emplace(name);
  // Another volume already bound at this pod dir would be a kubelet bug; never stack mounts.
  if (const auto other = find_volume_of_pod(pod_dir); !other.empty() && other != name) {
    if (fresh) records_.erase(name);
    co_return VolumeError{Step::checks, Error{"the pod dir already holds volume " + other}, what};
  }
  Record& rec = it->second;
  if (fresh) {
    rec.volume = name;
    rec.phase = Phase::attaching;
    rec.staging = fs::join(options_.staging_dir, name);
  }
  // Idempotent: already served into this pod dir, and still mounted there.
  if (rec.has_pod(pod_dir) && is_mounted_at(pod_dir)) {
    log_->info("volume {}: already mounted into {}", name, pod_dir);
    co_return pod_dir;
  }
  Run run{rec, Operation::mount, what};
  co_return co_await publish_steps(run, req);
}

asio::awaitable<VolumeResult<std::string>> Manager::publish_steps(Run& run,
                                                                  const PublishRequest& req) {
  Record& rec = run.rec;
  const std::string& pod_dir = req.pod_dir;
  if (req.stage) {
    adopt(rec, *req.stage);
    if (rec.phase == Phase::detaching) rec.phase = Phase::attaching;
  }
  rec.pending_pod = pod_dir;
  if (auto st = co_await step_intent(run); !st) co_return st.error();
  // Everything below is idempotent; a failure leaves the record for kubelet's retry, and rolls
  // back what this node holds when nothing uses the volume yet.
  if (req.stage) {
    auto dev = co_await stage_steps(run, *req.stage);
    if (!dev) co_return co_await roll_back(run, dev.error());
  }
  {
    StepTimer t(metrics_, Operation::mount, Step::bind);
    // A raw block volume: the device itself onto kubelet's target file.
    const std::string& source = rec.block ? rec.device : rec.staging;
    if (auto st = co_await mounter_.bind(source, pod_dir, req.read_only); !st) {
      co_return co_await roll_back(run, run.fail(Step::bind, st.error()));
    }
  }
  crash_point(run.op, Step::bind);
  if (!rec.has_pod(pod_dir)) rec.pods.push_back(PodMount{pod_dir, req.read_only});
  rec.pending_pod.clear();
  rec.phase = Phase::attached;
  retries_.erase(rec.volume);  // a leftover that kept failing to release is in use again
  if (auto st = co_await journal_.save(rec); !st) co_return run.fail(Step::journal, st.error());
  log_->info("volume {}: mounted {} into {} ({}{} pod(s) on this node)", rec.volume, rec.device,
             pod_dir, req.read_only ? "read-only, " : "", rec.pods.size());
  co_return pod_dir;
}

// ---------------------------------------------------------------------------------------------
// unpublish, unstage, release
// ---------------------------------------------------------------------------------------------

asio::awaitable<VolumeStatus> Manager::unpublish(std::string raw, Mode mode) {
  auto pod_dir = kubelet_path(raw, target_kind(mode));
  if (!pod_dir) co_return VolumeError{Step::checks, pod_dir.error().wrap("unmount")};
  const std::string name = find_volume_of_pod(*pod_dir);
  if (name.empty()) {
    if (!is_mounted_at(*pod_dir)) {
      log_->info("unmount {}: not a volume of this agent and not mounted; nothing to do", *pod_dir);
      co_return Done{};
    }
    co_return VolumeError{Step::checks,
                          Error{"unmount " + *pod_dir + ": something is mounted there but the " +
                                "agent's journal has no volume for it; refusing to guess. Check " +
                                "`findmnt " + *pod_dir + "`"}};
  }
  auto guard = co_await locks_.lock(name);
  auto it = records_.find(name);
  if (it == records_.end()) co_return Done{};  // released while we waited
  Run run{it->second, Operation::unmount, "unmount of volume " + name + " from " + *pod_dir};
  auto done = co_await unpublish_steps(run, *pod_dir);
  update_gauges();
  co_return done;
}

asio::awaitable<VolumeStatus> Manager::unpublish_steps(Run& run, const std::string& pod_dir) {
  Record& rec = run.rec;
  const std::string name = rec.volume;
  rec.pending_pod = pod_dir;
  if (auto st = co_await journal_.save(rec); !st) co_return run.fail(Step::journal, st.error());
  {
    StepTimer t(metrics_, run.op, Step::unbind);
    if (auto st = co_await mounter_.unmount(pod_dir); !st) {
      co_return run.fail(Step::unbind, st.error());
    }
  }
  crash_point(run.op, Step::unbind);
  std::erase_if(rec.pods, [&](const PodMount& p) { return p.dir == pod_dir; });
  rec.pending_pod.clear();
  if (!rec.pods.empty() || rec.mode != Mode::agent) {
    // Controller mode and CSI: the staging is kubelet's, unstaged by its own call.
    if (auto st = co_await journal_.save(rec); !st) co_return run.fail(Step::journal, st.error());
    log_->info("volume {}: unmounted from {}; {} pod(s) still use it", name, pod_dir,
               rec.pods.size());
    co_return Done{};
  }
  if (auto st = co_await release(rec, run.op); !st) {
    const VolumeError& e = st.error();
    co_return VolumeError{
        e.step, Error{run.what + ": the pod's mount is gone, but releasing the volume failed at " +
                          to_string(e.step) + ": " + e.cause.message +
                          " (the agent retries at start-up and on the next call)",
                      e.cause.code}};
  }
  log_->info("volume {}: unmounted from {}; released by this node", name, pod_dir);
  co_return Done{};
}

asio::awaitable<VolumeStatus> Manager::unstage(std::string raw, Mode mode) {
  auto path = kubelet_path(raw, staging_kind(mode));
  if (!path) co_return VolumeError{Step::checks, path.error().wrap("unmountdevice")};
  const std::string name = staging_taken("", *path);  // "": whichever volume is staged there
  if (name.empty()) {
    if (!is_mounted_at(*path)) {
      log_->info("unmountdevice {}: not a volume of this agent and not mounted; nothing to do",
                 *path);
      co_return Done{};
    }
    co_return VolumeError{Step::checks,
                          Error{"unmountdevice " + *path +
                                ": something is mounted there but the agent's journal has no "
                                "volume for it; refusing to guess. Check `findmnt " +
                                *path + "`"}};
  }
  auto guard = co_await locks_.lock(name);
  auto it = records_.find(name);
  if (it == records_.end() || it->second.staging != *path) co_return Done{};
  Record& rec = it->second;
  const std::string what = "unmountdevice of volume " + name + " at " + *path;
  if (!rec.pods.empty()) {
    co_return VolumeError{Step::checks, Error{what + ": " + std::to_string(rec.pods.size()) +
                                              " pod mount(s) still use it; kubelet unmounts "
                                              "them first"}};
  }
  if (auto st = co_await release(rec, Operation::unmountdevice); !st) {
    update_gauges();
    co_return VolumeError{st.error().step, st.error().cause, what};
  }
  log_->info("volume {}: unstaged from {} and logged out", name, *path);
  update_gauges();
  co_return Done{};
}

asio::awaitable<VolumeStatus> Manager::leave_host(Record& rec, Operation op) {
  if (!rec.staging.empty()) {
    StepTimer t(metrics_, op, Step::unstaging);
    if (auto st = co_await mounter_.unmount(rec.staging); !st) {
      co_return VolumeError{Step::unstaging, st.error()};
    }
  }
  crash_point(op, Step::unstaging);
  if (!rec.map.empty()) {
    StepTimer t(metrics_, op, Step::map);
    if (!multipath_) {
      co_return VolumeError{
          Step::map, Error{"the journal names map " + rec.map + " but this agent runs " +
                           "without multipath; remove it with `dmsetup remove " + rec.map + "`"}};
    }
    if (auto st = co_await multipath_->remove(rec.map); !st) {
      co_return VolumeError{Step::map, st.error()};
    }
  }
  if (!rec.target.serial.empty()) {
    StepTimer t(metrics_, op, Step::logout);
    if (auto st = co_await initiator_.disconnect(rec.target); !st) {
      co_return VolumeError{Step::logout, st.error()};
    }
  }
  crash_point(op, Step::logout);
  co_return Done{};
}

asio::awaitable<VolumeStatus> Manager::release(Record& rec, Operation op) {
  const std::string name = rec.volume;
  // Only a volume that was really served here (its last pod left, or that unmount's crash being
  // finished) may be deleted by the retain policy; never a mount that failed and is rolled back,
  // which may well be a volume another node uses, never one handed over to another node, and
  // never one an operator gave up for maintenance (its pods may start elsewhere).
  const bool served =
      rec.phase != Phase::attaching && op != Operation::handoff && op != Operation::release;
  rec.phase = Phase::detaching;
  if (auto st = co_await journal_.save(rec); !st) co_return VolumeError{Step::journal, st.error()};
  if (auto st = co_await leave_host(rec, op); !st) co_return st.error();
  if (auto st = co_await access(rec).give_back(rec, op, served); !st) co_return st.error();
  crash_point(op, Step::release);
  if (auto st = co_await journal_.remove(name); !st) {
    co_return VolumeError{Step::journal, st.error()};
  }
  records_.erase(name);  // `rec` dangles from here on
  retries_.erase(name);
  co_return Done{};
}

// ---------------------------------------------------------------------------------------------
// expand
// ---------------------------------------------------------------------------------------------

asio::awaitable<VolumeResult<int64_t>> Manager::expand(ExpandRequest req) {
  const Operation op = req.filesystem ? Operation::expandfs : Operation::expandvolume;
  const std::string name = req.volume.spec.name;
  const int64_t gib = (req.bytes + kGiB - 1) / kGiB;  // EDF sizes are whole GiB: round up
  const std::string what =
      std::string(to_string(op)) + " of volume " + name + " to " + std::to_string(gib) + " GiB";
  if (gib < 1) {
    co_return VolumeError{Step::options, Error{"the new size must be at least 1 byte"}, what};
  }
  auto guard = co_await locks_.lock(name);
  auto rec_it = records_.find(name);
  // A volume this node serves is grown on the array it was attached from.
  auto array = arrays_.get(rec_it != records_.end() ? rec_it->second.backend : req.volume.backend);
  if (!array) co_return VolumeError{Step::array, array.error(), what};
  {
    StepTimer t(metrics_, op, Step::array);
    auto current = co_await (*array)->find_volume(name);
    if (!current) co_return VolumeError{Step::array, current.error(), what};
    if (!*current) co_return VolumeError{Step::array, Error{"the array has no such volume"}, what};
    if ((*current)->size_gib < gib) {
      if (auto st = co_await (*array)->resize(name, gib); !st) {
        co_return VolumeError{Step::array, st.error(), what};
      }
      log_->info("volume {}: grown on the array from {} to {} GiB", name, (*current)->size_gib,
                 gib);
    }
  }
  if (!req.filesystem) co_return gib* kGiB;
  if (rec_it == records_.end() || rec_it->second.phase != Phase::attached) {
    co_return VolumeError{Step::checks, Error{"the volume is not mounted on this node"}, what};
  }
  Run run{rec_it->second, op, what};
  co_return co_await grow_filesystem(run, gib);
}

asio::awaitable<VolumeResult<int64_t>> Manager::grow_filesystem(Run& run, int64_t gib) {
  Record& rec = run.rec;
  {
    StepTimer t(metrics_, run.op, Step::rescan);
    if (auto st = co_await initiator_.refresh(rec.target); !st) {
      co_return run.fail(Step::rescan, st.error());
    }
    if (!rec.map.empty()) {
      // The map's table has the old length: reload it over the rescanned disk.
      auto dev = co_await initiator_.connect(rec.target, options_.connect_timeout);
      if (!dev) co_return run.fail(Step::rescan, dev.error());
      auto on = co_await map_device(rec, *dev);
      if (!on) co_return run.fail(Step::rescan, on.error());
    }
  }
  if (rec.block) {
    log_->info("volume {}: raw block device rescanned at {} GiB", rec.volume, gib);
    co_return gib* kGiB;
  }
  {
    StepTimer t(metrics_, run.op, Step::grow);
    auto staged = mount_at(rec.staging);
    if (!staged) {
      co_return run.fail(Step::grow, Error{"the staging mount " + rec.staging + " is gone"});
    }
    if (auto st = co_await mounter_.grow(rec.device, rec.staging, staged->fstype); !st) {
      co_return run.fail(Step::grow, st.error());
    }
  }
  log_->info("volume {}: filesystem grown to {} GiB", rec.volume, gib);
  co_return gib* kGiB;
}

}  // namespace datera::volume

#pragma once

// The volume core, in CSI's words: stage (log in, map, format if blank, mount at the staging
// path), publish (bind into a pod dir), unpublish, unstage, expand. Inputs are typed and already
// parsed; every verb yields a value or a VolumeError naming the step that failed. Front ends
// (agent/flexvolume today) parse their protocol and call these; nothing here knows one.
//
// Agent mode (attach: false): kubelet's FlexVolume mount is publish with a StageRequest, under one
// lock: claim, stage, bind. mount <pod-dir> <options>: ensure the app instance (created from the
// options on first use), register this node's initiator, add it to the ACL, bring the volume
// online, log in, verify the device is the volume's LUN, format it only if blank, mount it once at
// a per-volume staging path under the agent's state dir, and bind-mount that into the pod dir
// (read-only when asked). Pods on one node share one staging mount.
//
// unmount <pod-dir> (unpublish): kubelet gives no options, so the journal says which volume it
// is. Remove the bind; after the last pod, unmount the staging path, log out, leave the ACL, and
// apply the retain policy.
//
// With dm-multipath available, the staging mount is on the volume's own map over the verified
// session disk (agent/multipath), so check_access() can move a mounted volume to the access IPs
// EDF moved it to: log in on the new portal, verify the serial, queue I/O in the map, log out of
// the old portal, swap the map to the new disk. Without it the volume stays on the raw disk, and a
// portal change is reported (deferred) instead of done: a raw disk cannot change under a mount.
//
// One writer at a time across nodes (agent/ownership): the first mount on a node claims the
// volume's lease on the array before joining its ACL (waiting for the owner to hand over, or
// fencing it once its lease expired), and removes any other initiator from the ACL; the last
// unmount leaves the ACL, then releases the lease. renew_leases() keeps held leases alive, refuses
// handoff requests while pods use the volume here, and self-fences a volume whose lease another
// node took over (its mounts and session here are torn down, never written again).
//
// Controller mode (`attach: true`, ManagerOptions::controller_attach): the attach-detach controller
// grants this node access through the agent on the control plane (agent/controller), and kubelet
// splits the work: waitforattach (stage without the filesystem) logs in once the ownership record
// names this node, mountdevice (stage) stages the filesystem at kubelet's device mount path, mount
// and unmount (publish, unpublish) only bind and unbind, unmountdevice (unstage) unstages and logs
// out. The node never claims, and never touches the ACL or the lease; the renewal loop only checks
// that the grant still stands and self-fences when the controller gave the volume to another node.
// The AccessPolicy (access.h) is the one difference between the modes in the stage pipeline.
//
// Every operation is idempotent and serialized per volume (KeyedMutex); volumes proceed
// concurrently. Every step is journaled; reconcile() runs before the agent reports ready and
// finishes or rolls back whatever a crash interrupted, from the journal, the sessions and
// mountinfo.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "agent/mount/mounter.h"
#include "agent/multipath/multipath.h"
#include "agent/ownership/lease.h"
#include "agent/volume/access.h"
#include "agent/volume/array.h"
#include "agent/volume/freeze.h"
#include "agent/volume/journal.h"
#include "agent/volume/keyed_mutex.h"
#include "agent/volume/metrics.h"
#include "agent/volume/step.h"
#include "base/logging.h"
#include "plugins/initiator/initiator.h"

namespace datera::volume {

struct ManagerOptions {
  std::string node_name;
  std::string kubelet_root = "/var/lib/kubelet";
  std::string staging_dir = "/var/lib/datera-agent/staging";
  /// The agent's array and account (backend.*), is_default set: volumes that name no other array
  /// use it, and their records refer to it instead of copying its password.
  edf::BackendTarget default_backend;
  /// backend.allowed_servers: the other arrays a volume may name (with its own credentials).
  std::vector<std::string> allowed_servers;
  std::chrono::milliseconds online_timeout{120'000};  ///< array: op_state available
  std::chrono::milliseconds connect_timeout{60'000};  ///< login and the device showing up
  /// kubelet_root with its symlinks resolved, as mountinfo shows it (the composition root resolves
  /// it once at start-up; empty: kubelet_root is taken as canonical). A kubelet dir moved to a data
  /// disk and linked back is a common layout: paths are compared in this form only.
  std::string kubelet_root_real;
  /// kubelet's "<vendor~driver>" directory name for this driver (pod volume dirs and, with '~' as
  /// '/', the device mount path).
  std::string driver_dir = "datera~iscsi";
  /// FlexVolume's mode (see above; attach: true): what its adapter serves, and the mode of the
  /// records older agents wrote. false: this node claims, joins the ACL and releases itself.
  /// CSI volumes are always granted by the controller (Mode::csi), whatever this says.
  bool controller_attach = false;
  /// The CSI driver name: kubelet's CSI staging paths name it.
  std::string csi_driver = "agent.iscsi.datera.io";
  /// Called between steps with the point's name ("mount:after_login"...). Production leaves it
  /// empty; the host tier's crash tests make it kill the process there (see
  /// DATERA_AGENT_TEST_CRASH_AT).
  std::function<void(const std::string&)> crash_point;
  /// Releases left over at start-up (release_leftovers()): attempts per volume before it is set
  /// aside, and the first wait between attempts (doubling).
  int release_attempts = 5;
  std::chrono::milliseconds release_retry_delay{2'000};
  /// Snapshot freezes (freeze.h): the longest a filesystem stays frozen whatever the controller
  /// does, and how often the request is looked at while frozen.
  std::chrono::milliseconds freeze_max_hold{10'000};
  std::chrono::milliseconds freeze_poll{50};
};

/// What check_access() found and did.
enum class Access {
  unchanged,   ///< the sessions are on the portals the array lists (or the volume is not attached)
  moved,       ///< the volume now runs on the new portal; old sessions logged out
  deferred,    ///< the portals changed, but the volume is on the raw disk: nothing safe to do live
  failed,      ///< the move was tried and failed; the old path is left as it was
  refused,     ///< the array's volume is not the one mounted (uuid changed)
  error,       ///< the array could not be asked
  reinstated,  ///< nothing moved; the map's failed path was reinstated (its session is back)
};
const char* to_string(Access a);

/// What give_up() did with one volume (datera-agentctl release / drain).
struct GiveUp {
  enum class Outcome {
    released,  ///< this node holds nothing of it any more
    not_here,  ///< it held nothing of it to begin with
    in_use,    ///< pods on this node mount it; nothing done
    staged,    ///< controller mode: kubelet's device mount, kept (without force)
    failed,    ///< a step failed; what was done stays done, the rest is retried
  };
  std::string volume;
  Outcome outcome = Outcome::not_here;
  std::vector<std::string> pods;  ///< in_use: the pod volume dirs that mount it
  std::string message;            ///< what happened, and what to do when it is not released

  /// {"volume","result","message","pods"}, for the API.
  nlohmann::json to_json() const;
};
const char* to_string(GiveUp::Outcome o);

/// stage(): the volume as its options describe it, and where to stage it.
struct StageRequest {
  edf::VolumeOptions volume;               ///< parsed (plugins/edf/options.h)
  std::vector<std::string> mount_options;  ///< for the staging mount, already allow-listed
  /// Controller mode and CSI: kubelet's staging path, checked (staging_path()). Agent mode: ""
  /// (the agent's own <staging_dir>/<volume>).
  std::string staging_path;
  bool filesystem = true;  ///< false: log in and map only (waitforattach, or a block volume)
  Mode mode = Mode::agent;
  /// CSI raw block: log in and map, no filesystem; staged (journaled) at staging_path all the same.
  bool block = false;
};

/// publish(): bind the staged volume into a pod dir.
struct PublishRequest {
  std::string volume;
  std::string pod_dir;  ///< checked (pod_volume_path()); CSI: kubelet's target path
  bool read_only = false;
  /// Agent mode: stage first, under the same lock, with the same rollback (kubelet's FlexVolume
  /// mount has no separate stage call). nullopt: the volume must be staged already.
  std::optional<StageRequest> stage;
  /// Whose paths and record: FlexVolume's agent or controller mode, or CSI (stage->mode follows).
  Mode mode = Mode::agent;
};

/// expand(): grow the app instance on the array (never shrink); with `filesystem`, also rescan
/// the device and grow the filesystem on the node that has it mounted.
struct ExpandRequest {
  edf::VolumeOptions volume;
  int64_t bytes = 0;
  bool filesystem = false;
};

class Manager {
 public:
  /// `multipath` may be null (the loop initiator, or no device-mapper at all).
  Manager(ManagerOptions options, Arrays& arrays, initiator::Initiator& initiator,
          mount::Mounter& mounter, Journal& journal, Metrics& probe, LoggerPtr log,
          multipath::Multipath* multipath = nullptr, ownership::Coordinator* coordinator = nullptr);

  /// Start-up: loads the journal and brings it in line with the host before anything is served.
  /// Yields a summary for the log; problems are logged and counted, not fatal.
  boost::asio::awaitable<std::string> reconcile();
  /// After reconcile(), while the API serves: releases the volumes no pod uses that reconcile
  /// found (crash leftovers, failed rollbacks), kReleaseLanes at a time, each under its own lock
  /// only, retried with backoff; a volume that fails release_attempts times is set aside (shown in
  /// volumes() and the set-aside gauge) until its next call, an operator's release, or a restart.
  boost::asio::awaitable<void> release_leftovers();

  /// Controller mode (waitforattach, mountdevice): the grant checked, login, map, and with
  /// `filesystem` the filesystem staged (formatted only if blank). Yields the device. A failure
  /// rolls back what this node holds unless something here uses the volume.
  boost::asio::awaitable<VolumeResult<std::string>> stage(StageRequest request);
  /// Binds the volume into the pod dir (read-only when asked), staging it first when the request
  /// carries a StageRequest (agent mode: claim, stage, bind). Yields the pod dir.
  boost::asio::awaitable<VolumeResult<std::string>> publish(PublishRequest request);
  /// Unbinds the pod dir; after the last pod in agent mode, releases the volume (staging, map,
  /// session, ACL, lease, retain policy). An unknown pod dir that is not mounted is a success.
  /// `mode`: whose paths these are (Mode::csi: CSI's target paths; else FlexVolume's pod dirs).
  boost::asio::awaitable<VolumeStatus> unpublish(std::string pod_dir, Mode mode = Mode::agent);
  /// Controller mode and CSI: unmounts kubelet's staging path, removes the map, logs out.
  boost::asio::awaitable<VolumeStatus> unstage(std::string staging_path,
                                               Mode mode = Mode::controller);
  /// Yields the new size in bytes (whole GiB).
  boost::asio::awaitable<VolumeResult<int64_t>> expand(ExpandRequest request);

  /// kubelet's pod volume dir, checked and in canonical form (see kubelet_path()).
  Result<std::string> pod_volume_path(const std::string& raw) const {
    return kubelet_path(raw, KubeletPath::pod_volume);
  }
  /// kubelet's device mount path (controller mode), checked and in canonical form.
  Result<std::string> device_mount_path(const std::string& raw) const {
    return kubelet_path(raw, KubeletPath::device_mount);
  }
  /// CSI's staging path (filesystem or block), checked and in canonical form.
  Result<std::string> csi_staging_path(const std::string& raw) const {
    return kubelet_path(raw, KubeletPath::csi_staging);
  }
  /// CSI's target path (a pod's mount dir or block device file), checked and in canonical form.
  Result<std::string> csi_target_path(const std::string& raw) const {
    return kubelet_path(raw, KubeletPath::csi_publish);
  }
  const ManagerOptions& options() const { return options_; }

  /// What this node holds of one volume, without credentials (CSI's stats and idempotency checks).
  struct Served {
    std::string volume;
    Mode mode = Mode::agent;
    Phase phase = Phase::attaching;
    bool block = false;
    bool staged = false;  ///< the staging mount is up (block: logged in and mapped)
    std::string staging;
    std::string device;
    std::vector<PodMount> pods;
  };
  std::optional<Served> served(const std::string& volume) const;
  /// The volume metrics, for front ends that count their calls there.
  Metrics& probe() { return metrics_; }

  /// Asks the array where the attached volume is exported now, and moves its session there when
  /// that changed (see above). Serialized with the volume's other operations. `reason` is for the
  /// log ("poll", "session recovering"...). By value: the keeper runs it detached.
  boost::asio::awaitable<Access> check_access(std::string volume, std::string reason);
  /// The periodic check of many attached volumes at once: one listing of the array's app
  /// instances per array (or one GET per volume, when that is fewer requests), one of the
  /// sessions and one of the maps; only a volume whose state differs gets check_access().
  boost::asio::awaitable<void> check_access_all(std::vector<std::string> volumes);

  /// One renewal round over every lease this node holds (the application starts one every
  /// ttl/3), the renewals' starts spread evenly over `spread`, kRenewLanes in flight at most.
  /// In controller mode: one check that every volume here is still granted to this node.
  boost::asio::awaitable<void> renew_leases(
      std::chrono::milliseconds spread = std::chrono::milliseconds(0));

  /// An operator's request to give `volume` up on this node (maintenance): only when no pod here
  /// mounts it. Pod mounts whose bind is gone are forgotten first. Agent mode: staging, map and
  /// session go, the ACL entry and the lease are released, the retain policy is NOT applied (this
  /// is no pod's last unmount). Controller mode: staging, map and session go; the grant is the
  /// controller's. kubelet's device mount (controller mode) is kept unless `force`.
  boost::asio::awaitable<GiveUp> give_up(std::string volume, bool force);
  /// give_up() for every volume this node holds, one after the other.
  boost::asio::awaitable<std::vector<GiveUp>> drain(bool force);
  /// Shutdown: every filesystem frozen for a snapshot is thawed (within about freeze_poll), and no
  /// new freeze starts.
  boost::asio::awaitable<void> end_freezes();

  const edf::BackendTarget& default_backend() const { return options_.default_backend; }

  /// For /v1/volumes: every volume this node serves, without credentials.
  nlohmann::json volumes() const;
  /// A volume whose staging mount is up: what the session keeper watches.
  struct Attached {
    std::string volume;
    initiator::Target target;
    std::string device;  ///< what the staging mount is on ("/dev/dm-3", "/dev/sdb")
    bool map = false;    ///< on a dm-multipath map
  };
  std::vector<Attached> attached() const;

  /// Whether every path of the attached volume's map is active (one `dmsetup` look); nullopt:
  /// no map, or it cannot be read. For the keeper, while a session comes back.
  boost::asio::awaitable<std::optional<bool>> map_paths_active(std::string volume);
  /// Fails the I/O the volume's map holds (fail_if_no_path): the keeper's io_hold expired.
  /// Deliberately without the volume's lock: an unmount waiting on that very I/O holds it.
  boost::asio::awaitable<bool> release_held_io(std::string volume);

 private:
  /// One operation on one volume, under its lock: what the messages say it is.
  struct Run {
    Record& rec;
    Operation op;
    std::string what;  ///< "mount of volume vol-1 into /var/lib/kubelet/pods/..."
    VolumeError fail(Step step, Error cause) const {
      return VolumeError{step, std::move(cause), what};
    }
    VolumeError fail(VolumeError e) const {
      e.what = what;
      return e;
    }
  };

  // The stage pipeline (stage.cpp): named steps, each journaled, timed and crash-pointed.
  boost::asio::awaitable<VolumeResult<std::string>> stage_locked(Run& run, const StageRequest& req);
  /// resolve, gain, login, map and (with req.filesystem) filesystem; yields the staged device.
  boost::asio::awaitable<VolumeResult<initiator::Device>> stage_steps(Run& run,
                                                                      const StageRequest& req);
  boost::asio::awaitable<VolumeResult<std::string>> publish_locked(const PublishRequest& req);
  boost::asio::awaitable<VolumeResult<std::string>> publish_steps(Run& run,
                                                                  const PublishRequest& req);
  boost::asio::awaitable<VolumeStatus> unpublish_steps(Run& run, const std::string& pod_dir);
  /// Takes the request's options into the record when nothing here uses the volume yet (the
  /// array and credentials come from this call; a later release has none), else only refreshed
  /// credentials (a rotated secret).
  void adopt(Record& rec, const StageRequest& req) const;
  /// Refuses a call of `mode` on a volume something here uses in another mode (a FlexVolume pod
  /// and a CSI publish of one volume on one node would be two front ends fighting over it).
  Status mode_conflict(const std::string& name, Mode mode) const;
  /// The record journaled before anything else.
  boost::asio::awaitable<VolumeStatus> step_intent(Run& run);
  /// This node's IQN (journaled) and the volume's array.
  boost::asio::awaitable<VolumeResult<Array*>> step_resolve(Run& run);
  /// The access policy's claim or grant, then the target journaled.
  boost::asio::awaitable<VolumeStatus> step_gain(Run& run, Array& array,
                                                 const edf::VolumeSpec& spec);
  /// Login; the initiator verifies the LUN's serial.
  boost::asio::awaitable<VolumeResult<initiator::Device>> step_login(Run& run);
  /// The volume's map over the session disk (or the disk), journaled as the record's device.
  boost::asio::awaitable<VolumeResult<initiator::Device>> step_map(Run& run,
                                                                   const initiator::Device& dev);
  /// Formats `dev` if blank and mounts it at rec.staging (checks an existing staging mount).
  boost::asio::awaitable<VolumeStatus> step_filesystem(Run& run, Array& array,
                                                       const initiator::Device& dev);
  /// mkfs only when blkid finds nothing and the app instance's metadata does not say `formatted:
  /// "true"` (then refused: the wrong device, or a broken array); records that key after mkfs and
  /// on a filesystem found without it. Yields the filesystem to mount.
  boost::asio::awaitable<VolumeResult<std::string>> step_format(Run& run, Array& array,
                                                                const initiator::Device& dev);
  /// Writes `formatted: "true"`; a failure is a warning (logged, counted), never a failed stage.
  boost::asio::awaitable<void> record_formatted(Array& array, const std::string& name);
  /// A step failed: rolls back what this node holds when nothing here uses the volume, else
  /// forgets the pending pod; yields `e` for the caller.
  boost::asio::awaitable<VolumeError> roll_back(Run& run, VolumeError e);
  /// Whether something on this node uses the volume: a pod, or (controller mode) kubelet's device
  /// mount.
  bool in_use(const Record& rec) const;
  /// The volume other than `name` whose staging path is `path`, or "".
  std::string staging_taken(const std::string& name, const std::string& path) const;
  /// The mount's device: the volume's map over `dev` when multipath is available (and the volume
  /// is not already staged on the raw disk), else `dev` itself.
  boost::asio::awaitable<Result<initiator::Device>> map_device(Record& rec,
                                                               const initiator::Device& dev);
  boost::asio::awaitable<VolumeResult<int64_t>> grow_filesystem(Run& run, int64_t gib);
  using AppInstances = std::unordered_map<std::string, edf::AppInstance>;
  /// The app instances of `names` on one array (`key`: array and account): one listing, or one
  /// GET each when that is fewer requests.
  boost::asio::awaitable<Result<AppInstances>> exported_volumes(
      const std::string& key, const edf::BackendTarget& backend,
      const std::vector<std::string>& names);
  /// check_access() under the volume's lock, the array's answer in hand: what to do on the host.
  boost::asio::awaitable<Access> access_on_host(Record& rec, const edf::AppInstance& ai,
                                                const std::string& reason);
  /// The map's failed path back, once its session is (`session_is_up`).
  boost::asio::awaitable<Access> reinstate_path(Record& rec, const initiator::Device& current,
                                                bool session_is_up, const std::string& reason);
  /// Login on the new portal, I/O held in the map, the old portal's session ended, the map
  /// swapped onto the new disk. `want` and `had`: the portals, for the log.
  boost::asio::awaitable<Access> move_session(Record& rec, const edf::AppInstance& ai,
                                              const std::string& want, const std::string& had,
                                              const std::string& reason);
  boost::asio::awaitable<void> check_grants();
  /// A freeze request for `name` addressed to this node (freeze.h), seen by check_grants: started
  /// once per request id, in its own coroutine (the grant checks of other volumes go on).
  void maybe_freeze(boost::asio::any_io_executor executor, const std::string& name,
                    const edf::Metadata& md);
  boost::asio::awaitable<void> hold_frozen(std::string name, FreezeRequest req);
  boost::asio::awaitable<Status> answer_freeze(Record& rec, const FreezeRequest& req,
                                               const std::string& state);
  boost::asio::awaitable<void> renew_lease(const std::string& name);
  /// This node's hold on the volume: staging unmount, map removal, logout (each idempotent).
  boost::asio::awaitable<VolumeStatus> leave_host(Record& rec, Operation op);
  /// After the last pod: leave_host, then the access policy gives back the ACL entry and the lease
  /// (and applies the retain policy), and the record is removed. Each step is idempotent, so a
  /// crash anywhere in here is finished by running it again. `rec` dangles once it succeeded.
  boost::asio::awaitable<VolumeStatus> release(Record& rec, Operation op);
  enum class KubeletPath {
    pod_volume,    ///< <root>/pods/<uid>/volumes/<vendor~driver>/<name>
    device_mount,  ///< <root>/plugins/kubernetes.io/flexvolume/<vendor>/<driver>/mounts/<name>
    /// CSI targets: <root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount, or for block
    /// <root>/plugins/kubernetes.io/csi/volumeDevices/publish/<pv>/<pod-uid>
    csi_publish,
    /// CSI staging: <root>/plugins/kubernetes.io/csi/<driver>/<sha256>/globalmount (older kubelets:
    /// .../csi/pv/<pv>/globalmount), or for block .../csi/volumeDevices/staging/<pv>
    csi_staging,
  };
  /// The kind of pod path and staging path a record of `mode` holds.
  static KubeletPath target_kind(Mode mode) {
    return mode == Mode::csi ? KubeletPath::csi_publish : KubeletPath::pod_volume;
  }
  static KubeletPath staging_kind(Mode mode) {
    return mode == Mode::csi ? KubeletPath::csi_staging : KubeletPath::device_mount;
  }
  /// Whether the path's layout is kubelet's for `kind` (`rel`: below kubelet's root).
  bool layout_ok(const std::string& rel, KubeletPath kind) const;
  /// The access policy of the record's mode: lease and ACL (agent) or the controller's grant.
  AccessPolicy& access(const Record& rec) const {
    return rec.mode == Mode::agent ? *lease_access_ : *grant_access_;
  }
  /// kubelet's staging is up: the mount at rec.staging, or (block) the session and map.
  bool staged(const Record& rec) const;
  /// A path kubelet passed, as the canonical path below kubelet_root_real, or an Error naming why
  /// it is refused: control characters, not the layout kubelet uses for `kind`, or a symlink
  /// anywhere below kubelet's root (never followed: a pod author may plant one).
  Result<std::string> kubelet_path(const std::string& raw, KubeletPath kind,
                                   bool walk = true) const;
  /// A path recorded by an earlier agent (kubelet_root as configured then) in canonical form, or
  /// "" when it is not a path this agent would accept today.
  std::string canonical_recorded(const std::string& path, KubeletPath kind) const;
  // reconcile(), in parts.
  struct Tally {
    int kept = 0;
    int finished = 0;
    int dropped = 0;
  };
  /// The journal's records that pass the checks into records_ (the others set aside); yields the
  /// number of unusable files.
  size_t load_journal();
  /// Keeps, finishes, drops or queues for release_leftovers() one record.
  boost::asio::awaitable<void> reconcile_volume(const std::string& name, Tally& tally);
  /// forget_gone_pods(), and the pending pod finished or forgotten; true when `rec` changed.
  bool settle_pods(Record& rec, Tally& tally);
  /// Logs out sessions no record names and nothing mounts; yields how many.
  boost::asio::awaitable<int> log_out_leaked_sessions();
  /// Whether the session disk is mounted, or under a live map of ours (or that cannot be told).
  boost::asio::awaitable<bool> session_in_use(const initiator::Device& disk);
  /// Forgets the pod mounts of `rec` whose bind is gone (unmounted behind kubelet's back, or the
  /// pod dir removed while the agent was down), each logged and counted; true when any was.
  bool forget_gone_pods(Record& rec);
  /// Recorded kubelet paths in canonical form; true when any changed.
  bool canonicalize(Record& rec) const;
  /// The same checks a new request passes, for a record read back from the journal.
  Status check_record(const Record& rec) const;
  /// A failed mount that never reached the ACL, the lease or the host: nothing to release.
  bool nothing_to_undo(const Record& rec) const;
  /// Moves the volume's record out of the journal (never to be loaded again), logged, counted
  /// under `action`, and listed by volumes().
  void set_aside(const std::string& volume, const std::string& why, const std::string& action);
  boost::asio::awaitable<void> release_leftover(std::string name);
  /// Another node holds the lease now: tear down everything of the volume here except the ACL
  /// (the new owner's), and forget it.
  boost::asio::awaitable<Status> self_fence(Record& rec);
  /// The volume's record when it is attached with a known target (what access checks look at).
  Record* attached_record(const std::string& volume);
  /// The attached volume's map name, when it has one and maps are in use.
  std::optional<std::string> attached_map(const std::string& volume);
  bool is_mounted_at(const std::string& target) const;
  std::optional<mount::MountEntry> mount_at(const std::string& target) const;
  std::string find_volume_of_pod(const std::string& pod_dir) const;
  void update_gauges();
  /// The crash hook after `step` of `op`, when the step table gives that pair a point.
  void crash_point(Operation op, Step step) const;

  ManagerOptions options_;
  Arrays& arrays_;
  initiator::Initiator& initiator_;
  mount::Mounter& mounter_;
  Journal& journal_;
  Metrics& metrics_;
  LoggerPtr log_;
  multipath::Multipath* multipath_;
  ownership::Coordinator* coordinator_;
  /// Lease and ACL (agent mode) or the controller's grant: the one difference between the modes.
  std::unique_ptr<AccessPolicy> lease_access_;
  std::unique_ptr<AccessPolicy> grant_access_;
  KeyedMutex locks_;
  std::map<std::string, std::string> freeze_served_;  ///< volume -> the last request id served
  int freezes_held_ = 0;
  bool freezes_ended_ = false;
  std::map<std::string, Record> records_;

  static constexpr int kCrashesBeforeSetAside = 3;
  static constexpr int kReleaseLanes = 4;
  static constexpr int kRenewLanes = 4;
  /// Per array (server): pages its last app instance listing took (listing is chosen only when it
  /// costs fewer requests than one GET per volume).
  std::map<std::string, size_t> listing_pages_;
  struct Retry {
    int failures = 0;
    std::string last_error;
    bool set_aside = false;
  };
  std::vector<std::string> leftovers_;  ///< found by reconcile(), for release_leftovers()
  /// Pod dirs the leftovers' records named, until their release ends (unmount waits for it).
  std::map<std::string, std::string> leftover_pods_;
  std::map<std::string, Retry> retries_;   ///< leftovers whose release failed
  std::vector<nlohmann::json> set_aside_;  ///< records moved out of the journal at start-up
};

}  // namespace datera::volume

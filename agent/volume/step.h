#pragma once

// The volume operations and their named steps. Each has ONE table (step.cpp), the single source of
// the metric labels (`operation`, `step`/`reason`), the "<what> failed at <step>: <why>" text and
// the crash-point names "<operation>:after_<point>" that the crash tests drive.

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "base/result.h"

namespace datera::volume {

/// What runs. The names are the metric's `operation` label and the crash points' prefix.
enum class Operation : uint8_t {
  mount,          ///< publish (into a pod dir), staging first when needed (agent mode)
  unmount,        ///< unpublish
  waitforattach,  ///< stage without the filesystem (controller mode: log in, map)
  mountdevice,    ///< stage (controller mode: at kubelet's device mount path)
  unmountdevice,  ///< unstage
  expandvolume,
  expandfs,
  move,        ///< an access IP change (check_access)
  reconcile,   ///< a release of what a crash left, after start-up
  release,     ///< an operator's give_up / drain
  handoff,     ///< a release asked for by another node's claim
  detached,    ///< controller mode: the controller detached a volume only logged in here
  self_fence,  ///< another node holds the volume now
};
const char* to_string(Operation op);

enum class Step : uint8_t {
  options,    ///< the request itself (kubelet's paths, the volume's options)
  checks,     ///< what the request asks against what the node has
  journal,    ///< a journal write
  intent,     ///< the first journal write of an operation
  initiator,  ///< this node's initiator name, and its registration on the array
  array,      ///< the app instance: created, online, exported (agent mode: also the ACL)
  claim,      ///< agent mode: the ownership lease, and this node alone in the ACL
  grant,      ///< controller mode: the ownership record names this node
  verify,     ///< the array's volume uuid is the journaled one; the staged device is this one
  target,     ///< the target (IQN, portals, uuid) journaled before login
  login,      ///< login, and the LUN's serial checked
  map,        ///< the volume's dm-multipath map over the session disk
  probe,      ///< blkid on the device
  format,     ///< mkfs, only when blank
  staging,    ///< the staging mount
  bind,       ///< the pod's bind mount
  unbind,     ///< the pod's bind unmounted
  unstaging,  ///< the staging mount unmounted
  logout,     ///< the session ended
  release,    ///< the array's side of a release: ACL entry, lease, retain policy
  rescan,     ///< expandfs: the device rescanned (and its map reloaded)
  grow,       ///< expandfs: the filesystem grown
  queue,      ///< move: I/O held in the map
  prune,      ///< move: the old portal's session ended
  swap,       ///< move: the map swapped onto the new disk
};
/// The step's name in metrics and messages ("login", "journal"...).
const char* to_string(Step s);

/// "<operation>:after_<point>", or "" when the operation has no crash point after that step.
std::string crash_point_name(Operation op, Step s);
/// Every crash point name, in table order, each once: what the crash tests must drive.
const std::vector<std::string>& crash_points();

/// A failed operation: the step where it failed, and why. `what` says which operation on which
/// volume ("mount of volume vol-1 into /var/lib/kubelet/pods/..."); empty when `cause` already
/// says everything.
struct VolumeError {
  VolumeError() = default;
  VolumeError(Step s, Error c, std::string w = {})
      : step(s), cause(std::move(c)), what(std::move(w)) {}

  Step step = Step::checks;
  Error cause;
  std::string what;

  /// kubelet's and the log's text: "<what> failed at <step>: <why>", or the cause alone.
  std::string message() const;
  Error error() const { return Error{message(), cause.code}; }
};

/// A value or a VolumeError.
template <typename T>
class [[nodiscard]] VolumeResult {
 public:
  VolumeResult(T value) : v_(std::move(value)) {}            // NOLINT(google-explicit-constructor)
  VolumeResult(VolumeError error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  const T& value() const& { return std::get<0>(v_); }
  T& value() & { return std::get<0>(v_); }
  const T& operator*() const& { return value(); }
  const T* operator->() const { return &value(); }
  const VolumeError& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, VolumeError> v_;
};

/// VolumeResult<void>: success, or a VolumeError.
struct Done {};
using VolumeStatus = VolumeResult<Done>;

}  // namespace datera::volume

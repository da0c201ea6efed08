#pragma once

// How this node reaches a volume's block device. Two implementations: open-iscsi (production:
// iscsiadm by argv, and sysfs) and loop (development and tests only: the simulator's
// `file` backend volume attached through a loop device once the simulator says this node is in the
// volume's ACL). The volume manager never knows which one it has.
//
// Every call is idempotent: connect() with a session already up returns its device, disconnect()
// with no session succeeds. Calls for different targets may run concurrently; callers serialize
// calls for one target.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "base/result.h"

namespace datera::initiator {

/// What EDF says about a volume's export (from the app instance's storage instance `access`).
struct Target {
  std::string volume;                ///< the app instance name, for messages and logs only
  std::string iqn;                   ///< target IQN
  std::vector<std::string> portals;  ///< access IPs, "10.0.0.5" or "10.0.0.5:3260"
  std::string serial;                ///< EDF volume uuid: the LUN serial the device must show
  int lun = 0;
};

/// A block device that was verified to be the target's LUN.
struct Device {
  std::string path;    ///< "/dev/sdc", "/dev/loop3"
  std::string serial;  ///< as read from the device (equals Target::serial)
  unsigned major = 0;
  unsigned minor = 0;
};

/// One session (open-iscsi) or one attachment (loop), as found on the host now.
struct Session {
  std::string target_iqn;
  std::string portal;  ///< "ip:port"; "" for loop
  std::string state;   ///< "LOGGED_IN", "FAILED", "FREE"... ("LOGGED_IN" for an attached loop)
  int id = -1;         ///< sid, or loop number
  std::optional<Device> device;
  /// The SCSI device's state: "running", "blocked" (recovery in progress), "offline",
  /// "transport-offline" (the replacement timeout expired: I/O fails); "running" for loop.
  std::string device_state;
};

class Initiator {
 public:
  virtual ~Initiator() = default;
  /// "open-iscsi" or "loop".
  virtual std::string kind() const = 0;
  /// This node's initiator IQN (InitiatorName from /etc/iscsi/initiatorname.iscsi, or configured).
  virtual Result<std::string> initiator_iqn() const = 0;

  /// Logs in (or attaches), waits up to `timeout` for the LUN's block device, and verifies that its
  /// serial equals `target.serial`. A device with another serial is refused with an Error saying
  /// both serials, and nothing of it is used.
  virtual boost::asio::awaitable<Result<Device>> connect(const Target& target,
                                                         std::chrono::milliseconds timeout) = 0;
  /// Logs out of every session to `target.iqn` on every portal and removes node records (or
  /// detaches the loop device). Succeeds when nothing is left.
  virtual boost::asio::awaitable<Status> disconnect(const Target& target) = 0;
  /// Logs out of the sessions to `target.iqn` on portals `target.portals` no longer lists, and
  /// deletes their node records (an access IP EDF moved away). Sessions on listed portals stay.
  /// Succeeds when none is left; loop: nothing to do.
  virtual boost::asio::awaitable<Status> prune(const Target& target) = 0;
  /// Makes the kernel re-read the size of the target's LUN after the array grew it (SCSI rescan,
  /// or the loop device's capacity). No session: an Error.
  virtual boost::asio::awaitable<Status> refresh(const Target& target) = 0;
  /// Every session/attachment on this host that belongs to this initiator kind (for reconcile).
  virtual boost::asio::awaitable<Result<std::vector<Session>>> sessions() = 0;
};

using InitiatorPtr = std::unique_ptr<Initiator>;

}  // namespace datera::initiator

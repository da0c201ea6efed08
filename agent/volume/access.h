#pragma once

// How this node gains the right to use a volume, and gives it back: the one difference between
// the two modes of the volume core.
// - LeaseAccess (agent mode, attach: false): the ownership lease on the array (agent/ownership),
//   then this node alone in the volume's ACL; giving back leaves the ACL, releases the lease and
//   applies the retain policy.
// - GrantAccess (controller mode, attach: true): the attach-detach controller already wrote the
//   grant (ownership record and ACL, agent/controller); this node only checks that it names it, and
//   gives nothing back (detach does).

#include <chrono>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "agent/ownership/lease.h"
#include "agent/volume/array.h"
#include "agent/volume/journal.h"
#include "agent/volume/metrics.h"
#include "agent/volume/step.h"
#include "base/logging.h"

namespace datera::volume {

/// The ownership lease of one volume, in its app instance's metadata; fencing = leaving the ACL.
class ArrayStore final : public ownership::Store {
 public:
  explicit ArrayStore(Array& array) : array_(array) {}
  boost::asio::awaitable<Result<ownership::Lease>> read(const std::string& volume) override;
  boost::asio::awaitable<Status> write(const std::string& volume,
                                       const edf::Metadata& keys) override;
  boost::asio::awaitable<Status> fence(const std::string& volume, const std::string& iqn) override;

 private:
  Array& array_;
};

/// What the policies need (all owned by the composition root, through the Manager).
struct AccessContext {
  std::string node_name;
  std::chrono::milliseconds online_timeout;
  Arrays& arrays;
  Journal& journal;
  Metrics& probe;
  LoggerPtr log;
  ownership::Coordinator* coordinator = nullptr;  ///< agent mode; null: no leases
};

class AccessPolicy {
 public:
  virtual ~AccessPolicy() = default;
  /// Before login, with rec.initiator_iqn journaled: makes the volume reachable by this node
  /// (journaling what a release must undo before it is done), or fails at claim, grant, array,
  /// initiator or verify. Yields where the array exports the volume. `spec`: the volume as its
  /// options describe it; `op` labels the step timers.
  virtual boost::asio::awaitable<VolumeResult<edf::AppInstance>> gain(Record& rec, Array& array,
                                                                      const edf::VolumeSpec& spec,
                                                                      Operation op) = 0;
  /// After logout: gives back what gain() took; `served`: the volume's pods used it here, so its
  /// retain policy applies. Fails at the release step.
  virtual boost::asio::awaitable<VolumeStatus> give_back(Record& rec, Operation op,
                                                         bool served) = 0;
  /// Whether this node may delete the volume by its retain policy (journaled with the record).
  virtual bool applies_retain_policy() const = 0;
};

std::unique_ptr<AccessPolicy> make_lease_access(AccessContext context);
std::unique_ptr<AccessPolicy> make_grant_access(AccessContext context);

}  // namespace datera::volume

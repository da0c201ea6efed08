#pragma once

// The controller's grants, protocol-neutral: which node may use a volume, written on the array.
// FlexVolume's attach/detach/isattached (attacher.h) and CSI's ControllerPublishVolume/
// ControllerUnpublishVolume (agent/csi) both answer through this; nothing here knows either.
//
// grant: the node's IQN, found by the initiator name the node's agent registered at start-up
// (edf::initiator_name_for_node); then the ownership lease (agent/ownership's record) is written
// naming the node at the next epoch, every other initiator is removed from the ACL, the node's is
// added, and the volume brought online. A volume another node holds is refused: Kubernetes
// detaches before attaching elsewhere (also when it force-detaches a node it gave up on, whose
// agent then self-fences on seeing its grant gone), so a second holder could only be a
// multi-attach, which one filesystem cannot serve. A retried grant to the same node keeps its
// epoch.
//
// revoke: the node leaves the ACL and, when it holds the lease, the lease is cleared (its epoch
// kept, so the next grant goes on from there). Revoking what is not granted succeeds.
//
// The array and its credentials are the caller's (parsed with the same rules as the node side:
// the agent's credentials only ever go to its own array). Serialized per volume.

#include <chrono>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "agent/controller/metrics.h"
#include "agent/volume/array.h"
#include "agent/volume/keyed_mutex.h"
#include "base/logging.h"
#include "plugins/edf/options.h"

namespace datera::controller {

inline constexpr const char* kPvKey = "datera-agent.pv";

struct GrantOptions {
  edf::BackendTarget default_backend;
  std::vector<std::string> allowed_servers;  ///< backend.allowed_servers
  std::chrono::milliseconds online_timeout{120'000};
};

/// A grant as written: the node's IQN, at which epoch.
struct Grant {
  std::string iqn;
  uint64_t epoch = 0;
};

class Grants {
 public:
  Grants(GrantOptions options, volume::Arrays& arrays, Metrics& metrics, LoggerPtr log);

  /// Grants `node` the volume. `create`: make the app instance from the options when absent
  /// (FlexVolume's attach); false: a missing one is an error the array reports as not found.
  /// `pv`: recorded in the metadata (kPvKey) for a detach that knows only the PV name.
  /// Errors read "attach of volume <v> to node <n> failed at <step>: <why>".
  boost::asio::awaitable<Result<Grant>> grant(const edf::VolumeOptions& volume,
                                              const std::string& node, const std::string& pv,
                                              bool create);
  /// Takes the volume (an app instance name on `backend`) from `node`. `what`: how the caller
  /// names it in messages ("detach of pv-1 from node n").
  boost::asio::awaitable<Status> revoke(const edf::BackendTarget& backend,
                                        const std::string& volume, const std::string& node,
                                        const std::string& what);
  /// Whether the ownership record names `node` and its IQN is in the ACL; false when the array has
  /// no such volume.
  boost::asio::awaitable<Result<bool>> granted(const edf::BackendTarget& backend,
                                               const std::string& volume, const std::string& node);
  /// The app instance a PV name stands for; "" when the array has none.
  boost::asio::awaitable<Result<std::string>> volume_of_pv(volume::Array& array,
                                                           const std::string& pv);
  /// The IQN the node's agent registered on `array`.
  boost::asio::awaitable<Result<std::string>> node_iqn(volume::Array& array,
                                                       const std::string& node);

  const GrantOptions& options() const { return options_; }
  volume::Arrays& arrays() { return arrays_; }

 private:
  GrantOptions options_;
  volume::Arrays& arrays_;
  Metrics& metrics_;
  LoggerPtr log_;
  volume::KeyedMutex locks_;
};

/// A Kubernetes node name, checked (the controller writes it into the array's metadata).
Status check_node(const std::string& node);

}  // namespace datera::controller

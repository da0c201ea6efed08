#pragma once

// Controller mode (`attach: true`): the attach-detach controller in kube-controller-manager calls
// `attach <options> <node>`, `isattached <options> <node>` and `detach <pv> <node>` through the
// driver on the control plane; this answers them by granting and revoking the node's access on the
// array. The node's own agent then logs in (waitforattach), stages the filesystem (mountdevice) and
// binds it into pods (mount); see agent/volume/manager.h.
//
// attach: the app instance (created from the options on first use); the node's IQN, found by the
// initiator name the node's agent registered at start-up (edf::initiator_name_for_node); then the
// ownership lease (agent/ownership's record) is written naming the node at the next epoch, every
// other initiator is removed from the ACL, the node's is added, and the volume brought online.
// A volume another node holds is refused: Kubernetes detaches before attaching elsewhere (also
// when it force-detaches a node it gave up on, whose agent then self-fences on seeing its grant
// gone), so a second holder could only be a multi-attach, which one filesystem cannot serve.
//
// detach: gets only the PV name (kubelet's GetVolumeName), so the app instance is the one named
// after the PV, or the one whose metadata records that PV (`datera-agent.pv`, written by attach).
// The node leaves the ACL and, when it holds the lease, the lease is cleared. Detaching what is
// not attached succeeds (Kubernetes retries everything).
//
// Kubernetes passes no secrets to these calls: the array and its credentials are the agent's
// `backend`, or a server in backend.allowed_servers named by backstoreServer with the volume's own
// serverUser/serverPasswd (the same rules as the node side: the agent's credentials only ever go
// to its own array). Serialized per volume.

#include <string>

#include <boost/asio/awaitable.hpp>

#include "agent/controller/metrics.h"
#include "agent/flexvolume/service.h"
#include "agent/volume/array.h"
#include "agent/volume/keyed_mutex.h"
#include "base/logging.h"
#include "plugins/edf/options.h"

namespace datera::controller {

inline constexpr const char* kPvKey = "datera-agent.pv";

struct AttacherOptions {
  edf::BackendTarget default_backend;
  std::vector<std::string> allowed_servers;  ///< backend.allowed_servers
  std::chrono::milliseconds online_timeout{120'000};
};

class Attacher : public flexvolume::ControllerOps {
 public:
  Attacher(AttacherOptions options, volume::Arrays& arrays, Metrics& probe, LoggerPtr log);

  boost::asio::awaitable<flex::Json> attach(const flex::Request& request) override;
  boost::asio::awaitable<flex::Json> detach(const flex::Request& request) override;
  boost::asio::awaitable<flex::Json> isattached(const flex::Request& request) override;

 private:
  boost::asio::awaitable<Result<std::string>> do_attach(const flex::Request& request);
  boost::asio::awaitable<Status> do_detach(const flex::Request& request);
  boost::asio::awaitable<Result<bool>> do_isattached(const flex::Request& request);
  /// The IQN the node's agent registered on `array`.
  boost::asio::awaitable<Result<std::string>> node_iqn(volume::Array& array,
                                                       const std::string& node);
  /// The app instance a PV name stands for; "" when the array has none.
  boost::asio::awaitable<Result<std::string>> volume_of_pv(volume::Array& array,
                                                           const std::string& pv);

  AttacherOptions options_;
  volume::Arrays& arrays_;
  Metrics& metrics_;
  LoggerPtr log_;
  volume::KeyedMutex locks_;
};

}  // namespace datera::controller

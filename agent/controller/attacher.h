#pragma once

// Controller mode (`attach: true`): the attach-detach controller in kube-controller-manager calls
// `attach <options> <node>`, `isattached <options> <node>` and `detach <pv> <node>` through the
// driver on the control plane; this adapter answers them by granting and revoking the node's access
// on the array (grants.h, shared with CSI's ControllerPublishVolume). The node's own agent then
// logs in (waitforattach), stages the filesystem (mountdevice) and binds it into pods (mount); see
// agent/volume/manager.h.
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

#include "agent/controller/grants.h"
#include "agent/controller/metrics.h"
#include "agent/flexvolume/service.h"
#include "base/logging.h"

namespace datera::controller {

/// FlexVolume's controller calls, answered through Grants.
class Attacher : public flexvolume::ControllerOps {
 public:
  Attacher(Grants& grants, Metrics& metrics, LoggerPtr log);

  boost::asio::awaitable<flex::Json> attach(const flex::Request& request) override;
  boost::asio::awaitable<flex::Json> detach(const flex::Request& request) override;
  boost::asio::awaitable<flex::Json> isattached(const flex::Request& request) override;

 private:
  boost::asio::awaitable<Result<std::string>> do_attach(const flex::Request& request);
  boost::asio::awaitable<Status> do_detach(const flex::Request& request);
  boost::asio::awaitable<Result<bool>> do_isattached(const flex::Request& request);

  Grants& grants_;
  Metrics& metrics_;
  LoggerPtr log_;
};

}  // namespace datera::controller

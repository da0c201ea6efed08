#pragma once

// CSI Identity: the driver's name and version, what it offers (the controller service when this
// agent serves it, online expansion, volume accessibility is not constrained), and readiness:
// Probe answers ready only once start-up reconcile has run (the node's volumes are known).

#include <functional>
#include <string>

#include "agent/csi/handlers.h"

namespace datera::csi {

struct IdentityOptions {
  std::string driver_name = "agent.iscsi.datera.io";
  std::string version;
  bool controller = false;  ///< advertise CONTROLLER_SERVICE
};

class Identity final : public IdentityHandler {
 public:
  Identity(IdentityOptions options, std::function<bool()> ready)
      : options_(std::move(options)), ready_(std::move(ready)) {}

  Task<Status> get_plugin_info(const pb::GetPluginInfoRequest& req,
                               pb::GetPluginInfoResponse& resp) override;
  Task<Status> get_plugin_capabilities(const pb::GetPluginCapabilitiesRequest& req,
                                       pb::GetPluginCapabilitiesResponse& resp) override;
  Task<Status> probe(const pb::ProbeRequest& req, pb::ProbeResponse& resp) override;

 private:
  IdentityOptions options_;
  std::function<bool()> ready_;
};

}  // namespace datera::csi

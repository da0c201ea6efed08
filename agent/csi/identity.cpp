#include "agent/csi/identity.h"

namespace datera::csi {

Task<Status> Identity::get_plugin_info(const pb::GetPluginInfoRequest&,
                                       pb::GetPluginInfoResponse& resp) {
  resp.set_name(options_.driver_name);
  resp.set_vendor_version(options_.version);
  co_return Status::OK;
}

Task<Status> Identity::get_plugin_capabilities(const pb::GetPluginCapabilitiesRequest&,
                                               pb::GetPluginCapabilitiesResponse& resp) {
  using S = pb::PluginCapability::Service;
  if (options_.controller) {
    resp.add_capabilities()->mutable_service()->set_type(S::CONTROLLER_SERVICE);
  }
  resp.add_capabilities()->mutable_volume_expansion()->set_type(
      pb::PluginCapability::VolumeExpansion::ONLINE);
  co_return Status::OK;
}

Task<Status> Identity::probe(const pb::ProbeRequest&, pb::ProbeResponse& resp) {
  resp.mutable_ready()->set_value(ready_ && ready_());
  co_return Status::OK;
}

}  // namespace datera::csi

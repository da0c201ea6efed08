#pragma once

// FlexVolume in front of the volume core (agent/volume): kubelet's argv and options become the
// core's typed requests, and its results kubelet's reply (Success or Failure with the message,
// "device", "volumeNewSize"), each call counted in the volume metrics (operations, and failures by
// step). The core knows nothing of FlexVolume; a CSI front end calls the same verbs.
//
// attach: false: mount = publish with a StageRequest (claim, stage, bind under one lock); unmount =
// unpublish. attach: true: waitforattach and mountdevice = stage, mount = publish of what is
// staged, unmount = unpublish, unmountdevice = unstage.

#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "agent/flexvolume/service.h"
#include "agent/volume/manager.h"
#include "base/result.h"
#include "plugins/flex/protocol.h"

namespace datera::flexvolume {

class VolumeAdapter final : public VolumeOps {
 public:
  VolumeAdapter(volume::Manager& core, volume::Metrics& probe) : core_(core), metrics_(probe) {}

  boost::asio::awaitable<flex::Json> mount(const flex::Request& request) override;
  boost::asio::awaitable<flex::Json> unmount(const flex::Request& request) override;
  boost::asio::awaitable<flex::Json> expand(const flex::Request& request) override;
  boost::asio::awaitable<flex::Json> waitforattach(const flex::Request& request) override;
  boost::asio::awaitable<flex::Json> mountdevice(const flex::Request& request) override;
  boost::asio::awaitable<flex::Json> unmountdevice(const flex::Request& request) override;

 private:
  /// FlexVolume's mode, as configured (attach: true: the controller grants, kubelet stages).
  volume::Mode mode() const {
    return core_.options().controller_attach ? volume::Mode::controller : volume::Mode::agent;
  }
  /// Counts the call and turns its outcome into kubelet's reply (Success, or Failure with the
  /// error's message); callers add their reply fields.
  template <typename T>
  flex::Json answer(volume::Operation op, const volume::VolumeResult<T>& outcome);
  volume::VolumeResult<volume::PublishRequest> publish_request(const flex::Request& r) const;
  volume::VolumeResult<volume::StageRequest> stage_request(const flex::Request& r,
                                                           bool filesystem) const;
  volume::VolumeResult<volume::ExpandRequest> expand_request(const flex::Request& r) const;
  Result<edf::VolumeOptions> volume_options(const flex::Json& options) const;

  volume::Manager& core_;
  volume::Metrics& metrics_;
};

/// The `mountOptions` option ("noatime,discard"; kubelet passes no mount options to FlexVolume
/// drivers), checked against the mounter's allow-list for `fs_type`.
Result<std::vector<std::string>> mount_options_of(const flex::Json& options,
                                                  const std::string& fs_type);

}  // namespace datera::flexvolume

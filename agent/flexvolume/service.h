#pragma once

// Answers FlexVolume calls forwarded by the shim. Every call gets exactly one reply object and is
// bounded by call_timeout. An operation still running at the deadline is not cancelled: it
// finishes on its own (under its volume's lock) and kubelet's retry finds the result. Volume
// operations go to the VolumeOps the composition root wires in; attach, detach and isattached go
// to the ControllerOps. Calls of the other mode than the configured one (`attach`) answer Failure,
// never "Not supported" (kubelet caches that answer until the driver is re-probed).
//
// Runs on the agent's event loop; calls for different volumes may be in flight at once.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "agent/flexvolume/metrics.h"
#include "base/logging.h"
#include "plugins/flex/protocol.h"

namespace datera::volume {
class Manager;
}

namespace datera::flexvolume {

class VolumeAdapter;

struct ServiceOptions {
  std::string driver_name = "datera/iscsi";
  /// What `init` answers; capabilities.attach also selects controller mode: attach/detach/
  /// isattached, waitforattach, mountdevice and unmountdevice are served, else only mount and
  /// unmount do volume work.
  flex::Json capabilities;
  std::chrono::milliseconds call_timeout{600'000};
};

struct CallCounts {
  uint64_t total = 0;
  uint64_t failed = 0;
  uint64_t in_flight = 0;
};

/// The volume manager, as the service sees it.
class VolumeOps {
 public:
  virtual ~VolumeOps() = default;
  virtual boost::asio::awaitable<flex::Json> mount(const flex::Request& request) = 0;
  virtual boost::asio::awaitable<flex::Json> unmount(const flex::Request& request) = 0;
  /// expandvolume (grow on the array) and expandfs (also rescan and grow the filesystem).
  virtual boost::asio::awaitable<flex::Json> expand(const flex::Request& request) = 0;
  // Controller mode, on the node: log in to an attached volume, stage it, unstage it.
  virtual boost::asio::awaitable<flex::Json> waitforattach(const flex::Request& request) = 0;
  virtual boost::asio::awaitable<flex::Json> mountdevice(const flex::Request& request) = 0;
  virtual boost::asio::awaitable<flex::Json> unmountdevice(const flex::Request& request) = 0;
};

/// Controller mode, where kube-controller-manager calls: grant and revoke a node's access.
class ControllerOps {
 public:
  virtual ~ControllerOps() = default;
  virtual boost::asio::awaitable<flex::Json> attach(const flex::Request& request) = 0;
  virtual boost::asio::awaitable<flex::Json> detach(const flex::Request& request) = 0;
  virtual boost::asio::awaitable<flex::Json> isattached(const flex::Request& request) = 0;
};

class Service {
 public:
  Service(ServiceOptions options, Metrics& probe, LoggerPtr log);
  ~Service();

  /// Always yields a reply object with an exact FlexVolume status.
  boost::asio::awaitable<flex::Json> call(flex::Request request);

  const CallCounts& counts() const { return counts_; }
  /// Wires the volume manager (the composition root does it before serving).
  void set_volume_ops(VolumeOps* ops) { volumes_ = ops; }
  /// Serves volume calls from the volume core, through this protocol's adapter (VolumeAdapter).
  void set_volume_ops(volume::Manager* core);
  void set_controller_ops(ControllerOps* ops) { controller_ = ops; }

 private:
  boost::asio::awaitable<flex::Json> dispatch(const flex::Request& request);
  /// dispatch() with the request kept in its own frame (it outlives the call that started it).
  boost::asio::awaitable<flex::Json> dispatch_owned(flex::Request request);
  flex::Json get_volume_name(const flex::Request& request) const;

  ServiceOptions options_;
  Metrics& metrics_;
  LoggerPtr log_;
  CallCounts counts_;
  VolumeOps* volumes_ = nullptr;
  std::unique_ptr<VolumeAdapter> adapter_;  ///< set_volume_ops(core)
  ControllerOps* controller_ = nullptr;
};

/// The volume a request is about, for logs and messages: volumeID option, PV name, or a path.
std::string volume_of(const flex::Request& request);

}  // namespace datera::flexvolume

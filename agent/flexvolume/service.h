#pragma once

// Answers FlexVolume calls forwarded by the shim. Every call gets exactly one reply object and is
// bounded by call_timeout. Volume operations (mount, unmount, expand) arrive with the volume
// manager; until then they answer Failure with a message that says so, never "Not supported"
// (kubelet caches that answer until the driver is re-probed).
//
// Runs on the agent's event loop; calls for different volumes may be in flight at once.

#include <chrono>
#include <cstdint>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "agent/common/logging.h"
#include "agent/flexvolume/probe.h"
#include "plugins/flexvolume/protocol.h"

namespace datera::flexvolume {

struct ServiceOptions {
  std::string driver_name = "datera/iscsi";
  flex::Json capabilities;
  std::chrono::milliseconds call_timeout{600'000};
};

struct CallCounts {
  uint64_t total = 0;
  uint64_t failed = 0;
  uint64_t in_flight = 0;
};

class Service {
 public:
  Service(ServiceOptions options, Probe& probe, LoggerPtr log);

  /// Always yields a reply object with an exact FlexVolume status.
  boost::asio::awaitable<flex::Json> call(flex::Request request);

  const CallCounts& counts() const { return counts_; }

 private:
  boost::asio::awaitable<flex::Json> dispatch(const flex::Request& request);
  flex::Json get_volume_name(const flex::Request& request) const;

  ServiceOptions options_;
  Probe& probe_;
  LoggerPtr log_;
  CallCounts counts_;
};

/// The volume a request is about, for logs and messages: volumeID option, PV name, or a path.
std::string volume_of(const flex::Request& request);

}  // namespace datera::flexvolume

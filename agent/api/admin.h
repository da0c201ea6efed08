#pragma once

// The operator's side of the API: the documents behind GET /v1/status and /v1/volumes, and the
// release and drain requests, over the volume manager, the session keeper and readiness. What
// status reports of parts the composition root owns (installer, servers, array monitor) comes
// through StatusFacts, so this adapter depends on none of them.

#include <chrono>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/api/router.h"
#include "agent/flexvolume/service.h"
#include "agent/keeper/keeper.h"
#include "agent/volume/manager.h"
#include "base/result.h"
#include "metrics/readiness.h"

namespace datera::api {

/// The node's settings and the live state of the root's parts, as /v1/status shows them.
struct StatusFacts {
  std::string node;
  bool attach = false;
  std::string initiator;  ///< initiator.kind as written in the config
  std::chrono::milliseconds io_hold{0};
  std::string kubelet_root;
  std::string plugin_dir;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::function<Result<std::string>()> initiator_iqn;
  std::function<bool()> multipath_maps;     ///< volumes mount on dm-multipath maps
  std::function<bool()> multipathd;         ///< multipathd runs on this node (seen at start-up)
  std::function<nlohmann::json()> driver;   ///< the installer's state
  std::function<nlohmann::json()> api;      ///< the API server: socket, connections, in_flight
  std::function<nlohmann::json()> backend;  ///< the default array's monitor, or not configured
};

class Admin : public StatusSource, public Maintenance {
 public:
  /// Volume calls (and so release and drain) are served once readiness's "volumes" condition is
  /// true: the start-up reconcile sets it.
  Admin(StatusFacts facts, const metrics::Readiness& readiness, const flexvolume::Service& flex,
        volume::Manager& volumes, const keeper::Keeper& keeper);

  nlohmann::json status() override;
  nlohmann::json volumes() override;
  boost::asio::awaitable<nlohmann::json> release(std::string volume, bool force) override;
  boost::asio::awaitable<nlohmann::json> drain(bool force) override;

 private:
  bool volumes_served() const { return readiness_.is("volumes"); }

  StatusFacts facts_;
  const metrics::Readiness& readiness_;
  const flexvolume::Service& flex_;
  volume::Manager& volumes_;
  const keeper::Keeper& keeper_;
};

}  // namespace datera::api

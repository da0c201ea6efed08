#include "agent/api/admin.h"

#include <unistd.h>

#include "base/version.h"

namespace datera::api {

Admin::Admin(StatusFacts facts, const metrics::Readiness& readiness,
             const flexvolume::Service& flex, volume::Manager& volumes,
             const keeper::Keeper& keeper)
    : facts_(std::move(facts)),
      readiness_(readiness),
      flex_(flex),
      volumes_(volumes),
      keeper_(keeper) {}

nlohmann::json Admin::status() {
  const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::steady_clock::now() - facts_.started);
  const auto& counts = flex_.counts();
  // What the agent logs in with: initiator.iqn, or the host's initiatorname.iscsi.
  const Result<std::string> iqn = facts_.initiator_iqn();
  return {{"version", version::kVersion},
          {"commit", version::kGitCommit},
          {"protocol", version::kProtocol},
          {"node", facts_.node},
          {"attach", facts_.attach},
          {"initiator", facts_.initiator},
          {"multipath",
           {{"maps", facts_.multipath_maps()},
            {"multipathd", facts_.multipathd()},
            {"io_hold_seconds", std::chrono::duration<double>(facts_.io_hold).count()}}},
          {"initiator_iqn", iqn ? nlohmann::json(*iqn) : nlohmann::json(nullptr)},
          {"initiator_iqn_error", iqn ? std::string() : iqn.error().message},
          {"kubelet_root", facts_.kubelet_root},
          {"plugin_dir", facts_.plugin_dir},
          {"pid", ::getpid()},
          {"uptime_seconds", uptime.count()},
          {"ready", readiness_.ready()},
          {"readiness", readiness_.to_json()["conditions"]},
          {"driver", facts_.driver()},
          {"api", facts_.api()},
          {"backend", facts_.backend()},
          {"flexvolume",
           {{"calls_total", counts.total},
            {"calls_failed", counts.failed},
            {"calls_in_flight", counts.in_flight}}}};
}

nlohmann::json Admin::volumes() {
  auto list = volumes_.volumes();
  for (auto& v : list) v["session"] = keeper_.state(v.value("volume", ""));
  return {{"volumes", list}};
}

boost::asio::awaitable<nlohmann::json> Admin::release(std::string volume, bool force) {
  if (!volumes_served()) {
    co_return nlohmann::json{{"volume", volume},
                             {"result", "failed"},
                             {"message",
                              "the agent is still starting (reconciling its journal "
                              "with sessions and mounts); retry in a moment"},
                             {"pods", nlohmann::json::array()}};
  }
  auto done = co_await volumes_.give_up(std::move(volume), force);
  co_return done.to_json();
}

boost::asio::awaitable<nlohmann::json> Admin::drain(bool force) {
  nlohmann::json out = nlohmann::json::array();
  if (!volumes_served()) {
    out.push_back(co_await release("", force));
    co_return out;
  }
  auto all = co_await volumes_.drain(force);
  for (const auto& one : all) out.push_back(one.to_json());
  co_return out;
}

}  // namespace datera::api

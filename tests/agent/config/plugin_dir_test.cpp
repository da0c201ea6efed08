// Everything the agent puts into kubelet's FlexVolume plugin dir, checked against kubelet's
// dynamic prober (Kubernetes' pkg/volume/flexvolume/probe.go, which watches the plugin dir):
// no file the agent or its installer creates may
// make kubelet (or kube-controller-manager, which runs the same prober) queue anything but the
// agent's own driver dir. A queued dir that is not a driver fails its `init` and is re-probed and
// logged on every plugin lookup.

#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/config/config.h"

namespace datera::config {
namespace {

/// kubelet's rule for one fsnotify event on `path` (a file or dir created, removed or renamed
/// under the plugin dir): the driver dir it queues for a probe, or nullopt when it ignores it.
///  - an event whose own base name starts with '.' is ignored;
///  - otherwise the first path component under the plugin dir is queued as a driver dir.
/// Events only arrive from watched dirs: every dir that existed when kubelet started (dot-dirs
/// included), and dirs created later whose name does not start with '.'.
std::optional<std::string> kubelet_queues(const std::string& plugin_dir, const std::string& path) {
  if (path.size() <= plugin_dir.size() + 1 || path.compare(0, plugin_dir.size(), plugin_dir) != 0 ||
      path[plugin_dir.size()] != '/') {
    return std::nullopt;  // not under the plugin dir: not watched at all
  }
  const std::string rel = path.substr(plugin_dir.size() + 1);
  const std::string base = rel.substr(rel.find_last_of('/') + 1);
  if (base.empty() || base[0] == '.') return std::nullopt;
  return rel.substr(0, rel.find('/'));
}

/// One thing the agent creates. `fresh`: always made anew (any old one removed first), so an
/// inotify watch kubelet placed on an earlier one is gone with it.
struct Created {
  std::string path;
  bool is_dir = false;
  bool fresh = false;
};

/// Every path the agent (API socket) and its installer (agent/installer/installer.{h,cpp}: first
/// install through a hidden staging dir, updates through a hidden staged file, both renamed into
/// place) create in or under the plugin dir.
std::vector<Created> agent_creates(const Config& cfg) {
  const std::string pid = "1";  // a container's agent is often pid 1: names repeat across runs
  const std::string driver_dir = cfg.plugin_dir + "/" + cfg.driver.driver_dir_name();
  const std::string staging = cfg.plugin_dir + "/." + cfg.driver.driver_dir_name() + ".tmp-" + pid;
  std::vector<Created> out = {
      {staging, true, true},
      {staging + "/.datera-agent.json"},
      {staging + "/" + cfg.driver.driver},
      {driver_dir, true, false},  // the staging dir renamed into place
      {driver_dir + "/.datera-agent.json"},
      {driver_dir + "/." + cfg.driver.driver + ".new-" + pid},
      {driver_dir + "/" + cfg.driver.driver},  // the staged file renamed into place
  };
  // The socket, and any dir the agent creates for it.
  for (std::string dir = cfg.socket_path.substr(0, cfg.socket_path.find_last_of('/'));
       dir.size() > cfg.plugin_dir.size(); dir = dir.substr(0, dir.find_last_of('/'))) {
    out.push_back({dir, true, false});
  }
  out.push_back({cfg.socket_path});
  return out;
}

/// What kubelet would queue, worst case: it started after an earlier run of the agent, so every
/// dir that run left (and that is not made afresh) is watched.
std::vector<std::string> queued_by(const Config& cfg) {
  const auto created = agent_creates(cfg);
  auto watched = [&](const std::string& dir) {
    if (dir == cfg.plugin_dir) return true;
    for (const auto& c : created) {
      if (c.path != dir) continue;
      const std::string base = dir.substr(dir.find_last_of('/') + 1);
      return !c.fresh || base[0] != '.';  // left from before, or a non-dot dir watched on create
    }
    return true;  // not the agent's: assume it existed at kubelet's start
  };
  std::vector<std::string> queued;
  for (const auto& c : created) {
    if (!watched(c.path.substr(0, c.path.find_last_of('/')))) continue;
    if (auto d = kubelet_queues(cfg.plugin_dir, c.path)) queued.push_back(c.path + " -> " + *d);
  }
  return queued;
}

TEST(KubeletProberRule, AsTheReferenceDescribesIt) {
  const std::string p = "/plugins";
  EXPECT_EQ(kubelet_queues(p, "/plugins/datera~iscsi"), "datera~iscsi");
  EXPECT_EQ(kubelet_queues(p, "/plugins/datera~iscsi/iscsi"), "datera~iscsi");
  EXPECT_EQ(kubelet_queues(p, "/plugins/datera~iscsi/.datera-agent.json"), std::nullopt);
  EXPECT_EQ(kubelet_queues(p, "/plugins/.datera-agent.sock"), std::nullopt);
  // The reference's own example: a file in a dot-dir queues the dot-dir.
  EXPECT_EQ(kubelet_queues(p, "/plugins/.x/agent.sock"), ".x");
  EXPECT_EQ(kubelet_queues(p, "/plugins/.x"), std::nullopt);
  EXPECT_EQ(kubelet_queues(p, "/run/datera-agent/agent.sock"), std::nullopt);
}

TEST(KubeletProberRule, NothingTheAgentCreatesQueuesAnythingButItsDriver) {
  const auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "DATERA_AGENT_BACKEND_PASSWORD") return "p";
    return std::nullopt;
  };
  for (const char* yaml :
       {"", "attach: true\nbackend: {server: 10.0.0.1, username: u}\n",
        "plugin_dir: /var/lib/kubelet/volumeplugins\n",
        "plugin_dir: /var/lib/kubelet/volumeplugins\nattach: true\n"
        "backend: {server: 10.0.0.1, username: u}\ndriver: {vendor: acme, driver: blk}\n"}) {
    auto cfg = parse(yaml, env, "n1");
    ASSERT_TRUE(cfg.ok()) << yaml << cfg.error().message;
    for (const auto& q : queued_by(*cfg)) {
      EXPECT_EQ(q.substr(q.rfind(" -> ") + 4), cfg->driver.driver_dir_name())
          << "kubelet would probe a non-driver dir: " << q << " (config: " << yaml << ")";
    }
  }
}

TEST(KubeletProberRule, ControllerModeSocketIsADotFileInThePluginDirItself) {
  auto cfg = parse(
      "attach: true\nbackend: {server: 10.0.0.1, username: u}\n",
      [](const std::string& n) -> std::optional<std::string> {
        if (n == "DATERA_AGENT_BACKEND_PASSWORD") return "p";
        return std::nullopt;
      },
      "n1");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->socket_path, cfg->plugin_dir + "/.datera-agent.sock");
}

}  // namespace
}  // namespace datera::config

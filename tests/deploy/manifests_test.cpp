// The deployment files must describe the agent that the code builds: the config they embed must
// parse, and the ports, paths and probes they name must be the ones the agent really uses.

#include <dirent.h>
#include <fstream>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "agent/common/duration.h"
#include "agent/common/fs.h"
#include "agent/config/config.h"
#include "metrics/endpoints.h"

namespace datera::deploy {
namespace {

const std::string kDir = std::string(DATERA_SOURCE_DIR) + "/daemonset";

std::string slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> yaml_files(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > 5 && n.ends_with(".yaml")) out.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

config::EnvLookup node_env() {
  return [](const std::string& k) -> std::optional<std::string> {
    if (k == "NODE_NAME") return "node-from-downward-api";
    return std::nullopt;
  };
}

/// Every mismatch between a DaemonSet document and the agent config it runs with.
std::vector<std::string> check_daemonset(const YAML::Node& ds, const config::Config& cfg,
                                         const std::string& configmap_name) {
  std::vector<std::string> problems;
  auto fail = [&](const std::string& p) { problems.push_back(p); };
  const auto spec = ds["spec"]["template"]["spec"];
  const auto containers = spec["containers"];
  if (!containers || containers.size() != 1) {
    fail("expected exactly one container");
    return problems;
  }
  const auto c = containers[0];
  if (!c["securityContext"]["privileged"] || !c["securityContext"]["privileged"].as<bool>()) {
    fail("container is not privileged");
  }
  // Port and probes.
  int port = -1;
  for (const auto& p : c["ports"]) {
    if (p["name"].as<std::string>("") == "metrics") port = p["containerPort"].as<int>();
  }
  if (port != cfg.metrics.port) {
    fail("containerPort 'metrics' is " + std::to_string(port) + ", agent listens on " +
         std::to_string(cfg.metrics.port));
  }
  auto check_probe = [&](const char* name, const char* path) {
    const auto probe = c[name]["httpGet"];
    if (!probe) return fail(std::string(name) + " missing");
    if (probe["path"].as<std::string>("") != path) fail(std::string(name) + " path is not " + path);
    const auto p = probe["port"].as<std::string>("");
    if (p != "metrics" && p != std::to_string(cfg.metrics.port)) {
      fail(std::string(name) + " port " + p + " is not the metrics port");
    }
  };
  check_probe("livenessProbe", metrics::kHealthPath);
  check_probe("readinessProbe", metrics::kReadyPath);
  // NODE_NAME from the downward API.
  bool node_env_ok = false;
  for (const auto& e : c["env"]) {
    if (e["name"].as<std::string>("") == "NODE_NAME" &&
        e["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>("") == "spec.nodeName") {
      node_env_ok = true;
    }
  }
  if (!node_env_ok) fail("NODE_NAME is not taken from spec.nodeName");
  // Volumes: names, hostPaths, mounts.
  std::map<std::string, YAML::Node> volumes;
  for (const auto& v : spec["volumes"]) {
    volumes.insert_or_assign(v["name"].as<std::string>(), static_cast<const YAML::Node&>(v));
  }
  std::map<std::string, YAML::Node> mount_at;  // container path -> mount
  for (const auto& m : c["volumeMounts"]) {
    const auto name = m["name"].as<std::string>();
    if (!volumes.contains(name)) fail("volumeMount " + name + " names no volume");
    mount_at.insert_or_assign(m["mountPath"].as<std::string>(), static_cast<const YAML::Node&>(m));
  }
  auto host_mount = [&](const std::string& path, const std::string& what, bool bidirectional) {
    const auto it = mount_at.find(path);
    if (it == mount_at.end()) return fail(what + " " + path + " is not mounted in the container");
    const auto vol = volumes[it->second["name"].as<std::string>()];
    if (vol["hostPath"]["path"].as<std::string>("") != path) {
      fail(what + " " + path + " is not the same hostPath");
    }
    if (bidirectional && it->second["mountPropagation"].as<std::string>("") != "Bidirectional") {
      fail(what + " " + path + " needs mountPropagation Bidirectional");
    }
  };
  host_mount(cfg.plugin_dir, "plugin_dir", false);
  host_mount(cfg.state_dir, "state_dir", false);
  host_mount(fs::dirname(cfg.socket_path), "socket dir", false);
  host_mount(cfg.kubelet_root, "kubelet_root", true);
  // The ConfigMap is mounted where --config points.
  std::string config_path;
  const auto args = c["args"];
  for (size_t i = 0; args && i + 1 < args.size(); ++i) {
    if (args[i].as<std::string>() == "--config") config_path = args[i + 1].as<std::string>();
  }
  if (config_path.empty()) {
    fail("container args do not pass --config");
  } else {
    const auto it = mount_at.find(fs::dirname(config_path));
    if (it == mount_at.end() ||
        volumes[it->second["name"].as<std::string>()]["configMap"]["name"].as<std::string>("") !=
            configmap_name) {
      fail("ConfigMap " + configmap_name + " is not mounted at " + fs::dirname(config_path));
    }
  }
  const auto grace = spec["terminationGracePeriodSeconds"].as<long long>(30);
  if (grace * 1000 <= cfg.shutdown_grace.count()) {
    fail("terminationGracePeriodSeconds " + std::to_string(grace) + " is not above shutdown_grace");
  }
  if (!spec["hostNetwork"].as<bool>(false))
    fail("hostNetwork is off (iscsid lives in the host netns)");
  return problems;
}

struct Manifests {
  std::map<std::string, YAML::Node> by_kind;
  std::string configmap_name;
  config::Config cfg;
};

Manifests load() {
  Manifests m;
  for (const auto& f : yaml_files(kDir)) {
    for (const auto& doc : YAML::LoadAllFromFile(kDir + "/" + f)) {
      if (doc["kind"]) m.by_kind.insert_or_assign(doc["kind"].as<std::string>(), doc);
    }
  }
  const auto cm = m.by_kind["ConfigMap"];
  m.configmap_name = cm["metadata"]["name"].as<std::string>("");
  auto cfg = config::parse(cm["data"]["config.yaml"].as<std::string>(""), node_env(), "host");
  if (!cfg) ADD_FAILURE() << "ConfigMap config.yaml: " << cfg.error().message;
  if (cfg) m.cfg = *cfg;
  return m;
}

TEST(Manifests, EveryYamlParses) {
  const auto files = yaml_files(kDir);
  ASSERT_GE(files.size(), 6u);
  for (const auto& f : files) {
    EXPECT_NO_THROW(YAML::LoadAllFromFile(kDir + "/" + f)) << f;
  }
  EXPECT_NO_THROW(YAML::LoadFile(std::string(DATERA_SOURCE_DIR) + "/systemd/config.yaml"));
}

TEST(Manifests, ConfigMapIsAValidAgentConfig) {
  const auto m = load();
  EXPECT_EQ(m.cfg.node_name, "node-from-downward-api");
  EXPECT_EQ(m.cfg.metrics.port, metrics::kDefaultPort);
}

TEST(Manifests, DaemonSetMatchesTheAgent) {
  const auto m = load();
  ASSERT_TRUE(m.by_kind.contains("DaemonSet"));
  const auto problems = check_daemonset(m.by_kind.at("DaemonSet"), m.cfg, m.configmap_name);
  for (const auto& p : problems) ADD_FAILURE() << p;
  const auto spec = m.by_kind.at("DaemonSet")["spec"];
  EXPECT_EQ(spec["updateStrategy"]["type"].as<std::string>(""), "RollingUpdate");
  EXPECT_EQ(spec["template"]["spec"]["priorityClassName"].as<std::string>(""),
            "system-node-critical");
  EXPECT_EQ(spec["template"]["spec"]["tolerations"][0]["operator"].as<std::string>(""), "Exists");
  EXPECT_TRUE(spec["template"]["spec"]["hostPID"].as<bool>(false));
}

TEST(Manifests, CheckerCatchesMismatches) {
  // The checks above must be able to fail: break the DaemonSet in several ways.
  const auto m = load();
  auto broken = YAML::Clone(m.by_kind.at("DaemonSet"));
  auto c = broken["spec"]["template"]["spec"]["containers"][0];
  c["ports"][0]["containerPort"] = 9100;
  c["readinessProbe"]["httpGet"]["path"] = "/ready";
  c["securityContext"]["privileged"] = false;
  for (auto mnt : c["volumeMounts"]) {
    if (mnt["mountPath"].as<std::string>() == "/var/lib/kubelet") mnt.remove("mountPropagation");
  }
  broken["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5;
  const auto problems = check_daemonset(broken, m.cfg, m.configmap_name);
  std::string all;
  for (const auto& p : problems) all += p + "\n";
  EXPECT_NE(all.find("containerPort 'metrics' is 9100"), std::string::npos) << all;
  EXPECT_NE(all.find("readinessProbe path"), std::string::npos) << all;
  EXPECT_NE(all.find("not privileged"), std::string::npos) << all;
  EXPECT_NE(all.find("Bidirectional"), std::string::npos) << all;
  EXPECT_NE(all.find("terminationGracePeriodSeconds"), std::string::npos) << all;
  EXPECT_EQ(check_daemonset(m.by_kind.at("DaemonSet"), m.cfg, "other-configmap").size(), 1u);
}

TEST(Manifests, PodMonitorScrapesTheAgentPods) {
  const auto m = load();
  const auto pm = m.by_kind.at("PodMonitor");
  const auto labels = m.by_kind.at("DaemonSet")["spec"]["template"]["metadata"]["labels"];
  for (const auto& kv : pm["spec"]["selector"]["matchLabels"]) {
    EXPECT_EQ(labels[kv.first.as<std::string>()].as<std::string>(""), kv.second.as<std::string>());
  }
  EXPECT_EQ(pm["spec"]["podMetricsEndpoints"][0]["port"].as<std::string>(), "metrics");
  EXPECT_EQ(pm["spec"]["podMetricsEndpoints"][0]["path"].as<std::string>(), metrics::kMetricsPath);
}

TEST(Manifests, KustomizationListsEveryManifest) {
  const auto k = YAML::LoadFile(kDir + "/kustomization.yaml");
  std::set<std::string> listed;
  for (const auto& r : k["resources"]) listed.insert(r.as<std::string>());
  std::set<std::string> present;
  for (const auto& f : yaml_files(kDir)) {
    if (f != "kustomization.yaml") present.insert(f);
  }
  EXPECT_EQ(listed, present);
}

TEST(SystemdUnit, NotifyWatchdogAndStopTimeoutFitTheConfig) {
  const std::string unit = slurp(std::string(DATERA_SOURCE_DIR) + "/systemd/datera-agent.service");
  std::map<std::string, std::string> kv;
  std::istringstream in(unit);
  for (std::string line; std::getline(in, line);) {
    const auto eq = line.find('=');
    if (line.empty() || line[0] == '#' || line[0] == '[' || eq == std::string::npos) continue;
    kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  EXPECT_EQ(kv["Type"], "notify");
  EXPECT_TRUE(kv.contains("WatchdogSec"));
  EXPECT_NE(kv["ExecStart"].find("/datera-agent --config "), std::string::npos) << kv["ExecStart"];
  auto cfg = config::load(std::string(DATERA_SOURCE_DIR) + "/systemd/config.yaml", node_env(), "h");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  auto stop = parse_duration(kv["TimeoutStopSec"]);
  ASSERT_TRUE(stop.ok()) << kv["TimeoutStopSec"];
  EXPECT_GT(*stop, cfg->shutdown_grace);
  // The unit's runtime dir is the config's socket dir.
  EXPECT_EQ("/run/" + kv["RuntimeDirectory"], fs::dirname(cfg->socket_path));
}

TEST(Dockerfile, ShipsBothBinariesAndRunsTheAgentWithTheConfigMapPath) {
  const std::string d = slurp(kDir + "/Dockerfile");
  EXPECT_NE(d.find("datera-agent"), std::string::npos);
  EXPECT_NE(d.find("datera-flexvolume"), std::string::npos)
      << "the agent installs the shim from its own dir";
  EXPECT_NE(d.find("/etc/datera-agent/config.yaml"), std::string::npos);
  EXPECT_NE(d.find("FROM debian:12"), std::string::npos);
}

}  // namespace
}  // namespace datera::deploy

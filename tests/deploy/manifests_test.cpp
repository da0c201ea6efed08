// The deployment files must describe the agent the code builds: the configs they embed must be
// accepted by config::parse(), and the ports, paths, probes and timeouts they name must be the ones
// the agent really uses. Each check is a function returning the list of problems it found, so the
// CheckerSelfTest cases can show that every check fails on a broken input.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "agent/config/config.h"
#include "metrics/endpoints.h"

namespace datera::deploy {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::milliseconds;
using Problems = std::vector<std::string>;

const stdfs::path kSourceDir{DATERA_SOURCE_DIR};
const stdfs::path kManifestDir = kSourceDir / "daemonset";
const stdfs::path kCsiDir = kSourceDir / "deploy" / "csi";
const stdfs::path kCsiExamplesDir = kCsiDir / "examples";
const stdfs::path kUnitFile = kSourceDir / "systemd" / "datera-agent.service";
const stdfs::path kHostConfig = kSourceDir / "systemd" / "config.yaml";
constexpr const char* kNodeName = "node-from-downward-api";

// ---------------------------------------------------------------------------------------------
// Small helpers

std::string slurp(const stdfs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string join(const Problems& problems) {
  std::string all;
  for (const auto& p : problems) all += "  - " + p + "\n";
  return all;
}

bool mentions(const Problems& problems, const std::string& text) {
  return std::any_of(problems.begin(), problems.end(),
                     [&](const std::string& p) { return p.find(text) != std::string::npos; });
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// yaml-cpp throws when a missing key is indexed further, and a non-const operator[] adds the key:
// manifests are read only through at(), which gives a null node for anything missing.
YAML::Node child(const YAML::Node& n, const std::string& key) {
  if (n.IsMap()) {
    if (const YAML::Node c = n[key]) return c;
  }
  return YAML::Node{};
}
YAML::Node child(const YAML::Node& n, int index) {
  if (n.IsSequence() && index >= 0 && static_cast<size_t>(index) < n.size()) return n[index];
  return YAML::Node{};
}
YAML::Node at(const YAML::Node& n) {
  return n;
}
template <typename Key, typename... Rest>
YAML::Node at(const YAML::Node& n, const Key& key, const Rest&... rest) {
  return at(child(n, key), rest...);
}

/// True when `n` holds a value (not missing, not null).
bool has(const YAML::Node& n) {
  return n.IsDefined() && !n.IsNull();
}

/// The scalar at `n`, or "" when it is missing or not a scalar.
std::string str(const YAML::Node& n) {
  return n.IsScalar() ? n.Scalar() : std::string{};
}

std::optional<long long> to_int(const std::string& s) {
  if (s.empty() || s.size() > 18 ||
      !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return std::nullopt;
  }
  return std::stoll(s);
}

std::string dirname(const std::string& p) {
  return stdfs::path(p).parent_path().string();
}
std::string basename(const std::string& p) {
  return stdfs::path(p).filename().string();
}

/// The agent's environment in a pod: only NODE_NAME, from the downward API.
config::EnvLookup pod_env() {
  return [](const std::string& k) -> std::optional<std::string> {
    if (k == "NODE_NAME") return std::string(kNodeName);
    return std::nullopt;
  };
}

/// Manifest files under `dir` (recursively), as paths relative to it, sorted.
std::vector<std::string> yaml_files(const stdfs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : stdfs::recursive_directory_iterator(dir)) {
    const auto ext = e.path().extension();
    if (e.is_regular_file() && (ext == ".yaml" || ext == ".yml")) {
      out.push_back(e.path().lexically_relative(dir).string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct Doc {
  std::string file;
  YAML::Node node;
};

/// Every document of every manifest file; a file that does not parse is a problem naming it.
std::vector<Doc> load_docs(const stdfs::path& dir, Problems& problems) {
  std::vector<Doc> docs;
  for (const auto& f : yaml_files(dir)) {
    try {
      for (const auto& node : YAML::LoadAllFromFile((dir / f).string())) {
        if (node && !node.IsNull()) docs.push_back({f, node});
      }
    } catch (const YAML::Exception& e) {
      problems.push_back(f + " is not valid YAML: " + e.what());
    }
  }
  return docs;
}

/// The one document of `kind`; zero or several is a problem.
YAML::Node one_of_kind(const std::vector<Doc>& docs, const std::string& kind, Problems& problems) {
  YAML::Node found;
  int count = 0;
  for (const auto& d : docs) {
    if (str(at(d.node, "kind")) == kind) {
      found = d.node;
      ++count;
    }
  }
  if (count != 1) {
    problems.push_back("expected exactly one " + kind + " under daemonset/, found " +
                       std::to_string(count));
    return YAML::Node{};
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// ConfigMap: the embedded agent config

/// Parses the ConfigMap's config.yaml with config::parse() as the agent in the pod would.
std::optional<config::Config> configmap_config(const YAML::Node& cm, Problems& problems) {
  const auto text = at(cm, "data", "config.yaml");
  if (!text.IsScalar()) {
    problems.push_back("ConfigMap has no data key config.yaml holding the agent config");
    return std::nullopt;
  }
  try {
    const auto parsed = YAML::Load(text.Scalar());
    if (parsed.IsMap() && has(at(parsed, "node_name"))) {
      problems.push_back(
          "ConfigMap config.yaml sets node_name: one ConfigMap serves every node, NODE_NAME "
          "(spec.nodeName) must supply it");
    }
  } catch (const YAML::Exception& e) {
    problems.push_back(std::string("ConfigMap config.yaml is not valid YAML: ") + e.what());
    return std::nullopt;
  }
  auto cfg = config::parse(text.Scalar(), pod_env(), "image-hostname");
  if (!cfg) {
    problems.push_back("config::parse() refuses the ConfigMap's config.yaml: " +
                       cfg.error().message);
    return std::nullopt;
  }
  if (cfg->node_name != kNodeName) {
    problems.push_back("node_name is '" + cfg->node_name + "', not the NODE_NAME value");
  }
  return *cfg;
}

// ---------------------------------------------------------------------------------------------
// DaemonSet

/// The port a probe or PodMonitor names, resolved through the container's named ports.
std::optional<long long> resolve_port(const YAML::Node& container, const std::string& port) {
  if (auto n = to_int(port)) return n;
  for (const auto& p : at(container, "ports")) {
    if (str(at(p, "name")) == port) return to_int(str(at(p, "containerPort")));
  }
  return std::nullopt;
}

/// The container's argv as the pod spec gives it (command, then args).
std::vector<std::string> container_argv(const YAML::Node& c) {
  std::vector<std::string> argv;
  for (const auto* key : {"command", "args"}) {
    for (const auto& a : at(c, key)) argv.push_back(str(a));
  }
  return argv;
}

/// The value of --config (or -c) in argv; "" when absent.
std::string config_flag(const std::vector<std::string>& argv) {
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i].starts_with("--config=")) return argv[i].substr(9);
    if ((argv[i] == "--config" || argv[i] == "-c") && i + 1 < argv.size()) return argv[i + 1];
  }
  return "";
}

/// Every mismatch between a DaemonSet and the config its agent runs with.
Problems check_daemonset(const YAML::Node& ds, const config::Config& cfg, const YAML::Node& cm) {
  Problems problems;
  auto fail = [&](const std::string& p) { problems.push_back(p); };
  const auto spec = at(ds, "spec", "template", "spec");
  const auto containers = at(spec, "containers");
  if (!containers.IsSequence() || containers.size() != 1) {
    fail("expected exactly one container in the DaemonSet pod");
    return problems;
  }
  const auto c = at(containers, 0);
  const auto metrics_port = std::to_string(cfg.metrics.port);

  if (str(at(c, "securityContext", "privileged")) != "true") {
    fail("container is not privileged (needed for Bidirectional propagation, /dev and iSCSI)");
  }
  if (str(at(spec, "hostNetwork")) != "true")
    fail("hostNetwork is off (iscsid is in the host netns)");

  // The metrics port and the probes.
  std::optional<long long> named_metrics;
  for (const auto& p : at(c, "ports")) {
    if (str(at(p, "name")) != "metrics") continue;
    named_metrics = to_int(str(at(p, "containerPort")));
    if (has(at(p, "hostPort")) && str(at(p, "hostPort")) != str(at(p, "containerPort"))) {
      fail("hostPort of 'metrics' differs from containerPort (hostNetwork needs them equal)");
    }
  }
  if (!named_metrics) {
    fail("no containerPort named 'metrics'");
  } else if (*named_metrics != cfg.metrics.port) {
    fail("containerPort 'metrics' is " + std::to_string(*named_metrics) + ", but metrics.listen '" +
         cfg.metrics.listen + "' makes the agent listen on " + metrics_port);
  }
  auto check_probe = [&](const std::string& name, const std::string& path) {
    const auto get = at(c, name, "httpGet");
    if (!get.IsMap()) return fail(name + " has no httpGet");
    if (str(at(get, "path")) != path) {
      fail(name + " path is '" + str(at(get, "path")) + "', the agent serves " + path);
    }
    const auto port = str(at(get, "port"));
    const auto resolved = resolve_port(c, port);
    if (!cfg.metrics.probe_listen.empty()) {
      // The loopback probe listener: kubelet (host network) must be told to probe 127.0.0.1,
      // since the pod IP it would use by default is not where that listener is.
      if (str(at(get, "host")) != cfg.metrics.probe_host) {
        fail(name + " host is '" + str(at(get, "host")) + "', but metrics.probe_listen '" +
             cfg.metrics.probe_listen + "' serves the probes on " + cfg.metrics.probe_host);
      }
      if (!resolved || *resolved != cfg.metrics.probe_port) {
        fail(name + " port '" + port + "' is not metrics.probe_listen's port " +
             std::to_string(cfg.metrics.probe_port));
      }
    } else if (!resolved) {
      fail(name + " port '" + port + "' names no container port");
    } else if (*resolved != cfg.metrics.port) {
      fail(name + " port '" + port + "' is " + std::to_string(*resolved) +
           ", not the metrics port " + metrics_port);
    }
    if (has(at(get, "scheme")) && str(at(get, "scheme")) != "HTTP")
      fail(name + " scheme is not HTTP");
  };
  check_probe("livenessProbe", metrics::kHealthPath);
  check_probe("readinessProbe", metrics::kReadyPath);

  // NODE_NAME from the downward API.
  bool node_name_ok = false;
  for (const auto& e : at(c, "env")) {
    if (str(at(e, "name")) == "NODE_NAME" &&
        str(at(e, "valueFrom", "fieldRef", "fieldPath")) == "spec.nodeName") {
      node_name_ok = true;
    }
  }
  if (!node_name_ok) fail("env NODE_NAME is not taken from fieldRef spec.nodeName");

  // Volumes and mounts. The map holds handles on the docs: read them only through at().
  std::map<std::string, YAML::Node> volumes;
  for (const auto& v : at(spec, "volumes")) {
    const auto name = str(at(v, "name"));
    if (!volumes.emplace(name, v).second) fail("volume '" + name + "' is declared twice");
  }
  auto volume = [&](const std::string& name) -> const YAML::Node {
    const auto it = volumes.find(name);
    return it == volumes.end() ? YAML::Node{} : it->second;
  };
  std::map<std::string, YAML::Node> mount_at;  // mountPath -> volumeMount
  for (const auto& m : at(c, "volumeMounts")) {
    const auto name = str(at(m, "name"));
    const auto path = str(at(m, "mountPath"));
    if (!volumes.contains(name)) fail("volumeMount '" + name + "' names no declared volume");
    if (!mount_at.emplace(path, m).second) fail("two volumeMounts at " + path);
    const auto host = str(at(volume(name), "hostPath", "path"));
    if (!host.empty() && (host != path || has(at(m, "subPath")))) {
      fail("hostPath " + host + " is mounted at " + path +
           (has(at(m, "subPath")) ? " with a subPath" : "") +
           ": host paths must appear at the same path in the container");
    }
  }
  // `path` must be inside a mount of the same host path (the longest covering mount decides).
  auto host_mount = [&](const std::string& path, const std::string& what, bool bidirectional) {
    const YAML::Node* best = nullptr;
    std::string best_path;
    for (const auto& [mp, m] : std::as_const(mount_at)) {
      const bool covers = mp == path || mp == "/" || path.starts_with(mp + "/");
      if (covers && mp.size() >= best_path.size()) {
        best = &m;
        best_path = mp;
      }
    }
    if (best == nullptr) return fail(what + " " + path + " is not mounted in the container");
    const auto host = str(at(volume(str(at(*best, "name"))), "hostPath", "path"));
    if (host != best_path) {
      fail(what + " " + path + " lies in the mount at " + best_path +
           (host.empty() ? ", which is not a hostPath" : ", which is host path " + host));
    }
    if (bidirectional && str(at(*best, "mountPropagation")) != "Bidirectional") {
      fail(what + " " + path + " needs mountPropagation Bidirectional (the agent's mounts must " +
           "reach kubelet)");
    }
  };
  host_mount(cfg.plugin_dir, "plugin_dir", false);
  host_mount(cfg.state_dir, "state_dir", false);
  host_mount(dirname(cfg.socket_path), "socket dir", false);
  host_mount(cfg.kubelet_root, "kubelet_root", true);

  // The ConfigMap is mounted where --config points.
  const auto config_path = config_flag(container_argv(c));
  const auto cm_name = str(at(cm, "metadata", "name"));
  if (config_path.empty()) {
    fail("the container's command/args do not pass --config");
  } else {
    const auto dir = dirname(config_path);
    const auto it = std::as_const(mount_at).find(dir);
    const auto vol = it == mount_at.end() ? YAML::Node{} : volume(str(at(it->second, "name")));
    if (str(at(vol, "configMap", "name")) != cm_name) {
      fail("ConfigMap '" + cm_name + "' is not mounted at " + dir + ", the dir of --config " +
           config_path);
    } else {
      std::string key = basename(config_path);
      for (const auto& item : at(vol, "configMap", "items")) {
        if (str(at(item, "path")) == key) key = str(at(item, "key"));
      }
      if (!has(at(cm, "data", key))) {
        fail("--config " + config_path + " names key '" + key + "' absent from the ConfigMap");
      }
    }
  }

  // Stopping: the pod's grace must outlast the agent's drain.
  const auto grace = to_int(str(at(spec, "terminationGracePeriodSeconds")));
  if (!grace) {
    fail("terminationGracePeriodSeconds is not set");
  } else if (*grace * 1000 <= cfg.shutdown_grace.count()) {
    fail("terminationGracePeriodSeconds " + std::to_string(*grace) +
         " is not above shutdown_grace (" + std::to_string(cfg.shutdown_grace.count()) + "ms)");
  }

  // The selector must select the pods it creates.
  for (const auto& kv : at(ds, "spec", "selector", "matchLabels")) {
    if (str(at(ds, "spec", "template", "metadata", "labels", kv.first.Scalar())) !=
        str(kv.second)) {
      fail("DaemonSet selector label " + kv.first.Scalar() + " is not on the pod template");
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// PodMonitor

Problems check_podmonitor(const YAML::Node& pm, const YAML::Node& ds, const config::Config& cfg) {
  Problems problems;
  auto fail = [&](const std::string& p) { problems.push_back(p); };
  if (str(at(pm, "apiVersion")) != "monitoring.coreos.com/v1")
    fail("PodMonitor apiVersion is wrong");
  const auto labels = at(ds, "spec", "template", "metadata", "labels");
  const auto selector = at(pm, "spec", "selector", "matchLabels");
  if (!selector.IsMap() || selector.size() == 0) {
    fail("PodMonitor has no selector.matchLabels (it would select every pod)");
  }
  for (const auto& kv : selector) {
    if (str(at(labels, kv.first.Scalar())) != str(kv.second)) {
      fail("PodMonitor selects " + kv.first.Scalar() + "=" + str(kv.second) +
           ", which the DaemonSet pods do not carry");
    }
  }
  const auto ns = str(at(ds, "metadata", "namespace"));
  bool ns_ok = str(at(pm, "metadata", "namespace")) == ns;
  for (const auto& n : at(pm, "spec", "namespaceSelector", "matchNames")) ns_ok |= str(n) == ns;
  if (str(at(pm, "spec", "namespaceSelector", "any")) == "true") ns_ok = true;
  if (!ns_ok) fail("PodMonitor does not look in the DaemonSet's namespace " + ns);

  const auto endpoints = at(pm, "spec", "podMetricsEndpoints");
  if (!endpoints.IsSequence() || endpoints.size() != 1) {
    fail("expected one podMetricsEndpoint");
    return problems;
  }
  const auto ep = at(endpoints, 0);
  if (str(at(ep, "port")) != "metrics")
    fail("PodMonitor port is '" + str(at(ep, "port")) + "', not metrics");
  const auto containers = at(ds, "spec", "template", "spec", "containers");
  if (containers.IsSequence() && containers.size() == 1 &&
      resolve_port(at(containers, 0), str(at(ep, "port"))) !=
          std::optional<long long>(cfg.metrics.port)) {
    fail("PodMonitor port '" + str(at(ep, "port")) + "' is not the agent's metrics port");
  }
  if (str(at(ep, "path")) != metrics::kMetricsPath) {
    fail("PodMonitor path is '" + str(at(ep, "path")) + "', the agent serves " +
         metrics::kMetricsPath);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Kustomization

Problems check_kustomization(const YAML::Node& k, const std::vector<std::string>& files) {
  Problems problems;
  std::set<std::string> listed;
  for (const auto& r : at(k, "resources")) {
    if (!listed.insert(str(r)).second) problems.push_back("resource " + str(r) + " listed twice");
  }
  std::set<std::string> present;
  for (const auto& f : files) {
    if (basename(f) != "kustomization.yaml" && basename(f) != "kustomization.yml")
      present.insert(f);
  }
  for (const auto& f : present) {
    if (!listed.contains(f)) problems.push_back(f + " is not listed in kustomization.yaml");
  }
  for (const auto& r : listed) {
    if (!present.contains(r))
      problems.push_back("kustomization.yaml lists " + r + ", no such file");
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// systemd unit

/// A systemd time span ("30s", "1min 30s", "500ms", "2"): milliseconds, or nullopt.
std::optional<milliseconds> parse_timespan(const std::string& text) {
  static const std::map<std::string, long long> kUnitMs = {
      {"ms", 1},           {"msec", 1},         {"s", 1000},      {"sec", 1000},
      {"second", 1000},    {"seconds", 1000},   {"m", 60'000},    {"min", 60'000},
      {"minute", 60'000},  {"minutes", 60'000}, {"h", 3'600'000}, {"hr", 3'600'000},
      {"hour", 3'600'000}, {"hours", 3'600'000}};
  const auto t = trim(text);
  if (t == "infinity") return milliseconds::max();
  if (t.empty()) return std::nullopt;
  long long total = 0;
  size_t i = 0;
  while (i < t.size()) {
    while (i < t.size() && t[i] == ' ') ++i;
    const size_t num_start = i;
    while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
    if (i == num_start || i - num_start > 9) return std::nullopt;
    const long long n = std::stoll(t.substr(num_start, i - num_start));
    while (i < t.size() && t[i] == ' ') ++i;
    const size_t unit_start = i;
    while (i < t.size() && std::isalpha(static_cast<unsigned char>(t[i]))) ++i;
    const auto unit = t.substr(unit_start, i - unit_start);
    if (unit.empty()) {
      total += n * 1000;  // a bare number is seconds
    } else if (auto it = kUnitMs.find(unit); it != kUnitMs.end()) {
      total += n * it->second;
    } else {
      return std::nullopt;
    }
  }
  return milliseconds(total);
}

/// "[Section] Key" -> values, in file order; comments, blank lines and continuations handled.
std::map<std::string, std::vector<std::string>> parse_unit(const std::string& text) {
  std::map<std::string, std::vector<std::string>> kv;
  std::istringstream in(text);
  std::string section;
  std::string pending;
  for (std::string raw; std::getline(in, raw);) {
    auto line = trim(raw);
    if (pending.empty() && (line.empty() || line[0] == '#' || line[0] == ';')) continue;
    if (line.ends_with("\\")) {
      pending += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    line = pending + line;
    pending.clear();
    if (line.front() == '[' && line.back() == ']') {
      section = line;
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    kv[section + " " + trim(line.substr(0, eq))].push_back(trim(line.substr(eq + 1)));
  }
  return kv;
}

/// Every way the unit text fails the agent run with `cfg` (the example host config).
Problems check_unit(const std::string& text, const config::Config& cfg) {
  Problems problems;
  auto fail = [&](const std::string& p) { problems.push_back(p); };
  auto kv = parse_unit(text);
  auto last = [&](const std::string& key) {
    const auto it = kv.find("[Service] " + key);
    return it == kv.end() || it->second.empty() ? std::string{} : it->second.back();
  };
  if (last("Type") != "notify")
    fail("Type is '" + last("Type") + "', the agent sends READY=1: notify");
  if (const auto n = last("NotifyAccess"); n != "main" && n != "all") {
    fail("NotifyAccess is '" + n + "': the agent's notifications must be accepted");
  }
  const auto wd = parse_timespan(last("WatchdogSec"));
  if (!wd || wd->count() == 0) fail("WatchdogSec is not set to a time span");

  // ExecStart= [prefixes]/path/datera-agent ... --config FILE
  auto exec = last("ExecStart");
  while (!exec.empty() && std::string("-@:+!").find(exec.front()) != std::string::npos) {
    exec.erase(0, 1);
  }
  std::vector<std::string> argv;
  std::istringstream words(exec);
  for (std::string w; words >> w;) argv.push_back(w);
  if (argv.empty() || basename(argv[0]) != "datera-agent" || argv[0].front() != '/') {
    fail("ExecStart '" + last("ExecStart") + "' does not run an absolute path to datera-agent");
  }
  if (config_flag(argv).empty()) fail("ExecStart does not pass --config FILE");

  auto stop_text = last("TimeoutStopSec");
  if (stop_text.empty()) stop_text = last("TimeoutSec");
  const auto stop = parse_timespan(stop_text.empty() ? "90s" : stop_text);
  if (!stop) {
    fail("TimeoutStopSec '" + stop_text + "' is not a time span");
  } else if (*stop <= cfg.shutdown_grace) {
    fail("TimeoutStopSec " + stop_text + " is not above shutdown_grace (" +
         std::to_string(cfg.shutdown_grace.count()) +
         "ms): systemd would SIGKILL a draining agent");
  }
  // control-group would SIGTERM mkfs/iscsiadm children mid-call; process would let them outlive
  // the unit and race the restarted agent. See the comment in the unit.
  if (last("KillMode") != "mixed") {
    fail("KillMode is '" + last("KillMode") + "'; mixed signals the agent alone, then cleans up");
  }
  if (last("Restart").empty() || last("Restart") == "no") fail("Restart is not set");
  if (const auto rd = last("RuntimeDirectory");
      !rd.empty() && "/run/" + rd != dirname(cfg.socket_path)) {
    fail("RuntimeDirectory /run/" + rd + " is not the socket dir " + dirname(cfg.socket_path));
  }
  if (const auto sd = last("StateDirectory"); !sd.empty() && "/var/lib/" + sd != cfg.state_dir) {
    fail("StateDirectory /var/lib/" + sd + " is not state_dir " + cfg.state_dir);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// The repository's files, loaded once

struct Deployment {
  Problems problems;  ///< loading problems: unparsable files, missing kinds, refused config
  std::vector<Doc> docs;
  YAML::Node configmap, daemonset, podmonitor, kustomization;
  std::optional<config::Config> cfg;
};

const Deployment& deployment() {
  static const Deployment d = [] {
    Deployment out;
    out.docs = load_docs(kManifestDir, out.problems);
    out.configmap = one_of_kind(out.docs, "ConfigMap", out.problems);
    out.daemonset = one_of_kind(out.docs, "DaemonSet", out.problems);
    out.podmonitor = one_of_kind(out.docs, "PodMonitor", out.problems);
    out.kustomization = one_of_kind(out.docs, "Kustomization", out.problems);
    if (!out.configmap.IsNull()) out.cfg = configmap_config(out.configmap, out.problems);
    return out;
  }();
  return d;
}

// Tests that compare against the agent config need the whole set to have loaded.
#define REQUIRE_DEPLOYMENT(d)                                                          \
  const auto& d = deployment();                                                        \
  ASSERT_TRUE(d.problems.empty()) << "daemonset/ did not load:\n" << join(d.problems); \
  ASSERT_TRUE(d.cfg.has_value())

// ---------------------------------------------------------------------------------------------
// The checks, on the repository's files

TEST(Manifests, EveryYamlParses) {
  const auto files = yaml_files(kManifestDir);
  EXPECT_GE(files.size(), 6u) << "daemonset/ should hold namespace, serviceaccount, configmap, "
                                 "daemonset, podmonitor and kustomization manifests";
  Problems problems;
  const auto docs = load_docs(kManifestDir, problems);
  for (const auto& d : docs) {
    if (str(at(d.node, "apiVersion")).empty() || str(at(d.node, "kind")).empty()) {
      problems.push_back(d.file + ": a document without apiVersion or kind");
    } else if (str(at(d.node, "kind")) != "Kustomization" &&
               str(at(d.node, "metadata", "name")).empty()) {
      problems.push_back(d.file + ": " + str(at(d.node, "kind")) + " without metadata.name");
    }
  }
  EXPECT_TRUE(problems.empty()) << join(problems);
  try {
    (void)YAML::LoadFile(kHostConfig.string());
  } catch (const YAML::Exception& e) {
    ADD_FAILURE() << "systemd/config.yaml is not valid YAML: " << e.what();
  }
}

TEST(Manifests, ConfigMapIsAValidAgentConfig) {
  Problems problems;
  const auto cm = one_of_kind(deployment().docs, "ConfigMap", problems);
  ASSERT_TRUE(problems.empty()) << join(problems);
  const auto cfg = configmap_config(cm, problems);
  EXPECT_TRUE(problems.empty()) << join(problems);
  ASSERT_TRUE(cfg.has_value());
  EXPECT_EQ(cfg->node_name, kNodeName);
}

TEST(Manifests, DaemonSetMatchesTheAgentConfig) {
  REQUIRE_DEPLOYMENT(d);
  const auto problems = check_daemonset(d.daemonset, *d.cfg, d.configmap);
  EXPECT_TRUE(problems.empty()) << "daemonset.yaml vs the ConfigMap's agent config:\n"
                                << join(problems);
  const auto spec = at(d.daemonset, "spec");
  const auto pod = at(spec, "template", "spec");
  EXPECT_EQ(str(at(spec, "updateStrategy", "type")), "RollingUpdate");
  EXPECT_EQ(str(at(spec, "updateStrategy", "rollingUpdate", "maxUnavailable")), "1");
  EXPECT_EQ(str(at(pod, "priorityClassName")), "system-node-critical");
  EXPECT_EQ(str(at(pod, "tolerations", 0, "operator")), "Exists");
  EXPECT_EQ(str(at(pod, "hostPID")), "true");
  EXPECT_EQ(str(at(pod, "dnsPolicy")), "ClusterFirstWithHostNet");
}

TEST(Manifests, ObjectsShareTheNamespaceAndServiceAccount) {
  REQUIRE_DEPLOYMENT(d);
  Problems problems;
  const auto ns = one_of_kind(d.docs, "Namespace", problems);
  const auto sa = one_of_kind(d.docs, "ServiceAccount", problems);
  ASSERT_TRUE(problems.empty()) << join(problems);
  const auto ns_name = str(at(ns, "metadata", "name"));
  EXPECT_EQ(ns_name, "datera-system");
  for (const auto& doc : d.docs) {
    const auto kind = str(at(doc.node, "kind"));
    if (kind == "Namespace" || kind == "Kustomization") continue;
    EXPECT_EQ(str(at(doc.node, "metadata", "namespace")), ns_name) << doc.file << " " << kind;
  }
  EXPECT_EQ(str(at(d.daemonset, "spec", "template", "spec", "serviceAccountName")),
            str(at(sa, "metadata", "name")));
}

TEST(Manifests, PodMonitorScrapesTheAgentPods) {
  REQUIRE_DEPLOYMENT(d);
  const auto problems = check_podmonitor(d.podmonitor, d.daemonset, *d.cfg);
  EXPECT_TRUE(problems.empty()) << join(problems);
}

TEST(Manifests, KustomizationListsEveryManifest) {
  REQUIRE_DEPLOYMENT(d);
  const auto problems = check_kustomization(d.kustomization, yaml_files(kManifestDir));
  EXPECT_TRUE(problems.empty()) << join(problems);
}

TEST(SystemdUnit, NotifyWatchdogAndStopTimeoutFitTheExampleConfig) {
  ASSERT_TRUE(stdfs::exists(kUnitFile)) << kUnitFile;
  // The example config is a host config: node_name falls back to the host name.
  const auto none = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  auto cfg = config::load(kHostConfig.string(), none, "Worker-1");
  ASSERT_TRUE(cfg.ok()) << "config::load() refuses systemd/config.yaml: " << cfg.error().message;
  EXPECT_EQ(cfg->node_name, "worker-1");
  const auto problems = check_unit(slurp(kUnitFile), *cfg);
  EXPECT_TRUE(problems.empty()) << "datera-agent.service vs systemd/config.yaml:\n"
                                << join(problems);
}

TEST(SystemdUnit, ExampleConfigSpellsOutTheDefaults) {
  // The example claims every key at its default: it must configure what an empty file does.
  const auto none = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  auto example = config::load(kHostConfig.string(), none, "h");
  auto defaults = config::parse("", none, "h");
  ASSERT_TRUE(example.ok()) << example.error().message;
  ASSERT_TRUE(defaults.ok()) << defaults.error().message;
  EXPECT_EQ(example->socket_path, defaults->socket_path);
  EXPECT_EQ(example->plugin_dir, defaults->plugin_dir);
  EXPECT_EQ(example->kubelet_root, defaults->kubelet_root);
  EXPECT_EQ(example->state_dir, defaults->state_dir);
  EXPECT_EQ(example->log_level, defaults->log_level);
  EXPECT_EQ(example->shutdown_grace, defaults->shutdown_grace);
  EXPECT_EQ(example->metrics.listen, defaults->metrics.listen);
  EXPECT_EQ(example->api.allowed_uids, defaults->api.allowed_uids);
  EXPECT_EQ(example->api.max_connections, defaults->api.max_connections);
  EXPECT_EQ(example->api.read_timeout, defaults->api.read_timeout);
  EXPECT_EQ(example->api.call_timeout, defaults->api.call_timeout);
  EXPECT_EQ(example->driver.vendor, defaults->driver.vendor);
  EXPECT_EQ(example->driver.driver, defaults->driver.driver);
  EXPECT_EQ(example->driver.shim_source, defaults->driver.shim_source);
  EXPECT_EQ(example->driver.shim_timeout, defaults->driver.shim_timeout);
  EXPECT_EQ(example->driver.self_test_timeout, defaults->driver.self_test_timeout);
}

TEST(Dockerfile, ShipsBothBinariesAndRunsTheAgent) {
  const std::string d = slurp(kManifestDir / "Dockerfile");
  ASSERT_FALSE(d.empty()) << "daemonset/Dockerfile is missing";
  EXPECT_NE(d.find("FROM debian:12 AS build"), std::string::npos);
  EXPECT_NE(d.find("FROM debian:12-slim"), std::string::npos);
  EXPECT_NE(d.find("-DDATERA_BUILD_TESTS=OFF"), std::string::npos);
  // The agent installs the shim from its own dir: both must land in the same one.
  EXPECT_NE(d.find("COPY --from=build /usr/local/bin/datera-agent /usr/local/bin/datera-flexvolume "
                   "/usr/local/bin/"),
            std::string::npos);
  EXPECT_NE(d.find("COPY --from=build /usr/local/bin/datera-agentctl /usr/local/bin/"),
            std::string::npos);
  EXPECT_NE(d.find("ENTRYPOINT [\"/usr/local/bin/datera-agent\""), std::string::npos);
  EXPECT_NE(d.find("\"--config\", \"/etc/datera-agent/config.yaml\""), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The checks can fail: each broken input is caught, with a message that says what is wrong.

/// daemonset.yaml's text with `from` replaced by `to` (which must occur), parsed.
YAML::Node edited_daemonset(const std::string& from, const std::string& to) {
  auto text = slurp(kManifestDir / "daemonset.yaml");
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "daemonset.yaml no longer contains '" << from << "'";
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return YAML::Load(text);
}

TEST(CheckerSelfTest, MismatchedPortInManifestTextIsCaught) {
  REQUIRE_DEPLOYMENT(d);
  const auto ds = edited_daemonset("containerPort: 9808", "containerPort: 9100");
  const auto problems = check_daemonset(ds, *d.cfg, d.configmap);
  EXPECT_TRUE(mentions(problems, "containerPort 'metrics' is 9100")) << join(problems);
  const auto pm_problems = check_podmonitor(d.podmonitor, ds, *d.cfg);
  EXPECT_TRUE(mentions(pm_problems, "PodMonitor port 'metrics' is not the agent's metrics port"))
      << join(pm_problems);
}

// The probes go to the loopback probe listener (metrics.probe_listen), which no pod can reach:
// probing the network port instead, or the pod IP, is caught.
TEST(CheckerSelfTest, ProbesOffTheLoopbackProbeListenerAreCaught) {
  REQUIRE_DEPLOYMENT(d);
  ASSERT_FALSE(d.cfg->metrics.probe_listen.empty()) << "the ConfigMap sets metrics.probe_listen";
  const auto on_metrics = edited_daemonset("port: 9809", "port: metrics");
  EXPECT_TRUE(mentions(check_daemonset(on_metrics, *d.cfg, d.configmap),
                       "livenessProbe port 'metrics' is not metrics.probe_listen's port 9809"));
  const auto pod_ip = edited_daemonset("host: 127.0.0.1", "scheme: HTTP");
  EXPECT_TRUE(mentions(check_daemonset(pod_ip, *d.cfg, d.configmap),
                       "livenessProbe host is '', but metrics.probe_listen"));
  auto without = *d.cfg;
  without.metrics.probe_listen.clear();
  EXPECT_TRUE(mentions(check_daemonset(d.daemonset, without, d.configmap),
                       "livenessProbe port '9809' is 9809, not the metrics port 9808"));
}

TEST(CheckerSelfTest, ConfigChangedWithoutTheDaemonSetIsCaught) {
  REQUIRE_DEPLOYMENT(d);
  auto cfg = *d.cfg;
  cfg.metrics.port = 9900;
  cfg.plugin_dir = "/home/kubernetes/flexvolume";
  cfg.kubelet_root = "/var/lib/kubelet/sub";  // covered by the kubelet mount: still fine
  cfg.socket_path = "/var/run/datera/agent.sock";
  cfg.shutdown_grace = milliseconds(45'000);
  const auto problems = check_daemonset(d.daemonset, cfg, d.configmap);
  EXPECT_TRUE(mentions(problems, "makes the agent listen on 9900")) << join(problems);
  EXPECT_TRUE(mentions(problems, "plugin_dir /home/kubernetes/flexvolume is not mounted"))
      << join(problems);
  EXPECT_TRUE(mentions(problems, "socket dir /var/run/datera is not mounted")) << join(problems);
  EXPECT_FALSE(mentions(problems, "kubelet_root")) << join(problems);
  EXPECT_TRUE(mentions(problems, "is not above shutdown_grace (45000ms)")) << join(problems);
}

TEST(CheckerSelfTest, BrokenDaemonSetFieldsAreCaught) {
  REQUIRE_DEPLOYMENT(d);
  auto broken = YAML::Clone(d.daemonset);
  auto pod = broken["spec"]["template"]["spec"];
  auto c = pod["containers"][0];
  c["readinessProbe"]["httpGet"]["path"] = "/ready";
  c["livenessProbe"]["httpGet"]["port"] = "http";
  c["securityContext"]["privileged"] = false;
  c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] = "metadata.name";
  c["args"][1] = "/etc/other/config.yaml";
  for (auto m : c["volumeMounts"]) {
    const auto path = m["mountPath"].as<std::string>();
    if (path == "/var/lib/kubelet") m.remove("mountPropagation");
    if (path == "/var/lib/datera-agent") m["mountPath"] = "/state";
    if (path == "/dev") m["name"] = "no-such-volume";
  }
  pod.remove("terminationGracePeriodSeconds");
  const auto problems = check_daemonset(broken, *d.cfg, d.configmap);
  EXPECT_TRUE(mentions(problems, "readinessProbe path is '/ready'")) << join(problems);
  EXPECT_TRUE(mentions(problems, "livenessProbe port 'http' is not metrics.probe_listen's port"))
      << join(problems);
  EXPECT_TRUE(mentions(problems, "not privileged")) << join(problems);
  EXPECT_TRUE(mentions(problems, "NODE_NAME is not taken from fieldRef spec.nodeName"))
      << join(problems);
  EXPECT_TRUE(mentions(problems, "is not mounted at /etc/other")) << join(problems);
  EXPECT_TRUE(mentions(problems, "kubelet_root /var/lib/kubelet needs mountPropagation"))
      << join(problems);
  EXPECT_TRUE(mentions(problems, "hostPath /var/lib/datera-agent is mounted at /state"))
      << join(problems);
  EXPECT_TRUE(mentions(problems, "state_dir /var/lib/datera-agent is not mounted"))
      << join(problems);
  EXPECT_TRUE(mentions(problems, "volumeMount 'no-such-volume' names no declared volume"))
      << join(problems);
  EXPECT_TRUE(mentions(problems, "terminationGracePeriodSeconds is not set")) << join(problems);
  // Another ConfigMap than the one mounted: exactly that one problem.
  auto other_cm = YAML::Clone(d.configmap);
  other_cm["metadata"]["name"] = "other-configmap";
  const auto cm_problems = check_daemonset(d.daemonset, *d.cfg, other_cm);
  EXPECT_EQ(cm_problems.size(), 1u) << join(cm_problems);
}

TEST(CheckerSelfTest, ConfigMapProblemsAreCaught) {
  Problems problems;
  EXPECT_FALSE(
      configmap_config(YAML::Load("data: {config.yaml: 'metrics: {listen: nope}'}"), problems));
  EXPECT_TRUE(mentions(problems, "config::parse() refuses")) << join(problems);
  problems.clear();
  EXPECT_TRUE(configmap_config(YAML::Load("data: {config.yaml: 'node_name: fixed'}"), problems));
  EXPECT_TRUE(mentions(problems, "sets node_name")) << join(problems);
  problems.clear();
  EXPECT_FALSE(configmap_config(YAML::Load("data: {other: x}"), problems));
  EXPECT_TRUE(mentions(problems, "no data key config.yaml")) << join(problems);
}

TEST(CheckerSelfTest, WrongPodMonitorIsCaught) {
  REQUIRE_DEPLOYMENT(d);
  auto pm = YAML::Clone(d.podmonitor);
  pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "someone-else";
  pm["spec"]["podMetricsEndpoints"][0]["port"] = "http";
  pm["spec"]["podMetricsEndpoints"][0]["path"] = "/stats";
  pm["metadata"]["namespace"] = "monitoring";
  const auto problems = check_podmonitor(pm, d.daemonset, *d.cfg);
  EXPECT_TRUE(mentions(problems, "which the DaemonSet pods do not carry")) << join(problems);
  EXPECT_TRUE(mentions(problems, "port is 'http'")) << join(problems);
  EXPECT_TRUE(mentions(problems, "path is '/stats'")) << join(problems);
  EXPECT_TRUE(mentions(problems, "namespace datera-system")) << join(problems);
  auto no_selector = YAML::Clone(d.podmonitor);
  no_selector["spec"].remove("selector");
  EXPECT_TRUE(mentions(check_podmonitor(no_selector, d.daemonset, *d.cfg), "no selector"));
}

TEST(CheckerSelfTest, KustomizationDriftIsCaught) {
  const auto k = YAML::Load("resources: [namespace.yaml, daemonset.yaml, gone.yaml]");
  const auto problems = check_kustomization(
      k, {"daemonset.yaml", "kustomization.yaml", "namespace.yaml", "new.yaml"});
  EXPECT_TRUE(mentions(problems, "new.yaml is not listed")) << join(problems);
  EXPECT_TRUE(mentions(problems, "lists gone.yaml, no such file")) << join(problems);
  EXPECT_EQ(problems.size(), 2u) << join(problems);
}

TEST(CheckerSelfTest, BrokenUnitIsCaught) {
  const config::Config cfg;  // shutdown_grace 20s
  const std::string unit =
      "[Service]\n"
      "Type=simple\n"
      "ExecStart=/usr/bin/other-daemon --verbose\n"
      "TimeoutStopSec = 15s\n"
      "KillMode=control-group\n";
  const auto problems = check_unit(unit, cfg);
  EXPECT_TRUE(mentions(problems, "Type is 'simple'")) << join(problems);
  EXPECT_TRUE(mentions(problems, "WatchdogSec")) << join(problems);
  EXPECT_TRUE(mentions(problems, "does not run an absolute path to datera-agent"))
      << join(problems);
  EXPECT_TRUE(mentions(problems, "does not pass --config")) << join(problems);
  EXPECT_TRUE(mentions(problems, "TimeoutStopSec 15s is not above shutdown_grace"))
      << join(problems);
  EXPECT_TRUE(mentions(problems, "KillMode is 'control-group'")) << join(problems);
  // Without TimeoutStopSec, systemd's default of 90s applies; continuation lines are joined.
  const auto fine = check_unit(
      "[Service]\nType=notify\nNotifyAccess=main\nWatchdogSec=1min\nRestart=always\n"
      "KillMode=mixed\nExecStart=-/opt/bin/datera-agent \\\n  --config=/etc/a.yaml\n",
      cfg);
  EXPECT_TRUE(fine.empty()) << join(fine);
}

TEST(CheckerSelfTest, SystemdTimespans) {
  EXPECT_EQ(parse_timespan("30s"), milliseconds(30'000));
  EXPECT_EQ(parse_timespan("30"), milliseconds(30'000));
  EXPECT_EQ(parse_timespan("1min 30s"), milliseconds(90'000));
  EXPECT_EQ(parse_timespan("1min30s"), milliseconds(90'000));
  EXPECT_EQ(parse_timespan("500ms"), milliseconds(500));
  EXPECT_EQ(parse_timespan("2h"), milliseconds(7'200'000));
  EXPECT_EQ(parse_timespan("infinity"), milliseconds::max());
  EXPECT_FALSE(parse_timespan("soon"));
  EXPECT_FALSE(parse_timespan(""));
  EXPECT_FALSE(parse_timespan("10 parsecs"));
}

// ---------------------------------------------------------------------------------------------
// deploy/csi: the CSI front end (driver agent.iscsi.datera.io). The node DaemonSet and its
// ConfigMap are strategic-merge patches of daemonset/ (kubectl kustomize renders them; this test
// has no kubectl), so the checks read the patches as they are: each names what it adds. The
// rendered set is validated against the Kubernetes schemas by deploy_manifests_schema.

constexpr const char* kCsiDriver = "agent.iscsi.datera.io";

/// The documents of kind `kind` (and `name`, when not empty) among `docs`.
std::vector<YAML::Node> all_of_kind(const std::vector<Doc>& docs, const std::string& kind,
                                    const std::string& name = "") {
  std::vector<YAML::Node> out;
  for (const auto& d : docs) {
    if (str(at(d.node, "kind")) == kind &&
        (name.empty() || str(at(d.node, "metadata", "name")) == name)) {
      out.push_back(d.node);
    }
  }
  return out;
}

/// The container named `name` of a pod spec; null when absent.
YAML::Node container_named(const YAML::Node& pod, const std::string& name) {
  for (const auto& c : at(pod, "containers")) {
    if (str(at(c, "name")) == name) return c;
  }
  return YAML::Node{};
}

/// The value of `--flag=value` in argv; nullopt when absent.
std::optional<std::string> flag_value(const std::vector<std::string>& argv,
                                      const std::string& flag) {
  for (const auto& a : argv) {
    if (a.starts_with(flag + "=")) return a.substr(flag.size() + 1);
  }
  return std::nullopt;
}
bool has_flag(const std::vector<std::string>& argv, const std::string& flag) {
  return std::find(argv.begin(), argv.end(), flag) != argv.end() ||
         flag_value(argv, flag).has_value();
}

/// The volume (from the pod's volumes) of the container's mount covering `path`, the longest
/// one; null when no mount covers it.
YAML::Node volume_for_path(const YAML::Node& pod, const YAML::Node& c, const std::string& path) {
  std::string best_path;
  std::string best_volume;
  for (const auto& m : at(c, "volumeMounts")) {
    const auto mp = str(at(m, "mountPath"));
    const bool covers = mp == path || mp == "/" || path.starts_with(mp + "/");
    if (covers && mp.size() > best_path.size()) {
      best_path = mp;
      best_volume = str(at(m, "name"));
    }
  }
  for (const auto& v : at(pod, "volumes")) {
    if (!best_volume.empty() && str(at(v, "name")) == best_volume) return v;
  }
  return YAML::Node{};
}

/// The `csi:` section of a ConfigMap's config.yaml, read as plain YAML (CsiConfigMapsParse below
/// also runs it through config::parse()).
YAML::Node csi_section(const YAML::Node& cm, Problems& problems) {
  const auto text = at(cm, "data", "config.yaml");
  const auto name = str(at(cm, "metadata", "name"));
  if (!text.IsScalar()) {
    problems.push_back("ConfigMap " + name + " has no data key config.yaml");
    return YAML::Node{};
  }
  try {
    const auto csi = at(YAML::Load(text.Scalar()), "csi");
    if (!csi.IsMap()) problems.push_back("ConfigMap " + name + " config.yaml has no csi: section");
    return csi;
  } catch (const YAML::Exception& e) {
    problems.push_back("ConfigMap " + name + " config.yaml is not valid YAML: " + e.what());
    return YAML::Node{};
  }
}

/// The csi: section serves `driver` in the given role (controller: Controller service only; else
/// Node service only), with exactly the keys the agent's config section has.
Problems check_csi_section(const YAML::Node& csi, const std::string& driver, bool controller) {
  Problems problems;
  auto fail = [&](const std::string& p) { problems.push_back(p); };
  static const std::set<std::string> kKeys = {"enabled",    "endpoint", "driver_name",
                                              "controller", "node",     "max_volumes_per_node"};
  for (const auto& kv : csi) {
    if (!kKeys.contains(kv.first.Scalar())) fail("csi." + kv.first.Scalar() + " is not a csi key");
  }
  for (const auto& k : kKeys) {
    if (!has(at(csi, k))) fail("csi." + k + " is not set");
  }
  if (str(at(csi, "enabled")) != "true") fail("csi.enabled is not true");
  if (str(at(csi, "driver_name")) != driver) {
    fail("csi.driver_name is '" + str(at(csi, "driver_name")) + "', the CSIDriver is " + driver);
  }
  const auto endpoint = str(at(csi, "endpoint"));
  if (!endpoint.starts_with("/") || basename(endpoint).empty()) {
    fail("csi.endpoint '" + endpoint + "' is not an absolute socket path");
  }
  const std::string want_controller = controller ? "true" : "false";
  const std::string want_node = controller ? "false" : "true";
  if (str(at(csi, "controller")) != want_controller) {
    fail("csi.controller is '" + str(at(csi, "controller")) + "', this role needs " +
         want_controller);
  }
  if (str(at(csi, "node")) != want_node) {
    fail("csi.node is '" + str(at(csi, "node")) + "', this role needs " + want_node);
  }
  if (!to_int(str(at(csi, "max_volumes_per_node")))) {
    fail("csi.max_volumes_per_node is not a whole number");
  }
  return problems;
}

/// Where `path` lies for container `c`: "<volume>:<path inside the volume>" through its longest
/// covering mount (subPath included); "" when no mount covers it.
std::string place_in_volume(const YAML::Node& c, const std::string& path) {
  std::string best_path;
  std::string place;
  for (const auto& m : at(c, "volumeMounts")) {
    const auto mp = str(at(m, "mountPath"));
    const bool covers = mp == path || mp == "/" || path.starts_with(mp + "/");
    if (!covers || (!place.empty() && mp.size() <= best_path.size())) continue;
    best_path = mp;
    auto inside = path.substr(mp == "/" ? 0 : mp.size());
    if (const auto sub = str(at(m, "subPath")); !sub.empty()) inside = "/" + sub + inside;
    place = str(at(m, "name")) + ":" + (inside.empty() ? "/" : inside);
  }
  return place;
}

/// Every sidecar's --csi-address is the agent's endpoint: the same path inside the same volume.
void check_csi_address(const YAML::Node& pod, const YAML::Node& agent, const YAML::Node& sidecar,
                       const std::string& endpoint, Problems& problems) {
  const auto name = str(at(sidecar, "name"));
  const auto address = flag_value(container_argv(sidecar), "--csi-address");
  if (!address) return problems.push_back(name + " has no --csi-address");
  const auto agent_volume = str(at(volume_for_path(pod, agent, endpoint), "name"));
  if (agent_volume.empty()) {
    problems.push_back("the agent's csi.endpoint " + endpoint + " is in no volume mount");
  } else if (place_in_volume(sidecar, *address) != place_in_volume(agent, endpoint)) {
    problems.push_back(name + " --csi-address " + *address +
                       " is not the agent's socket (csi.endpoint " + endpoint + " in volume " +
                       agent_volume + ")");
  }
}

/// The node DaemonSet patch: the socket in kubelet's plugin dir for `driver`, registered with
/// kubelet at its host path, and the sidecars on the socket and off the agent's ports.
Problems check_csi_node(const YAML::Node& ds, const YAML::Node& csi, const std::string& driver,
                        const config::Config& base) {
  Problems problems;
  auto fail = [&](const std::string& p) { problems.push_back(p); };
  const auto pod = at(ds, "spec", "template", "spec");
  const auto agent = container_named(pod, "agent");
  const auto registrar = container_named(pod, "node-driver-registrar");
  const auto liveness = container_named(pod, "liveness-probe");
  if (!agent.IsMap()) fail("the DaemonSet patch has no container 'agent'");
  if (!registrar.IsMap()) fail("no node-driver-registrar sidecar");
  if (!liveness.IsMap()) fail("no liveness-probe sidecar");
  if (!problems.empty()) return problems;

  const auto endpoint = str(at(csi, "endpoint"));
  const auto plugin_dir = base.kubelet_root + "/plugins/" + driver;
  const auto socket_volume = volume_for_path(pod, agent, endpoint);
  if (str(at(socket_volume, "hostPath", "path")) != plugin_dir) {
    fail("csi.endpoint " + endpoint + " is not in hostPath " + plugin_dir +
         " (kubelet's plugin dir for " + driver + ")");
  }
  const auto registrar_argv = container_argv(registrar);
  const auto registration = flag_value(registrar_argv, "--kubelet-registration-path");
  if (registration != plugin_dir + "/" + basename(endpoint)) {
    fail("node-driver-registrar --kubelet-registration-path is '" + registration.value_or("") +
         "', the socket's host path is " + plugin_dir + "/" + basename(endpoint));
  }
  bool registry_mounted = false;
  for (const auto& m : at(registrar, "volumeMounts")) {
    if (str(at(m, "mountPath")) != "/registration") continue;
    const auto v = volume_for_path(pod, registrar, "/registration");
    registry_mounted = str(at(v, "hostPath", "path")) == base.kubelet_root + "/plugins_registry";
  }
  if (!registry_mounted) {
    fail("node-driver-registrar does not mount " + base.kubelet_root +
         "/plugins_registry at /registration");
  }
  check_csi_address(pod, agent, registrar, endpoint, problems);
  check_csi_address(pod, agent, liveness, endpoint, problems);

  // Host network: the sidecars' HTTP endpoints share the node's ports with the agent's.
  std::set<long long> taken = {base.metrics.port};
  if (!base.metrics.probe_listen.empty()) taken.insert(base.metrics.probe_port);
  for (const auto& c : {registrar, liveness}) {
    const auto ep = flag_value(container_argv(c), "--http-endpoint");
    if (!ep) {
      fail(str(at(c, "name")) + " has no --http-endpoint (livenessprobe's default port is 9808)");
      continue;
    }
    const auto colon = ep->rfind(':');
    const auto port = to_int(colon == std::string::npos ? "" : ep->substr(colon + 1));
    if (!port || !taken.insert(*port).second) {
      fail(str(at(c, "name")) + " --http-endpoint " + *ep +
           " is not a port of its own on the host network");
    } else if (!ep->starts_with("127.0.0.1:")) {
      fail(str(at(c, "name")) + " --http-endpoint " + *ep + " is not on the loopback");
    }
  }
  return problems;
}

/// How long CreateSnapshot may take: the node's filesystem is frozen around the array's snapshot,
/// and the node notices the request at its next poll. csi-snapshotter's --timeout must cover it
/// with room to spare, or every attempt times out and is retried for ever.
constexpr std::chrono::seconds kCreateSnapshotUpTo{30};

/// The controller Deployment: replicated sidecars with leader election on the agent's socket
/// (csi-snapshotter's --timeout covering a CreateSnapshot), the agent with its ConfigMap.
Problems check_csi_controller(const YAML::Node& deploy, const YAML::Node& cm,
                              const YAML::Node& csi) {
  Problems problems;
  auto fail = [&](const std::string& p) { problems.push_back(p); };
  const auto pod = at(deploy, "spec", "template", "spec");
  const auto agent = container_named(pod, "agent");
  if (!agent.IsMap()) {
    fail("the controller Deployment has no container 'agent'");
    return problems;
  }
  if (str(at(deploy, "spec", "replicas")) != "2") fail("the controller does not run 2 replicas");
  const auto endpoint = str(at(csi, "endpoint"));
  for (const auto* name : {"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"}) {
    const auto c = container_named(pod, name);
    if (!c.IsMap()) {
      fail(std::string("no ") + name + " sidecar");
      continue;
    }
    if (!has_flag(container_argv(c), "--leader-election")) {
      fail(std::string(name) + " runs without --leader-election beside another replica");
    }
    check_csi_address(pod, agent, c, endpoint, problems);
  }
  const auto provisioner = container_argv(container_named(pod, "csi-provisioner"));
  if (!has_flag(provisioner, "--extra-create-metadata"))
    fail("csi-provisioner lacks --extra-create-metadata");
  if (flag_value(provisioner, "--default-fstype") != std::optional<std::string>("xfs")) {
    fail("csi-provisioner --default-fstype is not xfs");
  }
  const auto liveness = container_named(pod, "liveness-probe");
  if (!liveness.IsMap()) {
    fail("no liveness-probe sidecar");
  } else {
    check_csi_address(pod, agent, liveness, endpoint, problems);
  }
  if (const auto snapshotter = container_named(pod, "csi-snapshotter"); snapshotter.IsMap()) {
    const auto timeout = flag_value(container_argv(snapshotter), "--timeout").value_or("1m");
    const auto ms = parse_timespan(timeout);
    if (!ms || *ms < 2 * kCreateSnapshotUpTo) {
      fail("csi-snapshotter --timeout " + timeout + " is under " +
           std::to_string(2 * kCreateSnapshotUpTo.count()) + "s: CreateSnapshot takes up to " +
           std::to_string(kCreateSnapshotUpTo.count()) + "s (the node's freeze)");
    }
  }
  // The ConfigMap is mounted where --config points.
  const auto config_path = config_flag(container_argv(agent));
  const auto vol = volume_for_path(pod, agent, config_path);
  if (config_path.empty() || str(at(vol, "configMap", "name")) != str(at(cm, "metadata", "name"))) {
    fail("the controller's ConfigMap is not mounted at --config's dir");
  }
  return problems;
}

/// The RBAC objects give `sa` (namespace `ns`) each of `cluster_roles` and `roles`.
Problems check_csi_rbac(const std::vector<Doc>& docs, const std::string& sa, const std::string& ns,
                        const std::vector<std::string>& cluster_roles,
                        const std::vector<std::string>& roles) {
  Problems problems;
  auto bound = [&](const std::string& binding_kind, const std::string& role_kind,
                   const std::string& role) {
    if (all_of_kind(docs, role_kind, role).empty()) {
      problems.push_back(role_kind + " " + role + " is not defined");
      return;
    }
    for (const auto& b : all_of_kind(docs, binding_kind)) {
      if (str(at(b, "roleRef", "kind")) != role_kind || str(at(b, "roleRef", "name")) != role) {
        continue;
      }
      for (const auto& s : at(b, "subjects")) {
        if (str(at(s, "kind")) == "ServiceAccount" && str(at(s, "name")) == sa &&
            str(at(s, "namespace")) == ns) {
          return;
        }
      }
    }
    problems.push_back(role_kind + " " + role + " is not bound to ServiceAccount " + ns + "/" + sa);
  };
  for (const auto& r : cluster_roles) bound("ClusterRoleBinding", "ClusterRole", r);
  for (const auto& r : roles) bound("RoleBinding", "Role", r);
  return problems;
}

/// A permission a sidecar needs: each of `verbs` on `resource` (a subresource as
/// "volumesnapshotcontents/status") of API group `group` ("" for the core group).
struct Need {
  std::string group;
  std::string resource;
  std::vector<std::string> verbs;
};

/// What `role_kind` `role`'s rules do not grant of `needs`, one line per missing verb.
Problems check_grants(const std::vector<Doc>& docs, const std::string& role_kind,
                      const std::string& role, const std::vector<Need>& needs) {
  const auto roles = all_of_kind(docs, role_kind, role);
  if (roles.size() != 1) return {role_kind + " " + role + " is not defined once"};
  Problems problems;
  for (const auto& need : needs) {
    for (const auto& verb : need.verbs) {
      bool granted = false;
      for (const auto& rule : at(roles.front(), "rules")) {
        auto lists = [&](const char* key, const std::string& value) {
          for (const auto& v : at(rule, key)) {
            if (str(v) == value || str(v) == "*") return true;
          }
          return false;
        };
        granted |= lists("apiGroups", need.group) && lists("resources", need.resource) &&
                   lists("verbs", verb);
      }
      if (!granted) {
        problems.push_back(role_kind + " " + role + " does not grant " + verb + " on " +
                           need.resource + " (apiGroup \"" + need.group + "\")");
      }
    }
  }
  return problems;
}

/// csi-snapshotter v8 (its deploy/kubernetes/csi-snapshotter/rbac-csi-snapshotter.yaml, without
/// the group snapshot rules: that feature gate is off).
const std::vector<Need> kSnapshotterNeeds = {
    {"", "events", {"list", "watch", "create", "update", "patch"}},
    {"snapshot.storage.k8s.io", "volumesnapshotclasses", {"get", "list", "watch"}},
    {"snapshot.storage.k8s.io",
     "volumesnapshotcontents",
     {"get", "list", "watch", "update", "patch"}},
    {"snapshot.storage.k8s.io", "volumesnapshotcontents/status", {"update", "patch"}},
};
/// csi-provisioner v6, for a PVC whose dataSource is a VolumeSnapshot (read with its content; the
/// snapshot's in-use finalizer: watch, update) or a PVC (read, its clone finalizer: update).
const std::vector<Need> kProvisionerSourceNeeds = {
    {"snapshot.storage.k8s.io", "volumesnapshots", {"get", "list", "watch", "update"}},
    {"snapshot.storage.k8s.io", "volumesnapshotcontents", {"get", "list"}},
    {"", "persistentvolumeclaims", {"get", "list", "watch", "update"}},
};
/// Every sidecar's --leader-election Lease.
const std::vector<Need> kLeaderElectionNeeds = {
    {"coordination.k8s.io", "leases", {"get", "watch", "list", "delete", "update", "create"}},
};

/// The kustomization's resources (files, not bases such as ../../daemonset) and patches.
YAML::Node kustomization_files(const YAML::Node& k) {
  YAML::Node files;
  for (const auto& r : at(k, "resources")) {
    if (!str(r).starts_with("..")) files["resources"].push_back(str(r));
  }
  for (const auto& p : at(k, "patches")) files["resources"].push_back(str(at(p, "path")));
  return files;
}

struct CsiSet {
  Problems problems;
  std::vector<Doc> docs;      ///< deploy/csi/*.yaml (not examples/)
  std::vector<Doc> examples;  ///< deploy/csi/examples/
  YAML::Node driver, node_cm, controller_cm, daemonset, controller, kustomization;
  YAML::Node node_csi, controller_csi;
};

const CsiSet& csi_set() {
  static const CsiSet d = [] {
    CsiSet out;
    for (auto& doc : load_docs(kCsiDir, out.problems)) {
      (doc.file.find('/') == std::string::npos ? out.docs : out.examples).push_back(doc);
    }
    auto one = [&](const std::string& kind, const std::string& name) {
      const auto found = all_of_kind(out.docs, kind, name);
      if (found.size() != 1) {
        out.problems.push_back("expected one " + kind + " " + name + " in deploy/csi/, found " +
                               std::to_string(found.size()));
        return YAML::Node{};
      }
      return found.front();
    };
    out.driver = one("CSIDriver", kCsiDriver);
    out.node_cm = one("ConfigMap", "datera-agent-config");
    out.controller_cm = one("ConfigMap", "datera-csi-controller-config");
    out.daemonset = one("DaemonSet", "datera-agent");
    out.controller = one("Deployment", "datera-csi-controller");
    out.kustomization = one("Kustomization", "");
    out.node_csi = csi_section(out.node_cm, out.problems);
    out.controller_csi = csi_section(out.controller_cm, out.problems);
    return out;
  }();
  return d;
}

#define REQUIRE_CSI_SET(d)   \
  const auto& d = csi_set(); \
  ASSERT_TRUE(d.problems.empty()) << "deploy/csi/ did not load:\n" << join(d.problems)

// The node agent's config as daemonset/configmap.yaml gives it (deploy/csi patches in csi:).
#define REQUIRE_BASE_CONFIG(var)                                            \
  ASSERT_TRUE(deployment().cfg.has_value()) << "daemonset/ did not load:\n" \
                                            << join(deployment().problems); \
  const config::Config& var = *deployment().cfg

TEST(CsiManifests, EveryYamlParsesAndTheKustomizationsListThem) {
  REQUIRE_CSI_SET(d);
  std::vector<std::string> top;
  for (const auto& f : yaml_files(kCsiDir)) {
    if (f.find('/') == std::string::npos) top.push_back(f);
  }
  auto problems = check_kustomization(kustomization_files(d.kustomization), top);
  bool base_listed = false;
  for (const auto& r : at(d.kustomization, "resources")) base_listed |= str(r) == "../../daemonset";
  if (!base_listed)
    problems.push_back("deploy/csi/kustomization.yaml does not build on daemonset/");
  const auto examples_k = all_of_kind(d.examples, "Kustomization");
  ASSERT_EQ(examples_k.size(), 1u);
  for (const auto& p : check_kustomization(examples_k.front(), yaml_files(kCsiExamplesDir))) {
    problems.push_back("examples/: " + p);
  }
  EXPECT_TRUE(problems.empty()) << join(problems);
}

TEST(CsiManifests, CsiDriverIsAttachRequiredPersistentWithFileFsGroup) {
  REQUIRE_CSI_SET(d);
  const auto spec = at(d.driver, "spec");
  EXPECT_EQ(str(at(spec, "attachRequired")), "true");
  EXPECT_EQ(str(at(spec, "podInfoOnMount")), "true");
  EXPECT_EQ(str(at(spec, "fsGroupPolicy")), "File");
  EXPECT_EQ(str(at(spec, "requiresRepublish")), "false");
  const auto modes = at(spec, "volumeLifecycleModes");
  ASSERT_TRUE(modes.IsSequence() && modes.size() == 1);
  EXPECT_EQ(str(at(modes, 0)), "Persistent");
}

TEST(CsiManifests, ConfigMapsServeTheDriverInTheirRoles) {
  REQUIRE_CSI_SET(d);
  const auto node = check_csi_section(d.node_csi, kCsiDriver, false);
  EXPECT_TRUE(node.empty()) << "node ConfigMap:\n" << join(node);
  const auto controller = check_csi_section(d.controller_csi, kCsiDriver, true);
  EXPECT_TRUE(controller.empty()) << "controller ConfigMap:\n" << join(controller);
}

TEST(CsiManifests, NodeDaemonSetRegistersTheAgentsSocket) {
  REQUIRE_CSI_SET(d);
  REQUIRE_BASE_CONFIG(base_cfg);
  const auto problems = check_csi_node(d.daemonset, d.node_csi, kCsiDriver, base_cfg);
  EXPECT_TRUE(problems.empty()) << join(problems);
  // kubelet's pods dir and the CSI staging dir are reached through the base's kubelet_root mount,
  // which check_daemonset() requires to be Bidirectional.
  EXPECT_EQ(base_cfg.kubelet_root, "/var/lib/kubelet");
}

TEST(CsiManifests, ControllerDeploymentAndItsRbac) {
  REQUIRE_CSI_SET(d);
  auto problems = check_csi_controller(d.controller, d.controller_cm, d.controller_csi);
  const auto sa = str(at(d.controller, "spec", "template", "spec", "serviceAccountName"));
  EXPECT_EQ(all_of_kind(d.docs, "ServiceAccount", sa).size(), 1u) << sa;
  auto add = [&](const Problems& more) {
    problems.insert(problems.end(), more.begin(), more.end());
  };
  add(check_csi_rbac(d.docs, sa, "datera-system",
                     {"datera-csi-provisioner", "datera-csi-attacher", "datera-csi-resizer",
                      "datera-csi-snapshotter"},
                     {"datera-csi-leader-election", "datera-csi-secrets"}));
  add(check_grants(d.docs, "ClusterRole", "datera-csi-snapshotter", kSnapshotterNeeds));
  add(check_grants(d.docs, "ClusterRole", "datera-csi-provisioner", kProvisionerSourceNeeds));
  add(check_grants(d.docs, "Role", "datera-csi-leader-election", kLeaderElectionNeeds));
  EXPECT_TRUE(problems.empty()) << join(problems);
}

TEST(CsiManifests, ExampleStorageClassesUseTheFlexVolumeOptionNames) {
  REQUIRE_CSI_SET(d);
  // The FlexVolume options that become StorageClass parameters (plugins/edf/options.h); the rest
  // map to Kubernetes fields: size (the PVC), retainPolicy (reclaimPolicy), fsType (fstype),
  // backstoreServer/serverUser/serverPasswd (the Secret), volumeID (the PV name).
  static const std::set<std::string> kOptions = {"replica",       "template", "ipPool",
                                                 "placementMode", "maxIops",  "maxBW"};
  const auto classes = all_of_kind(d.examples, "StorageClass");
  ASSERT_FALSE(classes.empty());
  for (const auto& sc : classes) {
    const auto name = str(at(sc, "metadata", "name"));
    EXPECT_EQ(str(at(sc, "provisioner")), kCsiDriver) << name;
    EXPECT_EQ(str(at(sc, "allowVolumeExpansion")), "true") << name;
    EXPECT_EQ(str(at(sc, "parameters", "csi.storage.k8s.io/fstype")), "xfs") << name;
    for (const auto& kv : at(sc, "parameters")) {
      const auto key = kv.first.Scalar();
      EXPECT_TRUE(kOptions.contains(key) || key.starts_with("csi.storage.k8s.io/"))
          << name << ": parameter " << key << " is not a FlexVolume option name";
      // Parameters are strings: an unquoted number or boolean is refused by the API server.
      static const std::set<std::string> kNonStrings = {"true", "false", "yes", "no", "on", "off"};
      const auto value = str(kv.second);
      EXPECT_FALSE(kv.second.Tag() == "?" && (to_int(value) || kNonStrings.contains(value)))
          << name << ": parameter " << key << ": " << value << " must be quoted";
    }
  }
}

/// A resource quantity in bytes ("10Gi", "500M", "1073741824"); nullopt for anything else
/// (fractions, exponents: the examples use neither).
std::optional<long long> quantity_bytes(const std::string& q) {
  static const std::vector<std::pair<std::string, long long>> kSuffixes = {
      {"Ki", 1LL << 10}, {"Mi", 1LL << 20}, {"Gi", 1LL << 30},    {"Ti", 1LL << 40},
      {"k", 1'000},      {"M", 1'000'000},  {"G", 1'000'000'000}, {"T", 1'000'000'000'000}};
  for (const auto& [suffix, factor] : kSuffixes) {
    if (q.size() > suffix.size() && q.ends_with(suffix)) {
      const auto n = to_int(q.substr(0, q.size() - suffix.size()));
      return n ? std::optional<long long>(*n * factor) : std::nullopt;
    }
  }
  return to_int(q);
}

/// The examples' snapshot objects and the PVCs made from a snapshot or a PVC: each reference
/// resolves among the examples, in the same namespace, to something of this driver, as
/// external-provisioner requires (a clone: the source's StorageClass; both: at least the source's
/// size, its volumeMode).
Problems check_snapshot_examples(const std::vector<Doc>& examples, const std::string& driver) {
  Problems problems;
  auto fail = [&](const std::string& p) { problems.push_back(p); };
  auto find = [&](const std::string& kind, const std::string& name, const std::string& ns) {
    for (const auto& o : all_of_kind(examples, kind, name)) {
      if (str(at(o, "metadata", "namespace")) == ns) return o;
    }
    return YAML::Node{};
  };
  auto ours = [&](const YAML::Node& pvc) {
    const auto sc = all_of_kind(examples, "StorageClass", str(at(pvc, "spec", "storageClassName")));
    return sc.size() == 1 && str(at(sc.front(), "provisioner")) == driver;
  };
  auto size = [](const YAML::Node& pvc) {
    return quantity_bytes(str(at(pvc, "spec", "resources", "requests", "storage")));
  };
  auto mode = [](const YAML::Node& pvc) {
    const auto m = str(at(pvc, "spec", "volumeMode"));
    return m.empty() ? std::string("Filesystem") : m;
  };
  const auto classes = all_of_kind(examples, "VolumeSnapshotClass");
  if (classes.empty()) fail("no VolumeSnapshotClass among the examples");
  for (const auto& c : classes) {
    const auto name = str(at(c, "metadata", "name"));
    if (str(at(c, "driver")) != driver) {
      fail("VolumeSnapshotClass " + name + " driver is '" + str(at(c, "driver")) +
           "', the CSIDriver is " + driver);
    }
    if (str(at(c, "deletionPolicy")) != "Delete") {
      fail("VolumeSnapshotClass " + name + " deletionPolicy is not Delete");
    }
  }
  const auto snapshots = all_of_kind(examples, "VolumeSnapshot");
  if (snapshots.empty()) fail("no VolumeSnapshot among the examples");
  for (const auto& snap : snapshots) {
    const auto name = str(at(snap, "metadata", "name"));
    const auto ns = str(at(snap, "metadata", "namespace"));
    const auto class_name = str(at(snap, "spec", "volumeSnapshotClassName"));
    if (all_of_kind(examples, "VolumeSnapshotClass", class_name).size() != 1) {
      fail("VolumeSnapshot " + name + " names no example VolumeSnapshotClass ('" + class_name +
           "')");
    }
    const auto source_name = str(at(snap, "spec", "source", "persistentVolumeClaimName"));
    const auto source = find("PersistentVolumeClaim", source_name, ns);
    if (!source.IsMap() || !ours(source)) {
      fail("VolumeSnapshot " + name + " source '" + source_name + "' is no example PVC of " +
           driver + " in namespace " + ns);
    }
  }
  int restores = 0;
  int clones = 0;
  for (const auto& pvc : all_of_kind(examples, "PersistentVolumeClaim")) {
    const auto ds = at(pvc, "spec", "dataSource");
    if (!has(ds)) continue;
    const auto name = "PVC " + str(at(pvc, "metadata", "name"));
    const auto ns = str(at(pvc, "metadata", "namespace"));
    const auto kind = str(at(ds, "kind"));
    const auto group = str(at(ds, "apiGroup"));
    const auto from = str(at(ds, "name"));
    if (!ours(pvc)) fail(name + " is not of a StorageClass of " + driver);
    YAML::Node source;  // the PVC whose data the new one starts with
    if (kind == "VolumeSnapshot") {
      ++restores;
      if (group != "snapshot.storage.k8s.io") {
        fail(name + " dataSource apiGroup is '" + group + "', not snapshot.storage.k8s.io");
      }
      const auto snap = find("VolumeSnapshot", from, ns);
      if (!snap.IsMap()) {
        fail(name + " restores '" + from + "', no example VolumeSnapshot in namespace " + ns);
        continue;
      }
      source = find("PersistentVolumeClaim",
                    str(at(snap, "spec", "source", "persistentVolumeClaimName")), ns);
    } else if (kind == "PersistentVolumeClaim") {
      ++clones;
      if (!group.empty())
        fail(name + " dataSource apiGroup is '" + group + "', not the core group");
      source = find("PersistentVolumeClaim", from, ns);
      if (!source.IsMap()) {
        fail(name + " clones '" + from + "', no example PVC in namespace " + ns);
        continue;
      }
      if (str(at(source, "spec", "storageClassName")) != str(at(pvc, "spec", "storageClassName"))) {
        fail(name + " is not of its source's StorageClass (a clone must be)");
      }
    } else {
      fail(name + " dataSource kind '" + kind + "' is neither VolumeSnapshot nor PVC");
      continue;
    }
    if (!source.IsMap()) continue;  // reported with the VolumeSnapshot
    const auto want = size(source);
    const auto got = size(pvc);
    if (!want || !got || *got < *want) fail(name + " is smaller than its source");
    if (mode(pvc) != mode(source)) fail(name + " volumeMode differs from its source's");
  }
  if (restores == 0) fail("no example PVC restores a VolumeSnapshot");
  if (clones == 0) fail("no example PVC clones a PVC");
  return problems;
}

TEST(CsiManifests, ExampleSnapshotsRestoresAndClonesReferToTheDriversObjects) {
  REQUIRE_CSI_SET(d);
  const auto problems = check_snapshot_examples(d.examples, kCsiDriver);
  EXPECT_TRUE(problems.empty()) << join(problems);
}

// Each CSI ConfigMap must be a valid agent config, and the node one must keep
// daemonset/configmap.yaml's FlexVolume settings (the same agent serves both).
TEST(Manifests, CsiConfigMapsParse) {
  REQUIRE_CSI_SET(d);
  REQUIRE_BASE_CONFIG(base_cfg);
  for (const auto& cm : {d.node_cm, d.controller_cm}) {
    Problems problems;
    const auto cfg = configmap_config(cm, problems);
    EXPECT_TRUE(problems.empty()) << str(at(cm, "metadata", "name")) << ":\n" << join(problems);
    ASSERT_TRUE(cfg.has_value());
    if (cm == d.node_cm) {
      EXPECT_EQ(cfg->socket_path, base_cfg.socket_path);
      EXPECT_EQ(cfg->plugin_dir, base_cfg.plugin_dir);
      EXPECT_EQ(cfg->kubelet_root, base_cfg.kubelet_root);
      EXPECT_EQ(cfg->state_dir, base_cfg.state_dir);
      EXPECT_EQ(cfg->shutdown_grace, base_cfg.shutdown_grace);
      EXPECT_EQ(cfg->metrics.listen, base_cfg.metrics.listen);
      EXPECT_EQ(cfg->metrics.probe_listen, base_cfg.metrics.probe_listen);
      EXPECT_EQ(cfg->driver.vendor, base_cfg.driver.vendor);
      EXPECT_EQ(cfg->driver.driver, base_cfg.driver.driver);
      EXPECT_EQ(cfg->attach, base_cfg.attach);
    }
  }
}

TEST(CheckerSelfTest, BrokenCsiManifestsAreCaught) {
  REQUIRE_CSI_SET(d);
  REQUIRE_BASE_CONFIG(base_cfg);
  // The csi: section in the wrong role, with a typo and another driver name.
  auto csi = YAML::Clone(d.node_csi);
  csi["controller"] = true;
  csi["driver_name"] = "iscsi.datera.io";
  csi["max_volume_per_node"] = 0;
  const auto section = check_csi_section(csi, kCsiDriver, false);
  EXPECT_TRUE(mentions(section, "csi.controller is 'true', this role needs false"))
      << join(section);
  EXPECT_TRUE(mentions(section, "the CSIDriver is agent.iscsi.datera.io")) << join(section);
  EXPECT_TRUE(mentions(section, "csi.max_volume_per_node is not a csi key")) << join(section);

  // The node: registration path, socket dir and sidecar ports out of step.
  auto ds = YAML::Clone(d.daemonset);
  auto pod = ds["spec"]["template"]["spec"];
  for (auto c : pod["containers"]) {
    const auto name = c["name"].as<std::string>();
    if (name == "node-driver-registrar") {
      c["args"][1] = "--kubelet-registration-path=/var/lib/kubelet/plugins/other/csi.sock";
      c["args"][2] = "--http-endpoint=127.0.0.1:9809";
    }
    if (name == "liveness-probe") c["args"][0] = "--csi-address=/tmp/csi.sock";
  }
  const auto node = check_csi_node(ds, d.node_csi, kCsiDriver, base_cfg);
  EXPECT_TRUE(mentions(node, "--kubelet-registration-path is '/var/lib/kubelet/plugins/other"))
      << join(node);
  EXPECT_TRUE(mentions(node, "--http-endpoint 127.0.0.1:9809 is not a port of its own"))
      << join(node);
  EXPECT_TRUE(mentions(node, "liveness-probe --csi-address /tmp/csi.sock is not the agent's"))
      << join(node);
  auto moved = YAML::Clone(d.node_csi);
  moved["endpoint"] = "/run/csi/csi.sock";
  EXPECT_TRUE(mentions(check_csi_node(d.daemonset, moved, kCsiDriver, base_cfg),
                       "csi.endpoint /run/csi/csi.sock is not in hostPath"));

  // The controller: one replica's worth of settings, the snapshotter on another socket (the
  // node's path, /csi/csi.sock, not the controller agent's /csi/agent/csi.sock) with the default
  // 10s of the other sidecars.
  auto deploy = YAML::Clone(d.controller);
  deploy["spec"]["replicas"] = 1;
  auto cpod = deploy["spec"]["template"]["spec"];
  for (auto c : cpod["containers"]) {
    const auto name = c["name"].as<std::string>();
    if (name == "csi-attacher") c["args"].remove(1);
    if (name != "csi-snapshotter") continue;
    YAML::Node args;
    for (const auto& a : c["args"]) {
      const auto arg = a.as<std::string>();
      if (arg.starts_with("--csi-address=")) {
        args.push_back("--csi-address=/csi/csi.sock");
      } else if (arg.starts_with("--timeout=")) {
        args.push_back("--timeout=10s");
      } else {
        args.push_back(arg);
      }
    }
    c["args"] = args;
  }
  const auto controller = check_csi_controller(deploy, d.controller_cm, d.controller_csi);
  EXPECT_TRUE(mentions(controller, "does not run 2 replicas")) << join(controller);
  EXPECT_TRUE(mentions(controller, "csi-attacher runs without --leader-election"))
      << join(controller);
  EXPECT_TRUE(
      mentions(controller, "csi-snapshotter --csi-address /csi/csi.sock is not the agent's"))
      << join(controller);
  EXPECT_TRUE(mentions(controller, "csi-snapshotter --timeout 10s is under 60s"))
      << join(controller);
  // ... and without a snapshotter at all.
  auto without = YAML::Clone(d.controller);
  YAML::Node kept;
  for (const auto& c : without["spec"]["template"]["spec"]["containers"]) {
    if (c["name"].as<std::string>() != "csi-snapshotter") kept.push_back(c);
  }
  without["spec"]["template"]["spec"]["containers"] = kept;
  EXPECT_TRUE(mentions(check_csi_controller(without, d.controller_cm, d.controller_csi),
                       "no csi-snapshotter sidecar"));

  // RBAC: a role nobody binds, and one that does not exist.
  const auto rbac = check_csi_rbac(d.docs, "someone-else", "datera-system",
                                   {"datera-csi-provisioner", "no-such-role"}, {});
  EXPECT_TRUE(mentions(rbac, "ClusterRole datera-csi-provisioner is not bound")) << join(rbac);
  EXPECT_TRUE(mentions(rbac, "ClusterRole no-such-role is not defined")) << join(rbac);
  // The snapshotter's ClusterRole without its status rule (the last), the provisioner's without
  // the VolumeSnapshot rule: a snapshot that never turns ready, a restore that cannot start.
  std::vector<Doc> docs;
  for (const auto& doc : d.docs) docs.push_back({doc.file, YAML::Clone(doc.node)});
  for (auto& doc : docs) {
    if (str(at(doc.node, "kind")) != "ClusterRole") continue;
    const auto name = str(at(doc.node, "metadata", "name"));
    YAML::Node rules;
    for (const auto& r : doc.node["rules"]) {
      const bool drop =
          (name == "datera-csi-snapshotter" &&
           str(at(r, "resources", 0)) == "volumesnapshotcontents/status") ||
          (name == "datera-csi-provisioner" && str(at(r, "resources", 0)) == "volumesnapshots");
      if (!drop) rules.push_back(r);
    }
    doc.node["rules"] = rules;
  }
  const auto snap = check_grants(docs, "ClusterRole", "datera-csi-snapshotter", kSnapshotterNeeds);
  EXPECT_TRUE(mentions(snap, "does not grant patch on volumesnapshotcontents/status"))
      << join(snap);
  const auto prov =
      check_grants(docs, "ClusterRole", "datera-csi-provisioner", kProvisionerSourceNeeds);
  EXPECT_TRUE(mentions(prov, "does not grant get on volumesnapshots")) << join(prov);

  // The examples: a class of another driver, a snapshot of a PVC that is not there, a restore
  // from the snapshot's versioned apiGroup, a clone of another StorageClass and smaller than its
  // source.
  std::vector<Doc> examples;
  for (const auto& doc : d.examples) examples.push_back({doc.file, YAML::Clone(doc.node)});
  for (auto& doc : examples) {
    const auto kind = str(at(doc.node, "kind"));
    const auto name = str(at(doc.node, "metadata", "name"));
    if (kind == "VolumeSnapshotClass") doc.node["driver"] = "iscsi.datera.io";
    if (kind == "VolumeSnapshot") doc.node["spec"]["source"]["persistentVolumeClaimName"] = "gone";
    if (name == "datera-example-restore") {
      doc.node["spec"]["dataSource"]["apiGroup"] = "snapshot.storage.k8s.io/v1";
    }
    if (name == "datera-example-clone") {
      doc.node["spec"]["storageClassName"] = "datera-iscsi-other-array";
      doc.node["spec"]["resources"]["requests"]["storage"] = "5Gi";
    }
  }
  const auto ex = check_snapshot_examples(examples, kCsiDriver);
  EXPECT_TRUE(mentions(ex, "driver is 'iscsi.datera.io', the CSIDriver is agent.iscsi.datera.io"))
      << join(ex);
  EXPECT_TRUE(mentions(ex, "source 'gone' is no example PVC")) << join(ex);
  EXPECT_TRUE(mentions(ex, "apiGroup is 'snapshot.storage.k8s.io/v1', not snapshot.storage.k8s.io"))
      << join(ex);
  EXPECT_TRUE(mentions(ex, "PVC datera-example-clone is not of its source's StorageClass"))
      << join(ex);
  EXPECT_TRUE(mentions(ex, "PVC datera-example-clone is smaller than its source")) << join(ex);
}

}  // namespace
}  // namespace datera::deploy

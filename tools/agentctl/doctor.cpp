#include "tools/agentctl/doctor.h"

#include <dirent.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <sys/timex.h>

namespace datera::agentctl {

namespace {

class LinuxHost final : public Host {
 public:
  std::optional<std::string> read_file(const std::string& path) const override {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  bool process_running(const std::string& comm) const override {
    DIR* d = ::opendir("/proc");
    if (!d) return false;
    bool found = false;
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      auto c = read_file(std::string("/proc/") + e->d_name + "/comm");
      if (c && c->substr(0, c->find('\n')) == comm) {
        found = true;
        break;
      }
    }
    ::closedir(d);
    return found;
  }
  bool exists(const std::string& path) const override {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
  }
  std::optional<bool> clock_synced() const override {
    timex tx{};
    const int state = ::adjtimex(&tx);
    if (state < 0) return std::nullopt;
    return state != TIME_ERROR && (tx.status & STA_UNSYNC) == 0;
  }
};

Check pass(std::string name, std::string detail) {
  return {std::move(name), Verdict::pass, std::move(detail), ""};
}
Check warn(std::string name, std::string detail, std::string fix) {
  return {std::move(name), Verdict::warn, std::move(detail), std::move(fix)};
}
Check fail(std::string name, std::string detail, std::string fix) {
  return {std::move(name), Verdict::fail, std::move(detail), std::move(fix)};
}

}  // namespace

const Host& linux_host() {
  static const LinuxHost host;
  return host;
}

std::optional<bool> shared_mount(const std::string& mountinfo, const std::string& path) {
  std::istringstream in(mountinfo);
  std::string line;
  size_t best = 0;
  std::optional<bool> shared;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point, opts, field;
    if (!(f >> id >> parent >> dev >> root >> point >> opts)) continue;
    const bool under =
        path == point || point == "/" ||
        (path.rfind(point, 0) == 0 && path.size() > point.size() && path[point.size()] == '/');
    if (!under || point.size() < best) continue;
    bool is_shared = false;
    while (f >> field && field != "-") is_shared |= field.rfind("shared:", 0) == 0;
    best = point.size();
    shared = is_shared;
  }
  return shared;
}

std::vector<Check> doctor(const nlohmann::json& s, const Host& host) {
  std::vector<Check> out;
  if (s.value("ready", false)) {
    out.push_back(pass("agent", "ready, version " + s.value("version", std::string("?"))));
  } else {
    std::string why;
    const nlohmann::json conditions = s.value("readiness", nlohmann::json::object());
    for (const auto& [name, c] : conditions.items()) {
      if (!c.value("ok", true)) {
        why += (why.empty() ? "" : "; ") + name + ": " + c.value("detail", std::string());
      }
    }
    out.push_back(fail("agent", "not ready: " + why, "see the agent's log; it retries by itself"));
  }

  const auto driver = s.value("driver", nlohmann::json::object());
  const std::string path = driver.value("path", std::string("?"));
  if (driver.value("ready", false) && driver.value("version", "") == s.value("version", "")) {
    out.push_back(pass("driver", path + " installed, version " + driver.value("version", "")));
  } else {
    out.push_back(fail(
        "driver",
        path + ": " + driver.value("state", std::string("not installed")) +
            (driver.contains("last_error") ? " (" + driver["last_error"].get<std::string>() + ")"
                                           : ""),
        "check plugin_dir against kubelet's --volume-plugin-dir and that it is "
        "writable by the agent"));
  }

  const auto backend = s.value("backend", nlohmann::json::object());
  if (!backend.value("configured", true) || !backend.contains("server")) {
    out.push_back(warn("array", "no default array configured",
                       "every volume must name its array (backstoreServer or a secret)"));
  } else if (backend.value("up", false)) {
    out.push_back(pass("array", backend.value("server", std::string()) + " reachable, logged in" +
                                    (backend.contains("sw_version")
                                         ? " (EDF " + backend["sw_version"].get<std::string>() + ")"
                                         : "")));
  } else {
    out.push_back(fail("array",
                       backend.value("server", std::string()) +
                           " unreachable with the configured "
                           "credentials: " +
                           backend.value("last_error", std::string("not checked yet")),
                       "check backend.server, backend.username and the password file"));
  }

  if (s.value("initiator", std::string("open-iscsi")) == "open-iscsi") {
    if (host.process_running("iscsid")) {
      out.push_back(pass("iscsid", "running"));
    } else {
      out.push_back(fail("iscsid", "not running",
                         "systemctl enable --now iscsid (one iscsid per host, in the host)"));
    }
    const auto iqn = s.find("initiator_iqn");
    const auto name = host.read_file("/etc/iscsi/initiatorname.iscsi");
    if (iqn != s.end() && iqn->is_string() && !iqn->get<std::string>().empty()) {
      // The agent's own answer: initiator.iqn when set, else the host's file.
      out.push_back(pass("initiator-name", iqn->get<std::string>()));
    } else if (iqn != s.end()) {
      out.push_back(fail("initiator-name",
                         "the agent has no initiator IQN: " +
                             s.value("initiator_iqn_error", std::string("unknown reason")),
                         "set initiator.iqn in the config, or: echo InitiatorName=$(iscsi-iname) > "
                         "/etc/iscsi/initiatorname.iscsi"));
    } else if (name && name->find("InitiatorName=iqn.") != std::string::npos) {
      const auto at = name->find("InitiatorName=");
      out.push_back(pass("initiator-name", name->substr(at + 14, name->find('\n', at) - at - 14)));
    } else {
      out.push_back(fail("initiator-name", "/etc/iscsi/initiatorname.iscsi has no InitiatorName",
                         "echo InitiatorName=$(iscsi-iname) > /etc/iscsi/initiatorname.iscsi"));
    }
  }

  const std::string kubelet = s.value("kubelet_root", std::string("/var/lib/kubelet"));
  const auto mountinfo = host.read_file("/proc/self/mountinfo");
  const auto shared = mountinfo ? shared_mount(*mountinfo, kubelet) : std::nullopt;
  if (shared && *shared) {
    out.push_back(pass("mount-propagation", kubelet + " is on a shared mount"));
  } else {
    out.push_back(fail("mount-propagation",
                       kubelet + (shared ? " is on a private mount" : ": no mount found"),
                       "mounts the agent makes must reach kubelet: mount the kubelet dir "
                       "Bidirectional in the DaemonSet (mount --make-rshared on the host)"));
  }

  if (host.exists("/run/udev/control")) {
    out.push_back(pass("udev", "/run/udev/control present"));
  } else {
    out.push_back(warn("udev", "udevd's control socket is missing",
                       "sessions are still watched by polling; mount /run/udev into the pod"));
  }

  const auto synced = host.clock_synced();
  if (synced && *synced) {
    out.push_back(pass("clock", "synchronized"));
  } else {
    out.push_back(warn("clock", synced ? "not synchronized" : "unknown",
                       "run NTP (systemd-timesyncd, chrony): TLS certificate checks and log times "
                       "need it; leases do not"));
  }
  return out;
}

std::string render(const std::vector<Check>& checks) {
  std::string out;
  for (const auto& c : checks) {
    std::string name = c.name;
    name.resize(std::max<size_t>(name.size(), 18), ' ');
    out += (c.verdict == Verdict::pass   ? "PASS  "
            : c.verdict == Verdict::warn ? "WARN  "
                                         : "FAIL  ") +
           name + "  " + c.detail + (c.fix.empty() ? "" : "\n      -> " + c.fix) + "\n";
  }
  return out;
}

nlohmann::json to_json(const std::vector<Check>& checks) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& c : checks) {
    out.push_back({{"check", c.name},
                   {"result", c.verdict == Verdict::pass   ? "pass"
                              : c.verdict == Verdict::warn ? "warn"
                                                           : "fail"},
                   {"detail", c.detail},
                   {"fix", c.fix}});
  }
  return out;
}

bool any_failed(const std::vector<Check>& checks) {
  for (const auto& c : checks) {
    if (c.verdict == Verdict::fail) return true;
  }
  return false;
}

}  // namespace datera::agentctl

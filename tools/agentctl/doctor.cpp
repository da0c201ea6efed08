#include "tools/agentctl/doctor.h"

#include <algorithm>
#include <dirent.h>
#include <fstream>
#include <regex>
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
  std::vector<std::string> list_dir(const std::string& path) const override {
    std::vector<std::string> out;
    DIR* d = ::opendir(path.c_str());
    if (!d) return out;
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != ".." && out.size() < 1024) out.push_back(name);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
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

namespace {

/// multipath.conf: `name value` lines and `name {` ... `}` sections; "#" and "!" start comments;
/// values may be quoted.
struct ConfNode {
  std::string key;
  std::string value;
  std::vector<ConfNode> children;
};

std::vector<std::vector<std::string>> conf_lines(const std::string& text) {
  std::vector<std::vector<std::string>> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line) && lines.size() < 100'000) {
    std::vector<std::string> words;
    for (size_t i = 0; i < line.size();) {
      const char c = line[i];
      if (c == '#' || c == '!') break;
      if (c == ' ' || c == '\t' || c == '\r') {
        ++i;
      } else if (c == '"') {
        const size_t close = line.find('"', i + 1);
        const size_t end = close == std::string::npos ? line.size() : close;
        words.push_back(line.substr(i + 1, end - i - 1));
        i = end + 1;
      } else if (c == '{' || c == '}') {
        words.emplace_back(1, c);
        ++i;
      } else {
        size_t j = i;
        while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '{' &&
               line[j] != '}' && line[j] != '"' && line[j] != '#' && line[j] != '!') {
          ++j;
        }
        words.push_back(line.substr(i, j - i));
        i = j;
      }
    }
    if (!words.empty()) lines.push_back(std::move(words));
  }
  return lines;
}

std::vector<ConfNode> conf_parse(const std::string& text) {
  std::vector<ConfNode> top;
  std::vector<std::vector<ConfNode>*> stack{&top};
  for (const auto& words : conf_lines(text)) {
    for (size_t i = 0; i < words.size(); ++i) {
      const std::string& w = words[i];
      if (w == "}") {
        if (stack.size() > 1) stack.pop_back();
        continue;
      }
      if (w == "{") continue;  // a stray brace
      ConfNode node;
      node.key = w;
      if (i + 1 < words.size() && words[i + 1] == "{") {
        stack.back()->push_back(std::move(node));
        if (stack.size() < 8) stack.push_back(&stack.back()->back().children);
        ++i;
        continue;
      }
      if (i + 1 < words.size() && words[i + 1] != "}") node.value = words[++i];
      stack.back()->push_back(std::move(node));
    }
  }
  return top;
}

/// A `device` block matches when its vendor regex (and product regex, when present) finds the
/// disk's, as multipathd's regexec does.
bool device_matches(const ConfNode& device, const std::string& vendor, const std::string& product) {
  std::optional<std::string> v, p;
  for (const auto& c : device.children) {
    if (c.key == "vendor") v = c.value;
    if (c.key == "product") p = c.value;
  }
  if (!v || v->size() > 256 || (p && p->size() > 256)) return false;
  try {
    if (!std::regex_search(vendor, std::regex(*v, std::regex::extended))) return false;
    return !p || std::regex_search(product, std::regex(*p, std::regex::extended));
  } catch (const std::regex_error&) {
    return false;  // multipathd would reject it too
  }
}

}  // namespace

std::optional<bool> multipath_blacklists(const std::string& conf, const std::string& vendor,
                                         const std::string& product) {
  if (conf.size() > (1 << 20)) return std::nullopt;
  std::optional<bool> out;
  for (const auto& section : conf_parse(conf)) {
    if (section.key != "blacklist" && section.key != "blacklist_exceptions") continue;
    for (const auto& d : section.children) {
      if (d.key != "device" || !device_matches(d, vendor, product)) continue;
      if (section.key == "blacklist_exceptions") return false;  // exceptions win
      out = true;
    }
  }
  return out;
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

  // The agent makes its own map over each volume's disk; a multipathd map over it would hold the
  // disk first and the volume's mount would fail. Keep multipathd off Datera disks.
  const auto mp = s.value("multipath", nlohmann::json::object());
  if (host.process_running("multipathd") || mp.value("multipathd", false)) {
    std::optional<bool> kept_off;
    std::string where;
    std::vector<std::string> files{"/etc/multipath.conf"};
    for (const auto& f : host.list_dir("/etc/multipath/conf.d")) {
      if (f.size() > 5 && f.substr(f.size() - 5) == ".conf") {
        files.push_back("/etc/multipath/conf.d/" + f);
      }
    }
    for (const auto& f : files) {
      const auto text = host.read_file(f);
      if (!text) continue;
      const auto says = multipath_blacklists(*text, "DATERA", "IBLOCK");
      if (says == false) {
        kept_off = false;
        where = f;
        break;
      }
      if (says == true && !kept_off) {
        kept_off = true;
        where = f;
      }
    }
    if (kept_off == true) {
      out.push_back(
          pass("multipathd", "running; Datera disks (DATERA/IBLOCK) blacklisted in " + where));
    } else {
      out.push_back(fail(
          "multipathd",
          kept_off == false
              ? "running, and " + where + " excepts Datera disks from its blacklist"
              : "running, and its configuration does not blacklist Datera disks (vendor DATERA, "
                "product IBLOCK): it may claim a volume's disk before the agent's map, and the "
                "volume's mount then fails",
          "install -D -m 0644 systemd/datera-agent-multipath.conf "
          "/etc/multipath/conf.d/datera-agent.conf && multipathd reconfigure (or "
          "initiator.multipath: off)"));
    }
  } else {
    out.push_back(pass("multipathd", "not running: the agent's maps are the node's only ones"));
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

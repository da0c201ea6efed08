#include "tools/agentctl/views.h"

#include <algorithm>

namespace datera::agentctl {

namespace {

std::string str(const Json& j, const char* key, const std::string& dflt = "-") {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (it->is_string()) return it->get<std::string>().empty() ? dflt : it->get<std::string>();
  if (it->is_boolean()) return it->get<bool>() ? "yes" : "no";
  return it->dump();
}

std::string duration(int64_t s) {
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

/// A pod volume dir, .../pods/<uid>/volumes/..., as its pod uid.
std::string pod_uid(const std::string& dir) {
  const auto at = dir.find("/pods/");
  return at == std::string::npos ? dir : dir.substr(at + 6, dir.find('/', at + 6) - at - 6);
}

/// `pod_dirs`: the values are pod volume dirs, shown as pod uids.
std::string joined(const Json& list, const char* key = nullptr, bool pod_dirs = false) {
  std::string out;
  for (const auto& e : list) {
    std::string v = key ? str(e, key, "") : (e.is_string() ? e.get<std::string>() : e.dump());
    if (pod_dirs) v = pod_uid(v);
    out += (out.empty() ? "" : ",") + v;
  }
  return out.empty() ? "-" : out;
}

}  // namespace

std::string table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& r : rows) {
    for (size_t c = 0; c < r.size() && c < width.size(); ++c)
      width[c] = std::max(width[c], r[c].size());
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t c = 0; c < header.size(); ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      l += cell;
      if (c + 1 < header.size()) l += std::string(width[c] - cell.size() + 3, ' ');
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
  return out;
}

std::string status_table(const Json& s) {
  const Json driver = s.value("driver", Json::object());
  const Json backend = s.value("backend", Json::object());
  std::string array = "-";
  if (backend.value("configured", true) && backend.contains("server")) {
    array = str(backend, "server") + (backend.value("up", false) ? " (up)" : " (DOWN)");
  }
  const Json calls = s.value("flexvolume", Json::object());
  return table({"NODE", "VERSION", "READY", "DRIVER", "ARRAY", "MODE", "UPTIME", "CALLS", "FAILED"},
               {{str(s, "node"), str(s, "version"), s.value("ready", false) ? "yes" : "NO",
                 driver.value("ready", false) ? str(driver, "version") : "NOT READY", array,
                 s.value("attach", false) ? "controller" : "agent",
                 duration(s.value("uptime_seconds", int64_t{0})), str(calls, "calls_total"),
                 str(calls, "calls_failed")}});
}

std::string volumes_table(const Json& status, const Json& v) {
  std::vector<std::vector<std::string>> rows;
  const std::string node = str(status, "node");
  for (const auto& rec : v.value("volumes", Json::array())) {
    const Json target = rec.value("target", Json::object());
    const Json session = rec.value("session", Json::object());
    const Json portals = target.value("portals", Json::array());
    const auto epoch = rec.value("epoch", uint64_t{0});
    // A record the agent set aside (release kept failing, or unusable at start-up) says so.
    std::string phase = str(rec, "phase");
    if (rec.value("set_aside", false) && phase != "set_aside") phase += " (SET ASIDE)";
    // How the volume came: FlexVolume (agent or controller mode) or CSI, and CSI's raw block.
    std::string mode = str(rec, "mode");
    if (rec.value("block", false)) mode += " (block)";
    rows.push_back({str(rec, "volume"), phase, mode,
                    str(rec, "map") != "-" ? str(rec, "map") + " (" + str(rec, "device") + ")"
                                           : str(rec, "device"),
                    str(session, "state"), joined(portals), epoch ? node : "-",
                    epoch ? std::to_string(epoch) : "-",
                    joined(rec.value("pods", Json::array()), "dir", true)});
  }
  return table({"VOLUME", "PHASE", "MODE", "DEVICE", "SESSION", "PORTAL", "OWNER", "EPOCH", "PODS"},
               rows);
}

std::string sessions_table(const Json& v) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& rec : v.value("volumes", Json::array())) {
    const Json target = rec.value("target", Json::object());
    const Json session = rec.value("session", Json::object());
    rows.push_back({str(rec, "volume"), str(session, "state"), str(session, "session"),
                    str(session, "session_state"), str(session, "portal"), str(target, "iqn"),
                    str(session, "recoveries", "0")});
  }
  return table({"VOLUME", "HEALTH", "SESSION", "STATE", "PORTAL", "TARGET", "RECOVERIES"}, rows);
}

std::string results_table(const Json& results) {
  std::vector<std::vector<std::string>> rows;
  std::string notes;
  for (const auto& r : results) {
    const std::string result = str(r, "result");
    rows.push_back(
        {str(r, "volume"), result, joined(r.value("pods", Json::array()), nullptr, true)});
    if (result != "released" && result != "not_here") notes += str(r, "message", "") + "\n";
  }
  if (rows.empty()) return "this node holds no volume\n";
  return table({"VOLUME", "RESULT", "PODS"}, rows) + (notes.empty() ? "" : "\n" + notes);
}

int release_exit_code(const Json& result) {
  const std::string r = result.value("result", "");
  return r == "released" || r == "not_here" ? 0 : 1;
}

int drain_exit_code(const Json& results) {
  for (const auto& r : results) {
    if (r.value("result", "") == "failed") return 1;
  }
  return 0;
}

}  // namespace datera::agentctl

#include "plugins/flex/driver_info.h"

namespace datera::flex {

Json DriverInfo::default_capabilities() {
  return Json{{"attach", false},
              {"selinuxRelabel", true},
              {"fsGroup", true},
              {"supportsMetrics", true},
              {"requiresFSResize", true}};
}

Json DriverInfo::to_json() const {
  return Json{{"driver", driver},
              {"agent_version", agent_version},
              {"protocol", protocol},
              {"socket", socket},
              {"connect_timeout_ms", connect_timeout.count()},
              {"call_timeout_ms", call_timeout.count()},
              {"capabilities", capabilities}};
}

Result<DriverInfo> DriverInfo::from_json(const Json& j) {
  if (!j.is_object()) return Error{"driver info is not a JSON object"};
  DriverInfo info;
  auto str = [&](const char* key, std::string& out) -> Status {
    if (auto it = j.find(key); it != j.end()) {
      if (!it->is_string()) return Error{std::string("'") + key + "' must be a string"};
      out = it->get<std::string>();
    }
    return ok_status();
  };
  auto ms = [&](const char* key, std::chrono::milliseconds& out) -> Status {
    if (auto it = j.find(key); it != j.end()) {
      if (!it->is_number_integer() || it->get<long long>() <= 0) {
        return Error{std::string("'") + key + "' must be a positive integer"};
      }
      out = std::chrono::milliseconds(it->get<long long>());
    }
    return ok_status();
  };
  for (const auto& st : {str("driver", info.driver), str("agent_version", info.agent_version),
                         str("socket", info.socket), ms("connect_timeout_ms", info.connect_timeout),
                         ms("call_timeout_ms", info.call_timeout)}) {
    if (!st) return st.error();
  }
  if (auto it = j.find("protocol"); it != j.end() && it->is_number_integer()) {
    info.protocol = it->get<int>();
  }
  if (auto it = j.find("capabilities"); it != j.end()) {
    if (!it->is_object()) return Error{"'capabilities' must be an object"};
    info.capabilities = *it;
  }
  if (info.socket.empty() || info.socket.front() != '/') {
    return Error{"'socket' must be an absolute path"};
  }
  return info;
}

}  // namespace datera::flex

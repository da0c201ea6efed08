#pragma once

// `.datera-agent.json`, written by the agent's installer next to the installed shim. It tells the
// shim where the agent listens and what `init` answers, so kubelet's probe never needs the agent.

#include <chrono>
#include <string>

#include "base/result.h"
#include "plugins/flex/protocol.h"

namespace datera::flex {

inline constexpr const char* kDriverInfoFile = ".datera-agent.json";

struct DriverInfo {
  std::string driver = "datera/iscsi";
  std::string agent_version;
  int protocol = 1;
  std::string socket = "/run/datera-agent/agent.sock";
  std::chrono::milliseconds connect_timeout{2'000};
  std::chrono::milliseconds call_timeout{630'000};
  Json capabilities = default_capabilities();

  /// attach=false: the agent does everything at mount time on the node (docs/modes.md).
  static Json default_capabilities();

  Json to_json() const;
  static Result<DriverInfo> from_json(const Json& j);
};

}  // namespace datera::flex

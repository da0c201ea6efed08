#pragma once

// What datera-agentctl prints, from the agent's /v1/status and /v1/volumes answers: kubectl-style
// tables (fixed columns, "-" for nothing) or the JSON itself. Pure functions, tested on recorded
// answers; main.cpp does the I/O.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace datera::agentctl {

using Json = nlohmann::json;

/// Left-aligned columns separated by three spaces, as kubectl prints them.
std::string table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows);

/// NODE VERSION READY DRIVER ARRAY MODE UPTIME CALLS FAILED
std::string status_table(const Json& status);
/// VOLUME PHASE DEVICE SESSION PORTAL OWNER EPOCH PODS
std::string volumes_table(const Json& status, const Json& volumes);
/// VOLUME HEALTH SESSION STATE PORTAL TARGET RECOVERIES
std::string sessions_table(const Json& volumes);

}  // namespace datera::agentctl

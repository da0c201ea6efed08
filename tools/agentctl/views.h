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

/// VOLUME RESULT PODS, one row per result of release or drain (each {"volume","result","message",
/// "pods"}), then the message of every volume that was kept or failed: what to do about it.
std::string results_table(const Json& results);
/// release: 0 released (or nothing here), 1 kept or failed. drain: 0 unless a release failed;
/// volumes kept because pods use them are listed, not failures.
int release_exit_code(const Json& result);
int drain_exit_code(const Json& results);

}  // namespace datera::agentctl

#pragma once

// The FlexVolume call convention (kubelet -> driver argv -> JSON reply) and the shim <-> agent
// request body. Shared by the shim and the agent so both validate argv the same way. No Boost and
// no I/O here: the shim links this and stays small.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace datera::flex {

using Json = nlohmann::json;

inline constexpr const char* kSuccess = "Success";
inline constexpr const char* kFailure = "Failure";
inline constexpr const char* kNotSupported = "Not supported";

/// One slot in a command's argv: either the JSON options string or a named positional value.
struct Slot {
  std::string_view name;  ///< "json" for the options slot
  bool is_json() const { return name == "json"; }
};

struct CommandSpec {
  std::string_view name;
  std::vector<Slot> slots;  ///< argv after the command word, in kubelet's order
  size_t positional_count() const;
};

/// Every command kubelet or the controller manager may call, with its exact argv shape.
const std::vector<CommandSpec>& commands();
const CommandSpec* find_command(std::string_view name);

/// The body of POST /v1/flexvolume.
struct Request {
  std::string command;
  std::vector<std::string> args;  ///< positional slots in order (the JSON slot removed)
  Json options = Json::object();  ///< the parsed JSON slot; empty object when the command has none

  /// The positional value named `slot` (e.g. "podVolumeDir"); nullopt if the command has no such
  /// slot.
  std::optional<std::string> arg(std::string_view slot) const;
  Json to_json() const;
};

/// Parses argv as kubelet passes it (argv[0] excluded: {"mount", "/var/lib/...", "{...}"}).
/// Unknown commands yield an Error whose code is ENOTSUP so the caller can answer "Not supported".
Result<Request> parse_argv(const std::vector<std::string>& argv);

/// Validates a request body received by the agent (command known, arity, options an object of
/// strings).
Result<Request> request_from_json(const Json& body);

/// Reply builders.
Json success(std::string message = {});
Json failure(const std::string& message);
Json not_supported(const std::string& message);

/// Checks that `reply` is an object with an exact FlexVolume status; returns the status.
Result<std::string> validate_reply(const Json& reply);

/// 0 for Success / Not supported, 1 for Failure (kubelet reads the body; rook's convention).
int exit_code_for(const Json& reply);

}  // namespace datera::flex

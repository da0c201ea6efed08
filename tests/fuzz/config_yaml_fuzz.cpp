// Fuzz target config_yaml: the agent's configuration file through config::parse (YAML, strict
// schema, validation), with no environment overrides.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "agent/config/config.h"

using namespace datera;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const config::EnvLookup no_env = [](const std::string&) -> std::optional<std::string> {
    return std::nullopt;
  };
  (void)config::parse(input, no_env, "fuzz-node");
  return 0;
}

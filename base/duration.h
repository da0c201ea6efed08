#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "base/result.h"

namespace datera {

/// Parses "250ms", "10s", "5m", "1h" (a plain integer means seconds) into milliseconds.
Result<std::chrono::milliseconds> parse_duration(std::string_view text);

/// Formats as the shortest exact unit: 1500ms -> "1500ms", 60000ms -> "1m".
std::string format_duration(std::chrono::milliseconds d);

}  // namespace datera

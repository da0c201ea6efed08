#include "base/duration.h"

#include <charconv>

namespace datera {

Result<std::chrono::milliseconds> parse_duration(std::string_view text) {
  const std::string shown{text};
  if (text.empty()) return Error{"empty duration"};
  long long number = 0;
  const auto* begin = text.data();
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, number);
  if (ec != std::errc{} || ptr == begin) {
    return Error{"'" + shown + "' is not a duration (use e.g. 500ms, 10s, 5m, 1h)"};
  }
  if (number < 0) return Error{"'" + shown + "' is negative"};
  const std::string_view unit(ptr, static_cast<size_t>(end - ptr));
  long long factor = 0;
  if (unit.empty() || unit == "s") {
    factor = 1000;
  } else if (unit == "ms") {
    factor = 1;
  } else if (unit == "m") {
    factor = 60'000;
  } else if (unit == "h") {
    factor = 3'600'000;
  } else {
    return Error{"'" + shown + "' has unknown unit '" + std::string(unit) +
                 "' (use ms, s, m or h)"};
  }
  constexpr long long kMaxMs = 365LL * 24 * 3'600'000;  // a year: anything longer is a typo
  if (number > kMaxMs / factor) return Error{"'" + shown + "' is longer than a year"};
  return std::chrono::milliseconds(number * factor);
}

std::string format_duration(std::chrono::milliseconds d) {
  const auto ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

}  // namespace datera

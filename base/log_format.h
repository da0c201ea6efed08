#pragma once

// Log line formats: `text` (timestamp, level, [component], message) or `json` (one object per line:
// time, level, logger, msg, and `volume` when the line is about one), for log pipelines that index
// fields. A line is about a volume when its message starts "volume NAME:", or carries
// "volume=NAME" or "(volume NAME)": the forms the agent's components write
// (tests/base/log_sites_test.cpp holds every log call naming a volume to them).

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/formatter.h>

#include "base/result.h"

namespace datera {

enum class LogFormat { text, json };
Result<LogFormat> parse_log_format(std::string_view text);

/// The volume a message is about, or "" (see above).
std::string volume_of_message(std::string_view msg);

/// spdlog formatter writing one JSON object per line; malformed UTF-8 in the message becomes
/// U+FFFD.
std::unique_ptr<spdlog::formatter> make_json_formatter();

/// spdlog formatter for `text`: "TIME LEVEL [component] message", with line breaks, other control
/// characters and malformed UTF-8 in the message escaped (\n, \xNN): one event, one line.
std::unique_ptr<spdlog::formatter> make_text_formatter();

}  // namespace datera

#include "base/log_format.h"

#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>

#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>

#include "base/utf8.h"

namespace datera {

namespace {

/// JSON string content: quotes, backslashes and controls escaped; malformed UTF-8 (from outside
/// data: a pod dir, an array's reply) becomes U+FFFD, so every line parses as JSON.
void append_escaped(spdlog::memory_buf_t& out, std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8::sequence_length(s, i);
    if (n == 0) {
      out.append(std::string_view("\xef\xbf\xbd"));  // U+FFFD
      ++i;
      continue;
    }
    const char c = s[i];
    if (n > 1 || (static_cast<unsigned char>(c) >= 0x20 && c != '"' && c != '\\')) {
      out.append(s.substr(i, n));
    } else if (c == '"') {
      out.append(std::string_view("\\\""));
    } else if (c == '\\') {
      out.append(std::string_view("\\\\"));
    } else if (c == '\n') {
      out.append(std::string_view("\\n"));
    } else if (c == '\r') {
      out.append(std::string_view("\\r"));
    } else if (c == '\t') {
      out.append(std::string_view("\\t"));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out.append(std::string_view(buf));
    }
    i += n;
  }
}

void field(spdlog::memory_buf_t& out, std::string_view key, std::string_view value, bool first) {
  if (!first) out.push_back(',');
  out.push_back('"');
  out.append(key);
  out.append(std::string_view("\":\""));
  append_escaped(out, value);
  out.push_back('"');
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto t = std::chrono::system_clock::to_time_t(msg.time);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count() %
        1000;
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char when[96];
    std::snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms));
    const std::string_view text(msg.payload.data(), msg.payload.size());
    dest.push_back('{');
    field(dest, "time", when, true);
    const auto level = spdlog::level::to_string_view(msg.level);
    field(dest, "level", std::string_view(level.data(), level.size()), false);
    field(dest, "logger", std::string_view(msg.logger_name.data(), msg.logger_name.size()), false);
    if (const auto v = volume_of_message(text); !v.empty()) field(dest, "volume", v, false);
    field(dest, "msg", text, false);
    dest.append(std::string_view("}\n"));
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

/// %* in the text pattern: the message, escaped so that it stays on its one line (utf8.h).
class EscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    if (utf8::find_unprintable(text) == std::string_view::npos) {
      dest.append(text);  // the common case: nothing to escape, no copy
      return;
    }
    const std::string escaped = utf8::escaped(text);
    dest.append(std::string_view(escaped));
  }
  std::unique_ptr<spdlog::custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessage>();
  }
};

bool name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

}  // namespace

Result<LogFormat> parse_log_format(std::string_view text) {
  if (text == "text") return LogFormat::text;
  if (text == "json") return LogFormat::json;
  return Error{"unknown log format '" + std::string(text) + "' (use text or json)"};
}

std::string volume_of_message(std::string_view msg) {
  auto take = [&](size_t from) {
    size_t end = from;
    while (end < msg.size() && name_char(msg[end])) ++end;
    return std::string(msg.substr(from, end - from));
  };
  if (msg.rfind("volume ", 0) == 0) {
    std::string name = take(7);
    if (!name.empty() && msg.size() > 7 + name.size() && msg[7 + name.size()] == ':') return name;
  }
  if (const auto at = msg.find("volume="); at != std::string_view::npos) {
    std::string name = take(at + 7);
    if (!name.empty() && name != "-") return name;
  }
  // The initiator names its target "target IQN (volume NAME)".
  if (const auto at = msg.find("(volume "); at != std::string_view::npos) {
    std::string name = take(at + 8);
    if (!name.empty() && msg.size() > at + 8 + name.size() && msg[at + 8 + name.size()] == ')')
      return name;
  }
  return "";
}

std::unique_ptr<spdlog::formatter> make_json_formatter() {
  return std::make_unique<JsonFormatter>();
}

std::unique_ptr<spdlog::formatter> make_text_formatter() {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<EscapedMessage>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ [%n] %*");
  return f;
}

}  // namespace datera

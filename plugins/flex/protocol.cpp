#include "plugins/flex/protocol.h"

#include <cerrno>

#include "base/json.h"
#include "base/utf8.h"

namespace datera::flex {

size_t CommandSpec::positional_count() const {
  size_t n = 0;
  for (const auto& s : slots) n += s.is_json() ? 0 : 1;
  return n;
}

const std::vector<CommandSpec>& commands() {
  // From kubernetes pkg/volume/flexvolume (driver-call.go and the attacher/mounter sources).
  static const std::vector<CommandSpec> kCommands = {
      {"init", {}},
      {"getvolumename", {{"json"}}},
      {"attach", {{"json"}, {"nodeName"}}},
      {"isattached", {{"json"}, {"nodeName"}}},
      {"detach", {{"volumeName"}, {"nodeName"}}},
      {"waitforattach", {{"device"}, {"json"}}},
      {"mountdevice", {{"deviceMountPath"}, {"device"}, {"json"}}},
      {"unmountdevice", {{"deviceMountPath"}}},
      {"mount", {{"podVolumeDir"}, {"json"}}},
      {"unmount", {{"podVolumeDir"}}},
      {"expandvolume", {{"json"}, {"deviceMountPath"}, {"newSize"}, {"oldSize"}}},
      {"expandfs", {{"json"}, {"device"}, {"deviceMountPath"}, {"newSize"}, {"oldSize"}}},
  };
  return kCommands;
}

const CommandSpec* find_command(std::string_view name) {
  for (const auto& c : commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::optional<std::string> Request::arg(std::string_view slot) const {
  const auto* spec = find_command(command);
  if (spec == nullptr) return std::nullopt;
  size_t i = 0;
  for (const auto& s : spec->slots) {
    if (s.is_json()) continue;
    if (s.name == slot) return i < args.size() ? std::optional(args[i]) : std::nullopt;
    ++i;
  }
  return std::nullopt;
}

Json Request::to_json() const {
  return Json{{"command", command}, {"args", args}, {"options", options}};
}

namespace {

std::string usage(const CommandSpec& spec) {
  std::string u = std::string(spec.name);
  for (const auto& s : spec.slots)
    u += s.is_json() ? " <json options>" : " <" + std::string(s.name) + ">";
  return u;
}

/// kubelet's positional arguments are paths, node names and sizes: never control characters, and
/// always UTF-8 (JSON cannot carry anything else). The value is echoed escaped, never raw.
Status check_arg(std::string_view command, std::string_view slot, const std::string& value) {
  const size_t at = utf8::find_unprintable(value);
  if (at == std::string::npos) return ok_status();
  const std::string what = utf8::sequence_length(value, at) == 0 ? " is not valid UTF-8"
                                                                 : " contains a control character";
  return Error{"'" + std::string(command) + "': " + std::string(slot) + what + " (at byte " +
               std::to_string(at) + " of \"" + utf8::escaped(value) +
               "\"); kubelet never passes such an argument"};
}

Status check_options(const Json& options) {
  if (!options.is_object()) return Error{"options must be a JSON object"};
  for (const auto& [key, value] : options.items()) {
    if (!value.is_string()) {
      return Error{"option '" + key + "' must be a string (kubelet passes map[string]string)"};
    }
  }
  return ok_status();
}

}  // namespace

Result<Request> parse_argv(const std::vector<std::string>& argv) {
  if (argv.empty())
    return Error{"no command given (kubelet calls e.g. 'init' or 'mount <dir> <json>')"};
  const auto* spec = find_command(argv[0]);
  if (spec == nullptr)
    return Error{"unknown command '" + utf8::escaped(argv[0]) + "'", errno_code(ENOTSUP)};
  if (argv.size() - 1 != spec->slots.size()) {
    return Error{"'" + argv[0] + "' takes " + std::to_string(spec->slots.size()) +
                 " argument(s), got " + std::to_string(argv.size() - 1) +
                 "; usage: " + usage(*spec)};
  }
  Request req;
  req.command = argv[0];
  for (size_t i = 0; i < spec->slots.size(); ++i) {
    const auto& value = argv[i + 1];
    if (spec->slots[i].is_json()) {
      auto bounded = json::parse_bounded(value);
      if (!bounded) return Error{"'" + argv[0] + "': options: " + bounded.error().message};
      Json parsed = std::move(*bounded);
      if (auto st = check_options(parsed); !st) return st.error().wrap("'" + argv[0] + "'");
      req.options = std::move(parsed);
    } else {
      if (auto st = check_arg(spec->name, spec->slots[i].name, value); !st) return st.error();
      req.args.push_back(value);
    }
  }
  return req;
}

Result<Request> request_from_json(const Json& body) {
  if (!body.is_object()) return Error{"request body must be a JSON object"};
  const auto cmd = body.find("command");
  if (cmd == body.end() || !cmd->is_string()) return Error{"request needs a string 'command'"};
  const auto* spec = find_command(cmd->get<std::string>());
  if (spec == nullptr) {
    return Error{"unknown command '" + utf8::escaped(cmd->get<std::string>()) + "'",
                 errno_code(ENOTSUP)};
  }
  Request req;
  req.command = std::string(spec->name);
  if (const auto args = body.find("args"); args != body.end()) {
    if (!args->is_array()) return Error{"'args' must be an array of strings"};
    for (const auto& a : *args) {
      if (!a.is_string()) return Error{"'args' must be an array of strings"};
      req.args.push_back(a.get<std::string>());
    }
  }
  if (req.args.size() != spec->positional_count()) {
    return Error{"'" + req.command + "' needs " + std::to_string(spec->positional_count()) +
                 " positional argument(s), got " + std::to_string(req.args.size()) +
                 "; usage: " + usage(*spec)};
  }
  size_t i = 0;
  for (const auto& slot : spec->slots) {
    if (slot.is_json()) continue;
    if (auto st = check_arg(spec->name, slot.name, req.args[i++]); !st) return st.error();
  }
  if (const auto opts = body.find("options"); opts != body.end() && !opts->is_null()) {
    if (auto st = check_options(*opts); !st) return st.error();
    req.options = *opts;
  }
  return req;
}

namespace {

/// A reply must always dump: a message that quotes outside bytes which are not UTF-8 is escaped.
std::string dumpable(std::string message) {
  return utf8::valid(message) ? message : utf8::escaped(message);
}

}  // namespace

Json success(std::string message) {
  Json j{{"status", kSuccess}};
  if (!message.empty()) j["message"] = dumpable(std::move(message));
  return j;
}

Json failure(const std::string& message) {
  return Json{{"status", kFailure}, {"message", dumpable(message)}};
}

Json not_supported(const std::string& message) {
  return Json{{"status", kNotSupported}, {"message", dumpable(message)}};
}

Result<std::string> validate_reply(const Json& reply) {
  if (!reply.is_object()) return Error{"reply is not a JSON object"};
  const auto st = reply.find("status");
  if (st == reply.end() || !st->is_string()) return Error{"reply has no string 'status'"};
  const auto s = st->get<std::string>();
  if (s != kSuccess && s != kFailure && s != kNotSupported) {
    return Error{"reply status '" + s + "' is not Success, Failure or Not supported"};
  }
  return s;
}

int exit_code_for(const Json& reply) {
  auto s = validate_reply(reply);
  return s && *s != kFailure ? 0 : 1;
}

}  // namespace datera::flex

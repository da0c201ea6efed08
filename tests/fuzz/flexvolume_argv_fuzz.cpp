// Fuzz target flexvolume_argv: what kubelet hands the shim, and what the agent accepts as a
// request body.
//   - The input split at NUL bytes is argv after argv[0] ({"mount", "/pod/dir", "{...}"}), given
//     to flex::parse_argv as the shim does.
//   - The whole input as JSON is a POST /v1/flexvolume body, given to flex::request_from_json as
//     the agent's router does, and as a reply to flex::validate_reply as the shim does.
// Invariant: a request parse_argv accepts survives the trip through the agent's body format.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "plugins/flex/protocol.h"

using namespace datera;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);

  std::vector<std::string> argv;
  for (size_t start = 0;;) {
    const auto nul = input.find('\0', start);
    argv.push_back(input.substr(start, nul == std::string::npos ? nul : nul - start));
    if (nul == std::string::npos) break;
    start = nul + 1;
  }
  if (auto req = flex::parse_argv(argv)) {
    // What the shim sends, as the agent receives it.
    const auto body = flex::Json::parse(req->to_json().dump());
    auto back = flex::request_from_json(body);
    if (!back || back->command != req->command || back->args != req->args ||
        back->options != req->options) {
      std::abort();
    }
  }

  const auto json = flex::Json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (!json.is_discarded()) {
    (void)flex::request_from_json(json);
    (void)flex::exit_code_for(json);
  }
  return 0;
}

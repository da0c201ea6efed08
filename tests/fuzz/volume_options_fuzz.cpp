// Fuzz target volume_options: FlexVolume options (kubelet's JSON slot, including the base64
// secret values) through edf::parse_volume_options, which decides what is created on the array
// and which array and credentials are used. The raw input also goes to parse_server and
// base64_decode, which see secret and option values on their own.

#include <cstddef>
#include <cstdint>
#include <string>

#include "plugins/edf/options.h"

using namespace datera;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  edf::BackendTarget defaults;
  defaults.host = "edf.example";
  defaults.credentials = {"admin", "secret"};

  const auto json = edf::Json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (!json.is_discarded()) (void)edf::parse_volume_options(json, defaults);
  (void)edf::parse_server(input, defaults);
  (void)edf::base64_decode(input);
  return 0;
}

// Fuzz target journal_record: a journal file as start-up reads it (Journal::decode). A record is
// checksummed, so mutations of the outer file rarely get past the checksum; the input is
// therefore decoded twice: as the whole file, and as the inner record wrapped in a file with a
// correct checksum, which reaches every field's parsing.
// Invariant: a record decode accepts encodes and decodes back to the same file.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/volume/journal.h"
#include "base/hash.h"

using namespace datera;

namespace {

void check_round_trip(const volume::Record& rec) {
  const std::string text = volume::Journal::encode(rec);
  auto again = volume::Journal::decode(text);
  if (!again || volume::Journal::encode(*again) != text) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  if (auto rec = volume::Journal::decode(input)) check_round_trip(*rec);

  std::string file;
  try {
    file =
        nlohmann::json{{"format", 1}, {"checksum", fnv1a64_hex(input)}, {"record", input}}.dump(1);
  } catch (const nlohmann::json::type_error&) {
    return 0;  // not UTF-8: encode() never writes such a record, and JSON cannot hold it
  }
  if (auto rec = volume::Journal::decode(file)) check_round_trip(*rec);
  return 0;
}

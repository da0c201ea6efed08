// Replays a fuzz target's seeds and saved crashes as unit tests, with whatever compiler builds the
// tier (no libFuzzer needed): one test per file of corpus/<target>/ and regressions/<target>/
// (DATERA_FUZZ_DIRS, ':'-separated). A crash, a sanitizer report or a broken invariant
// (std::abort in the target) fails the test of that file.

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::string> input_files() {
  std::vector<std::string> out;
  std::stringstream dirs(DATERA_FUZZ_DIRS);
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (e.is_regular_file() && e.path().filename() != "README.md") out.push_back(e.path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

class Replay : public ::testing::TestWithParam<std::string> {};

TEST_P(Replay, RunsWithoutCrashing) {
  std::ifstream f(GetParam(), std::ios::binary);
  ASSERT_TRUE(f) << GetParam();
  const std::string bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
            0);
}

// Test names start with the target (DATERA_FUZZ_TARGET_ID), so `ctest -R <target>` picks one.
#define DT_CAT2(a, b) a##b
#define DT_CAT(a, b) DT_CAT2(a, b)

TEST(DT_CAT(DATERA_FUZZ_TARGET_ID, _seeds), Exist) {
  EXPECT_FALSE(input_files().empty()) << DATERA_FUZZ_DIRS;
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  const auto dir = std::filesystem::path(info.param).parent_path().parent_path().filename();
  std::string name = dir.string() + "_" + std::filesystem::path(info.param).filename().string();
  for (auto& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(DATERA_FUZZ_TARGET_ID, Replay, ::testing::ValuesIn(input_files()),
                         test_name);

}  // namespace

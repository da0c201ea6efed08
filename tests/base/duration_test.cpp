#include "base/duration.h"

#include <gtest/gtest.h>

namespace datera {
namespace {

using std::chrono::milliseconds;

TEST(Duration, ParsesUnits) {
  EXPECT_EQ(*parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(*parse_duration("10s"), milliseconds(10'000));
  EXPECT_EQ(*parse_duration("10"), milliseconds(10'000));
  EXPECT_EQ(*parse_duration("5m"), milliseconds(300'000));
  EXPECT_EQ(*parse_duration("2h"), milliseconds(7'200'000));
}

TEST(Duration, RefusesGarbageWithReason) {
  for (const char* bad : {"", "s", "10x", "-5s", "1.5s", "ten", "9999999h"}) {
    auto d = parse_duration(bad);
    EXPECT_FALSE(d.ok()) << bad;
    if (!d.ok()) {
      EXPECT_FALSE(d.error().message.empty());
    }
  }
  EXPECT_NE(parse_duration("10x").error().message.find("unknown unit"), std::string::npos);
}

TEST(Duration, FormatsShortestExactUnit) {
  EXPECT_EQ(format_duration(milliseconds(1500)), "1500ms");
  EXPECT_EQ(format_duration(milliseconds(20'000)), "20s");
  EXPECT_EQ(format_duration(milliseconds(60'000)), "1m");
  EXPECT_EQ(format_duration(milliseconds(3'600'000)), "1h");
  EXPECT_EQ(format_duration(milliseconds(0)), "0s");
}

}  // namespace
}  // namespace datera

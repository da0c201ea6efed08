#include "base/json.h"

#include <string>

#include <gtest/gtest.h>

namespace datera::json {
namespace {

TEST(BoundedJson, DeepNestingIsRefusedWithoutRecursingIntoIt) {
  // 400 KB of '[': nlohmann parses it, and its dump() then overflows the stack (SIGSEGV).
  const std::string hostile(400'000, '[');
  auto r = parse_bounded(hostile);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("deeper than 64"), std::string::npos) << r.error().message;
  const std::string objects = std::string(100'000, '{') + "\"a\":1" + std::string(100'000, '}');
  EXPECT_FALSE(parse_bounded(objects));
}

TEST(BoundedJson, TheDepthBoundIsExact) {
  const auto nested = [](size_t depth) {
    return std::string(depth, '[') + std::string(depth, ']');
  };
  EXPECT_TRUE(parse_bounded(nested(64)));
  EXPECT_FALSE(parse_bounded(nested(65)));
  EXPECT_TRUE(parse_bounded(nested(3), 3));
  EXPECT_FALSE(parse_bounded(nested(4), 3));
}

TEST(BoundedJson, BracketsInsideStringsDoNotCount) {
  const std::string text = R"({"a":"[[[[{{{{\"[[[[","b":["\\",{"c":"]]]]"}]})";
  EXPECT_EQ(nesting_depth(text), 3u);
  auto r = parse_bounded(text, 3);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["a"], "[[[[{{{{\"[[[[");
}

TEST(BoundedJson, SizeBoundAndInvalidTextAreErrorsThatNeverQuoteTheText) {
  EXPECT_FALSE(parse_bounded(std::string(100, ' ') + "1", 64, 50));
  auto bad = parse_bounded("{\"password\": \"hunter2\"");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message.find("hunter2"), std::string::npos);
  EXPECT_TRUE(parse_bounded("  {\"a\": [1, 2, {\"b\": null}]}  "));
}

TEST(BoundedJson, DumpReplacesInvalidUtf8InsteadOfThrowing) {
  nlohmann::json j = {{"message", std::string("bad \xff\xfe bytes")}};
  EXPECT_THROW((void)j.dump(), nlohmann::json::type_error) << "what dump() does on its own";
  const std::string out = dump(j);
  EXPECT_NE(out.find("bad \xEF\xBF\xBD"), std::string::npos) << out;
  EXPECT_TRUE(parse_bounded(out));
}

TEST(BoundedJson, Utf8PrefixNeverCutsACharacter) {
  const std::string text = "ab\xC3\xA9\xE2\x82\xAC";  // "abé€": 2 + 2 + 3 bytes
  EXPECT_EQ(utf8_prefix(text, 100), text);
  EXPECT_EQ(utf8_prefix(text, 3), "ab");
  EXPECT_EQ(utf8_prefix(text, 4), "ab\xC3\xA9");
  EXPECT_EQ(utf8_prefix(text, 5), "ab\xC3\xA9");
  EXPECT_EQ(utf8_prefix(text, 6), "ab\xC3\xA9");
  EXPECT_EQ(utf8_prefix(text, 7), text);
}

TEST(BoundedJson, ControlCharacters) {
  EXPECT_FALSE(has_control_char("/var/lib/kubelet/pods/u/volumes/datera~iscsi/pv"));
  EXPECT_FALSE(has_control_char("p\xC3\xA4ss w\"o&r%d+"));
  EXPECT_TRUE(has_control_char(std::string("a\0b", 3)));
  EXPECT_TRUE(has_control_char("a\nb"));
  EXPECT_TRUE(has_control_char("a\x1b[31m"));
  EXPECT_TRUE(has_control_char("a\x7f"));
}

}  // namespace
}  // namespace datera::json

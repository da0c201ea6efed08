// Error codes are typed by layer: a check names the category it means, and a bare number (an HTTP
// status, an errno, another layer's enum value) neither converts nor compares.

#include "base/result.h"

#include <cerrno>
#include <concepts>
#include <system_error>

#include <gtest/gtest.h>

namespace datera {
namespace {

static_assert(std::is_same_v<decltype(Error::code), std::error_code>);
static_assert(!std::is_convertible_v<int, std::error_code>,
              "a bare number must not become an error code");
static_assert(!std::equality_comparable_with<std::error_code, int>,
              "an error code must not compare with a bare number");

TEST(ErrorCodes, EachLayerHasItsOwnCategory) {
  const Error not_found{"GET failed", HttpStatus::not_found};
  EXPECT_EQ(not_found.code, HttpStatus::not_found);
  EXPECT_EQ(not_found.code, http_status(404));
  EXPECT_EQ(http_status_of(not_found.code), 404u);
  // ENOENT is 2, and so was "reply lost" once: the same number in two categories is two codes.
  EXPECT_NE(errno_code(ENOENT), std::error_code(2, http_category()));
  EXPECT_NE(errno_code(404), not_found.code);
  EXPECT_EQ(http_status_of(errno_code(ENOENT)), 0u);
  EXPECT_EQ(Error{}.code, std::error_code{});
}

TEST(ErrorCodes, FromErrnoMatchesTheStandardConditions) {
  const Error e = Error::from_errno("opening /x", ENOENT);
  EXPECT_EQ(e.code, std::errc::no_such_file_or_directory);
  EXPECT_EQ(e.message, "opening /x: No such file or directory");
  EXPECT_EQ(e.wrap("installing").code, e.code);
}

}  // namespace
}  // namespace datera

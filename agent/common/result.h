#pragma once

// Errors as values: Result<T> holds either a T or an Error with a human-readable message and an
// optional errno-style code. std::expected arrives with C++23; this is the small subset we need.

#include <cassert>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace datera {

struct Error {
  std::string message;
  int code = 0;  ///< errno value when the failure came from the OS, else 0.

  static Error from_errno(std::string what, int err) {
    return Error{what + ": " + std::generic_category().message(err), err};
  }
  /// Prefixes context, e.g. err.wrap("installing driver") -> "installing driver: <msg>".
  Error wrap(const std::string& context) const { return Error{context + ": " + message, code}; }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error)
      : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

inline Status ok_status() {
  return Status{};
}

}  // namespace datera

#pragma once

// Errors as values: Result<T> holds either a T or an Error with a human-readable message and a
// typed code. std::expected arrives with C++23; this is the small subset we need.
//
// Error::code is a std::error_code, one category per layer: the OS (errno_code(), generic
// category), HTTP statuses of a peer's reply (HttpStatus, below), the EDF client (edf::Errc), its
// transport (edf::TransportErrc) and the shim's client (flex::ClientErrc). A check names the layer
// it means (`e.code == HttpStatus::not_found`); comparing with a bare number does not compile.

#include <cassert>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace datera {

/// An errno value as an error code (generic category): `Error{msg, errno_code(ENOTBLK)}`.
inline std::error_code errno_code(int err) {
  return {err, std::generic_category()};
}

/// The HTTP status of a reply, as an error code ("http" category). Any status converts with
/// static_cast; the named ones are those the code checks for.
enum class HttpStatus : int {
  bad_request = 400,
  unauthorized = 401,
  forbidden = 403,
  not_found = 404,
  method_not_allowed = 405,
  conflict = 409,
  service_unavailable = 503,
};

const std::error_category& http_category();
inline std::error_code make_error_code(HttpStatus s) {
  return {static_cast<int>(s), http_category()};
}
/// An HTTP status (>= 400) as an error code.
inline std::error_code http_status(unsigned status) {
  return make_error_code(static_cast<HttpStatus>(status));
}

}  // namespace datera

template <>
struct std::is_error_code_enum<datera::HttpStatus> : std::true_type {};

namespace datera {

inline const std::error_category& http_category() {
  struct Category : std::error_category {
    const char* name() const noexcept override { return "http"; }
    std::string message(int status) const override { return "HTTP " + std::to_string(status); }
  };
  static const Category category;
  return category;
}

/// The HTTP status a code carries, or 0 when it is not an HTTP status.
inline unsigned http_status_of(const std::error_code& code) {
  return code.category() == http_category() ? static_cast<unsigned>(code.value()) : 0;
}

struct Error {
  std::string message;
  /// What kind of failure, in its layer's category (see above); empty when only the message
  /// matters.
  std::error_code code{};

  static Error from_errno(std::string what, int err) {
    return Error{what + ": " + std::generic_category().message(err), errno_code(err)};
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

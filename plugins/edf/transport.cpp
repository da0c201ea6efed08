#include "plugins/edf/transport.h"

#include <string>

namespace datera::edf {

const std::error_category& transport_category() {
  struct Category : std::error_category {
    const char* name() const noexcept override { return "edf transport"; }
    std::string message(int c) const override {
      switch (static_cast<TransportErrc>(c)) {
        case TransportErrc::connect:
          return "connection failed";
        case TransportErrc::timeout:
          return "timed out";
        case TransportErrc::io:
          return "connection broke";
        case TransportErrc::tls:
          return "TLS failure";
      }
      return "transport error " + std::to_string(c);
    }
  };
  static const Category category;
  return category;
}

bool sent_nothing(const Error& e) {
  return e.code == TransportErrc::connect;
}

}  // namespace datera::edf

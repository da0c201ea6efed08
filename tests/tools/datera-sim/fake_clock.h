#pragma once

// A clock the test moves by hand, for token expiry and op_state delays without sleeping.

#include <chrono>

#include "tools/datera-sim/model.h"

namespace datera::sim::testing {

struct FakeClock {
  TimePoint now = TimePoint{std::chrono::seconds(1'700'000'000)};
  Clock clock() {
    return [this] { return now; };
  }
  void advance(std::chrono::milliseconds d) { now += d; }
};

}  // namespace datera::sim::testing

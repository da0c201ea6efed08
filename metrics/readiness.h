#pragma once

// Named readiness conditions behind /readyz. Components register theirs at start-up (not ready),
// then flip them; the agent is ready when every condition holds. Later capabilities add their own
// (backend reachable, journal reconciled).

#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace datera::metrics {

class Readiness {
 public:
  void add(const std::string& name, std::string detail = "not checked yet");
  void set(const std::string& name, bool ok, std::string detail);
  bool ready() const;
  bool is(const std::string& name) const;
  nlohmann::json to_json() const;

 private:
  struct Condition {
    bool ok = false;
    std::string detail;
  };
  std::map<std::string, Condition> conditions_;
};

}  // namespace datera::metrics

#include "metrics/readiness.h"

namespace datera::metrics {

void Readiness::add(const std::string& name, std::string detail) {
  conditions_.try_emplace(name, Condition{false, std::move(detail)});
}

void Readiness::set(const std::string& name, bool ok, std::string detail) {
  conditions_[name] = Condition{ok, std::move(detail)};
}

bool Readiness::ready() const {
  if (conditions_.empty()) return false;  // nothing registered means start-up has not happened
  for (const auto& [name, c] : conditions_) {
    if (!c.ok) return false;
  }
  return true;
}

bool Readiness::is(const std::string& name) const {
  const auto it = conditions_.find(name);
  return it != conditions_.end() && it->second.ok;
}

nlohmann::json Readiness::to_json() const {
  nlohmann::json conds = nlohmann::json::object();
  for (const auto& [name, c] : conditions_) conds[name] = {{"ok", c.ok}, {"detail", c.detail}};
  return {{"ready", ready()}, {"conditions", conds}};
}

}  // namespace datera::metrics

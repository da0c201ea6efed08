#include "tools/datera-sim/sessions.h"

#include <cstdio>
#include <regex>

#include "base/utf8.h"

namespace datera::sim {

Sessions::Sessions(Clock clock, std::chrono::milliseconds ttl,
                   std::map<std::string, std::string> accounts, std::optional<uint64_t> seed)
    : clock_(std::move(clock)), ttl_(ttl), accounts_(std::move(accounts)) {
  if (seed) {
    rng_.seed(*seed);
  } else {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    rng_.seed(seq);
  }
}

Status check_password(const std::string& password) {
  // The published schema (^[a-zA-Z_][a-zA-Z0-9_\-\.]{2,127}$) is narrower than what arrays accept
  // in practice: customers' passwords hold any printable character, non-ASCII included.
  if (password.empty() || password.size() > kMaxPasswordBytes ||
      utf8::find_unprintable(password) != std::string::npos) {
    return edf_error(400, "login: the password must be 1-" + std::to_string(kMaxPasswordBytes) +
                              " bytes of printable UTF-8 (no control characters)");
  }
  return ok_status();
}

Result<std::string> Sessions::login(const std::string& name, const std::string& password) {
  static const std::regex name_re(R"(^[a-zA-Z0-9_]{3,32}$)");
  if (!std::regex_match(name, name_re)) {
    return edf_error(400, "login: name must match ^[a-zA-Z0-9_]{3,32}$");
  }
  if (auto st = check_password(password); !st) return st.error();
  auto it = accounts_.find(name);
  if (it == accounts_.end() || it->second != password) {
    return edf_error(401, "Authentication failed: invalid user name or password.");
  }
  prune();
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng_()),
                static_cast<unsigned long long>(rng_()));
  keys_[buf] = clock_() + ttl_;
  return std::string(buf);
}

bool Sessions::set_password(const std::string& name, const std::string& password) {
  auto it = accounts_.find(name);
  if (it == accounts_.end()) return false;
  it->second = password;
  keys_.clear();
  return true;
}

bool Sessions::valid(const std::string& key) {
  auto it = keys_.find(key);
  if (it == keys_.end()) return false;
  if (clock_() >= it->second) {
    keys_.erase(it);
    return false;
  }
  return true;
}

size_t Sessions::active() {
  prune();
  return keys_.size();
}

void Sessions::prune() {
  const auto now = clock_();
  std::erase_if(keys_, [&](const auto& kv) { return now >= kv.second; });
}

}  // namespace datera::sim

#pragma once

// `datera-agentctl doctor`: one pass/fail line per check, each failure saying what to do. The
// checks read the agent's /v1/status and the host through `Host`, so they are tested with a fake.

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace datera::agentctl {

/// What doctor looks at on the host.
class Host {
 public:
  virtual ~Host() = default;
  virtual std::optional<std::string> read_file(const std::string& path) const = 0;
  virtual bool process_running(const std::string& comm) const = 0;
  virtual bool exists(const std::string& path) const = 0;
  /// Whether the kernel reports the clock synchronized (adjtimex); nullopt: unknown.
  virtual std::optional<bool> clock_synced() const = 0;
  /// The names in a directory, sorted; empty when it cannot be read.
  virtual std::vector<std::string> list_dir(const std::string& path) const = 0;
};

/// The real host: /proc, the file system, adjtimex.
const Host& linux_host();

enum class Verdict { pass, warn, fail };

struct Check {
  std::string name;
  Verdict verdict;
  std::string detail;
  std::string fix;  ///< what to do ("" when it passed)
};

std::vector<Check> doctor(const nlohmann::json& status, const Host& host);
std::string render(const std::vector<Check>& checks);
nlohmann::json to_json(const std::vector<Check>& checks);
bool any_failed(const std::vector<Check>& checks);

/// Whether multipath.conf text keeps multipathd off a disk of `vendor`/`product`: a `device`
/// in `blacklist` whose vendor (and product, when given) regular expressions match, and none in
/// `blacklist_exceptions`. nullopt: the text says nothing either way. Bounded: nesting, sizes.
std::optional<bool> multipath_blacklists(const std::string& conf, const std::string& vendor,
                                         const std::string& product);

/// True when the mount holding `path` propagates (mountinfo's optional field "shared:N"), found
/// from /proc/self/mountinfo text: the longest mount point that is a prefix of `path`.
std::optional<bool> shared_mount(const std::string& mountinfo, const std::string& path);

}  // namespace datera::agentctl

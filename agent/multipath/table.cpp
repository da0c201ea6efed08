#include <charconv>
#include <sstream>

#include "agent/multipath/multipath.h"

namespace datera::multipath {

Result<std::string> map_name(const std::string& volume_uuid) {
  if (volume_uuid.empty() || volume_uuid.size() > 64 ||
      volume_uuid.find_first_not_of("0123456789abcdefABCDEF-") != std::string::npos) {
    return Error{"volume uuid '" + volume_uuid + "' is not usable in a device-mapper name"};
  }
  return "datera-" + volume_uuid;
}

std::string map_uuid(const std::string& volume_uuid) {
  return "DATERA-" + volume_uuid;
}

std::string encode_table(const Table& t) {
  std::string out = "0 " + std::to_string(t.sectors) + " multipath " +
                    (t.queue ? "1 queue_if_no_path" : "0") + " 0 1 1 round-robin 0 " +
                    std::to_string(t.paths.size()) + " 1";
  for (const auto& p : t.paths) out += " " + p + " 1";
  return out;
}

namespace {

class Tokens {
 public:
  explicit Tokens(const std::string& line) {
    std::istringstream in(line);
    for (std::string w; in >> w;) words_.push_back(w);
  }
  bool next(std::string& w) {
    if (i_ >= words_.size()) return false;
    w = words_[i_++];
    return true;
  }
  bool number(uint64_t& n) {
    std::string w;
    if (!next(w)) return false;
    const auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), n);
    return ec == std::errc() && end == w.data() + w.size();
  }
  bool skip(uint64_t n) {
    std::string w;
    for (uint64_t k = 0; k < n; ++k) {
      if (!next(w)) return false;
    }
    return true;
  }

 private:
  std::vector<std::string> words_;
  size_t i_ = 0;
};

}  // namespace

Result<Table> decode_table(const std::string& line) {
  const Error bad{"not a multipath table: '" + line + "'"};
  Tokens tk(line);
  Table t;
  uint64_t start = 0, n = 0;
  std::string target;
  if (!tk.number(start) || start != 0 || !tk.number(t.sectors) || !tk.next(target) ||
      target != "multipath") {
    return bad;
  }
  if (!tk.number(n) || n > 64) return bad;  // features
  for (uint64_t k = 0; k < n; ++k) {
    std::string f;
    if (!tk.next(f)) return bad;
    if (f == "queue_if_no_path") t.queue = true;
  }
  if (!tk.number(n) || n > 64 || !tk.skip(n)) return bad;  // hardware handler and its args
  uint64_t groups = 0, initial = 0;
  if (!tk.number(groups) || groups > 64 || !tk.number(initial)) return bad;
  for (uint64_t g = 0; g < groups; ++g) {
    std::string selector;
    uint64_t sel_args = 0, paths = 0, path_args = 0;
    if (!tk.next(selector) || !tk.number(sel_args) || sel_args > 64 || !tk.skip(sel_args) ||
        !tk.number(paths) || paths > 1024 || !tk.number(path_args) || path_args > 64) {
      return bad;
    }
    for (uint64_t p = 0; p < paths; ++p) {
      std::string dev;
      if (!tk.next(dev) || !tk.skip(path_args)) return bad;
      t.paths.push_back(dev);
    }
  }
  std::string extra;
  if (tk.next(extra)) return bad;
  return t;
}

Result<std::vector<std::string>> decode_failed_paths(const std::string& line) {
  const Error bad{"not a multipath status: '" + line + "'"};
  Tokens tk(line);
  uint64_t start = 0, sectors = 0, n = 0;
  std::string target;
  if (!tk.number(start) || start != 0 || !tk.number(sectors) || !tk.next(target) ||
      target != "multipath") {
    return bad;
  }
  if (!tk.number(n) || n > 64 || !tk.skip(n)) return bad;  // features (queueing, pg_init count)
  if (!tk.number(n) || n > 64 || !tk.skip(n)) return bad;  // hardware handler status
  uint64_t groups = 0, next_group = 0;
  if (!tk.number(groups) || groups > 64 || !tk.number(next_group)) return bad;
  std::vector<std::string> failed;
  for (uint64_t g = 0; g < groups; ++g) {
    std::string state;
    uint64_t sel = 0, paths = 0, info = 0;
    if (!tk.next(state) || !tk.number(sel) || sel > 64 || !tk.skip(sel) || !tk.number(paths) ||
        paths > 1024 || !tk.number(info) || info > 64) {
      return bad;
    }
    for (uint64_t p = 0; p < paths; ++p) {
      std::string dev, active;
      uint64_t fail_count = 0;
      if (!tk.next(dev) || !tk.next(active) || (active != "A" && active != "F") ||
          !tk.number(fail_count) || !tk.skip(info)) {
        return bad;
      }
      if (active == "F") failed.push_back(dev);
    }
  }
  std::string extra;
  if (tk.next(extra)) return bad;
  return failed;
}

}  // namespace datera::multipath

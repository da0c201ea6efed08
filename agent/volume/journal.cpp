#include "agent/volume/journal.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <dirent.h>
#include <limits>
#include <unistd.h>

#include "base/blocking.h"
#include "base/fs.h"
#include "base/hash.h"
#include "base/json.h"

namespace datera::volume {

using nlohmann::json;

namespace {

constexpr int kFormat = 1;

/// Detects torn and edited files (not an adversary: the directory is root-only).
std::string checksum(const std::string& text) {
  return fnv1a64_hex(text);
}

Result<Phase> phase_from(const std::string& s) {
  if (s == "attaching") return Phase::attaching;
  if (s == "attached") return Phase::attached;
  if (s == "detaching") return Phase::detaching;
  return Error{"unknown phase '" + s + "'"};
}

Result<Mode> mode_from(const std::string& s) {
  if (s == "agent") return Mode::agent;
  if (s == "controller") return Mode::controller;
  if (s == "csi") return Mode::csi;
  return Error{"unknown mode '" + s + "'"};
}

/// An integer field within [lo, hi]; floats, negatives for unsigned fields and out-of-range
/// values are refused (a float cast out of range is undefined behaviour, a narrowing one wraps).
Result<int64_t> int_field(const json& j, const char* key, int64_t lo, int64_t hi) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) {
    return Error{std::string("field '") + key + "' is missing or not an integer"};
  }
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return Error{std::string("field '") + key + "' is out of range"};
  }
  const auto v = it->get<int64_t>();
  if (v < lo || v > hi) return Error{std::string("field '") + key + "' is out of range"};
  return v;
}

json target_json(const initiator::Target& t) {
  return {{"iqn", t.iqn}, {"portals", t.portals}, {"serial", t.serial}, {"lun", t.lun}};
}

json pods_json(const std::vector<PodMount>& pods) {
  json out = json::array();
  for (const auto& p : pods) out.push_back({{"dir", p.dir}, {"read_only", p.read_only}});
  return out;
}

}  // namespace

const char* to_string(Phase p) {
  switch (p) {
    case Phase::attaching:
      return "attaching";
    case Phase::attached:
      return "attached";
    case Phase::detaching:
      return "detaching";
  }
  return "unknown";
}

const char* to_string(Mode m) {
  switch (m) {
    case Mode::agent:
      return "agent";
    case Mode::controller:
      return "controller";
    case Mode::csi:
      return "csi";
  }
  return "unknown";
}

bool Record::has_pod(const std::string& dir) const {
  for (const auto& p : pods) {
    if (p.dir == dir) return true;
  }
  return false;
}

json Record::public_json() const {
  return {{"volume", volume},
          {"phase", to_string(phase)},
          {"mode", to_string(mode)},
          {"block", block},
          {"backend", backend.server()},
          {"fs_type", fs_type},
          {"delete_on_release", delete_on_release},
          {"initiator_iqn", initiator_iqn},
          {"target", target_json(target)},
          {"device", device},
          {"map", map},
          {"staging", staging},
          {"pods", pods_json(pods)},
          {"pending_pod", pending_pod},
          {"epoch", epoch},
          {"frozen", frozen},
          {"generation", generation}};
}

std::string Journal::encode(const Record& rec) {
  json body = rec.public_json();
  if (rec.backend.is_default) {
    // The agent's own array and account: a reference, resolved to the agent's current
    // credentials at each use; its password is never copied here (a rotation would break it).
    body["backend"] = {{"host", rec.backend.host}, {"port", rec.backend.port}, {"default", true}};
  } else {
    body["backend"] = {{"host", rec.backend.host},
                       {"port", rec.backend.port},
                       {"user", rec.backend.credentials.user},
                       {"password", rec.backend.credentials.password}};
  }
  body["mount_options"] = rec.mount_options;
  body["acl_added"] = rec.acl_added;
  const std::string text = body.dump();
  return json{{"format", kFormat}, {"checksum", checksum(text)}, {"record", text}}.dump(1) + "\n";
}

namespace {

// A record is a few KiB; anything far larger or deeper was not written by this agent.
constexpr size_t kMaxRecord = 1u << 20;

/// The record's body, once its envelope (format, checksum) checks out.
Result<json> unwrap(const std::string& text) {
  auto parsed = datera::json::parse_bounded(text, 8, kMaxRecord);
  if (!parsed) return Error{"not a journal record: " + parsed.error().message};
  json outer = std::move(*parsed);
  if (!outer.is_object()) return Error{"not a journal record: not a JSON object"};
  // Typed lookups: value() throws when a key holds another type (a duplicated key, last one wins).
  const auto format = outer.find("format");
  if (format == outer.end() || !format->is_number_integer() || format->get<int64_t>() != kFormat) {
    return Error{"unknown journal format"};
  }
  const auto record = outer.find("record");
  const auto sum = outer.find("checksum");
  if (record == outer.end() || !record->is_string() || sum == outer.end() || !sum->is_string()) {
    return Error{"not a journal record: no record text or checksum"};
  }
  const auto& body_text = record->get_ref<const std::string&>();
  if (checksum(body_text) != sum->get_ref<const std::string&>()) {
    return Error{"checksum mismatch (torn write or edited by hand)"};
  }
  auto body = datera::json::parse_bounded(body_text, 8, kMaxRecord);
  if (!body) return Error{"record: " + body.error().message};
  json b = std::move(*body);
  if (!b.is_object()) return Error{"record is not a JSON object"};
  return b;
}

/// The body's fields, typed and range-checked.
Result<Record> record_from(const json& b) {
  try {
    Record r;
    r.volume = b.at("volume").get<std::string>();
    auto phase = phase_from(b.at("phase").get<std::string>());
    if (!phase) return phase.error();
    r.phase = *phase;
    if (const auto m = b.find("mode"); m != b.end()) {
      auto mode = mode_from(m->get<std::string>());
      if (!mode) return mode.error();
      r.mode = *mode;
    } else {
      r.mode_recorded = false;  // an older agent's record: FlexVolume, in the configured mode
    }
    r.block = b.value("block", false);
    const auto& be = b.at("backend");
    r.backend.host = be.at("host").get<std::string>();
    // Checked, not narrowed: get<uint16_t>() would wrap 99999 to 34463.
    auto port = int_field(be, "port", 1, 65535);
    if (!port) return port.error().wrap("backend");
    r.backend.port = static_cast<uint16_t>(*port);
    // Records of earlier versions have no "default" and always the credentials inline.
    r.backend.is_default = be.value("default", false);
    if (!r.backend.is_default) {
      r.backend.credentials.user = be.at("user").get<std::string>();
      r.backend.credentials.password = be.at("password").get<std::string>();
    }
    r.fs_type = b.at("fs_type").get<std::string>();
    r.mount_options = b.at("mount_options").get<std::vector<std::string>>();
    r.delete_on_release = b.at("delete_on_release").get<bool>();
    r.initiator_iqn = b.at("initiator_iqn").get<std::string>();
    const auto& t = b.at("target");
    r.target.volume = r.volume;
    r.target.iqn = t.at("iqn").get<std::string>();
    r.target.portals = t.at("portals").get<std::vector<std::string>>();
    r.target.serial = t.at("serial").get<std::string>();
    auto lun = int_field(t, "lun", 0, 16383);
    if (!lun) return lun.error().wrap("target");
    r.target.lun = static_cast<int>(*lun);
    r.device = b.at("device").get<std::string>();
    r.staging = b.at("staging").get<std::string>();
    r.map = b.value("map", std::string());        // absent in records written before maps existed
    r.frozen = b.value("frozen", std::string());  // absent before snapshots
    for (const auto& p : b.at("pods")) {
      r.pods.push_back({p.at("dir").get<std::string>(), p.at("read_only").get<bool>()});
    }
    r.pending_pod = b.at("pending_pod").get<std::string>();
    if (b.contains("epoch")) {
      auto epoch = int_field(b, "epoch", 0, std::numeric_limits<int64_t>::max());
      if (!epoch) return epoch.error();
      r.epoch = static_cast<uint64_t>(*epoch);
    }
    r.acl_added = b.value("acl_added", !r.initiator_iqn.empty());  // older records: assume so
    auto generation = int_field(b, "generation", 0, std::numeric_limits<int64_t>::max());
    if (!generation) return generation.error();
    r.generation = static_cast<uint64_t>(*generation);
    return r;
  } catch (const json::exception& e) {
    return Error{std::string("record field missing or of the wrong type: ") + e.what()};
  }
}

}  // namespace

Result<Record> Journal::decode(const std::string& text) {
  auto body = unwrap(text);
  if (!body) return body.error();
  return record_from(*body);
}

Journal::Journal(std::string dir, boost::asio::thread_pool& pool, LoggerPtr log)
    : dir_(std::move(dir)), pool_(pool), log_(std::move(log)) {}

Status Journal::prepare() const {
  return fs::ensure_dir(dir_, 0700);
}

std::string Journal::path_of(const std::string& volume) const {
  return fs::join(dir_, volume + ".json");
}

boost::asio::awaitable<Status> Journal::save(Record& rec) {
  ++rec.generation;
  const std::string text = encode(rec);
  const std::string path = path_of(rec.volume);
  auto write = [&]() { return fs::atomic_write(path, text, 0600); };
  auto st = co_await run_blocking(pool_, write);
  if (!st) co_return st.error().wrap("writing the journal of volume " + rec.volume);
  co_return ok_status();
}

boost::asio::awaitable<Status> Journal::remove(const std::string& volume) {
  const std::string path = path_of(volume);
  const std::string dir = dir_;
  auto unlink = [&]() -> Status {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Error::from_errno("removing " + path, errno);
    }
    return fs::fsync_dir(dir);
  };
  co_return co_await run_blocking(pool_, unlink);
}

std::string Journal::attempts_path(const std::string& volume) const {
  // A dot file: load_all() skips it.
  return fs::join(dir_, "." + volume + ".attempts");
}

boost::asio::awaitable<Status> Journal::note_attempt(const std::string& volume) {
  const std::string path = attempts_path(volume);
  const std::string text = std::to_string(attempts(volume) + 1) + "\n";
  auto write = [&]() { return fs::atomic_write(path, text, 0600); };
  co_return co_await run_blocking(pool_, write);
}

boost::asio::awaitable<Status> Journal::clear_attempt(const std::string& volume) {
  const std::string path = attempts_path(volume);
  auto unlink = [&]() -> Status {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Error::from_errno("removing " + path, errno);
    }
    return ok_status();
  };
  co_return co_await run_blocking(pool_, unlink);
}

int Journal::attempts(const std::string& volume) const {
  auto text = fs::read_file(attempts_path(volume), 64);
  if (!text) return 0;
  int n = 0;
  for (const char c : *text) {
    if (c < '0' || c > '9' || n > 1000) break;
    n = n * 10 + (c - '0');
  }
  return n;
}

namespace {

/// Renames `path` to `<path><suffix><unix time>`, out of load_all()'s sight, and yields the new
/// path.
Result<std::string> move_aside(const std::string& path, const std::string& suffix) {
  const auto stamp = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  const std::string aside = path + suffix + std::to_string(stamp);
  if (::rename(path.c_str(), aside.c_str()) != 0) {
    return Error::from_errno("moving " + path + " aside", errno);
  }
  return aside;
}

}  // namespace

Result<std::string> Journal::set_aside(const std::string& volume) const {
  auto aside = move_aside(path_of(volume), ".set-aside-");
  if (!aside) return aside;
  ::unlink(attempts_path(volume).c_str());
  (void)fs::fsync_dir(dir_);
  return aside;
}

std::vector<Record> Journal::load_all(std::vector<std::string>* problems) const {
  std::vector<Record> out;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return out;
  std::vector<std::string> names;
  while (auto* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0 && name[0] != '.') {
      names.push_back(name);
    }
  }
  ::closedir(d);
  for (const auto& name : names) {
    const std::string path = fs::join(dir_, name);
    auto text = fs::read_file(path, 1 << 20);
    Result<Record> rec = text ? decode(*text) : Result<Record>(text.error());
    if (rec && rec->volume + ".json" != name) rec = Error{"record names another volume"};
    if (!rec) {
      auto aside = move_aside(path, ".corrupt-");
      const std::string problem = "journal " + path + " unusable (" + rec.error().message + "); " +
                                  (aside ? "moved to " + *aside : aside.error().message);
      log_->error("{}", problem);
      if (problems) problems->push_back(problem);
      continue;
    }
    out.push_back(std::move(*rec));
  }
  return out;
}

}  // namespace datera::volume

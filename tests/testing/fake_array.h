#pragma once

// An in-memory Datera array for unit tests of the volume manager and the controller: one ACL
// (shared by every volume: the tests use one at a time), per-volume metadata merged the way EDF
// merges it (a PUT merges keys, "" deletes one), sizes that only grow, and the
// initiator registry (an ACL takes registered initiators only).
// tests/agent/volume/array_contract_test.cpp holds it to what the real client does on datera-sim.

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "agent/volume/array.h"

namespace datera::testing {

struct FakeArray : volume::Array {
  std::vector<std::string> calls;
  std::string uuid = "uuid-1";
  std::vector<std::string> ips = {"172.28.0.1"};
  std::vector<std::string> acl_iqns;
  std::map<std::string, edf::Metadata> md;
  std::vector<edf::InitiatorInfo> registered;
  std::set<std::string> names;           ///< app instances that exist (ensure_volume adds)
  std::map<std::string, int64_t> sizes;  ///< GiB, set at creation (absent: 16)
  std::set<std::string> online;          ///< bring_online adds
  std::map<std::string, std::vector<edf::Snapshot>> snaps;  ///< by source app instance
  std::map<std::string, std::string> cloned_from;  ///< app instance -> its clone source path
  std::string new_snapshot_state = "available";    ///< op_state of the next snapshots
  std::map<std::string, int64_t> snapshot_sizes;   ///< snapshot path -> GiB when taken
  int64_t next_timestamp = 1'700'000'000;

  static Error not_found(const std::string& name) {
    return Error{"no such app instance " + name, http_status(404)};
  }

  boost::asio::awaitable<Result<edf::AppInstance>> ensure_volume(
      const edf::VolumeSpec& spec) override {
    calls.push_back("ensure " + spec.name);
    if (names.count(spec.name)) co_return ai(spec.name);
    // A clone takes its source's size, as EDF's clone_*_src does.
    int64_t size = spec.size_gib;
    const std::string& src =
        spec.clone_snapshot_src.empty() ? spec.clone_volume_src : spec.clone_snapshot_src;
    if (!src.empty()) {
      const std::string prefix = "/app_instances/";
      const auto end = src.find('/', prefix.size());
      const std::string from = src.rfind(prefix, 0) == 0 && end != std::string::npos
                                   ? src.substr(prefix.size(), end - prefix.size())
                                   : std::string{};
      if (!names.count(from)) co_return Error{"no clone source " + src, http_status(404)};
      size = ai(from).size_gib;
      if (!spec.clone_snapshot_src.empty()) {
        const auto& list = snaps[from];
        const auto it = std::find_if(list.begin(), list.end(), [&](const edf::Snapshot& s) {
          return edf::snapshot_path(from, s.timestamp) == src;
        });
        if (it == list.end()) co_return Error{"no clone source " + src, http_status(404)};
        // As datera-sim (the strict reading): a snapshot still being made cannot be cloned yet.
        if (!it->available()) {
          co_return Error{"clone source " + src + " is not available yet", http_status(409)};
        }
        // The volume's size when the snapshot was taken (a snapshot a test added by hand: now).
        if (const auto at = snapshot_sizes.find(src); at != snapshot_sizes.end()) size = at->second;
      }
      cloned_from[spec.name] = src;
    }
    names.insert(spec.name);
    sizes[spec.name] = size;
    co_return ai(spec.name);
  }
  boost::asio::awaitable<Result<std::optional<edf::AppInstance>>> find_volume(
      const std::string& name) override {
    if (!names.count(name)) co_return std::optional<edf::AppInstance>();
    co_return std::optional<edf::AppInstance>(ai(name));
  }
  boost::asio::awaitable<Status> ensure_initiator(const std::string& iqn,
                                                  const std::string& label) override {
    calls.push_back("initiator " + iqn);
    if (std::none_of(registered.begin(), registered.end(),
                     [&](const edf::InitiatorInfo& i) { return i.iqn == iqn; })) {
      registered.push_back({iqn, label});
    }
    co_return ok_status();
  }
  boost::asio::awaitable<Result<std::vector<edf::InitiatorInfo>>> initiators() override {
    co_return registered;
  }
  boost::asio::awaitable<Result<std::vector<std::string>>> volume_names() override {
    co_return std::vector<std::string>(names.begin(), names.end());
  }
  boost::asio::awaitable<Result<std::vector<edf::AppInstance>>> list_volumes() override {
    calls.push_back("list");
    std::vector<edf::AppInstance> out;
    for (const auto& n : names) out.push_back(ai(n));
    co_return out;
  }
  boost::asio::awaitable<Status> acl_add(const std::string& name, const std::string& iqn) override {
    calls.push_back("acl+ " + name);
    if (!names.count(name)) co_return not_found(name);
    if (std::none_of(registered.begin(), registered.end(),
                     [&](const edf::InitiatorInfo& i) { return i.iqn == iqn; })) {
      co_return Error{"initiator " + iqn + " is not registered", http_status(404)};
    }
    if (std::find(acl_iqns.begin(), acl_iqns.end(), iqn) == acl_iqns.end()) acl_iqns.push_back(iqn);
    co_return ok_status();
  }
  boost::asio::awaitable<Status> acl_remove(const std::string& name,
                                            const std::string& iqn) override {
    calls.push_back("acl- " + name);
    if (!names.count(name)) co_return not_found(name);
    std::erase(acl_iqns, iqn);
    co_return ok_status();
  }
  boost::asio::awaitable<Result<edf::AppInstance>> bring_online(
      const std::string& name, std::chrono::milliseconds) override {
    calls.push_back("online " + name);
    if (!names.count(name)) co_return not_found(name);
    online.insert(name);
    co_return ai(name);
  }
  boost::asio::awaitable<Result<std::vector<std::string>>> acl(const std::string&) override {
    co_return acl_iqns;
  }
  boost::asio::awaitable<Result<edf::Metadata>> metadata(const std::string& name) override {
    if (!names.count(name)) co_return not_found(name);
    co_return md[name];
  }
  boost::asio::awaitable<Status> put_metadata(const std::string& name,
                                              const edf::Metadata& keys) override {
    calls.push_back("metadata " + name);
    if (!names.count(name)) co_return not_found(name);
    auto& m = md[name];
    for (const auto& [k, v] : keys) {
      if (v.empty()) {
        m.erase(k);
      } else {
        m[k] = v;
      }
    }
    co_return ok_status();
  }
  boost::asio::awaitable<Status> resize(const std::string& name, int64_t size_gib) override {
    if (!names.count(name)) co_return not_found(name);
    auto& size = sizes.try_emplace(name, 16).first->second;
    if (size_gib < size) co_return Error{"cannot shrink " + name, http_status(400)};
    size = size_gib;
    co_return ok_status();
  }
  boost::asio::awaitable<Result<edf::Snapshot>> create_snapshot(const std::string& name,
                                                                const std::string& key) override {
    calls.push_back("snapshot " + name);
    if (!names.count(name)) co_return not_found(name);
    auto& list = snaps[name];
    for (const auto& s : list) {
      if (s.uuid == key) co_return s;
    }
    edf::Snapshot s;
    s.app_instance = name;
    s.timestamp = std::to_string(next_timestamp++) + ".000000001";
    s.uuid = key;
    s.op_state = new_snapshot_state;
    s.path = edf::snapshot_path(name, s.timestamp);
    snapshot_sizes[s.path] = ai(name).size_gib;
    list.push_back(s);
    co_return s;
  }
  boost::asio::awaitable<Result<std::vector<edf::Snapshot>>> snapshots(
      const std::string& name) override {
    if (!names.count(name)) co_return not_found(name);
    co_return snaps[name];
  }
  boost::asio::awaitable<Status> delete_snapshot(const std::string& name,
                                                 const std::string& timestamp) override {
    calls.push_back("delete snapshot " + name + " " + timestamp);
    if (auto it = snaps.find(name); it != snaps.end()) {
      std::erase_if(it->second, [&](const edf::Snapshot& s) { return s.timestamp == timestamp; });
    }
    co_return ok_status();
  }
  boost::asio::awaitable<Status> delete_volume(const std::string& name) override {
    calls.push_back("delete " + name);
    snaps.erase(name);
    names.erase(name);
    md.erase(name);
    sizes.erase(name);
    online.erase(name);
    co_return ok_status();
  }
  edf::AppInstance ai(const std::string& name) const {
    edf::AppInstance a;
    a.name = name;
    a.iqn = "iqn.2013-05.com.daterainc:tc:01:sn:1";
    a.ips = ips;
    a.volume_uuid = uuid;
    a.op_state = "available";
    a.admin_state = online.count(name) ? "online" : "offline";
    const auto size = sizes.find(name);
    a.size_gib = size == sizes.end() ? 16 : size->second;
    if (const auto s = snaps.find(name); s != snaps.end()) a.snapshots = s->second;
    return a;
  }
};

struct FakeArrays : volume::Arrays {
  FakeArray array;
  std::vector<edf::BackendTarget> targets;  ///< every get(), in order
  Result<volume::Array*> get(const edf::BackendTarget& target) override {
    targets.push_back(target);
    return &array;
  }
};

}  // namespace datera::testing

#pragma once

// Stateful fakes of the host for the volume core's unit tests: an initiator with sessions, a
// dm-multipath with maps, a mounter with a mount table. The array is tests/testing/fake_array.h.

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "agent/mount/mounter.h"
#include "agent/multipath/multipath.h"
#include "agent/volume/manager.h"
#include "plugins/initiator/initiator.h"

namespace datera::volume {

/// Node "node-a", kubelet at /var/lib/kubelet, default array 10.0.0.1 (admin/password).
inline volume::ManagerOptions base_manager_options() {
  volume::ManagerOptions o;
  o.node_name = "node-a";
  o.kubelet_root = "/var/lib/kubelet";
  o.staging_dir = "/var/lib/datera-agent/staging";
  o.default_backend.host = "10.0.0.1";
  o.default_backend.credentials = {"admin", "password"};
  return o;
}

namespace asio = boost::asio;

/// One call log shared by the initiator and the multipath fakes, to check their relative order.
using CallLog = std::vector<std::string>;

struct FakeInitiator : initiator::Initiator {
  std::optional<Error> connect_error;
  std::vector<std::string> calls;
  CallLog* shared = nullptr;
  std::vector<initiator::Session> live;  ///< sessions as connect()/prune() leave them
  std::string kind() const override { return "fake"; }
  Result<std::string> initiator_iqn() const override {
    return std::string("iqn.1993-08.org.debian:01:node-a");
  }
  asio::awaitable<Result<initiator::Device>> connect(const initiator::Target& t,
                                                     std::chrono::milliseconds) override {
    calls.push_back("connect " + t.serial);
    if (shared) shared->push_back("login " + t.portals.front());
    if (connect_error) co_return *connect_error;
    // The first portal gets sdz (8:16), any other sdy (8:32): a new login is a new disk.
    const bool first = t.portals.front() == "172.28.0.1";
    initiator::Device d{first ? "/dev/sdz" : "/dev/sdy", t.serial, 8, first ? 16u : 32u};
    const std::string portal = t.portals.front() + ":3260";
    if (std::none_of(live.begin(), live.end(), [&](const auto& s) { return s.portal == portal; })) {
      live.push_back({t.iqn, portal, "LOGGED_IN", static_cast<int>(live.size()) + 1, d, "running"});
    }
    co_return d;
  }
  asio::awaitable<Status> disconnect(const initiator::Target& t) override {
    calls.push_back("disconnect " + t.serial);
    live.clear();
    co_return ok_status();
  }
  asio::awaitable<Status> prune(const initiator::Target& t) override {
    std::string keep;
    for (const auto& p : t.portals) keep += " " + p;
    calls.push_back("prune" + keep);
    if (shared) shared->push_back("logout old");
    std::erase_if(live, [&](const initiator::Session& s) {
      return std::none_of(t.portals.begin(), t.portals.end(),
                          [&](const std::string& p) { return s.portal == p + ":3260"; });
    });
    co_return ok_status();
  }
  asio::awaitable<Status> refresh(const initiator::Target& t) override {
    calls.push_back("refresh " + t.serial);
    co_return ok_status();
  }
  asio::awaitable<Result<std::vector<initiator::Session>>> sessions() override { co_return live; }
};

struct FakeMultipath : multipath::Multipath {
  bool usable = true;
  bool hold = false;  ///< initiator.io_hold > 0: the maps' standing mode queues
  bool holds_io() const override { return hold; }
  CallLog* shared = nullptr;
  std::map<std::string, multipath::Map> maps;
  std::optional<Error> ensure_error;  ///< what ensure() fails with
  bool available() const override { return usable; }
  asio::awaitable<Result<std::optional<multipath::Map>>> find(const std::string& name) override {
    auto it = maps.find(name);
    if (it == maps.end()) co_return std::optional<multipath::Map>{};
    co_return std::optional<multipath::Map>{it->second};
  }
  asio::awaitable<Result<multipath::Map>> ensure(
      const std::string& name, const std::string&,
      const std::vector<multipath::PathDevice>& paths) override {
    if (ensure_error) co_return *ensure_error;
    multipath::Map& m = maps[name];
    m.name = name;
    m.device = "/dev/dm-0";
    m.major = 254;
    std::vector<std::string> want;
    for (const auto& p : paths) want.push_back(p.dev_t());
    if (m.paths == want) {  // as Dmsetup: a failed path of an unchanged table is reinstated
      for (const auto& f : m.failed) {
        if (shared) shared->push_back("reinstate " + f);
      }
    }
    m.failed.clear();
    m.paths = want;
    m.queueing = hold;
    if (shared) shared->push_back("map over " + m.paths.front());
    co_return m;
  }
  asio::awaitable<Status> set_queueing(const std::string& name, bool queue) override {
    maps.at(name).queueing = queue;
    if (shared) shared->push_back(queue ? "queue on" : "queue off");
    co_return ok_status();
  }
  asio::awaitable<Status> remove(const std::string& name) override {
    if (shared) shared->push_back("map remove");
    maps.erase(name);
    co_return ok_status();
  }
};

struct FakeMounter : mount::Mounter {
  std::optional<std::string> fs;  ///< what probe() finds
  int formats = 0;
  std::vector<mount::MountEntry> table;
  std::vector<std::string> calls;
  std::vector<std::string> last_options;
  std::optional<Error> mount_error;  ///< what mount() fails with
  std::optional<Error> bind_error;   ///< what bind() fails with
  asio::awaitable<Result<std::optional<std::string>>> probe(const std::string&) override {
    co_return fs;
  }
  asio::awaitable<Status> format(const std::string&, const std::string& t) override {
    ++formats;
    fs = t;
    co_return ok_status();
  }
  asio::awaitable<Status> mount(const mount::MountRequest& r) override {
    calls.push_back("mount " + r.fstype + " " + r.target);
    if (mount_error) co_return *mount_error;
    last_options = r.options;
    const bool dm = r.device.rfind("/dev/dm-", 0) == 0;
    table.push_back(
        {r.device, r.target, r.fstype, "/", "rw", false, dm ? 254u : 8u, dm ? 0u : 16u});
    co_return ok_status();
  }
  asio::awaitable<Status> bind(const std::string& source, const std::string& target,
                               bool ro) override {
    calls.push_back("bind " + target);
    if (bind_error) co_return *bind_error;
    unsigned major = 8, minor = 16;
    for (const auto& m : table) {
      if (m.target == source) major = m.major, minor = m.minor;
    }
    table.push_back({source, target, fs.value_or(""), "/", ro ? "ro" : "rw", ro, major, minor});
    co_return ok_status();
  }
  asio::awaitable<Status> unmount(const std::string& target) override {
    calls.push_back("unmount " + target);
    std::erase_if(table, [&](const mount::MountEntry& m) { return m.target == target; });
    co_return ok_status();
  }
  std::set<std::string> frozen;       ///< targets freeze() froze and thaw() did not thaw yet
  std::optional<Error> freeze_error;  ///< what freeze() fails with
  asio::awaitable<Status> freeze(const std::string& target) override {
    calls.push_back("freeze " + target);
    if (freeze_error) co_return *freeze_error;
    if (!frozen.insert(target).second) co_return Error{target + " is frozen already"};
    co_return ok_status();
  }
  asio::awaitable<Status> thaw(const std::string& target) override {
    calls.push_back("thaw " + target);
    frozen.erase(target);
    co_return ok_status();
  }
  asio::awaitable<Status> grow(const std::string&, const std::string&,
                               const std::string&) override {
    co_return ok_status();
  }
  Result<mount::MountTablePtr> mounts() const override {
    return std::make_shared<const mount::MountTable>(table);
  }
  std::set<std::string> symlinks;  ///< paths resolve_beneath() finds to be symbolic links
  Result<std::string> resolve_beneath(const std::string&, const std::string& path) const override {
    for (const auto& l : symlinks) {
      if (path == l || path.rfind(l + "/", 0) == 0)
        return Error{l + " is a symbolic link", errno_code(ELOOP)};
    }
    return path;
  }
};

}  // namespace datera::volume

#include "agent/controller/grants.h"

#include <algorithm>

#include "agent/config/config.h"
#include "agent/ownership/lease.h"

namespace datera::controller {

namespace asio = boost::asio;

Status check_node(const std::string& node) {
  if (!config::is_valid_node_name(node)) {
    return Error{"'" + node + "' is not a valid Kubernetes node name"};
  }
  return ok_status();
}

Grants::Grants(GrantOptions options, volume::Arrays& arrays, Metrics& metrics, LoggerPtr log)
    : options_(std::move(options)), arrays_(arrays), metrics_(metrics), log_(std::move(log)) {}

asio::awaitable<Result<std::string>> Grants::node_iqn(volume::Array& array,
                                                      const std::string& node) {
  auto all = co_await array.initiators();
  if (!all) co_return all.error();
  const std::string want = edf::initiator_name_for_node(node);
  std::vector<std::string> found;
  for (const auto& i : *all) {
    if (i.name == want) found.push_back(i.iqn);
  }
  if (found.empty()) {
    co_return Error{
        "node " + node + " has no initiator registered on the array (name " + want +
            "); datera-agent registers it when it starts on that node with attach: true "
            "(FlexVolume) or csi.node (CSI). "
            "Check that the agent runs there (kubectl -n datera-system get pods -o wide)",
        HttpStatus::not_found};
  }
  if (found.size() > 1) {
    std::string list;
    for (const auto& f : found) list += (list.empty() ? "" : ", ") + f;
    co_return Error{"node " + node + " has " + std::to_string(found.size()) +
                    " initiators registered as " + want + " (" + list +
                    "); refusing to guess. Delete the stale ones (the node's current IQN is in "
                    "/etc/iscsi/initiatorname.iscsi)"};
  }
  co_return found.front();
}

asio::awaitable<Result<Grant>> Grants::grant(const edf::VolumeOptions& volume,
                                             const std::string& node, const std::string& pv,
                                             bool create) {
  const std::string name = volume.spec.name;
  auto say = [&](const std::string& step, const Error& e) {
    return Error{
        "attach of volume " + name + " to node " + node + " failed at " + step + ": " + e.message,
        e.code};
  };
  if (auto st = check_node(node); !st) co_return say("checks", st.error());
  auto array = arrays_.get(volume.backend);
  if (!array) co_return say("array", array.error());
  if (create) {
    auto created = co_await (*array)->ensure_volume(volume.spec);
    if (!created) co_return say("array", created.error());
  }
  auto iqn = co_await node_iqn(**array, node);
  if (!iqn) co_return say("initiator", iqn.error());

  auto guard = co_await locks_.lock(name);
  auto md = co_await (*array)->metadata(name);
  if (!md) co_return say("lease", md.error());
  const ownership::Lease held = ownership::decode(*md);
  const bool already = held.owner == node && held.owner_iqn == *iqn;
  if (!already && !held.free()) {
    // Kubernetes detaches before it attaches elsewhere, also when it force-detaches a node it gave
    // up on; a second attach while another node holds the volume is a multi-attach (a
    // ReadWriteMany or ReadOnlyMany PV), which one filesystem with one writer cannot serve.
    metrics_.refused();
    co_return say("checks", Error{"it is attached to node " + held.owner + " (epoch " +
                                      std::to_string(held.epoch) +
                                      "); a Datera volume is attached to one node at a time. "
                                      "Kubernetes detaches it there first (for a ReadWriteOnce "
                                      "PV); a ReadWriteMany or ReadOnlyMany PV cannot be shared",
                                  errno_code(EBUSY)});
  }
  const uint64_t epoch = already ? held.epoch : held.epoch + 1;
  if (!already) {
    ownership::Lease next;
    next.owner = node;
    next.owner_iqn = *iqn;
    next.epoch = epoch;
    edf::Metadata keys = ownership::encode(next);
    keys[kPvKey] = pv;
    // The record first, then the ACL: a node is never in the ACL without a grant naming it.
    if (auto st = co_await (*array)->put_metadata(name, keys); !st)
      co_return say("lease", st.error());
  }
  auto acl = co_await (*array)->acl(name);
  if (!acl) co_return say("acl", acl.error());
  for (const auto& other : *acl) {
    if (other == *iqn) continue;
    log_->warn("volume {}: removing {} from its ACL: only node {} may reach it now", name, other,
               node);
    if (auto st = co_await (*array)->acl_remove(name, other);
        !st && !edf::is_not_found(st.error())) {
      co_return say("acl", st.error());
    }
  }
  if (auto st = co_await (*array)->acl_add(name, *iqn); !st) co_return say("acl", st.error());
  auto online = co_await (*array)->bring_online(name, options_.online_timeout);
  if (!online) co_return say("online", online.error());
  log_->info("volume {}: attached to node {} ({}, epoch {})", name, node, *iqn, epoch);
  co_return Grant{*iqn, epoch};
}

asio::awaitable<Result<std::string>> Grants::volume_of_pv(volume::Array& array,
                                                          const std::string& pv) {
  if (edf::is_valid_name(pv)) {
    auto md = co_await array.metadata(pv);
    if (md) {
      const auto it = md->find(kPvKey);
      if (it == md->end() || it->second.empty() || it->second == pv) co_return pv;
    } else if (!edf::is_not_found(md.error())) {
      co_return md.error();
    }
  }
  // Named otherwise (volumeID): the app instance whose metadata records this PV.
  auto names = co_await array.volume_names();
  if (!names) co_return names.error();
  for (const auto& n : *names) {
    auto md = co_await array.metadata(n);
    if (!md) continue;
    const auto it = md->find(kPvKey);
    if (it != md->end() && it->second == pv) co_return n;
  }
  co_return std::string();
}

asio::awaitable<Status> Grants::revoke(const edf::BackendTarget& backend, const std::string& name,
                                       const std::string& node, const std::string& what) {
  auto say = [&](const std::string& step, const Error& e) {
    return Error{what + " failed at " + step + ": " + e.message, e.code};
  };
  if (auto st = check_node(node); !st) co_return say("checks", st.error());
  auto array = arrays_.get(backend);
  if (!array) co_return say("array", array.error());
  auto guard = co_await locks_.lock(name);
  auto md = co_await (*array)->metadata(name);
  if (!md && edf::is_not_found(md.error())) {
    log_->info("{}: the array has no such volume; nothing to do", what);
    co_return ok_status();
  }
  if (!md) co_return say("lease", md.error());
  const ownership::Lease held = ownership::decode(*md);
  std::string iqn = held.owner == node ? held.owner_iqn : std::string();
  if (iqn.empty()) {
    auto found = co_await node_iqn(**array, node);
    if (!found) co_return say("initiator", found.error());
    iqn = *found;
  }
  if (auto st = co_await (*array)->acl_remove(name, iqn); !st && !edf::is_not_found(st.error())) {
    co_return say("acl", st.error());
  }
  if (held.owner == node) {
    ownership::Lease freed;
    freed.epoch = held.epoch;  // the next attach goes on from here
    if (auto st = co_await (*array)->put_metadata(name, ownership::encode(freed)); !st) {
      co_return say("lease", st.error());
    }
  }
  log_->info("volume {}: detached from node {}{}", name, node,
             held.owner == node ? "" : " (it did not hold the lease)");
  co_return ok_status();
}

asio::awaitable<Result<bool>> Grants::granted(const edf::BackendTarget& backend,
                                              const std::string& name, const std::string& node) {
  auto array = arrays_.get(backend);
  if (!array) co_return array.error();
  auto md = co_await (*array)->metadata(name);
  if (!md) {
    if (edf::is_not_found(md.error())) co_return false;
    co_return md.error();
  }
  const ownership::Lease held = ownership::decode(*md);
  if (held.owner != node || held.owner_iqn.empty()) co_return false;
  auto acl = co_await (*array)->acl(name);
  if (!acl) co_return acl.error();
  co_return std::find(acl->begin(), acl->end(), held.owner_iqn) != acl->end();
}

}  // namespace datera::controller

#include "agent/controller/attacher.h"

#include <algorithm>

#include "agent/config/config.h"
#include "agent/ownership/lease.h"

namespace datera::controller {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

std::string opt(const flex::Json& o, const char* key) {
  const auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Status check_node(const std::string& node) {
  if (!config::is_valid_node_name(node)) {
    return Error{"'" + node + "' is not a valid Kubernetes node name"};
  }
  return ok_status();
}

}  // namespace

Attacher::Attacher(AttacherOptions options, volume::Arrays& arrays, Metrics& probe, LoggerPtr log)
    : options_(std::move(options)), arrays_(arrays), metrics_(probe), log_(std::move(log)) {}

asio::awaitable<flex::Json> Attacher::attach(const flex::Request& request) {
  const auto t0 = Clock::now();
  auto done = co_await do_attach(request);
  metrics_.operation("attach", done.ok(), Clock::now() - t0);
  if (!done) co_return flex::failure(done.error().message);
  flex::Json reply = flex::success();
  // The node finds the device itself (waitforattach); kubelet only passes this string back.
  reply["device"] = *done;
  co_return reply;
}

asio::awaitable<flex::Json> Attacher::detach(const flex::Request& request) {
  const auto t0 = Clock::now();
  auto done = co_await do_detach(request);
  metrics_.operation("detach", done.ok(), Clock::now() - t0);
  if (!done) co_return flex::failure(done.error().message);
  co_return flex::success();
}

asio::awaitable<flex::Json> Attacher::isattached(const flex::Request& request) {
  const auto t0 = Clock::now();
  auto done = co_await do_isattached(request);
  metrics_.operation("isattached", done.ok(), Clock::now() - t0);
  if (!done) co_return flex::failure(done.error().message);
  flex::Json reply = flex::success();
  reply["attached"] = *done;
  co_return reply;
}

asio::awaitable<Result<std::string>> Attacher::node_iqn(volume::Array& array,
                                                        const std::string& node) {
  auto all = co_await array.initiators();
  if (!all) co_return all.error();
  const std::string want = edf::initiator_name_for_node(node);
  std::vector<std::string> found;
  for (const auto& i : *all) {
    if (i.name == want) found.push_back(i.iqn);
  }
  if (found.empty()) {
    co_return Error{"node " + node + " has no initiator registered on the array (name " + want +
                    "); datera-agent registers it when it starts on that node with attach: true. "
                    "Check that the agent runs there (kubectl -n datera-system get pods -o wide)"};
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

asio::awaitable<Result<std::string>> Attacher::do_attach(const flex::Request& request) {
  const std::string node = request.arg("nodeName").value_or("");
  auto parsed = edf::parse_volume_options(request.options, options_.default_backend,
                                          options_.allowed_servers);
  if (!parsed) co_return parsed.error().wrap("attach to node " + node);
  const std::string name = parsed->spec.name;
  auto say = [&](const std::string& step, const Error& e) {
    return Error{
        "attach of volume " + name + " to node " + node + " failed at " + step + ": " + e.message,
        e.code};
  };
  if (auto st = check_node(node); !st) co_return say("checks", st.error());
  auto array = arrays_.get(parsed->backend);
  if (!array) co_return say("array", array.error());
  auto created = co_await (*array)->ensure_volume(parsed->spec);
  if (!created) co_return say("array", created.error());
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
                                  "Kubernetes detaches it there first (for a ReadWriteOnce PV); "
                                  "a ReadWriteMany or ReadOnlyMany PV cannot be shared"});
  }
  if (!already) {
    ownership::Lease next;
    next.owner = node;
    next.owner_iqn = *iqn;
    next.epoch = held.epoch + 1;
    edf::Metadata keys = ownership::encode(next);
    keys[kPvKey] = opt(request.options, "kubernetes.io/pvOrVolumeName");
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
  log_->info("volume {}: attached to node {} ({}, epoch {})", name, node, *iqn,
             already ? held.epoch : held.epoch + 1);
  co_return std::string();
}

asio::awaitable<Result<std::string>> Attacher::volume_of_pv(volume::Array& array,
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

asio::awaitable<Status> Attacher::do_detach(const flex::Request& request) {
  const std::string pv = request.arg("volumeName").value_or("");
  const std::string node = request.arg("nodeName").value_or("");
  auto say = [&](const std::string& step, const Error& e) {
    return Error{"detach of " + pv + " from node " + node + " failed at " + step + ": " + e.message,
                 e.code};
  };
  if (auto st = check_node(node); !st) co_return say("checks", st.error());
  if (pv.empty() || pv.size() > 253) co_return say("checks", Error{"no volume name"});
  auto array = arrays_.get(options_.default_backend);
  if (!array) co_return say("array", array.error());
  auto name = co_await volume_of_pv(**array, pv);
  if (!name) co_return say("array", name.error());
  if (name->empty()) {
    log_->info("detach {} from node {}: the array has no such volume; nothing to do", pv, node);
    co_return ok_status();
  }
  auto guard = co_await locks_.lock(*name);
  auto md = co_await (*array)->metadata(*name);
  if (!md) co_return say("lease", md.error());
  const ownership::Lease held = ownership::decode(*md);
  std::string iqn = held.owner == node ? held.owner_iqn : std::string();
  if (iqn.empty()) {
    auto found = co_await node_iqn(**array, node);
    if (!found) co_return say("initiator", found.error());
    iqn = *found;
  }
  if (auto st = co_await (*array)->acl_remove(*name, iqn); !st && !edf::is_not_found(st.error())) {
    co_return say("acl", st.error());
  }
  if (held.owner == node) {
    ownership::Lease freed;
    freed.epoch = held.epoch;  // the next attach goes on from here
    if (auto st = co_await (*array)->put_metadata(*name, ownership::encode(freed)); !st) {
      co_return say("lease", st.error());
    }
  }
  log_->info("volume {}: detached from node {}{}", *name, node,
             held.owner == node ? "" : " (it did not hold the lease)");
  co_return ok_status();
}

asio::awaitable<Result<bool>> Attacher::do_isattached(const flex::Request& request) {
  const std::string node = request.arg("nodeName").value_or("");
  auto parsed = edf::parse_volume_options(request.options, options_.default_backend,
                                          options_.allowed_servers);
  if (!parsed) co_return parsed.error().wrap("isattached on node " + node);
  const std::string name = parsed->spec.name;
  auto array = arrays_.get(parsed->backend);
  if (!array) co_return array.error().wrap("isattached of volume " + name);
  auto md = co_await (*array)->metadata(name);
  if (!md) {
    if (edf::is_not_found(md.error())) co_return false;
    co_return md.error().wrap("isattached of volume " + name);
  }
  const ownership::Lease held = ownership::decode(*md);
  if (held.owner != node || held.owner_iqn.empty()) co_return false;
  auto acl = co_await (*array)->acl(name);
  if (!acl) co_return acl.error().wrap("isattached of volume " + name);
  co_return std::find(acl->begin(), acl->end(), held.owner_iqn) != acl->end();
}

}  // namespace datera::controller

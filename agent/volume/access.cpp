#include "agent/volume/access.h"

#include "agent/volume/internal.h"

namespace datera::volume {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using detail::StepTimer;

asio::awaitable<Result<ownership::Lease>> ArrayStore::read(const std::string& volume) {
  auto md = co_await array_.metadata(volume);
  if (!md) co_return md.error();
  co_return ownership::decode(*md);
}

asio::awaitable<Status> ArrayStore::write(const std::string& volume, const edf::Metadata& keys) {
  co_return co_await array_.put_metadata(volume, keys);
}

asio::awaitable<Status> ArrayStore::fence(const std::string& volume, const std::string& iqn) {
  auto st = co_await array_.acl_remove(volume, iqn);
  if (!st && is_not_found(st.error())) co_return ok_status();
  co_return st;
}

namespace {

/// The app instance `ai` must be exported, and be the volume the journal knows (`changed` ends the
/// message when its uuid is not: the modes word it differently).
std::optional<VolumeError> check_export(const Record& rec, const edf::AppInstance& ai,
                                        const char* nowhere, const char* changed) {
  if (ai.iqn.empty() || ai.ips.empty() || ai.volume_uuid.empty()) {
    return VolumeError{Step::array, Error{nowhere}};
  }
  if (!rec.target.serial.empty() && rec.target.serial != ai.volume_uuid) {
    // The journal knew another uuid: the app instance was deleted and re-created behind our back.
    return VolumeError{Step::verify, Error{"the array's volume uuid changed from " +
                                           rec.target.serial + " to " + ai.volume_uuid + changed}};
  }
  return std::nullopt;
}

class LeaseAccess final : public AccessPolicy {
 public:
  explicit LeaseAccess(AccessContext c) : c_(std::move(c)) {}

  asio::awaitable<VolumeResult<edf::AppInstance>> gain(Record& rec, Array& array,
                                                       const edf::VolumeSpec& spec,
                                                       Operation op) override {
    if (auto st = co_await prepare(rec, array, spec, op); !st) co_return st.error();
    if (c_.coordinator && rec.pods.empty()) {
      // One writer: the lease first (waiting for a handoff, or fencing a dead owner), then this
      // node alone in the ACL.
      StepTimer t(c_.probe, op, Step::claim);
      if (auto st = co_await claim(rec, array); !st) co_return st.error();
      if (auto st = co_await remove_others(rec, array); !st) co_return st.error();
    }
    auto ai = co_await join(rec, array, op);
    if (!ai) co_return ai.error();
    if (auto bad =
            check_export(rec, *ai, "the array reported no target IQN, access IP or volume uuid",
                         " while pods use it; refusing to mix them")) {
      co_return *bad;
    }
    co_return *ai;
  }

  asio::awaitable<VolumeStatus> give_back(Record& rec, Operation op, bool served) override {
    // A mount that failed before it joined the ACL or took the lease has nothing there to undo,
    // and must not wait for an array that may well be why it failed.
    const bool on_array = rec.acl_added || rec.epoch != 0;
    if (!on_array || rec.initiator_iqn.empty() || rec.backend.host.empty()) co_return Done{};
    StepTimer t(c_.probe, op, Step::release);
    auto array = c_.arrays.get(rec.backend);
    if (!array) co_return VolumeError{Step::release, array.error()};
    if (auto st = co_await (*array)->acl_remove(rec.volume, rec.initiator_iqn);
        !st && !is_not_found(st.error())) {
      co_return VolumeError{Step::release, st.error()};
    }
    if (c_.coordinator && rec.epoch != 0) {
      ArrayStore store(**array);
      if (auto st = co_await c_.coordinator->release(rec.volume, store, rec.epoch); !st) {
        co_return VolumeError{Step::release, st.error()};
      }
    }
    if (rec.delete_on_release && served) {
      if (auto st = co_await (*array)->delete_volume(rec.volume); !st) {
        co_return VolumeError{Step::release, st.error()};
      }
      c_.log->info("volume {}: deleted from the array (retainPolicy: never)", rec.volume);
    }
    co_return Done{};
  }

  bool applies_retain_policy() const override { return true; }

 private:
  /// The app instance exists (created from the options) and knows this node's initiator.
  asio::awaitable<VolumeStatus> prepare(Record& rec, Array& array, const edf::VolumeSpec& spec,
                                        Operation op) {
    StepTimer t(c_.probe, op, Step::array);
    auto created = co_await array.ensure_volume(spec);
    if (!created) co_return VolumeError{Step::array, created.error()};
    const std::string label = edf::initiator_name_for_node(c_.node_name);
    if (auto st = co_await array.ensure_initiator(rec.initiator_iqn, label); !st) {
      co_return VolumeError{Step::array, st.error()};
    }
    co_return Done{};
  }

  /// The volume's lease, journaled (its epoch) before anything relies on it.
  asio::awaitable<VolumeStatus> claim(Record& rec, Array& array) {
    const auto t0 = Clock::now();
    ArrayStore store(array);
    auto held = co_await c_.coordinator->acquire(rec.volume, store);
    if (!held) {
      c_.probe.handoff(is_claim_refused(held.error()) ? "refused" : "failed", -1);
      co_return VolumeError{Step::claim, held.error()};
    }
    const bool fresh_claim = rec.epoch != held->epoch;
    rec.epoch = held->epoch;
    if (auto st = co_await c_.journal.save(rec); !st)
      co_return VolumeError{Step::journal, st.error()};
    if (!held->fenced.empty()) {
      c_.probe.fencing("fenced_expired_owner");
      c_.log->warn("volume {}: took it over from node {}, whose lease expired (fenced)", rec.volume,
                   held->fenced);
    }
    if (fresh_claim) {
      c_.probe.handoff(held->fenced.empty() ? "claimed" : "taken_over",
                       std::chrono::duration<double>(Clock::now() - t0).count());
    }
    co_return Done{};
  }

  /// Only the lease holder may reach the volume: every other initiator leaves its ACL.
  asio::awaitable<VolumeStatus> remove_others(Record& rec, Array& array) {
    auto acl = co_await array.acl(rec.volume);
    if (!acl) co_return VolumeError{Step::claim, acl.error()};
    for (const auto& other : *acl) {
      if (other == rec.initiator_iqn) continue;
      c_.log->warn("volume {}: removing {} from its ACL: only the lease holder may reach it",
                   rec.volume, other);
      if (auto st = co_await array.acl_remove(rec.volume, other);
          !st && !is_not_found(st.error())) {
        co_return VolumeError{Step::claim, st.error()};
      }
      c_.probe.fencing("stale_acl_entry");
    }
    co_return Done{};
  }

  /// This node in the ACL (journaled first: a release must then remove it, and only then needs
  /// the array at all), and the volume online.
  asio::awaitable<VolumeResult<edf::AppInstance>> join(Record& rec, Array& array, Operation op) {
    if (!rec.acl_added) {
      rec.acl_added = true;
      if (auto st = co_await c_.journal.save(rec); !st) {
        co_return VolumeError{Step::journal, st.error()};
      }
    }
    StepTimer t(c_.probe, op, Step::array);
    if (auto st = co_await array.acl_add(rec.volume, rec.initiator_iqn); !st) {
      co_return VolumeError{Step::array, st.error()};
    }
    auto online = co_await array.bring_online(rec.volume, c_.online_timeout);
    if (!online) co_return VolumeError{Step::array, online.error()};
    co_return std::move(*online);
  }

  AccessContext c_;
};

class GrantAccess final : public AccessPolicy {
 public:
  explicit GrantAccess(AccessContext c) : c_(std::move(c)) {}

  // The attach steps are timed as waitforattach wherever kubelet runs them (also mountdevice).
  asio::awaitable<VolumeResult<edf::AppInstance>> gain(Record& rec, Array& array,
                                                       const edf::VolumeSpec&, Operation) override {
    if (auto st = co_await check_grant(rec, array); !st) co_return st.error();
    edf::AppInstance ai;
    {
      StepTimer t(c_.probe, Operation::waitforattach, Step::array);
      auto found = co_await array.find_volume(rec.volume);
      if (!found) co_return VolumeError{Step::array, found.error()};
      if (!*found) co_return VolumeError{Step::array, Error{"the array has no such volume"}};
      ai = std::move(**found);
    }
    if (auto bad = check_export(rec, ai,
                                "the array exports it nowhere yet (no target IQN, access IP or "
                                "volume uuid); kubelet retries",
                                "; refusing to mix them")) {
      co_return *bad;
    }
    co_return ai;
  }

  // The ACL and the ownership record are the controller's: detach gives them back.
  asio::awaitable<VolumeStatus> give_back(Record&, Operation, bool) override { co_return Done{}; }

  // Detach has no options: the retain policy is never applied here.
  bool applies_retain_policy() const override { return false; }

 private:
  /// The ownership record names this node and its IQN (the controller's attach wrote it).
  asio::awaitable<VolumeStatus> check_grant(Record& rec, Array& array) {
    StepTimer t(c_.probe, Operation::waitforattach, Step::grant);
    // Registered at start-up already; again here, cheaply, in case the array was replaced.
    const std::string label = edf::initiator_name_for_node(c_.node_name);
    if (auto st = co_await array.ensure_initiator(rec.initiator_iqn, label); !st) {
      co_return VolumeError{Step::initiator, st.error()};
    }
    auto md = co_await array.metadata(rec.volume);
    // No such app instance yet: the controller's attach creates it.
    if (!md && !is_not_found(md.error())) co_return VolumeError{Step::grant, md.error()};
    const ownership::Lease lease = md ? ownership::decode(*md) : ownership::Lease{};
    if (lease.owner != c_.node_name || lease.owner_iqn != rec.initiator_iqn) {
      const std::string holder = !md            ? "nothing (the array has no such volume)"
                                 : lease.free() ? "no node"
                                                : "node " + lease.owner;
      co_return VolumeError{
          Step::grant,
          retry_later("the volume is not attached to this node (" + c_.node_name +
                      ") yet: the array's ownership record names " + holder +
                      ". The attach-detach controller attaches it through datera-agent on the "
                      "control plane; see that agent's log and the pod's events. kubelet retries")};
    }
    rec.epoch = lease.epoch;
    co_return Done{};
  }

  AccessContext c_;
};

}  // namespace

std::unique_ptr<AccessPolicy> make_lease_access(AccessContext context) {
  return std::make_unique<LeaseAccess>(std::move(context));
}

std::unique_ptr<AccessPolicy> make_grant_access(AccessContext context) {
  return std::make_unique<GrantAccess>(std::move(context));
}

}  // namespace datera::volume

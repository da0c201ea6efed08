#include "agent/ownership/lease.h"

#include <charconv>

namespace datera::ownership {

namespace asio = boost::asio;

namespace {

constexpr const char* kOwner = "datera-agent.owner";
constexpr const char* kOwnerIqn = "datera-agent.owner-iqn";
constexpr const char* kEpoch = "datera-agent.epoch";
constexpr const char* kSeq = "datera-agent.seq";
constexpr const char* kHandoff = "datera-agent.handoff";
constexpr const char* kRefused = "datera-agent.refused";

std::string get(const edf::Metadata& md, const char* key) {
  auto it = md.find(key);
  return it == md.end() ? std::string() : it->second;
}

uint64_t number(const std::string& s) {
  uint64_t n = 0;
  std::from_chars(s.data(), s.data() + s.size(), n);
  return n;
}

}  // namespace

Lease decode(const edf::Metadata& md) {
  Lease l;
  l.owner = get(md, kOwner);
  l.owner_iqn = get(md, kOwnerIqn);
  l.epoch = number(get(md, kEpoch));
  l.seq = number(get(md, kSeq));
  l.handoff = get(md, kHandoff);
  l.refused = get(md, kRefused);
  return l;
}

edf::Metadata encode(const Lease& l) {
  return {{kOwner, l.owner},
          {kOwnerIqn, l.owner_iqn},
          {kEpoch, std::to_string(l.epoch)},
          {kSeq, std::to_string(l.seq)},
          {kHandoff, l.handoff},
          {kRefused, l.refused}};
}

const char* to_string(Renewal r) {
  switch (r) {
    case Renewal::renewed:
      return "renewed";
    case Renewal::handoff:
      return "handoff";
    case Renewal::superseded:
      return "superseded";
  }
  return "unknown";
}

Coordinator::Coordinator(asio::any_io_executor executor, Options options, LoggerPtr log,
                         Clock& clock)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      log_(std::move(log)),
      clock_(clock) {}

asio::awaitable<Result<std::optional<uint64_t>>> Coordinator::try_claim(const std::string& volume,
                                                                        Store& store,
                                                                        const Lease* expired) {
  const auto t0 = clock_.now();
  auto fresh = co_await store.read(volume);
  if (!fresh) co_return fresh.error();
  // Ours already (a retry, a restart) keeps its epoch; a free volume, or the very lease we saw
  // expire and fenced, gets the next one. Anything else is someone else's now.
  uint64_t epoch = 0;
  if (fresh->owner == options_.node) {
    epoch = fresh->epoch;
  } else if (fresh->free() || (expired && fresh->same_holder(*expired))) {
    epoch = fresh->epoch + 1;
  } else {
    co_return std::optional<uint64_t>{};
  }
  Lease claim;
  claim.owner = options_.node;
  claim.owner_iqn = options_.iqn;
  claim.epoch = epoch;
  const edf::Metadata keys = encode(claim);
  if (auto st = co_await store.write(volume, keys); !st) co_return st.error();
  if (clock_.now() - t0 > options_.write_bound) {
    // Too slow for Fischer's bound: another claimant's read may not have seen this write. Does
    // not count; the caller retries (the written claim is harmless: it is re-read, never trusted).
    log_->warn("volume {}: claim write took longer than {} ms; retrying the claim", volume,
               options_.write_bound.count());
    co_return std::optional<uint64_t>{};
  }
  co_await clock_.sleep(options_.settle);
  auto back = co_await store.read(volume);
  if (!back) co_return back.error();
  if (back->owner == options_.node && back->epoch == epoch)
    co_return std::optional<uint64_t>{epoch};
  co_return std::optional<uint64_t>{};
}

asio::awaitable<Result<Held>> Coordinator::acquire(const std::string& volume, Store& store) {
  const auto deadline = clock_.now() + options_.acquire_limit();
  Held held;
  Lease seen;
  auto seen_at = clock_.now();
  bool watching = false;
  bool asked = false;
  while (true) {
    auto now_lease = co_await store.read(volume);
    if (!now_lease) co_return now_lease.error().wrap("reading the owner of volume " + volume);
    const Lease l = *now_lease;
    if (l.free() || l.owner == options_.node) {
      auto won = co_await try_claim(volume, store, nullptr);
      if (!won) co_return won.error().wrap("claiming volume " + volume);
      if (*won) {
        held.epoch = **won;
        log_->info("volume {}: claimed by this node at epoch {}", volume, held.epoch);
        co_return held;
      }
      auto after = co_await store.read(volume);
      if (after && !after->free() && after->owner != options_.node) {
        co_return Error{"volume " + volume + " was claimed by node " + after->owner +
                            " at the same moment; it is theirs now (kubelet retries)",
                        errno_code(EBUSY)};
      }
    } else {
      // Someone else's. Ask for a handoff, clearing any earlier answer: only a refusal written
      // after this request counts (a dead owner's old refusal must not block a takeover).
      if (!asked) {
        edf::Metadata ask;
        ask[kHandoff] = options_.node;
        ask[kRefused] = "";
        if (auto st = co_await store.write(volume, ask); !st) {
          co_return st.error().wrap("asking node " + l.owner + " to hand over volume " + volume);
        }
        log_->info("volume {}: held by node {} (epoch {}); asked it to hand over", volume, l.owner,
                   l.epoch);
        asked = true;
        co_await clock_.sleep(options_.poll);
        continue;
      }
      // Our ask cleared `refused`, and only the owner writes it: a refusal now, even one that
      // answers another claimant's later ask, says the owner is alive and uses the volume.
      if (!l.refused.empty()) {
        co_return Error{"volume " + volume + " is in use on node " + l.owner + ": " + l.refused +
                            ". It moves here once that pod is gone (kubelet retries)",
                        errno_code(EBUSY)};
      }
      if (!watching || !l.same_holder(seen)) {
        seen = l;
        seen_at = clock_.now();
        watching = true;
      } else if (clock_.now() - seen_at >= options_.ttl) {
        // The lease did not move for a whole TTL: the owner is dead or cut off. Fence it first,
        // so it can never write again, then claim the next epoch.
        log_->warn("volume {}: node {}'s lease (epoch {}) expired; fencing {} and taking over",
                   volume, l.owner, l.epoch, l.owner_iqn);
        if (!l.owner_iqn.empty()) {
          if (auto st = co_await store.fence(volume, l.owner_iqn); !st) {
            co_return st.error().wrap("fencing node " + l.owner + " off volume " + volume);
          }
        }
        auto won = co_await try_claim(volume, store, &l);
        if (!won) co_return won.error().wrap("claiming volume " + volume);
        if (*won) {
          held.epoch = **won;
          held.fenced = l.owner;
          co_return held;
        }
        watching = false;  // someone else won the takeover; start watching them
      }
    }
    if (clock_.now() >= deadline) {
      co_return Error{"volume " + volume + " is still held by node " + l.owner +
                          ", which neither handed it over nor let its lease expire; check "
                          "that node's agent (kubelet retries)",
                      errno_code(ETIMEDOUT)};
    }
    co_await clock_.sleep(options_.poll);
  }
}

asio::awaitable<Result<Renewal>> Coordinator::renew(const std::string& volume, Store& store,
                                                    uint64_t epoch, const std::string& in_use) {
  auto l = co_await store.read(volume);
  if (!l) co_return l.error().wrap("renewing the lease on volume " + volume);
  if (l->owner != options_.node || l->epoch != epoch) {
    asks_.erase(volume);
    log_->error("volume {}: this node's lease (epoch {}) was superseded by node {} (epoch {})",
                volume, epoch, l->owner.empty() ? "(none)" : l->owner, l->epoch);
    co_return Renewal::superseded;
  }
  const bool asked = !l->handoff.empty() && l->handoff != options_.node;
  if (asked && in_use.empty()) {
    asks_.erase(volume);
    co_return Renewal::handoff;
  }
  // An ask clears `refused`, so an unanswered one shows as a refusal that differs from ours. A
  // handoff key this node has not seen before (also after a restart) counts as a new ask.
  const bool unanswered = asked && l->refused != in_use;
  const auto now = clock_.now();
  if (asked) {
    Ask& ask = asks_[volume];  // a new entry has no handoff: it counts as a new ask
    if (unanswered || ask.handoff != l->handoff) ask = Ask{l->handoff, now};
  }
  const auto it = asks_.find(volume);
  const bool watched = it != asks_.end() && now - it->second.seen < options_.claimant_window();
  if (!unanswered && !watched) {
    // Nobody can be watching the sequence number: nothing to write. A stale ask stays known, so
    // it does not count as new at the next renewal.
    if (!asked) asks_.erase(volume);
    co_return Renewal::renewed;
  }
  edf::Metadata keys;
  keys[kSeq] = std::to_string(l->seq + 1);
  if (unanswered) keys[kRefused] = in_use;
  if (auto st = co_await store.write(volume, keys); !st) {
    co_return st.error().wrap("renewing the lease on volume " + volume);
  }
  if (unanswered) {
    log_->warn("volume {}: node {} asks for it, refused: {}", volume, l->handoff, in_use);
  }
  co_return Renewal::renewed;
}

asio::awaitable<Status> Coordinator::release(const std::string& volume, Store& store,
                                             uint64_t epoch) {
  auto l = co_await store.read(volume);
  if (!l) co_return l.error().wrap("releasing the lease on volume " + volume);
  asks_.erase(volume);
  if (l->owner != options_.node || l->epoch != epoch) co_return ok_status();  // not ours any more
  Lease cleared;
  cleared.epoch = epoch;  // the epoch stays: the next claim takes epoch + 1
  cleared.handoff = l->handoff;
  const edf::Metadata keys = encode(cleared);
  if (auto st = co_await store.write(volume, keys); !st) {
    co_return st.error().wrap("releasing the lease on volume " + volume);
  }
  log_->info("volume {}: released by this node (epoch {})", volume, epoch);
  co_return ok_status();
}

}  // namespace datera::ownership

#pragma once

// Who may write a volume: one node at a time, recorded in the app instance's metadata on the
// array (EDF has no locks and no compare-and-swap, only a merge-PUT of a flat string map).
//
//   datera-agent.owner      node name ("" = free)          datera-agent.epoch   bumped per claim
//   datera-agent.owner-iqn  its initiator (for fencing)    datera-agent.seq     bumped per renewal
//   datera-agent.handoff    a node asking for the volume   datera-agent.refused the owner's "no"
//
// Liveness is judged by the reader's own clock: a lease is expired when its (owner, epoch, seq)
// did not change for `ttl` while the reader watched. No wall-clock time crosses nodes, so clock
// skew cannot expire a live lease.
//
// Only a claimant watches, and a claimant always asks first (writes `handoff`, clears `refused`).
// So the owner reads its lease every ttl/3 (to see asks, and to see that it was superseded) but
// writes only while someone may be watching: when an ask is unanswered, and then on every renewal
// for claimant_window() after it last saw an ask (a second claimant's ask may have overwritten
// the first's; the first still watches the sequence number until its deadline). An idle node
// holding hundreds of volumes therefore sends reads only, no writes.
//
// Claiming without compare-and-swap is Fischer's timed mutual exclusion:
//   read: free (or expired and fenced)  ->  write the claim, and the write must have completed
//   within `write_bound` of the read that saw it free (else the attempt does not count)  ->
//   wait `settle` (> write_bound)  ->  read: still ours? then ours.
// Any other claimant that saw the volume free wrote within write_bound of its read, so its write
// landed before our confirming read; the array keeps the last write, so at most one claimant reads
// its own claim back. The loser sees the winner and backs off (its mount fails naming the winner;
// kubelet retries). tests/agent/ownership shows exactly one winner among racing claimants.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "base/clock.h"
#include "base/logging.h"
#include "base/result.h"
#include "plugins/edf/types.h"

namespace datera::ownership {

struct Lease {
  std::string owner;
  std::string owner_iqn;
  uint64_t epoch = 0;
  uint64_t seq = 0;
  std::string handoff;  ///< the node asking for the volume ("" = nobody)
  std::string refused;  ///< the owner's reason for keeping it, for `handoff`

  bool free() const { return owner.empty(); }
  bool same_holder(const Lease& o) const {
    return owner == o.owner && epoch == o.epoch && seq == o.seq;
  }
};

Lease decode(const edf::Metadata& md);
/// Every key (also the empty ones: an empty value deletes the key on a merge-PUT).
edf::Metadata encode(const Lease& l);

/// What claiming needs from the array, for one volume.
class Store {
 public:
  virtual ~Store() = default;
  virtual boost::asio::awaitable<Result<Lease>> read(const std::string& volume) = 0;
  /// Merge-writes the given keys only.
  virtual boost::asio::awaitable<Status> write(const std::string& volume,
                                               const edf::Metadata& keys) = 0;
  /// Removes `iqn` from the volume's ACL: the array ends that initiator's sessions.
  virtual boost::asio::awaitable<Status> fence(const std::string& volume,
                                               const std::string& iqn) = 0;
};

struct Options {
  std::string node;
  std::string iqn;
  std::chrono::milliseconds ttl{30'000};
  std::chrono::milliseconds settle{2'000};       ///< Fischer's delay; must exceed write_bound
  std::chrono::milliseconds write_bound{1'000};  ///< read-free .. claim-written, at most
  std::chrono::milliseconds poll{1'000};         ///< while waiting for the owner

  /// How long acquire() waits at most (its deadline) from its first look.
  std::chrono::milliseconds acquire_limit() const { return ttl + 4 * settle + 5 * poll; }
  /// How long after an ask the owner keeps its sequence number moving: longer than any claimant
  /// that asked by then can still be watching, with a renewal period to spare.
  std::chrono::milliseconds claimant_window() const { return acquire_limit() + ttl / 3; }
};

/// The lease this node holds, after acquire().
struct Held {
  uint64_t epoch = 0;
  std::string fenced;  ///< the node whose expired lease was taken over (and fenced), or ""
};

enum class Renewal {
  renewed,     ///< still ours (and a handoff request, if any, was refused: pods use it here)
  handoff,     ///< another node asks and no pod uses it here: release it
  superseded,  ///< someone else holds it now: never write to it again (self-fence)
};
const char* to_string(Renewal r);

class Coordinator {
 public:
  /// `clock` times the Fischer rounds, polls and TTLs (tests pass a virtual one).
  Coordinator(boost::asio::any_io_executor executor, Options options, LoggerPtr log,
              Clock& clock = real_clock());

  /// For a mount: returns the held epoch, waiting (bounded by ttl + settle + margin) for the
  /// owner to hand over or for its lease to expire, then fences it. Fails saying who holds the
  /// volume and why when it stays theirs.
  boost::asio::awaitable<Result<Held>> acquire(const std::string& volume, Store& store);
  /// One renewal of a lease this node holds at `epoch`: a read, and a write only while a claimant
  /// may be watching (see above). `in_use` says why it cannot be handed over ("" = it can).
  boost::asio::awaitable<Result<Renewal>> renew(const std::string& volume, Store& store,
                                                uint64_t epoch, const std::string& in_use);
  /// Clears the lease if it is still ours at `epoch` (after the ACL no longer holds this node).
  boost::asio::awaitable<Status> release(const std::string& volume, Store& store, uint64_t epoch);

  const Options& options() const { return options_; }

 private:
  /// One Fischer round; yields the epoch when the claim is confirmed ours. `expired`: the lease
  /// seen expire (and fenced), which may be claimed over.
  boost::asio::awaitable<Result<std::optional<uint64_t>>> try_claim(const std::string& volume,
                                                                    Store& store,
                                                                    const Lease* expired);

  boost::asio::any_io_executor executor_;
  Options options_;
  LoggerPtr log_;
  Clock& clock_;
  /// Per held volume: the last ask seen, and when (renew() keeps the sequence moving after it).
  struct Ask {
    std::string handoff;
    std::chrono::steady_clock::time_point seen;
  };
  std::map<std::string, Ask> asks_;
};

}  // namespace datera::ownership

#pragma once

// Freezing a node's filesystem around a snapshot, with the array as the only channel: the CSI
// controller has no connection to the nodes' agents (and gets none: no new port, no new trust),
// but both already talk to the array, and a node already reads each granted volume's metadata at
// every grant check. So:
//   1. the controller writes `datera-agent.freeze` = "<id> <node> <expires, unix ms>" on the
//      source app instance (the node is the one the ownership record names);
//   2. that node's agent, at its next grant check, FIFREEZEs the volume's staging mount (holding
//      the volume's lock) and answers `datera-agent.frozen` = "<id> <state>";
//   3. the controller takes the snapshot once the answer is "frozen" (or goes on without it: no
//      answer in time, "failed", "unstaged"), then deletes both keys;
//   4. the node, polling the key while frozen, thaws when it is gone or changed, and in any case
//      after its own bound (ManagerOptions::freeze_max_hold) or at the request's expiry.
// Without the freeze a snapshot is still an atomic copy of the array's volume: crash-consistent
// (what a power cut leaves), only not clean (a journal replay at mount, page-cache data lost).

#include <cstdint>
#include <optional>
#include <string>

#include "plugins/edf/types.h"

namespace datera::volume {

inline constexpr const char* kFreezeKey = "datera-agent.freeze";
inline constexpr const char* kFrozenKey = "datera-agent.frozen";

struct FreezeRequest {
  std::string id;          ///< the snapshot's idempotency key (a UUID) or the clone's name
  std::string node;        ///< the node that should freeze
  int64_t expires_ms = 0;  ///< unix ms; a request past it is stale (its controller gave up)
};

/// The node's answer: "frozen" (the snapshot may be taken), "failed" (FIFREEZE refused: the
/// snapshot is crash-consistent only), "unstaged" (not mounted on that node: nothing to flush).
struct FreezeReply {
  std::string id;
  std::string state;
};

/// The wall clock in unix ms: what a request's expiry is measured in (both sides of the array).
int64_t unix_ms();

std::string encode(const FreezeRequest& r);
std::string encode(const FreezeReply& r);
/// nullopt when absent or malformed (the metadata is the array's: hostile until checked).
std::optional<FreezeRequest> freeze_request(const edf::Metadata& md);
std::optional<FreezeReply> freeze_reply(const edf::Metadata& md);

}  // namespace datera::volume

#pragma once

// CSI's words to the volume core's, and back: pure functions, unit-tested without gRPC traffic.
// - Volume ids are app instance names. StorageClass parameters are the FlexVolume option names
//   (replica, template, placementMode, ipPool, maxIops, maxBW, retainPolicy, backstoreServer), so
//   one parser (plugins/edf/options.h) checks both front ends; sizes come from the capacity range
//   in whole GiB, the filesystem from the capability (else the `fsType` parameter, else xfs).
// - Credentials come only from the CSI secrets (`username`, `password`, optionally `server`):
//   never from parameters or the volume context, which anyone who can read a StorageClass or PV
//   sees. The same rules as FlexVolume then apply: the agent's own credentials only ever go to its
//   own array, and any other array must be in backend.allowed_servers and bring its own.
// - Errors map to the codes the CSI specification asks for (to_status()).

#include <cstdint>
#include <google/protobuf/map.h>
#include <grpcpp/support/status.h>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/volume/step.h"
#include "base/result.h"
#include "plugins/csi/csi.pb.h"
#include "plugins/edf/options.h"

namespace datera::csi {

namespace pb = ::csi::v1;
using StringMap = google::protobuf::Map<std::string, std::string>;

inline constexpr int64_t kGiB = int64_t{1} << 30;
/// EDF's largest volume (options.h allows 32768 GiB).
inline constexpr int64_t kMaxGiB = 32768;

/// The size to create for `range`: required_bytes rounded up to whole GiB (1 GiB when unset), or
/// an Error when no whole GiB fits under limit_bytes.
Result<int64_t> size_gib(const pb::CapacityRange& range);

/// What the volume is, from CSI's request parts. `name`: the app instance; `fs_type` from the
/// capability ("" when none). `size`: 0 leaves the parser's default (the volume exists already).
Result<edf::VolumeOptions> volume_options(const std::string& name, const StringMap& parameters,
                                          const StringMap& secrets, const std::string& fs_type,
                                          int64_t size, const edf::BackendTarget& defaults,
                                          const std::vector<std::string>& allowed_servers);

/// The parameters kept as the volume context (what the node needs to stage it): the known option
/// names only, never credentials, never the provisioner's `csi.storage.k8s.io/` keys.
std::map<std::string, std::string> volume_context(const StringMap& parameters);

/// Only single-node access modes: one filesystem, one writer node at a time.
datera::Status check_capability(const pb::VolumeCapability& cap);

/// The grpc status for a failure: INVALID_ARGUMENT for the request's own faults, NOT_FOUND for a
/// volume the array does not have, FAILED_PRECONDITION when the node's state refuses it (another
/// node holds it, not staged yet, mkfs refused over a volume the array says is formatted),
/// UNAVAILABLE when the array cannot be reached or a retry is expected to get past it,
/// PERMISSION_DENIED for refused credentials, INTERNAL otherwise.
grpc::Status to_status(const volume::VolumeError& e);
grpc::Status to_status(const Error& e, grpc::StatusCode otherwise = grpc::StatusCode::INTERNAL);
grpc::Status invalid(const std::string& message);

/// One page of a List call over `total` sorted entries: [start, end), and the token of the next
/// page ("" after the last). The token is the index this plugin gave out: anything else, or one
/// past the end (entries were deleted meanwhile), is ABORTED (start over); a negative
/// max_entries is INVALID_ARGUMENT. `what` names the call and its entries ("ListVolumes",
/// "volumes").
struct Page {
  size_t start = 0;
  size_t end = 0;
  std::string next_token;
};
grpc::Status page(const std::string& what, const std::string& entries, const std::string& token,
                  int32_t max_entries, size_t total, Page& out);

/// Volume context of a volume made from a snapshot or another volume ("snapshot <id>"): its
/// filesystem has its source's UUID, so the node mounts xfs with nouuid (the kernel refuses a
/// second xfs of one UUID, and a restore often lands on the node that mounts its source).
inline constexpr std::string_view kCopyOfContext = "copyOf";

}  // namespace datera::csi

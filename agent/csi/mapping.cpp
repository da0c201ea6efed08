#include "agent/csi/mapping.h"

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "agent/volume/array.h"
#include "base/json.h"

namespace datera::csi {

namespace {

/// The StorageClass parameters that mean something here: the app instance's own options, the
/// filesystem and the array.
bool known_parameter(const std::string& key) {
  return edf::is_volume_spec_option(key) || key == "fsType" || key == "backstoreServer";
}

}  // namespace

Result<int64_t> size_gib(const pb::CapacityRange& range) {
  const int64_t required = range.required_bytes();
  const int64_t limit = range.limit_bytes();
  if (required < 0 || limit < 0) return Error{"capacity_range: negative bytes"};
  if (limit != 0 && required > limit) {
    return Error{"capacity_range: required_bytes exceeds limit_bytes"};
  }
  int64_t gib = required == 0 ? 1 : (required + kGiB - 1) / kGiB;
  if (gib > kMaxGiB) {
    return Error{"capacity_range: " + std::to_string(required) + " bytes is more than " +
                 std::to_string(kMaxGiB) + " GiB, the largest Datera volume"};
  }
  if (limit != 0 && gib * kGiB > limit) {
    return Error{"capacity_range: Datera volumes are whole GiB, and " + std::to_string(gib) +
                 " GiB exceeds limit_bytes " + std::to_string(limit)};
  }
  return gib;
}

Result<edf::VolumeOptions> volume_options(const std::string& name, const StringMap& parameters,
                                          const StringMap& secrets, const std::string& fs_type,
                                          int64_t size, const edf::BackendTarget& defaults,
                                          const std::vector<std::string>& allowed_servers) {
  if (datera::json::has_control_char(name)) return Error{"volume id contains a control character"};
  nlohmann::json o = nlohmann::json::object();
  o["volumeID"] = name;
  for (const auto& [key, value] : parameters) {
    if (key == "serverUser" || key == "serverPasswd" ||
        key.rfind("kubernetes.io/secret/", 0) == 0) {
      // Never echo the value: it may be a password.
      return Error{"parameter '" + key +
                   "' is refused: credentials belong in the CSI secrets (the StorageClass's "
                   "csi.storage.k8s.io/*-secret-name parameters), which only the driver reads"};
    }
    if (datera::json::has_control_char(value)) {
      return Error{"parameter '" + key + "' contains a control character"};
    }
    if (known_parameter(key)) o[key] = value;
  }
  if (!fs_type.empty()) o["fsType"] = fs_type;
  if (size > 0) o["size"] = std::to_string(size);
  edf::SecretKeys keys;
  for (const auto& [key, out] :
       {std::pair{"server", &keys.server}, std::pair{"username", &keys.username},
        std::pair{"password", &keys.password}}) {
    if (const auto it = secrets.find(key); it != secrets.end()) *out = it->second;
  }
  return edf::parse_volume_options(o, keys, defaults, allowed_servers);
}

grpc::Status page(const std::string& what, const std::string& entries, const std::string& token,
                  int32_t max_entries, size_t total, Page& out) {
  if (max_entries < 0) return invalid(what + ": max_entries is negative");
  out = Page{};
  if (!token.empty()) {
    const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), out.start);
    if (ec != std::errc() || end != token.data() + token.size()) {
      return grpc::Status(grpc::StatusCode::ABORTED, what + ": starting_token '" + token +
                                                         "' is not one this plugin gave out");
    }
  }
  if (out.start > total) {
    return grpc::Status(grpc::StatusCode::ABORTED, what + ": starting_token is past the end (" +
                                                       entries + " were deleted); start over");
  }
  const size_t n = max_entries > 0 ? static_cast<size_t>(max_entries) : total;
  out.end = std::min(total, out.start + n);
  if (out.end < total) out.next_token = std::to_string(out.end);
  return grpc::Status::OK;
}

std::map<std::string, std::string> volume_context(const StringMap& parameters) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : parameters) {
    if (known_parameter(key)) out[key] = value;
  }
  return out;
}

datera::Status check_capability(const pb::VolumeCapability& cap) {
  using M = pb::VolumeCapability::AccessMode;
  if (!cap.has_block() && !cap.has_mount()) {
    return Error{"volume_capability: neither block nor mount access type"};
  }
  switch (cap.access_mode().mode()) {
    case M::SINGLE_NODE_WRITER:
    case M::SINGLE_NODE_READER_ONLY:
    case M::SINGLE_NODE_SINGLE_WRITER:
    case M::SINGLE_NODE_MULTI_WRITER:
      break;
    default:
      return Error{"volume_capability: access mode " + M::Mode_Name(cap.access_mode().mode()) +
                   " is not supported: a Datera volume is used by one node at a time "
                   "(ReadWriteOnce, ReadWriteOncePod or ReadOnly on one node)"};
  }
  if (cap.has_mount()) {
    const auto& fs = cap.mount().fs_type();
    if (!fs.empty() && fs != "xfs" && fs != "ext4") {
      return Error{"volume_capability: fs_type '" + fs + "' is not supported (xfs or ext4)"};
    }
  }
  return ok_status();
}

grpc::Status invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

grpc::Status to_status(const Error& e, grpc::StatusCode otherwise) {
  grpc::StatusCode code = otherwise;
  if (volume::is_not_found(e)) {
    code = grpc::StatusCode::NOT_FOUND;
  } else if (volume::is_claim_refused(e) || volume::is_format_refused(e)) {
    code = grpc::StatusCode::FAILED_PRECONDITION;
  } else if (volume::is_unreachable(e) || e.code == errno_code(EAGAIN)) {
    code = grpc::StatusCode::UNAVAILABLE;
  } else if (volume::is_unauthorized(e)) {
    code = grpc::StatusCode::PERMISSION_DENIED;
  }
  return grpc::Status(code, e.message);
}

grpc::Status to_status(const volume::VolumeError& e) {
  using volume::Step;
  if (e.step == Step::options) return invalid(e.message());
  const grpc::Status s = to_status(e.cause);
  const auto code = s.error_code() == grpc::StatusCode::INTERNAL && e.step == Step::checks
                        ? grpc::StatusCode::FAILED_PRECONDITION
                        : s.error_code();
  return grpc::Status(code, e.message());
}

}  // namespace datera::csi

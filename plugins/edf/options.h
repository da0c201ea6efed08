#pragma once

// FlexVolume options -> what to create on the array and how to reach it. The option names are the
// original Datera Flex driver's (volumeID, size, replica, template, retainPolicy, maxIops, maxBW,
// ipPool, placementMode, backstoreServer, serverUser, serverPasswd, fsType) plus kubelet's
// secretRef values `kubernetes.io/secret/{username,password,server}` (base64, from a Secret of type
// datera/iscsi); the secret wins over the options.
//
// Options come from any PV or inline pod volume, so the agent's own credentials are only ever
// given to the agent's own array (`defaults`, also when named another way: case, default port):
// - no server named, or the default array named, and no credentials: the default (is_default);
// - any other server must be in `allowed_servers` (refused before any connection otherwise) and
//   must bring its own username and password (never the agent's);
// - credentials come as a pair: a username alone never borrows the agent's password.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "plugins/edf/types.h"

namespace datera::edf {

struct BackendTarget {
  std::string host;
  uint16_t port = 7717;
  Credentials credentials;
  /// The agent's configured array and account: records refer to it instead of copying the
  /// password, and it is resolved to the agent's current credentials at each use.
  bool is_default = false;
  std::string server() const { return host + ":" + std::to_string(port); }
};

struct VolumeOptions {
  VolumeSpec spec;
  bool delete_on_release = false;  ///< retainPolicy: never
  std::string fs_type = "xfs";
  BackendTarget backend;
};

/// The options that describe the app instance itself (what parse_volume_options() puts in the
/// VolumeSpec besides its name and size): CSI takes them as StorageClass parameters and volume
/// attributes, and `datera-agentctl migrate` carries them from FlexVolume PVs.
inline constexpr std::array<std::string_view, 7> kVolumeSpecOptions = {
    "replica", "template", "placementMode", "ipPool", "maxIops", "maxBW", "retainPolicy"};
inline bool is_volume_spec_option(std::string_view key) {
  for (const auto k : kVolumeSpecOptions) {
    if (k == key) return true;
  }
  return false;
}

/// A secret's keys, decoded: the array (`server`, host[:port]) and the account.
struct SecretKeys {
  std::string server;
  std::string username;
  std::string password;
};

/// Parses and validates; every error names the option and says what is allowed. `defaults` is the
/// agent's array (host empty: none); `allowed_servers` (backend.allowed_servers, "host[:port]")
/// the other arrays a volume may name. A server named without a port gets the default's port.
Result<VolumeOptions> parse_volume_options(const Json& options, const BackendTarget& defaults,
                                           const std::vector<std::string>& allowed_servers = {});
/// The same with the secret's keys given decoded (CSI's secrets) instead of kubelet's base64
/// `kubernetes.io/secret/*` options; the same rules (the secret wins over the options).
Result<VolumeOptions> parse_volume_options(const Json& options, const SecretKeys& secret,
                                           const BackendTarget& defaults,
                                           const std::vector<std::string>& allowed_servers = {});

/// "host:port" with the host lowercased ("[v6]:port"): equal for two spellings of one server.
/// Names are compared, never resolved.
std::string server_key(const BackendTarget& t);
bool same_server(const BackendTarget& a, const BackendTarget& b);

/// "host", "host:port" or "[v6]:port" (default: base's port); the host is lowercased.
Result<BackendTarget> parse_server(const std::string& text, BackendTarget base);

Result<std::string> base64_decode(const std::string& in);

}  // namespace datera::edf

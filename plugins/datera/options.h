#pragma once

// FlexVolume options -> what to create on the array and how to reach it. The option names are the
// original Datera Flex driver's (volumeID, size, replica, template, retainPolicy, maxIops, maxBW,
// ipPool, placementMode, backstoreServer, serverUser, serverPasswd, fsType) plus kubelet's
// secretRef values `kubernetes.io/secret/{username,password,server}` (base64, from a Secret of type
// datera/iscsi). Credentials: secret, then options, then the agent's defaults.

#include <cstdint>
#include <string>

#include "agent/common/result.h"
#include "plugins/datera/types.h"

namespace datera::edf {

struct BackendTarget {
  std::string host;
  uint16_t port = 7717;
  Credentials credentials;
  std::string server() const { return host + ":" + std::to_string(port); }
};

struct VolumeOptions {
  VolumeSpec spec;
  bool delete_on_release = false;  ///< retainPolicy: never
  std::string fs_type = "xfs";
  BackendTarget backend;
};

/// Parses and validates; every error names the option and says what is allowed.
Result<VolumeOptions> parse_volume_options(const Json& options, const BackendTarget& defaults);

/// "host", "host:port" or "[v6]:port" (default port 7717).
Result<BackendTarget> parse_server(const std::string& text, BackendTarget base);

Result<std::string> base64_decode(const std::string& in);

}  // namespace datera::edf

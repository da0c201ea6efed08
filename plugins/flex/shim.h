#pragma once

// The shim's logic, apart from process concerns (argv, stdout, exit): turn kubelet's argv into
// exactly one FlexVolume reply. `init` is answered from the driver info file; every other command
// is forwarded to the agent through `Transport`.

#include <functional>
#include <string>
#include <vector>

#include "base/result.h"
#include "plugins/flex/driver_info.h"
#include "plugins/flex/protocol.h"
#include "plugins/flex/unix_http_client.h"

namespace datera::flex {

/// Sends a request body to the agent described by `info`.
using Transport = std::function<Result<HttpReply>(const DriverInfo& info, const std::string& body)>;

struct ShimResult {
  Json reply;
  int exit_code;
};

/// `info` is the parsed `.datera-agent.json`, or the error met while reading it.
ShimResult run_shim(const std::vector<std::string>& argv, const Result<DriverInfo>& info,
                    const Transport& transport);

/// The real transport: post_json() over the Unix socket named in `info`.
Transport unix_transport(std::string user_agent);

}  // namespace datera::flex

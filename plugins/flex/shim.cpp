#include "plugins/flex/shim.h"

#include <cerrno>

#include "base/json.h"

namespace datera::flex {
namespace {

ShimResult finish(Json reply) {
  const int code = exit_code_for(reply);
  return {std::move(reply), code};
}

std::string seconds(std::chrono::milliseconds ms) {
  return std::to_string((ms.count() + 999) / 1000) + "s";
}

}  // namespace

ShimResult run_shim(const std::vector<std::string>& argv, const Result<DriverInfo>& loaded,
                    const Transport& transport) {
  auto req = parse_argv(argv);
  if (!req) {
    if (req.error().code == errno_code(ENOTSUP)) {
      // Unknown to this driver version: kubelet treats "Not supported" as "use your fallback".
      return finish(not_supported("datera/iscsi does not implement " + req.error().message));
    }
    return finish(failure("datera/iscsi: " + req.error().message));
  }
  // A missing or broken info file must not break kubelet's probe: answer init from defaults and
  // let the calls below say what is wrong.
  const DriverInfo info = loaded ? *loaded : DriverInfo{};
  if (req->command == "init") {
    Json reply = success();
    reply["capabilities"] = info.capabilities;
    return finish(std::move(reply));
  }

  // parse_argv() admitted only UTF-8; replace is the belt to those braces (a dump never throws).
  const std::string body = req->to_json().dump(-1, ' ', false, Json::error_handler_t::replace);
  auto http = transport(info, body);
  const std::string note =
      loaded ? "" : " (driver info unreadable: " + loaded.error().message + "; used defaults)";
  if (!http) {
    const auto& err = http.error();
    if (err.code == ClientErrc::connect) {
      return finish(failure("datera-agent is not reachable at " + info.socket + ": " + err.message +
                            note +
                            ". Check the agent on this node (kubectl -n datera-system get pods "
                            "-o wide, or systemctl status datera-agent); kubelet will retry."));
    }
    if (err.code == ClientErrc::timeout) {
      return finish(failure("datera-agent at " + info.socket + " did not answer '" + req->command +
                            "' within " + seconds(info.call_timeout) +
                            "; the agent's log has the operation's progress. kubelet will retry."));
    }
    return finish(
        failure("talking to datera-agent at " + info.socket + " failed: " + err.message + note));
  }
  auto bounded = json::parse_bounded(http->body);
  Json reply = bounded ? std::move(*bounded) : Json(Json::value_t::discarded);
  if (auto st = validate_reply(reply); !st) {
    return finish(failure("datera-agent sent an unusable reply (HTTP " +
                          std::to_string(http->status) + ", " + st.error().message + ")"));
  }
  if (http->status != 200 && reply["status"] != kFailure) {
    // A non-200 can only mean failure, whatever the body claims.
    return finish(failure("datera-agent answered HTTP " + std::to_string(http->status)));
  }
  return finish(std::move(reply));
}

Transport unix_transport(std::string user_agent) {
  return [ua = std::move(user_agent)](const DriverInfo& info, const std::string& body) {
    return post_json(info.socket, "/v1/flexvolume", body, ua, info.connect_timeout,
                     info.call_timeout);
  };
}

}  // namespace datera::flex

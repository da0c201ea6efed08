#include "agent/flexvolume/service.h"

#include <cctype>
#include <variant>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "agent/flexvolume/volume_adapter.h"
#include "base/duration.h"
#include "base/json.h"
#include "base/version.h"

namespace datera::flexvolume {

namespace asio = boost::asio;

namespace {

std::string option(const flex::Request& r, const char* key) {
  const auto it = r.options.find(key);
  return it != r.options.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

bool is_safe_volume_name(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  for (const unsigned char c : s) {
    if (!(std::isalnum(c) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

}  // namespace

std::string volume_of(const flex::Request& r) {
  if (auto v = option(r, "volumeID"); !v.empty()) return v;
  if (auto v = option(r, "kubernetes.io/pvOrVolumeName"); !v.empty()) return v;
  for (const char* slot : {"podVolumeDir", "deviceMountPath", "volumeName"}) {
    if (auto a = r.arg(slot)) return *a;
  }
  return "-";
}

Service::Service(ServiceOptions options, Metrics& probe, LoggerPtr log)
    : options_(std::move(options)), metrics_(probe), log_(std::move(log)) {}

Service::~Service() = default;

void Service::set_volume_ops(volume::Manager* core) {
  adapter_ = core ? std::make_unique<VolumeAdapter>(*core, core->probe()) : nullptr;
  volumes_ = adapter_.get();
}

asio::awaitable<flex::Json> Service::call(flex::Request request) {
  const auto start = std::chrono::steady_clock::now();
  ++counts_.in_flight;
  const auto executor = co_await asio::this_coro::executor;
  // The operation runs detached from this call: at the deadline the caller gets its Failure, but
  // a half-done mount is not cancelled between two steps; it finishes (holding its volume's lock)
  // and kubelet's retry finds the result.
  struct Outcome {
    std::optional<flex::Json> reply;
    asio::steady_timer done;
  };
  auto outcome = std::make_shared<Outcome>(Outcome{std::nullopt, asio::steady_timer(executor)});
  outcome->done.expires_after(options_.call_timeout);
  flex::Request owned = request;
  asio::co_spawn(
      executor, dispatch_owned(std::move(owned)),
      [outcome, log = log_](std::exception_ptr e, flex::Json r) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            log->error("volume operation failed with a bug: {}", ex.what());
            r = flex::failure(std::string("internal error in datera-agent: ") + ex.what());
          }
        }
        outcome->reply = std::move(r);
        outcome->done.cancel();
      });
  boost::system::error_code ec;
  co_await outcome->done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  flex::Json reply;
  if (outcome->reply) {
    reply = std::move(*outcome->reply);
  } else {
    reply = flex::failure("'" + request.command + "' on volume " + volume_of(request) +
                          " did not finish within " + format_duration(options_.call_timeout) +
                          " in datera-agent; it goes on in the agent, and kubelet's retry will "
                          "find its result. See the agent log.");
  }
  --counts_.in_flight;
  ++counts_.total;
  const auto status = reply.value("status", std::string(flex::kFailure));
  if (status == flex::kFailure) {
    ++counts_.failed;
    log_->warn("{} volume={} failed: {}", request.command, volume_of(request),
               reply.value("message", std::string{}));
  } else {
    log_->debug("{} volume={} -> {}", request.command, volume_of(request), status);
  }
  metrics_.served(request.command, status, std::chrono::steady_clock::now() - start);
  co_return reply;
}

asio::awaitable<flex::Json> Service::dispatch_owned(flex::Request r) {
  co_return co_await dispatch(r);
}

namespace {

/// The first argument or option that holds a control character (NUL cuts a path at c_str(), a
/// newline forges log lines), named by its slot or key but never quoted: it may be a secret.
std::optional<std::string> hostile_field(const flex::Request& r) {
  for (size_t i = 0; i < r.args.size(); ++i) {
    if (json::has_control_char(r.args[i])) return "argument " + std::to_string(i + 1);
  }
  for (const auto& [key, value] : r.options.items()) {
    if (json::has_control_char(key)) return std::string("an option name");
    if (value.is_string() && json::has_control_char(value.get_ref<const std::string&>())) {
      return "option '" + key + "'";
    }
  }
  return std::nullopt;
}

}  // namespace

asio::awaitable<flex::Json> Service::dispatch(const flex::Request& r) {
  if (auto bad = hostile_field(r)) {
    co_return flex::failure("'" + r.command + "' refused: " + *bad +
                            " contains a control character (nothing was changed)");
  }
  if (r.command == "init") {
    flex::Json reply = flex::success();
    reply["capabilities"] = options_.capabilities;
    co_return reply;
  }
  if (r.command == "getvolumename") co_return get_volume_name(r);
  if (volumes_ && r.command == "mount") co_return co_await volumes_->mount(r);
  if (volumes_ && r.command == "unmount") co_return co_await volumes_->unmount(r);
  if (volumes_ && (r.command == "expandvolume" || r.command == "expandfs")) {
    co_return co_await volumes_->expand(r);
  }

  const bool controller_call = r.command == "attach" || r.command == "detach" ||
                               r.command == "isattached" || r.command == "waitforattach" ||
                               r.command == "mountdevice" || r.command == "unmountdevice";
  const std::string version = version::kVersion;
  if (controller_call && options_.capabilities.value("attach", false)) {
    if (controller_ && r.command == "attach") co_return co_await controller_->attach(r);
    if (controller_ && r.command == "detach") co_return co_await controller_->detach(r);
    if (controller_ && r.command == "isattached") co_return co_await controller_->isattached(r);
    if (volumes_ && r.command == "waitforattach") co_return co_await volumes_->waitforattach(r);
    if (volumes_ && r.command == "mountdevice") co_return co_await volumes_->mountdevice(r);
    if (volumes_ && r.command == "unmountdevice") co_return co_await volumes_->unmountdevice(r);
  } else if (controller_call) {
    co_return flex::failure(
        "datera-agent " + version + " runs with attach: false, where '" + r.command +
        "' has no place: the installed driver advertises attach=false, so kubelet and the "
        "controller manager should not call it. If this cluster means to use controller mode, set "
        "attach: true on every agent (see docs/modes.md). Nothing was changed for volume " +
        volume_of(r) + ".");
  }
  // Only before the composition root wired the volume core in (it does so before serving), or
  // for a command this version does not know: never "Not supported", which kubelet would cache.
  co_return flex::failure("datera-agent " + version + " cannot run '" + r.command +
                          "' now: its volume service is not serving (the agent is starting, or "
                          "does not know this call). Nothing was changed for volume " +
                          volume_of(r) +
                          "; kubelet will retry. Check the agent's log if this "
                          "persists.");
}

flex::Json Service::get_volume_name(const flex::Request& r) const {
  // kubelet ignores this reply (it uses the PV name), but other callers may not: answer the
  // Datera volume name the agent would use.
  std::string name = option(r, "volumeID");
  if (name.empty()) name = option(r, "kubernetes.io/pvOrVolumeName");
  if (name.empty()) {
    return flex::failure(
        "getvolumename: options carry neither volumeID nor kubernetes.io/pvOrVolumeName");
  }
  if (!is_safe_volume_name(name)) {
    return flex::failure(
        "getvolumename: '" + name +
        "' is not a valid volume name (letters, digits, '-', '_', '.'; at most 253)");
  }
  flex::Json reply = flex::success();
  reply["volumeName"] = name;
  return reply;
}

}  // namespace datera::flexvolume

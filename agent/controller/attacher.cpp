#include "agent/controller/attacher.h"

#include <algorithm>

#include "agent/ownership/lease.h"

namespace datera::controller {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

std::string opt(const flex::Json& o, const char* key) {
  const auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

Attacher::Attacher(Grants& grants, Metrics& metrics, LoggerPtr log)
    : grants_(grants), metrics_(metrics), log_(std::move(log)) {}

asio::awaitable<flex::Json> Attacher::attach(const flex::Request& request) {
  const auto t0 = Clock::now();
  auto done = co_await do_attach(request);
  metrics_.operation("attach", done.ok(), Clock::now() - t0);
  if (!done) co_return flex::failure(done.error().message);
  flex::Json reply = flex::success();
  // The node finds the device itself (waitforattach); kubelet only passes this string back.
  reply["device"] = *done;
  co_return reply;
}

asio::awaitable<flex::Json> Attacher::detach(const flex::Request& request) {
  const auto t0 = Clock::now();
  auto done = co_await do_detach(request);
  metrics_.operation("detach", done.ok(), Clock::now() - t0);
  if (!done) co_return flex::failure(done.error().message);
  co_return flex::success();
}

asio::awaitable<flex::Json> Attacher::isattached(const flex::Request& request) {
  const auto t0 = Clock::now();
  auto done = co_await do_isattached(request);
  metrics_.operation("isattached", done.ok(), Clock::now() - t0);
  if (!done) co_return flex::failure(done.error().message);
  flex::Json reply = flex::success();
  reply["attached"] = *done;
  co_return reply;
}

asio::awaitable<Result<std::string>> Attacher::do_attach(const flex::Request& request) {
  const std::string node = request.arg("nodeName").value_or("");
  auto parsed = edf::parse_volume_options(request.options, grants_.options().default_backend,
                                          grants_.options().allowed_servers);
  if (!parsed) co_return parsed.error().wrap("attach to node " + node);
  auto granted =
      co_await grants_.grant(*parsed, node, opt(request.options, "kubernetes.io/pvOrVolumeName"),
                             /*create=*/true);
  if (!granted) co_return granted.error();
  co_return std::string();
}

asio::awaitable<Status> Attacher::do_detach(const flex::Request& request) {
  const std::string pv = request.arg("volumeName").value_or("");
  const std::string node = request.arg("nodeName").value_or("");
  const std::string what = "detach of " + pv + " from node " + node;
  auto say = [&](const std::string& step, const Error& e) {
    return Error{what + " failed at " + step + ": " + e.message, e.code};
  };
  if (auto st = check_node(node); !st) co_return say("checks", st.error());
  if (pv.empty() || pv.size() > 253) co_return say("checks", Error{"no volume name"});
  // kubelet's detach carries no options: the PV is on the agent's own array.
  const edf::BackendTarget& backend = grants_.options().default_backend;
  auto array = grants_.arrays().get(backend);
  if (!array) co_return say("array", array.error());
  auto name = co_await grants_.volume_of_pv(**array, pv);
  if (!name) co_return say("array", name.error());
  if (name->empty()) {
    log_->info("detach {} from node {}: the array has no such volume; nothing to do", pv, node);
    co_return ok_status();
  }
  co_return co_await grants_.revoke(backend, *name, node, what);
}

asio::awaitable<Result<bool>> Attacher::do_isattached(const flex::Request& request) {
  const std::string node = request.arg("nodeName").value_or("");
  auto parsed = edf::parse_volume_options(request.options, grants_.options().default_backend,
                                          grants_.options().allowed_servers);
  if (!parsed) co_return parsed.error().wrap("isattached on node " + node);
  const std::string name = parsed->spec.name;
  auto done = co_await grants_.granted(parsed->backend, name, node);
  if (!done) co_return done.error().wrap("isattached of volume " + name);
  co_return *done;
}

}  // namespace datera::controller

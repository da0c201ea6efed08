// Fuzz target edf_reply: what an EDF array (or anything answering on its address) sends back, as
// the agent's client decodes it. The input's first line picks the call and the HTTP status, the
// rest is the reply body:
//
//   <call> [<status>]\n<body>
//
// calls: versions (GET /api_versions), login (PUT /login, before GET /system), system,
// app_instance, online, create, list, metadata, initiators, acl, acl_add, ensure_initiator.
// The body answers the first request that call makes (after discovery and login, which get
// well-formed replies unless they are the call); later requests get `{}`. The client
// retries nothing (one attempt), so no backoff timer runs. Plain AppInstance::from_json sees the
// body too.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <prometheus/registry.h>

#include "plugins/edf/client.h"
#include "tests/testing/run_async.h"
#include "tests/testing/scripted_transport.h"

using namespace datera;
using namespace std::chrono_literals;

namespace {

struct Input {
  std::string call;
  unsigned status = 200;
  std::string body;
};

Input split(const std::string& text) {
  Input in;
  const auto nl = text.find('\n');
  const std::string head = text.substr(0, nl);
  in.body = nl == std::string::npos ? std::string() : text.substr(nl + 1);
  const auto sp = head.find(' ');
  in.call = head.substr(0, sp);
  if (sp != std::string::npos) {
    const auto status = std::strtoul(head.c_str() + sp + 1, nullptr, 10);
    if (status >= 100 && status <= 599) in.status = static_cast<unsigned>(status);
  }
  return in;
}

boost::asio::awaitable<int> run(edf::Client& c, const std::string& call) {
  const std::string vol = "pvc-0c6e2b1c";
  if (call == "versions") {
    (void)co_await c.version();
  } else if (call == "login" || call == "system") {
    (void)co_await c.system();
  } else if (call == "app_instance") {
    (void)co_await c.get_app_instance(vol);
  } else if (call == "online") {
    (void)co_await c.set_online(vol, true);
  } else if (call == "create") {
    edf::VolumeSpec spec;
    spec.name = vol;
    (void)co_await c.create_app_instance(spec);
  } else if (call == "list") {
    (void)co_await c.list_app_instances();
  } else if (call == "metadata") {
    (void)co_await c.get_metadata(vol);
  } else if (call == "initiators") {
    (void)co_await c.list_initiators();
  } else if (call == "acl") {
    (void)co_await c.get_acl(vol);
  } else if (call == "acl_add") {
    (void)co_await c.acl_add(vol, "iqn.1993-08.org.debian:01:fuzz");
  } else if (call == "ensure_initiator") {
    (void)co_await c.ensure_initiator("iqn.1993-08.org.debian:01:fuzz", "k8s_node_fuzz");
  }
  co_return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Input in = split(std::string(reinterpret_cast<const char*>(data), size));

  const auto parsed = edf::Json::parse(in.body, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_discarded()) (void)edf::AppInstance::from_json(parsed);

  testing::ScriptedTransport transport;
  bool answered = false;
  transport.handler = [&](const edf::HttpRequest& r) -> Result<edf::HttpResponse> {
    const bool discovery = r.target == "/api_versions";
    const bool login = r.target.ends_with("/login");
    if (discovery && in.call != "versions")
      return edf::HttpResponse{200, R"({"api_versions":["v2.1","v2.2"]})"};
    if (login && in.call != "login") return edf::HttpResponse{200, R"({"key":"k-1"})"};
    if (answered) return edf::HttpResponse{200, "{}"};
    answered = true;
    return edf::HttpResponse{in.status, in.body};
  };
  boost::asio::io_context ioc;
  prometheus::Registry registry;
  edf::Metrics probe(registry);
  edf::ClientOptions options;
  options.server = "edf.fuzz:7717";
  options.credentials = {"admin", "secret"};
  options.retry = edf::RetryPolicy{1, 1ms, 1ms};
  options.seed = 1;
  edf::Client client(ioc.get_executor(), transport, options, probe, null_logger());
  (void)testing::run_async(ioc, run(client, in.call));
  return 0;
}

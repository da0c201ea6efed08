// Fuzz target http_request: the input is the raw byte stream a client sends on the agent's Unix
// socket. It goes to the real http::Server (Beast's parser, the agent's limits: 64 KiB head + body,
// as agent/app/application.cpp configures the API server) over a real Unix socket, and every
// request it decodes goes to the real api::Router with a real flexvolume::Service behind it (its
// volume operations are fakes that answer Success). The client then closes its sending side and
// reads the reply to EOF. Pipelined requests are all served.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <prometheus/registry.h>

#include "agent/api/router.h"
#include "agent/http/server.h"

namespace {

namespace asio = boost::asio;
using namespace datera;

struct FakeStatus : api::StatusSource {
  nlohmann::json status() override { return {{"node", "fuzz"}, {"volumes", 0}}; }
  nlohmann::json volumes() override { return {{"volumes", nlohmann::json::array()}}; }
};

struct FakeMaintenance : api::Maintenance {
  asio::awaitable<nlohmann::json> release(std::string volume, bool force) override {
    co_return nlohmann::json{
        {"volume", volume}, {"result", force ? "released" : "in_use"}, {"message", "fuzz"}};
  }
  asio::awaitable<nlohmann::json> drain(bool /*force*/) override {
    co_return nlohmann::json::array();
  }
};

/// Answers every volume call Success, naming the volume as the service sees it.
struct FakeVolumes : flexvolume::VolumeOps, flexvolume::ControllerOps {
  asio::awaitable<flex::Json> ok(const flex::Request& r) {
    co_return flex::success("fuzz " + r.command + " " + flexvolume::volume_of(r));
  }
  asio::awaitable<flex::Json> mount(const flex::Request& r) override { return ok(r); }
  asio::awaitable<flex::Json> unmount(const flex::Request& r) override { return ok(r); }
  asio::awaitable<flex::Json> expand(const flex::Request& r) override { return ok(r); }
  asio::awaitable<flex::Json> waitforattach(const flex::Request& r) override { return ok(r); }
  asio::awaitable<flex::Json> mountdevice(const flex::Request& r) override { return ok(r); }
  asio::awaitable<flex::Json> unmountdevice(const flex::Request& r) override { return ok(r); }
  asio::awaitable<flex::Json> attach(const flex::Request& r) override { return ok(r); }
  asio::awaitable<flex::Json> detach(const flex::Request& r) override { return ok(r); }
  asio::awaitable<flex::Json> isattached(const flex::Request& r) override { return ok(r); }
};

/// One agent API server for the whole run (the fuzzer calls the target many times per process).
struct Harness {
  asio::io_context ioc;
  prometheus::Registry registry;
  flexvolume::Metrics flex_probe{registry};
  flexvolume::Service service{
      flexvolume::ServiceOptions{"datera/iscsi", flex::Json{{"attach", false}},
                                 std::chrono::seconds(5)},
      flex_probe, null_logger()};
  FakeVolumes volumes;
  FakeStatus status;
  FakeMaintenance maintenance;
  api::Router router{service, status, maintenance, null_logger()};
  http::Metrics http_probe{registry, "api"};
  http::Server server{ioc.get_executor(),
                      http::ServerOptions{"api", 256, std::chrono::seconds(10),
                                          std::chrono::seconds(10), 64 * 1024},
                      router,
                      http_probe,
                      null_logger(),
                      api::uid_admission({::getuid()}, null_logger())};
  std::string dir;
  std::string path;

  Harness() {
    service.set_volume_ops(&volumes);
    service.set_controller_ops(&volumes);
    char tmpl[] = "/tmp/datera-fuzz-http-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) std::abort();
    dir = tmpl;
    path = dir + "/api.sock";
    if (!server.listen_unix(path)) std::abort();
    server.start();
  }
  ~Harness() {
    server.stop_accepting();
    server.remove_socket_file();
    ::rmdir(dir.c_str());
  }
};

Harness& harness() {
  static auto* h = new Harness();  // never destroyed: the fuzzer exits without unwinding
  return *h;
}

asio::awaitable<void> exchange(const std::string& path, std::string input, bool& done) {
  asio::local::stream_protocol::socket sock(co_await asio::this_coro::executor);
  boost::system::error_code ec;
  co_await sock.async_connect(path, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) std::abort();  // the server must keep accepting
  // The server may answer (413, 400) and close before it read everything: write errors are normal.
  co_await asio::async_write(sock, asio::buffer(input),
                             asio::redirect_error(asio::use_awaitable, ec));
  sock.shutdown(asio::socket_base::shutdown_send, ec);
  asio::streambuf reply;
  co_await asio::async_read(sock, reply, asio::redirect_error(asio::use_awaitable, ec));
  done = true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& h = harness();
  bool done = false;
  asio::co_spawn(h.ioc,
                 exchange(h.path, std::string(reinterpret_cast<const char*>(data), size), done),
                 asio::detached);
  h.ioc.restart();
  while (!done) {
    if (h.ioc.run_one() == 0) std::abort();  // nothing left to run, yet no reply: a hang
  }
  // Let the server finish closing its side of the connection before the next input.
  while (h.server.connections() != 0 && h.ioc.run_one() != 0) {
  }
  return 0;
}

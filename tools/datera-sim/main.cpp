// datera-sim: a simulator of the Datera EDF REST API. This file is the composition root: it parses
// flags, builds the model, sessions, protocol handler, backend and committer, serves HTTP on one
// io_context, and saves the state on SIGTERM/SIGINT.

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>

#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <prometheus/registry.h>

#include "agent/http/server.h"
#include "base/duration.h"
#include "base/fs.h"
#include "base/logging.h"
#include "tools/datera-sim/api.h"
#include "tools/datera-sim/lio.h"
#include "tools/datera-sim/runtime.h"
#include "tools/datera-sim/tls.h"
#include "tools/datera-sim/tls_front.h"

namespace {

namespace asio = boost::asio;
using namespace datera;

int fail(const std::string& message) {
  std::cerr << "datera-sim: " << message << "\n";
  return 2;
}

/// "host:port" -> (host, port); IPv6 as "[::1]:7717".
Result<std::pair<std::string, unsigned short>> parse_listen(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return Error{"--listen wants HOST:PORT, got '" + text + "'"};
  std::string host = text.substr(0, colon);
  const std::string port = text.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
    return Error{"--listen: '" + port + "' is not a port number"};
  }
  return std::make_pair(host, static_cast<unsigned short>(std::stoi(port)));
}

}  // namespace

int main(int argc, char** argv) {  // NOLINT(bugprone-exception-escape): an escape is a bug: abort
  CLI::App cli{
      "datera-sim: a simulator of the Datera EDF REST API (v2.1/v2.2) for tests and development"};
  std::string listen = "127.0.0.1:7717";
  std::string tls_listen;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_dir;
  std::string state_path;
  std::string backend = "memory";
  std::string file_dir;
  std::string lio_configfs = "/sys/kernel/config/target";
  std::vector<std::string> lio_nodes;
  std::string op_state_delay = "0ms";
  std::string token_ttl = "15m";
  std::vector<std::string> ip_pools;
  std::string user = "admin";
  std::string password;
  std::string log_level = "info";
  std::optional<uint64_t> seed;
  cli.add_option("--listen", listen, "HOST:PORT for HTTP (port 0 picks a free one)")
      ->capture_default_str();
  cli.add_option("--tls-listen", tls_listen,
                 "HOST:PORT for HTTPS too (EDF serves it on 7718; port 0 picks a free one)");
  cli.add_option("--tls-cert", tls_cert, "HTTPS certificate chain (PEM); default: made at start");
  cli.add_option("--tls-key", tls_key, "HTTPS private key (PEM), with --tls-cert");
  cli.add_option("--tls-dir", tls_dir,
                 "where a made certificate goes as cert.pem/key.pem (default: the state file's "
                 "directory, else the current one)");
  cli.add_option("--state", state_path,
                 "state file: loaded at start, written atomically after every change");
  cli.add_option("--backend", backend, "export backend")
      ->check(CLI::IsMember({"memory", "file", "lio"}))
      ->capture_default_str();
  cli.add_option("--file-dir", file_dir,
                 "file and lio backends: directory of the volumes' sparse files");
  cli.add_option("--lio-configfs", lio_configfs,
                 "lio backend: the target/ dir of configfs (where `ip netns exec` still sees it)")
      ->capture_default_str();
  cli.add_option("--lio-node", lio_nodes,
                 "lio backend: a storage node as NAME=NETNS:IFACE; VIPs of volumes on NAME live on "
                 "IFACE in network namespace NETNS (give one per node)");
  cli.add_option("--op-state-delay", op_state_delay,
                 "time from admin_state online to op_state available")
      ->capture_default_str();
  cli.add_option("--token-ttl", token_ttl, "session key lifetime")->capture_default_str();
  cli.add_option("--ip-pool", ip_pools,
                 "access network CIDR; give it twice for two access networks "
                 "(default 172.28.0.0/24)");
  cli.add_option("--user", user, "account name")->capture_default_str();
  cli.add_option("--password", password,
                 "account password (default: $DATERA_SIM_PASSWORD, else 'password')");
  cli.add_option("--seed", seed, "seed for ids, IQNs and keys (reproducible runs)");
  cli.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  CLI11_PARSE(cli, argc, argv);

  auto level = parse_log_level(log_level);
  if (!level) return fail(level.error().message);
  LogFactory logs(*level);
  auto endpoint = parse_listen(listen);
  if (!endpoint) return fail(endpoint.error().message);
  auto delay = parse_duration(op_state_delay);
  if (!delay) return fail("--op-state-delay: " + delay.error().message);
  auto ttl = parse_duration(token_ttl);
  if (!ttl || ttl->count() <= 0) return fail("--token-ttl must be a positive duration");
  if (password.empty()) {
    const char* env = std::getenv("DATERA_SIM_PASSWORD");
    password = env && *env ? env : "password";
  }
  if (auto st = sim::check_password(password); !st) {
    return fail("--password (or $DATERA_SIM_PASSWORD): " + st.error().message);
  }

  sim::ModelOptions model_options;
  model_options.op_state_delay = *delay;
  model_options.seed = seed;
  if (!ip_pools.empty()) {
    model_options.ip_pools.clear();
    for (const auto& text : ip_pools) {
      auto cidr = sim::Cidr::parse(text);
      if (!cidr) return fail("--ip-pool: " + cidr.error().message);
      model_options.ip_pools.push_back(*cidr);
    }
  }

  std::unique_ptr<sim::FileBackend> files;
  std::unique_ptr<sim::LioBackend> lio;
  sim::ExportBackend* exports_backend = nullptr;
  std::string data_dir;
  if (backend == "file" || backend == "lio") {
    if (file_dir.empty()) return fail("--backend " + backend + " needs --file-dir DIR");
    std::error_code ec;
    const auto absolute = std::filesystem::absolute(file_dir, ec);
    data_dir = ec ? file_dir : absolute.lexically_normal().string();
  } else if (!file_dir.empty()) {
    return fail("--file-dir only applies to --backend file or lio");
  }
  if (backend != "lio" && !lio_nodes.empty())
    return fail("--lio-node only applies to --backend lio");
  if (backend == "file") {
    files = std::make_unique<sim::FileBackend>(data_dir);
    if (auto st = files->prepare(); !st) return fail(st.error().message);
    exports_backend = files.get();
  }
  if (backend == "lio") {
    sim::LioOptions lo;
    lo.configfs = lio_configfs;
    lo.file_dir = data_dir;
    lo.prefix_len = static_cast<int>(
        model_options.ip_pools.empty() ? 24 : model_options.ip_pools.front().prefix);
    model_options.storage_nodes.clear();
    for (const auto& text : lio_nodes) {
      const auto eq = text.find('=');
      const auto colon = text.find(':', eq == std::string::npos ? 0 : eq);
      if (eq == std::string::npos || colon == std::string::npos || eq == 0 || colon == eq + 1 ||
          colon + 1 == text.size()) {
        return fail("--lio-node wants NAME=NETNS:IFACE, got '" + text + "'");
      }
      const std::string name = text.substr(0, eq);
      lo.nodes[name] = sim::LioNode{text.substr(eq + 1, colon - eq - 1), text.substr(colon + 1)};
      model_options.storage_nodes.push_back(name);
    }
    lio = std::make_unique<sim::LioBackend>(lo, logs.get("lio"));
    if (auto st = lio->prepare(); !st) return fail(st.error().message);
    exports_backend = lio.get();
  }

  std::optional<std::pair<std::string, unsigned short>> tls_endpoint;
  if (!tls_listen.empty()) {
    auto ep = parse_listen(tls_listen);
    if (!ep) return fail("--tls-listen: " + ep.error().message);
    tls_endpoint = *ep;
  } else if (!tls_cert.empty() || !tls_key.empty() || !tls_dir.empty()) {
    return fail("--tls-cert, --tls-key and --tls-dir need --tls-listen");
  }
  if (tls_cert.empty() != tls_key.empty()) return fail("give --tls-cert and --tls-key together");

  ::signal(SIGPIPE, SIG_IGN);
  auto log = logs.get("datera-sim");

  sim::Model model(model_options, sim::system_clock());
  if (!state_path.empty()) {
    // A state file that cannot be read is kept as it is: starting empty would overwrite it.
    if (auto st = sim::load_state(model, state_path); !st) return fail(st.error().message);
    log->info("state {}: {} app instance(s)", state_path, model.list_app_instances("all").size());
  }
  sim::Sessions sessions(sim::system_clock(), *ttl, {{user, password}}, seed);

  asio::io_context ioc;
  asio::thread_pool pool(1);  // one writer: state writes stay in order
  sim::Committer committer(ioc.get_executor(), pool, model, state_path, exports_backend,
                           logs.get("state"));
  if (auto st = committer.save_now(); !st) return fail(st.error().message);

  sim::ApiOptions api_options;
  api_options.backend = backend;
  if (exports_backend) {
    api_options.data_path = [exports_backend](const sim::ExportView& e) {
      return exports_backend->path_for(e);
    };
  }
  api_options.commit = [&committer]() { return committer.commit(); };
  sim::Api api(model, sessions, logs.get("api"), std::move(api_options));

  prometheus::Registry registry;
  http::Metrics probe(registry, "datera-sim");
  http::ServerOptions server_options;
  server_options.name = "datera-sim";
  server_options.max_connections = 1024;
  server_options.read_timeout = std::chrono::seconds(60);
  server_options.max_request_bytes = 1 << 20;
  http::Server server(ioc.get_executor(), server_options, api, probe, logs.get("http"));
  auto bound = server.listen_tcp(endpoint->first, endpoint->second);
  if (!bound) return fail(bound.error().message);
  std::string ca_note;
  std::unique_ptr<sim::TlsFront> tls_front;
  if (tls_endpoint) {
    if (tls_cert.empty()) {
      if (tls_dir.empty()) {
        tls_dir =
            state_path.empty() ? "." : fs::dirname(std::filesystem::absolute(state_path).string());
      }
      tls_cert = tls_dir + "/cert.pem";
      tls_key = tls_dir + "/key.pem";
      std::vector<std::string> names{"localhost", "127.0.0.1", "::1"};
      if (tls_endpoint->first != "0.0.0.0" && tls_endpoint->first != "::") {
        names.push_back(tls_endpoint->first);
      }
      if (auto st = sim::make_self_signed(tls_cert, tls_key, names); !st)
        return fail(st.error().message);
      ca_note = ", self-signed certificate " + tls_cert + " (give it to clients as their CA file)";
    }
    auto ctx = sim::server_tls_context(tls_cert, tls_key);
    if (!ctx) return fail(ctx.error().message);
    tls_front = std::make_unique<sim::TlsFront>(ioc.get_executor(), *ctx, server, probe,
                                                logs.get("https"), server_options.read_timeout);
    auto tls_bound = tls_front->listen(tls_endpoint->first, tls_endpoint->second);
    if (!tls_bound) return fail(tls_bound.error().message);
    std::cerr << "datera-sim listening on https://"
              << (tls_bound->address().is_v6() ? "[" + tls_bound->address().to_string() + "]"
                                               : tls_bound->address().to_string())
              << ":" << tls_bound->port() << ca_note << std::endl;
  }
  server.start();
  if (tls_front) tls_front->start();

  int exit_code = 0;
  asio::signal_set signals(ioc, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    log->info("received {}; stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          if (tls_front) tls_front->stop();
          co_await server.drain(std::chrono::seconds(2));
          pool.join();  // the last commit's write has finished
          if (auto st = committer.save_now(); !st) {
            log->error("final save failed: {}", st.error().message);
            exit_code = 1;
          }
          ioc.stop();
        },
        asio::detached);
  });

  std::cerr << "datera-sim listening on http://"
            << (bound->address().is_v6() ? "[" + bound->address().to_string() + "]"
                                         : bound->address().to_string())
            << ":" << bound->port() << " (backend " << backend << ")" << std::endl;
  ioc.run();
  return exit_code;
}

// Throughput and latency of the EDF client against the real datera-sim on loopback.
//
//   build/bin/edf-bench [--sim build/bin/datera-sim] [--ops 2000]
//
// Cases: GET app instance one at a time, the same with 16 in flight, create + delete one at a time
// (three requests per volume: POST, PUT offline, DELETE). Each op is a full client call: retries
// and envelope parsing included; the transport keeps connections alive.

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "plugins/edf/client.h"
#include "tests/testing/run_async.h"
#include "tests/testing/sim_process.h"

namespace {

using namespace datera;
using Clock = std::chrono::steady_clock;

struct Row {
  std::string name;
  int ops = 0;
  double seconds = 0;
  std::vector<double> latency_ms;
  int failures = 0;
};

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
}

boost::asio::awaitable<void> get_loop(edf::Client& c, int n, Row& row) {
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    auto r = co_await c.get_app_instance("bench-vol");
    row.latency_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (!r) ++row.failures;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string sim_bin;
  int ops = 2000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--sim") == 0 && i + 1 < argc)
      sim_bin = argv[++i];
    else if (std::strcmp(argv[i], "--ops") == 0 && i + 1 < argc)
      ops = std::max(16, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: %s [--sim PATH] [--ops N]\n", argv[0]);
      return 2;
    }
  }
  if (sim_bin.empty()) {
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    const std::string me(self, n > 0 ? static_cast<size_t>(n) : 0);
    sim_bin = me.substr(0, me.find_last_of('/')) + "/datera-sim";
  }
  testing::SimProcess sim(sim_bin, {"--log-level", "warn"});
  if (!sim.start()) {
    std::fprintf(stderr, "datera-sim did not start:\n%s\n", sim.log().c_str());
    return 1;
  }
  boost::asio::io_context ioc;
  auto transport = edf::make_beast_transport(
      ioc.get_executor(), edf::Endpoint{"127.0.0.1", sim.port}, null_logger(), {}, 16);
  prometheus::Registry registry;
  edf::Metrics probe(registry);
  edf::ClientOptions o;
  o.server = sim.server();
  o.credentials = {"admin", sim.password};
  edf::Client client(ioc.get_executor(), **transport, o, probe, null_logger());
  edf::VolumeSpec spec;
  spec.name = "bench-vol";
  if (!testing::run_async(ioc, client.ensure_app_instance(spec))) return 1;

  std::vector<Row> rows;
  {
    Row row{"get app instance, 1 in flight", ops, 0, {}, 0};
    const auto t0 = Clock::now();
    testing::run_async(ioc, get_loop(client, ops, row));
    row.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    rows.push_back(row);
  }
  {
    Row row{"get app instance, 16 in flight", ops, 0, {}, 0};
    const auto t0 = Clock::now();
    for (int w = 0; w < 16; ++w)
      boost::asio::co_spawn(ioc, get_loop(client, ops / 16, row), boost::asio::detached);
    ioc.restart();
    ioc.run();
    row.ops = static_cast<int>(row.latency_ms.size());
    row.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    rows.push_back(row);
  }
  {
    const int n = std::max(10, ops / 10);
    Row row{"create + delete volume (3 requests)", n, 0, {}, 0};
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      edf::VolumeSpec s;
      s.name = "bench-cd-" + std::to_string(i);
      const auto t1 = Clock::now();
      auto created = testing::run_async(ioc, client.create_app_instance(s));
      auto deleted = testing::run_async(ioc, client.delete_app_instance(s.name));
      row.latency_ms.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - t1).count());
      if (!created || !deleted) ++row.failures;
    }
    row.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    rows.push_back(row);
  }
  sim.stop();

  std::printf("| case | ops | ops/s | p50 ms | p99 ms | failures |\n|---|---|---|---|---|---|\n");
  int failures = 0;
  for (const auto& r : rows) {
    std::printf("| %s | %d | %.0f | %.3f | %.3f | %d |\n", r.name.c_str(), r.ops, r.ops / r.seconds,
                pct(r.latency_ms, 0.5), pct(r.latency_ms, 0.99), r.failures);
    failures += r.failures;
  }
  return failures == 0 ? 0 : 1;
}

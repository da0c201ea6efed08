// datera-agentctl: what an operator reaches for on a node. Talks to the local agent over its
// Unix-socket API (GET /v1/status, /v1/volumes); prints kubectl-style tables or, with -o json,
// the JSON for scripts.
//
// Exit codes: 0 done (doctor: nothing failed), 1 doctor found a failure, 2 usage, 3 the agent
// could not be reached or answered an error.

#include <iostream>

#include <CLI/CLI.hpp>

#include "plugins/flexvolume/unix_http_client.h"
#include "tools/agentctl/doctor.h"
#include "tools/agentctl/views.h"

namespace {

using datera::agentctl::Json;

constexpr int kUnreachable = 3;

struct Fetch {
  std::string socket;
  std::string error;
  std::optional<Json> get(const std::string& path) {
    auto r = datera::flex::http_request(socket, "GET", path, "", "datera-agentctl",
                                        std::chrono::seconds(2), std::chrono::seconds(10));
    if (!r) {
      error =
          "datera-agent at " + socket + ": " + r.error().message +
          " (is it running? systemctl status datera-agent, or kubectl -n datera-system get "
          "pods -o wide; with attach: true the socket is <plugin_dir>/.datera-agent/agent.sock)";
      return std::nullopt;
    }
    if (r->status != 200) {
      error = "datera-agent answered HTTP " + std::to_string(r->status) + " for " + path + ": " +
              r->body;
      return std::nullopt;
    }
    Json j = Json::parse(r->body, nullptr, false);
    if (j.is_discarded()) {
      error = "datera-agent sent no JSON for " + path;
      return std::nullopt;
    }
    return j;
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"datera-agentctl: the node's datera-agent, over its Unix-socket API"};
  std::string socket = "/run/datera-agent/agent.sock";
  std::string output = "table";
  cli.add_option("-s,--socket", socket, "the agent's API socket (its socket_path)");
  cli.add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));
  cli.require_subcommand(1);
  auto* status = cli.add_subcommand("status", "the agent: version, readiness, driver, array");
  auto* volumes = cli.add_subcommand(
      "volumes", "volumes on this node: phase, device, session, portal, owner, epoch, pods");
  auto* sessions = cli.add_subcommand("sessions", "the iSCSI session of each volume");
  auto* doctor =
      cli.add_subcommand("doctor",
                         "checks this node: agent, driver, array, iscsid, initiator name, mount "
                         "propagation, udev, clock");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = cli.exit(e);
    return rc == 0 ? 0 : 2;
  }

  Fetch fetch{socket, ""};
  const bool json = output == "json";
  auto st = fetch.get("/v1/status");
  if (!st) {
    if (doctor->parsed()) {
      std::cout << (json ? Json::array({{{"check", "agent"},
                                         {"result", "fail"},
                                         {"detail", fetch.error},
                                         {"fix", "start the agent"}}})
                                   .dump(1) +
                               "\n"
                         : "FAIL  agent               " + fetch.error + "\n");
    } else {
      std::cerr << "datera-agentctl: " << fetch.error << "\n";
    }
    return kUnreachable;
  }
  if (status->parsed()) {
    std::cout << (json ? st->dump(1) + "\n" : datera::agentctl::status_table(*st));
    return 0;
  }
  if (doctor->parsed()) {
    const auto checks = datera::agentctl::doctor(*st, datera::agentctl::linux_host());
    std::cout << (json ? datera::agentctl::to_json(checks).dump(1) + "\n"
                       : datera::agentctl::render(checks));
    return datera::agentctl::any_failed(checks) ? 1 : 0;
  }
  auto vols = fetch.get("/v1/volumes");
  if (!vols) {
    std::cerr << "datera-agentctl: " << fetch.error << "\n";
    return kUnreachable;
  }
  if (json) {
    std::cout << vols->dump(1) << "\n";
  } else if (volumes->parsed()) {
    std::cout << datera::agentctl::volumes_table(*st, *vols);
  } else if (sessions->parsed()) {
    std::cout << datera::agentctl::sessions_table(*vols);
  }
  return 0;
}

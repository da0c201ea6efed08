// datera-agentctl: what an operator reaches for on a node. Talks to the local agent over its
// Unix-socket API (GET /v1/status, /v1/volumes; POST /v1/volumes/<v>/release, /v1/drain); prints
// kubectl-style tables or, with -o json, the JSON for scripts.
//
// Exit codes: 0 done (doctor: nothing failed; release: released or nothing there; drain: no
// release failed), 1 doctor found a failure, release kept or failed the volume, a drain's release
// failed; 2 usage; 3 the agent could not be reached or answered an error.

#include <fstream>
#include <iostream>
#include <iterator>

#include <CLI/CLI.hpp>

#include "base/json.h"
#include "plugins/flex/unix_http_client.h"
#include "tools/agentctl/doctor.h"
#include "tools/agentctl/migrate.h"
#include "tools/agentctl/views.h"

namespace {

using datera::agentctl::Json;

constexpr int kUnreachable = 3;

/// A file (or stdin for "-"), parsed as JSON within generous bounds (a cluster's PV list).
std::optional<Json> read_json(const std::string& path, std::string& error) {
  std::string text;
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      error = "cannot read " + path;
      return std::nullopt;
    }
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto parsed = datera::json::parse_bounded(text, 64, size_t{256} << 20);
  if (!parsed) {
    error = (path == "-" ? std::string("stdin") : path) + ": " + parsed.error().message;
    return std::nullopt;
  }
  return std::move(*parsed);
}

/// Exit 0: every FlexVolume (or Datera CSI) PV can be migrated; 1: some were refused; 2: unreadable
/// input.
int run_migrate(const std::string& pvs_file, const std::string& pods_file,
                const std::string& manifests_file, const datera::agentctl::MigrateOptions& mo,
                bool json) {
  std::string error;
  auto pvs = read_json(pvs_file, error);
  std::optional<Json> pods = Json();
  if (pvs && !pods_file.empty()) pods = read_json(pods_file, error);
  if (!pvs || !pods) {
    std::cerr << "datera-agentctl migrate: " << error << "\n";
    return 2;
  }
  const auto plan = datera::agentctl::plan_migration(*pvs, *pods, mo);
  if (!manifests_file.empty()) {
    std::ofstream out(manifests_file, std::ios::trunc);
    out << plan.manifests().dump(1) << "\n";
    if (!out) {
      std::cerr << "datera-agentctl migrate: cannot write " << manifests_file << "\n";
      return 2;
    }
  }
  if (json) {
    Json refused = Json::array();
    for (const auto& r : plan.refused) refused.push_back({{"pv", r.pv}, {"reason", r.reason}});
    std::cout << Json{{"manifests", plan.manifests()}, {"refused", refused}}.dump(1) << "\n";
  } else {
    std::cout << plan.text();
  }
  return plan.refused.empty() ? 0 : 1;
}

struct Fetch {
  std::string socket;
  std::string error;
  std::optional<Json> get(const std::string& path) {
    auto r = datera::flex::http_request(socket, "GET", path, "", "datera-agentctl",
                                        std::chrono::seconds(2), std::chrono::seconds(10));
    if (!r) {
      error = "datera-agent at " + socket + ": " + r.error().message +
              " (is it running? systemctl status datera-agent, or kubectl -n datera-system get "
              "pods -o wide; with attach: true the socket is <plugin_dir>/.datera-agent.sock)";
      return std::nullopt;
    }
    if (r->status != 200) {
      error = "datera-agent answered HTTP " + std::to_string(r->status) + " for " + path + ": " +
              r->body;
      return std::nullopt;
    }
    auto parsed = datera::json::parse_bounded(r->body);
    Json j = parsed ? std::move(*parsed) : Json(Json::value_t::discarded);
    if (j.is_discarded()) {
      error = "datera-agent sent no JSON for " + path;
      return std::nullopt;
    }
    return j;
  }
  /// release and drain: the agent answers 200, 409 (kept) or 500 (failed) with the result.
  std::optional<Json> post(const std::string& path, const Json& body,
                           std::chrono::seconds timeout) {
    auto r = datera::flex::http_request(socket, "POST", path, body.dump(), "datera-agentctl",
                                        std::chrono::seconds(2), timeout);
    if (!r) {
      error = "datera-agent at " + socket + ": " + r.error().message +
              (r.error().code == datera::flex::ClientErrc::timeout
                   ? " (the agent goes on; see datera-agentctl volumes)"
                   : " (is it running?)");
      return std::nullopt;
    }
    auto parsed = datera::json::parse_bounded(r->body);
    Json j = parsed ? std::move(*parsed) : Json(Json::value_t::discarded);
    if (j.is_discarded() || (r->status != 200 && r->status != 409 && r->status != 500) ||
        (j.contains("status") && j["status"] == "Failure")) {
      error = "datera-agent answered HTTP " + std::to_string(r->status) + " for " + path + ": " +
              r->body;
      return std::nullopt;
    }
    return j;
  }
};

}  // namespace

int main(int argc, char** argv) {  // NOLINT(bugprone-exception-escape): an escape is a bug: abort
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
  std::string volume;
  bool force = false;
  int timeout_s = 300;
  auto* release = cli.add_subcommand(
      "release",
      "give VOLUME up on this node (no pod here may use it): unmount, log out, leave "
      "its ACL and lease (agent mode)");
  release->add_option("VOLUME", volume, "the volume (app instance) name")->required();
  auto* drain = cli.add_subcommand(
      "drain", "release every volume no pod on this node uses, for maintenance (cordon first)");
  for (auto* sub : {release, drain}) {
    sub->add_flag("--force", force,
                  "controller mode: also unstage kubelet's device mounts no pod uses (only when "
                  "kubelet is gone for good)");
    sub->add_option("--timeout", timeout_s, "seconds to wait for the agent")
        ->check(CLI::Range(1, 3600));
  }
  auto* doctor =
      cli.add_subcommand("doctor",
                         "checks this node: agent, driver, array, iscsid, initiator name, mount "
                         "propagation, udev, clock");
  std::string pvs_file = "-";
  std::string pods_file;
  std::string manifests_file;
  datera::agentctl::MigrateOptions mo;
  auto* migrate = cli.add_subcommand(
      "migrate",
      "plan moving FlexVolume PVs (datera/iscsi) and Datera CSI PVs (dsp.csi.daterainc.io) to CSI "
      "PVs of the same volumes: reads `kubectl get pv -o json`, prints the steps and refusals, "
      "writes the CSI PV manifests; changes nothing itself");
  migrate->add_option("--pvs", pvs_file, "kubectl get pv -o json output ('-': stdin)");
  migrate->add_option("--pods", pods_file,
                      "kubectl get pods -A -o json output: lists the pods to scale down first");
  migrate->add_option("--manifests", manifests_file, "write the CSI PVs (a v1 List) here");
  migrate->add_option("--driver", mo.driver, "the CSI driver name (csi.driver_name)");
  migrate->add_option("--secret-namespace", mo.secret_namespace,
                      "the namespace of the Secrets FlexVolume secretRefs name");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = cli.exit(e);
    return rc == 0 ? 0 : 2;
  }

  const bool json = output == "json";
  if (migrate->parsed()) return run_migrate(pvs_file, pods_file, manifests_file, mo, json);
  Fetch fetch{socket, ""};
  if (release->parsed() || drain->parsed()) {
    const std::string path = release->parsed() ? "/v1/volumes/" + volume + "/release" : "/v1/drain";
    auto r = fetch.post(path, Json{{"force", force}}, std::chrono::seconds(timeout_s));
    if (!r) {
      std::cerr << "datera-agentctl: " << fetch.error << "\n";
      return kUnreachable;
    }
    const Json results = release->parsed() ? Json::array({*r}) : r->value("volumes", Json::array());
    std::cout << (json ? (release->parsed() ? r->dump(1) : results.dump(1)) + "\n"
                       : datera::agentctl::results_table(results));
    return release->parsed() ? datera::agentctl::release_exit_code(*r)
                             : datera::agentctl::drain_exit_code(results);
  }
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

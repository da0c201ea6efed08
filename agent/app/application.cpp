#include "agent/app/application.h"

#include <csignal>
#include <cstdlib>
#include <malloc.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>

#include "agent/app/phases.h"
#include "agent/app/wiring.h"
#include "agent/mount/linux_mounter.h"
#include "agent/udev/linux_udev_monitor.h"
#include "base/duration.h"
#include "base/fs.h"
#include "base/version.h"
#include "metrics/process_collector.h"
#include "plugins/edf/options.h"
#include "plugins/initiator/loop.h"
#include "plugins/initiator/open_iscsi.h"

namespace datera::app {

namespace asio = boost::asio;
using asio::use_awaitable;

namespace {

flex::DriverInfo driver_info(const config::Config& cfg) {
  flex::DriverInfo info;
  info.driver = cfg.driver.driver_name();
  info.agent_version = version::kVersion;
  info.protocol = version::kProtocol;
  info.socket = cfg.socket_path;
  info.call_timeout = cfg.driver.shim_timeout;
  info.capabilities["attach"] = cfg.attach;
  return info;
}

std::string default_shim_source() {
  auto self = fs::self_exe();
  return fs::join(self ? fs::dirname(*self) : std::string("/usr/local/bin"), "datera-flexvolume");
}

void log_exception(const LoggerPtr& log, const char* what, const std::exception_ptr& e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log->critical("{} failed: {}", what, ex.what());
  }
}

}  // namespace

installer::Options installer_options(const config::Config& cfg) {
  installer::Options o;
  o.plugin_dir = cfg.plugin_dir;
  o.driver_dir_name = cfg.driver.driver_dir_name();
  o.exe_name = cfg.driver.driver;
  o.shim_source = cfg.driver.shim_source.empty() ? default_shim_source() : cfg.driver.shim_source;
  o.info = driver_info(cfg);
  o.self_test_timeout = cfg.driver.self_test_timeout;
  return o;
}

Application::Application(config::Config cfg, std::string config_path, LogFactory& logs,
                         std::unique_ptr<lifecycle::Notifier> notifier)
    : cfg_(std::move(cfg)),
      config_path_(std::move(config_path)),
      logs_(logs),
      log_(logs.get("agent")),
      notifier_(std::move(notifier)),
      api_probe_(*registry_, "api"),
      metrics_http_probe_(*registry_, "metrics"),
      probes_http_probe_(*registry_, "probes"),
      flex_probe_(*registry_),
      installer_probe_(*registry_),
      runner_(process::make_process_runner(ioc_.get_executor(), logs.get("process"))) {
  metrics::register_build_info(*registry_);
}

Application::~Application() {
  pool_.stop();
  pool_.join();
}

int Application::run() {
  // Fixed thresholds instead of glibc's adaptive ones: once a large buffer was freed, glibc raises
  // both (up to 32/64 MiB), after which a pool thread's arena kept 8 MiB of free memory resident
  // after every restart. Buffers from 256 KiB up are mapped and unmapped on their own, and an
  // arena's free top beyond 1 MiB goes back to the system.
  ::mallopt(M_MMAP_THRESHOLD, 256 << 10);
  ::mallopt(M_TRIM_THRESHOLD, 1 << 20);
  log_->info("datera-agent {} ({}) starting on node {}", version::kVersion, version::kGitCommit,
             cfg_.node_name);
  asio::co_spawn(ioc_, start(), [this](const std::exception_ptr& e) {
    if (e) {
      log_exception(log_, "start-up", e);
      exit_code_ = 1;
      ioc_.stop();
    }
  });
  ioc_.run();
  return exit_code_;
}

// ---- Wiring ---------------------------------------------------------------------------------

Status Application::wire() {
  wire_installer();
  if (auto st = wire_array(); !st) return st;
  if (auto st = wire_data_path(); !st) return st;
  wire_ownership();
  wire_volumes();
  wire_keeper();
  wire_api();
  wire_csi();
  return ok_status();
}

void Application::wire_installer() {
  installer_ = std::make_unique<installer::Installer>(ioc_.get_executor(), pool_, *runner_,
                                                      installer_options(cfg_), installer_probe_,
                                                      logs_.get("installer"));
  readiness_.add("driver", "not installed yet");
}

Status Application::wire_array() {
  const auto& b = cfg_.backend;
  edf_probe_ = std::make_unique<edf::Metrics>(*registry_);
  if (b.configured()) {
    auto target = backend_target(cfg_);
    if (!target) return target.error();
    default_backend_ = *target;
    auto transport = edf::make_beast_transport(
        ioc_.get_executor(), edf::Endpoint{default_backend_.host, default_backend_.port},
        logs_.get("edf"), tls_options(cfg_));
    if (!transport) return transport.error().wrap("config key 'backend'");
    edf_transport_ = std::move(*transport);
    edf::ClientOptions o;
    o.server = default_backend_.server();
    o.credentials = default_backend_.credentials;
    o.tenant = b.tenant;
    o.request_timeout = b.request_timeout;
    edf_client_ = std::make_unique<edf::Client>(ioc_.get_executor(), *edf_transport_, o,
                                                *edf_probe_, logs_.get("edf"));
    backend_probe_ = std::make_unique<backend::Metrics>(*registry_, o.server);
    backend_monitor_ =
        std::make_unique<backend::Monitor>(ioc_.get_executor(), *edf_client_, o.server,
                                           b.check_interval, *backend_probe_, logs_.get("backend"));
    readiness_.add("backend", "not checked yet");
  }
  // The agent's own array and account. Volumes refer to it (is_default) and EdfArrays supplies
  // its credentials at each use; other arrays need backend.allowed_servers and their own.
  volume::EdfArraysOptions ao;
  ao.default_backend = default_backend_;
  ao.tls = tls_options(cfg_);
  ao.tenant = b.tenant;
  ao.request_timeout = b.request_timeout;
  // Two attempts of ttl/6 each: a renewal ends (renewed or failed) within about ttl/3.
  ao.lease_request_timeout = std::min(b.request_timeout, cfg_.handoff.lease_ttl / 6);
  ao.lease_attempts = 2;
  arrays_ =
      std::make_unique<volume::EdfArrays>(ioc_.get_executor(), ao, *edf_probe_, logs_.get("edf"));
  return ok_status();
}

Status Application::wire_data_path() {
  volume_probe_ = std::make_unique<volume::Metrics>(*registry_);
  udev::UdevOptions uo;
  if (!fs::exists(uo.udevd_control_path)) {
    // No udevd (a minimal host, or a container without /run/udev): the kernel's own uevents still
    // arrive, and devtmpfs makes the device nodes.
    uo.source = "kernel";
    log_->info("udevd is not running ({} missing); watching kernel uevents instead",
               uo.udevd_control_path);
  }
  udev_ = udev::make_udev_monitor(ioc_.get_executor(), uo, logs_.get("udev"));
  volume_probe_->udev_degraded(udev_->degraded());
  udev_->on_event([this](const udev::Event& e) {
    volume_probe_->udev_event(e.subsystem, e.action);
    volume_probe_->udev_degraded(udev_->degraded());
  });
  mount_probe_ = std::make_unique<mount::Metrics>(*registry_);
  mounter_ = mount::make_linux_mounter(ioc_.get_executor(), pool_, *runner_, {}, *mount_probe_,
                                       logs_.get("mount"));
  if (auto st = wire_initiator(); !st) return st;
  journal_ = std::make_unique<volume::Journal>(fs::join(cfg_.state_dir, "journal"), pool_,
                                               logs_.get("journal"));
  return ok_status();
}

// open-iscsi (with dm-multipath maps unless off) in production; loop for development and tests.
Status Application::wire_initiator() {
  const auto& ic = cfg_.initiator;
  if (cfg_.choices.initiator == config::InitiatorKind::loop) {
    // datera-sim's file backend, reached like the default array (validate() requires it).
    auto t = edf::make_beast_transport(ioc_.get_executor(),
                                       edf::Endpoint{default_backend_.host, default_backend_.port},
                                       logs_.get("initiator"), tls_options(cfg_));
    if (!t) return t.error().wrap("loop initiator");
    sim_transport_ = std::move(*t);
    initiator::LoopOptions lo;
    lo.iqn = ic.iqn;
    lo.request_timeout = cfg_.backend.request_timeout;  // the same server as the EDF client's
    initiator_ = initiator::make_loop_initiator(*sim_transport_, pool_, lo, logs_.get("initiator"));
    log_->warn(
        "initiator.kind is 'loop': volumes are datera-sim files on loop devices. This is for "
        "development and tests only, never for real arrays");
  } else {
    initiator::OpenIscsiOptions oo;
    oo.iscsiadm = ic.iscsiadm;
    oo.iface = ic.iface;
    oo.initiator_iqn = ic.iqn;
    oo.login_timeout = ic.login_timeout;
    oo.replacement_timeout = ic.replacement_timeout;
    oo.noop_out_interval = ic.noop_out_interval;
    oo.noop_out_timeout = ic.noop_out_timeout;
    oo.wait_for_event = [this](std::chrono::milliseconds max) { return udev_->wait(max); };
    initiator_ = initiator::make_open_iscsi(*runner_, pool_, oo, logs_.get("initiator"));
    if (cfg_.choices.multipath != config::MultipathMode::off) {
      // Whether the kernel can make maps is found in the data_path phase, after modprobe.
      multipath_probe_ = std::make_unique<multipath::Metrics>(*registry_);
      multipath::DmsetupOptions dm;
      dm.dmsetup = ic.dmsetup;
      dm.hold_io = ic.io_hold.count() > 0;
      multipath_ = std::make_unique<multipath::Dmsetup>(*runner_, pool_, dm, *multipath_probe_,
                                                        logs_.get("multipath"));
    }
  }
  return ok_status();
}

void Application::wire_ownership() {
  if (cfg_.choices.handoff != config::HandoffMode::agent || cfg_.attach) return;
  ownership::Options oo;
  oo.node = cfg_.node_name;
  if (auto iqn = initiator_->initiator_iqn()) oo.iqn = *iqn;
  oo.ttl = cfg_.handoff.lease_ttl;
  oo.settle = cfg_.handoff.claim_settle;
  oo.write_bound = cfg_.handoff.claim_write_bound;
  oo.poll = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1'000), oo.ttl / 10);
  coordinator_ =
      std::make_unique<ownership::Coordinator>(ioc_.get_executor(), oo, logs_.get("ownership"));
}

// Everything that builds the volume manager, the FlexVolume service and the calls between them.
void Application::wire_volumes() {
  const auto& ic = cfg_.initiator;
  volume::ManagerOptions mo;
  mo.node_name = cfg_.node_name;
  mo.kubelet_root = cfg_.kubelet_root;
  // Resolved once: a kubelet dir moved to a data disk and linked back is common, and mountinfo
  // shows the resolved paths. Below it, nothing is ever followed (volume::Manager::kubelet_path).
  if (auto real = fs::real_path(cfg_.kubelet_root)) {
    mo.kubelet_root_real = *real;
    if (*real != cfg_.kubelet_root) {
      log_->info("kubelet_root {} resolves to {}; pod paths are compared in that form",
                 cfg_.kubelet_root, *real);
    }
  } else {
    log_->warn("kubelet_root {} cannot be resolved ({}); using it as given", cfg_.kubelet_root,
               real.error().message);
  }
  mo.driver_dir = cfg_.driver.driver_dir_name();
  mo.staging_dir = fs::join(cfg_.state_dir, "staging");
  mo.online_timeout = ic.online_timeout;
  mo.connect_timeout = ic.login_timeout;
  mo.controller_attach = cfg_.attach;
  mo.default_backend = default_backend_;
  mo.allowed_servers = cfg_.backend.allowed_servers;
  if (const char* at = std::getenv("DATERA_AGENT_TEST_CRASH_AT"); at && *at) {
    // The host tier's crash tests: die like kill -9 at one named point between two steps.
    const std::string point = at;
    log_->warn("DATERA_AGENT_TEST_CRASH_AT={}: this agent will kill itself there (tests only)",
               point);
    mo.crash_point = [point, log = log_](const std::string& here) {
      if (here != point) return;
      log->warn("crash point {} reached: SIGKILL", here);
      log->flush();
      ::kill(::getpid(), SIGKILL);
    };
  }
  volumes_ = std::make_unique<volume::Manager>(mo, *arrays_, *initiator_, *mounter_, *journal_,
                                               *volume_probe_, logs_.get("volume"),
                                               multipath_.get(), coordinator_.get());
  // Registered in both modes, so dashboards and alerts find the series (zero without attach).
  controller_probe_ = std::make_unique<controller::Metrics>(*registry_);
  mo.csi_driver = cfg_.csi.driver_name;
  if (cfg_.attach || (cfg_.csi.enabled && cfg_.csi.controller)) {
    controller::GrantOptions co;
    co.default_backend = mo.default_backend;
    co.allowed_servers = mo.allowed_servers;
    co.online_timeout = ic.online_timeout;
    grants_ = std::make_unique<controller::Grants>(co, *arrays_, *controller_probe_,
                                                   logs_.get("controller"));
  }
  if (cfg_.attach) {
    attacher_ = std::make_unique<controller::Attacher>(*grants_, *controller_probe_,
                                                       logs_.get("controller"));
  }
  flex_ = std::make_unique<flexvolume::Service>(
      flexvolume::ServiceOptions{cfg_.driver.driver_name(), driver_info(cfg_).capabilities,
                                 cfg_.api.call_timeout},
      flex_probe_, logs_.get("flexvolume"));
  serve_volume_calls_ = [this] {
    flex_->set_volume_ops(volumes_.get());
    if (attacher_) flex_->set_controller_ops(attacher_.get());
  };
}

void Application::wire_keeper() {
  const auto& ic = cfg_.initiator;
  keeper_probe_ = std::make_unique<keeper::Metrics>(*registry_);
  keeper::KeeperOptions ko;
  ko.poll_interval = ic.session_poll_interval;
  ko.stall_poll_interval = ic.stall_poll_interval;
  ko.array_poll_interval = ic.array_poll_interval;
  ko.io_hold = ic.io_hold;
  auto watch = [this] {
    std::vector<keeper::Watched> out;
    for (auto& a : volumes_->attached()) {
      // The kernel names a filesystem's device by its disk name: "dm-3" for /dev/dm-3.
      out.push_back({std::move(a.volume), std::move(a.target), fs::basename(a.device), a.map});
    }
    return out;
  };
  kmsg_probe_ = std::make_unique<kmsg::Metrics>(*registry_);
  kernel_log_ = std::make_unique<kmsg::KernelLog>(ioc_.get_executor(), "/dev/kmsg", *kmsg_probe_,
                                                  logs_.get("keeper"));
  keeper::KeeperHooks hooks;
  hooks.check = access_check();
  hooks.fs_failure = [this](const std::string& device) { return fs_failures_.failure(device); };
  hooks.silent_since = [this](int sid, std::chrono::steady_clock::time_point after) {
    return silences_.since(sid, after);
  };
  // The manager outlives the keeper (both are the application's; the keeper stops first).
  hooks.paths_active = [mgr = volumes_.get()](std::string v) {
    return mgr->map_paths_active(std::move(v));
  };
  hooks.release_held = [mgr = volumes_.get()](std::string v) {
    return mgr->release_held_io(std::move(v));
  };
  keeper_ = std::make_unique<keeper::Keeper>(ioc_.get_executor(), ko, real_clock(), *initiator_,
                                             watch, udev_.get(), *keeper_probe_,
                                             logs_.get("keeper"), std::move(hooks));
}

void Application::wire_api() {
  api::StatusFacts facts;
  facts.node = cfg_.node_name;
  facts.attach = cfg_.attach;
  facts.initiator = std::string(config::to_string(cfg_.choices.initiator));
  facts.io_hold = cfg_.initiator.io_hold;
  facts.kubelet_root = cfg_.kubelet_root;
  facts.plugin_dir = cfg_.plugin_dir;
  facts.started = started_;
  facts.initiator_iqn = [this] { return initiator_->initiator_iqn(); };
  facts.multipath_maps = [this] { return multipath_ && multipath_->available(); };
  facts.multipathd = [this] { return multipathd_; };
  facts.driver = [this] { return installer_->state(); };
  facts.api = [this] {
    return nlohmann::json{{"socket", cfg_.socket_path},
                          {"connections", api_server_->connections()},
                          {"in_flight", api_server_->in_flight()}};
  };
  facts.backend = [this] {
    return backend_monitor_ ? backend_monitor_->state() : nlohmann::json{{"configured", false}};
  };
  admin_ = std::make_unique<api::Admin>(std::move(facts), readiness_, *flex_, *volumes_, *keeper_);
  router_ = std::make_unique<api::Router>(*flex_, *admin_, *admin_, logs_.get("api"));
  api_server_ = std::make_unique<http::Server>(
      ioc_.get_executor(),
      http::ServerOptions{"api", cfg_.api.max_connections, cfg_.api.read_timeout,
                          std::chrono::seconds(10), 64 * 1024},
      *router_, api_probe_, logs_.get("api"),
      api::uid_admission(cfg_.api.allowed_uids, logs_.get("api")));
  metrics_handler_ = std::make_unique<metrics::Handler>(
      std::vector<std::shared_ptr<prometheus::Collectable>>{
          registry_, std::make_shared<metrics::ProcessCollector>()},
      readiness_);
  // The metrics port is open to every pod (hostNetwork) and carries kubelet's probes: short
  // deadlines and a per-peer bound keep idle or slow clients from holding every slot.
  metrics_server_ = std::make_unique<http::Server>(
      ioc_.get_executor(),
      http::ServerOptions{"metrics", 128, std::chrono::seconds(5), std::chrono::seconds(10),
                          16 * 1024, 8, std::chrono::seconds(2)},
      *metrics_handler_, metrics_http_probe_, logs_.get("metrics"));
  probe_server_ = std::make_unique<http::Server>(
      ioc_.get_executor(),
      http::ServerOptions{"probes", 16, std::chrono::seconds(5), std::chrono::seconds(10),
                          16 * 1024, 0, std::chrono::seconds(2)},
      *metrics_handler_, probes_http_probe_, logs_.get("metrics"));
}

void Application::wire_csi() {
  // Registered in every configuration, so dashboards and alerts find the series.
  csi_metrics_ = std::make_unique<csi::Metrics>(*registry_);
  if (!cfg_.csi.enabled) return;
  csi::IdentityOptions io;
  io.driver_name = cfg_.csi.driver_name;
  io.version = version::kVersion;
  io.controller = cfg_.csi.controller;
  // Ready once reconcile has run: the node's volumes are known before any call acts on them.
  csi_identity_ = std::make_unique<csi::Identity>(io, [this] { return reconciled_; });
  if (cfg_.csi.controller) {
    csi::ControllerOptions co;
    co.default_backend = default_backend_;
    co.allowed_servers = cfg_.backend.allowed_servers;
    // The node answers a freeze request at its next grant check (every lease_ttl/3).
    co.freeze_wait = cfg_.handoff.lease_ttl / 3 + std::chrono::seconds(5);
    csi_controller_ =
        std::make_unique<csi::Controller>(co, *arrays_, *grants_, *csi_metrics_, logs_.get("csi"));
  }
  if (cfg_.csi.node) {
    csi::NodeOptions no;
    no.node_id = cfg_.node_name;
    no.max_volumes_per_node = cfg_.csi.max_volumes_per_node;
    no.default_backend = default_backend_;
    no.allowed_servers = cfg_.backend.allowed_servers;
    csi_stats_ = csi::make_linux_stats(pool_);
    // The keeper's view of the volume's session, as CSI's VolumeCondition.
    auto condition = [this](const std::string& volume) -> std::optional<csi::Condition> {
      const auto state = keeper_->state(volume);
      const std::string health = state.value("state", "unknown");
      if (health == "unknown") return std::nullopt;
      if (health == "healthy") return csi::Condition{false, "session healthy"};
      std::string why = "session " + health;
      for (const char* key : {"session_state", "device_state", "fs_failure"}) {
        if (const auto it = state.find(key);
            it != state.end() && it->is_string() && !it->get<std::string>().empty()) {
          why += std::string(", ") + key + " " + it->get<std::string>();
        }
      }
      if (state.value("map_path_failed", false)) why += ", a path of its map failed";
      return csi::Condition{true, why};
    };
    csi_node_ = std::make_unique<csi::Node>(no, *volumes_, *csi_stats_, std::move(condition),
                                            logs_.get("csi"));
  }
  csi_server_ = std::make_unique<csi::Server>(
      ioc_.get_executor(), csi::ServerOptions{cfg_.csi.endpoint}, *csi_identity_,
      csi_controller_.get(), csi_node_.get(), *csi_metrics_, logs_.get("csi"));
}

// ---- Start phases ---------------------------------------------------------------------------

asio::awaitable<void> Application::start() {
  struct Phase {
    std::string_view name;
    asio::awaitable<Status> (Application::*run)();
  };
  static constexpr Phase kPhases[] = {
      {"bind", &Application::bind},
      {"data_path", &Application::find_data_path},
      {"reconcile", &Application::reconcile},
      {"serve", &Application::serve},
      // After serve (nothing runs in between, so no caller can tell) so that, unwound, the loops
      // stop before the API drains: no keeper check or lease round starts during the drain.
      {"watch", &Application::watch},
      {"signals", &Application::handle_signals},
      {"driver", &Application::install_driver},
      {"backend", &Application::monitor_backend},
  };
  static_assert(std::size(kPhases) == kStartPhases.size());
  static_assert(
      [] {
        for (size_t i = 0; i < kStartPhases.size(); ++i) {
          if (kPhases[i].name != kStartPhases[i]) return false;
        }
        return true;
      }(),
      "kPhases must run the phases of phases.h, in its order");
  if (auto st = wire(); !st) {
    co_await fail_startup(st.error().message);
    co_return;
  }
  for (const auto& phase : kPhases) {
    log_->debug("start-up: {}", phase.name);
    auto st = co_await (this->*phase.run)();
    if (!st) {
      co_await fail_startup(st.error().message);
      co_return;
    }
  }
}

asio::awaitable<Status> Application::bind() {
  if (auto st = api_server_->listen_unix(cfg_.socket_path); !st) {
    co_return st.error().wrap("cannot serve the API");
  }
  // A later phase failing must not leave the socket file behind (only our own file is removed).
  on_stop([this] { api_server_->remove_socket_file(); });
  auto bound = metrics_server_->listen_tcp(cfg_.metrics.host, cfg_.metrics.port);
  if (!bound) {
    co_return Error{"cannot serve metrics: " + bound.error().message + " (metrics.listen)"};
  }
  metrics_endpoint_ = *bound;
  if (!cfg_.metrics.probe_listen.empty()) {
    auto probes = probe_server_->listen_tcp(cfg_.metrics.probe_host, cfg_.metrics.probe_port);
    if (!probes) {
      co_return Error{"cannot serve the probes: " + probes.error().message +
                      " (metrics.probe_listen)"};
    }
  }
  co_return ok_status();
}

asio::awaitable<Status> Application::find_data_path() {
  if (multipath_) {
    // Before detect() looks for them: a node without multipathd may never have loaded them.
    co_await multipath::load_modules(*runner_, "/", "/sbin/modprobe", logs_.get("multipath"));
    std::string why;
    if (multipath_->detect(&why)) {
      log_->info("volumes mount on per-volume dm-multipath maps (access IP changes move live)");
      multipathd_ = multipath::multipathd_present("/");
      if (multipathd_) {
        log_->warn(
            "multipathd runs on this node: unless it is kept off Datera disks (the blacklist "
            "drop-in systemd/datera-agent-multipath.conf as "
            "/etc/multipath/conf.d/datera-agent.conf), it may "
            "claim a volume's disk before the agent's map does, and that volume's mount then "
            "fails saying so; `datera-agentctl doctor` checks the drop-in");
      }
    } else if (cfg_.choices.multipath == config::MultipathMode::on) {
      co_return Error{"initiator.multipath is 'on' but dm-multipath is unusable: " + why +
                      " (modprobe dm_multipath dm_round_robin, install dmsetup)"};
    } else {
      log_->warn(
          "dm-multipath unusable ({}): volumes mount on the raw session disk, and an "
          "access IP change waits for the volume's pods to leave this node",
          why);
    }
  }
  if (auto iqn = initiator_->initiator_iqn(); !iqn) {
    log_->warn("initiator IQN unknown ({}); volume mounts will fail until it is set",
               iqn.error().message);
  } else {
    log_->info("initiator {} with IQN {}", initiator_->kind(), *iqn);
  }
  co_return ok_status();
}

asio::awaitable<Status> Application::reconcile() {
  // Sessions and mounts outlive the agent: bring the journal in line with them before serving
  // anything, so no call acts on a stale picture.
  readiness_.add("volumes", "reconciling the journal with sessions and mounts");
  const auto summary = co_await volumes_->reconcile();
  log_->info("{}", summary);
  readiness_.set("volumes", true, summary);
  reconciled_ = true;
  serve_volume_calls_();
  // Releases that need the array run while the API serves: only their own volumes wait.
  asio::co_spawn(ioc_, volumes_->release_leftovers(), [log = log_](const std::exception_ptr& e) {
    log_exception(log, "releasing leftover volumes", e);
  });
  co_return ok_status();
}

asio::awaitable<Status> Application::serve() {
  api_server_->start();
  metrics_server_->start();
  probe_server_->start();
  log_->info("API on unix:{} (uids allowed: {}), metrics on http://{}:{}{}", cfg_.socket_path,
             cfg_.api.allowed_uids.size(), metrics_endpoint_.address().to_string(),
             metrics_endpoint_.port(),
             cfg_.metrics.probe_listen.empty()
                 ? std::string()
                 : ", probes also on http://" + cfg_.metrics.probe_listen);
  on_stop_await([this]() -> asio::awaitable<void> {
    drained_clean_ = co_await api_server_->drain(cfg_.shutdown_grace);
    // No filesystem stays frozen for a snapshot after the agent is gone.
    co_await volumes_->end_freezes();
    api_server_->remove_socket_file();
    co_await metrics_server_->drain(std::chrono::seconds(1));
    co_await probe_server_->drain(std::chrono::seconds(1));
  });
  if (csi_server_) {
    if (auto st = csi_server_->start(); !st) {
      co_return st.error().wrap("cannot serve CSI on " + cfg_.csi.endpoint + " (csi.endpoint)");
    }
    log_->info("CSI {} on unix:{}: identity{}{}", cfg_.csi.driver_name, cfg_.csi.endpoint,
               csi_controller_ ? ", controller" : "", csi_node_ ? ", node" : "");
    // Stopped before the API drains (the stack unwinds in reverse).
    on_stop_await([this]() -> asio::awaitable<void> {
      const bool clean = co_await csi_server_->stop(cfg_.shutdown_grace);
      drained_clean_ = drained_clean_ && clean;
    });
  }
  co_return ok_status();
}

asio::awaitable<Status> Application::watch() {
  // Spawned before the keeper: the kernel log's backlog is read before the keeper's first look,
  // so a filesystem that failed while the agent was down is reported at once.
  kmsg::Sinks sinks;
  sinks.fs = [this](const kmsg::FsEvent& e) { fs_failures_.feed(e); };
  sinks.ping_timeout = [this](const kmsg::PingTimeout& p) {
    silences_.feed(p, std::chrono::steady_clock::now());
  };
  asio::co_spawn(
      ioc_, kernel_log_->run(std::move(sinks)),
      [log = log_](const std::exception_ptr& e) { log_exception(log, "kernel log", e); });
  asio::co_spawn(ioc_, keeper_->run(), [log = log_](const std::exception_ptr& e) {
    log_exception(log, "session keeper", e);
  });
  // The controller (FlexVolume's attach, CSI's ControllerPublishVolume) finds this node's IQN by
  // the name registered here.
  const bool granted_here = cfg_.attach || (cfg_.csi.enabled && cfg_.csi.node);
  if (granted_here) {
    asio::co_spawn(ioc_, register_initiator(), [log = log_](const std::exception_ptr& e) {
      log_exception(log, "initiator registration", e);
    });
  }
  if (coordinator_ || granted_here) {
    asio::co_spawn(ioc_, renew_leases_forever(), [log = log_](const std::exception_ptr& e) {
      log_exception(log, "lease renewal", e);
    });
  }
  asio::co_spawn(ioc_, trim_memory_forever(), asio::detached);
  on_stop([this] {
    keeper_->stop();
    kernel_log_->stop();
    registration_sleep_.stop();
    lease_sleep_.stop();
    trim_sleep_.stop();
  });
  co_return ok_status();
}

asio::awaitable<Status> Application::handle_signals() {
  asio::co_spawn(ioc_, wait_for_signals(), [log = log_](const std::exception_ptr& e) {
    log_exception(log, "signal handling", e);
  });
  if (auto interval = notifier_->watchdog_interval()) {
    asio::co_spawn(ioc_, watchdog_loop(*interval), asio::detached);
  }
  on_stop([this] { watchdog_sleep_.stop(); });
  co_return ok_status();
}

asio::awaitable<Status> Application::install_driver() {
  auto watcher = installer::make_inotify_watcher(ioc_.get_executor());
  if (watcher) {
    watcher_ = std::move(*watcher);
  } else {
    log_->warn("cannot watch the driver for changes ({}); re-checking it every 60 s instead",
               watcher.error().message);
    installer_probe_.install("watch_failed");
  }
  auto on_state = [this](bool ok, const std::string& detail) {
    readiness_.set("driver", ok, detail);
    if (!notified_ready_) {
      notified_ready_ = true;
      notifier_->ready(ok ? "serving; driver installed"
                          : "serving; driver install failing: " + detail);
    } else {
      notifier_->status(ok ? "serving; driver installed" : "driver install failing: " + detail);
    }
  };
  asio::co_spawn(
      ioc_, installer_->run(watcher_.get(), on_state),
      [log = log_](const std::exception_ptr& e) { log_exception(log, "driver installer", e); });
  on_stop([this] { installer_->stop(); });
  co_return ok_status();
}

asio::awaitable<Status> Application::monitor_backend() {
  if (!backend_monitor_) co_return ok_status();
  auto on_backend = [this](bool up, const std::string& detail) {
    readiness_.set("backend", up, detail);
  };
  asio::co_spawn(
      ioc_, backend_monitor_->run(on_backend),
      [log = log_](const std::exception_ptr& e) { log_exception(log, "backend monitor", e); });
  on_stop([this] { backend_monitor_->stop(); });
  co_return ok_status();
}

// ---- Stopping -------------------------------------------------------------------------------

void Application::on_stop(std::function<void()> stop) {
  on_stop_await([stop = std::move(stop)]() -> asio::awaitable<void> {
    stop();
    co_return;
  });
}

void Application::on_stop_await(std::function<asio::awaitable<void>()> stop) {
  stops_.push_back(std::move(stop));
}

asio::awaitable<void> Application::unwind() {
  while (!stops_.empty()) {
    // Moved out first: the coroutine it starts runs in this closure, which must outlive it.
    auto stop = std::move(stops_.back());
    stops_.pop_back();
    co_await stop();
  }
}

asio::awaitable<void> Application::fail_startup(std::string message) {
  log_->critical("{}", message);
  co_await unwind();
  exit_code_ = 1;
  ioc_.stop();
}

asio::awaitable<void> Application::shutdown() {
  notifier_->stopping();
  log_->info("draining: {} call(s) in flight, waiting up to {}", api_server_->in_flight(),
             format_duration(cfg_.shutdown_grace));
  co_await unwind();
  log_->info("stopped{}; iSCSI sessions, mounts and the installed driver are left as they are",
             drained_clean_ ? "" : " (some calls were cut off at the grace period)");
  ioc_.stop();
}

// ---- Long-running loops ---------------------------------------------------------------------

asio::awaitable<void> Application::wait_for_signals() {
  asio::signal_set signals(ioc_, SIGTERM, SIGINT, SIGHUP);
  for (;;) {
    boost::system::error_code ec;
    const int sig = co_await signals.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    if (sig == SIGHUP) {
      reload_log_level();
      continue;
    }
    log_->info("received {}; shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    co_await shutdown();
    co_return;
  }
}

void Application::reload_log_level() {
  notifier_->reloading();
  auto cfg = config::load(config_path_, config::process_env(), cfg_.node_name);
  if (!cfg) {
    log_->warn("SIGHUP: config not reloaded, keeping log level {}: {}",
               spdlog::level::to_string_view(logs_.level()), cfg.error().message);
  } else {
    logs_.set_level(cfg->choices.log_level);
    log_->info("SIGHUP: log level is now {} (other settings apply at restart)", cfg->log_level);
  }
  // systemd holds a unit in "reloading" until it hears READY=1 again.
  notifier_->ready(readiness_.ready() ? "serving; driver installed" : "serving; driver not ready");
}

asio::awaitable<void> Application::watchdog_loop(std::chrono::microseconds interval) {
  // Pinging from the event loop itself: if the loop wedges, systemd notices and restarts us.
  for (;;) {
    notifier_->watchdog();
    const bool more = co_await watchdog_sleep_.sleep_for(interval / 2);
    if (!more) co_return;
  }
}

asio::awaitable<void> Application::register_initiator() {
  // Controller mode and CSI: the controller finds this node's IQN by the name registered here, so
  // an attach (ControllerPublishVolume) to this node fails until it is. Retried until it works.
  auto iqn = initiator_->initiator_iqn();
  if (!iqn) {
    log_->error("{}, but this node's initiator IQN is unknown ({}); no volume can be attached here",
                cfg_.attach ? "attach: true" : "csi.node: true", iqn.error().message);
    co_return;
  }
  auto array = arrays_->get(volumes_->default_backend());
  if (!array) {
    log_->error("cannot register initiator {}: {}", *iqn, array.error().message);
    co_return;
  }
  const std::string name = edf::initiator_name_for_node(cfg_.node_name);
  for (int attempt = 0;; ++attempt) {
    auto st = co_await (*array)->ensure_initiator(*iqn, name);
    if (st) {
      log_->info("initiator {} registered on the array as {}", *iqn, name);
      co_return;
    }
    if (attempt == 0 || attempt % 10 == 0) {
      log_->warn(
          "registering initiator {} as {} failed: {} (retrying every 5 s; until it works "
          "no volume can be attached to this node)",
          *iqn, name, st.error().message);
    }
    const bool more = co_await registration_sleep_.sleep_for(std::chrono::seconds(5));
    if (!more) co_return;
  }
}

asio::awaitable<void> Application::trim_memory_forever() {
  // Start-up (reconcile, the first look at every session, the first listing of the array) parses
  // large transient documents; what glibc keeps free between live chunks stays resident until it
  // is handed back (run() also fixes glibc's thresholds, which was the larger part). So: soon
  // after start-up, once its transients are over, then once a minute (about a millisecond each).
  auto wait = std::chrono::seconds(5);
  for (;;) {
    const bool more = co_await trim_sleep_.sleep_for(wait);
    if (!more) co_return;
    ::malloc_trim(0);
    wait = std::chrono::seconds(60);
  }
}

asio::awaitable<void> Application::renew_leases_forever() {
  // Every ttl/3: a lease survives two failed renewals before it can expire elsewhere.
  // Rounds start at a fixed rate (each volume is renewed every ttl/3 however long a round takes),
  // and a round spreads its renewals over half the period.
  const auto every = cfg_.handoff.lease_ttl / 3;
  auto next = std::chrono::steady_clock::now();
  for (;;) {
    co_await volumes_->renew_leases(every / 2);
    next += every;
    const auto now = std::chrono::steady_clock::now();
    if (next < now) {
      log_->warn(
          "lease renewal: a round took longer than {} ms (ttl/3), so leases were renewed late; "
          "the array answers slowly",
          every.count());
      volume_probe_->lease_renewal_failed("slow_round");
      next = now;
    }
    const bool more = co_await lease_sleep_.sleep_until(next);
    if (!more) co_return;
  }
}

decltype(keeper::KeeperHooks::check) Application::access_check() {
  // The keeper keeps this function for its lifetime, so the closure `mgr` lives in outlives every
  // check it starts.
  return
      [mgr = volumes_.get()](std::vector<std::string> v, std::string why) -> asio::awaitable<void> {
        if (why == "poll") {
          co_await mgr->check_access_all(std::move(v));
        } else {
          for (auto& one : v) (void)co_await mgr->check_access(std::move(one), why);
        }
      };
}

}  // namespace datera::app

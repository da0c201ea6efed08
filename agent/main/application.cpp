#include "agent/main/application.h"

#include <csignal>
#include <cstdlib>
#include <malloc.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "agent/common/duration.h"
#include "agent/common/fs.h"
#include "agent/common/version.h"
#include "agent/main/wiring.h"
#include "agent/mount/linux_mounter.h"
#include "agent/udev/linux_udev_monitor.h"
#include "metrics/process_collector.h"
#include "plugins/datera/options.h"
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
      runner_(process::make_process_runner(ioc_.get_executor(), logs.get("process"))),
      flex_(flexvolume::ServiceOptions{cfg_.driver.driver_name(), driver_info(cfg_).capabilities,
                                       cfg_.api.call_timeout},
            flex_probe_, logs.get("flexvolume")),
      router_(flex_, *this, *this, logs.get("api")),
      api_server_(ioc_.get_executor(),
                  http::ServerOptions{"api", cfg_.api.max_connections, cfg_.api.read_timeout,
                                      std::chrono::seconds(10), 64 * 1024},
                  router_, api_probe_, logs.get("api"),
                  api::uid_admission(cfg_.api.allowed_uids, logs.get("api"))),
      metrics_handler_({registry_, std::make_shared<metrics::ProcessCollector>()}, readiness_),
      // The metrics port is open to every pod (hostNetwork) and carries kubelet's probes: short
      // deadlines and a per-peer bound keep idle or slow clients from holding every slot.
      metrics_server_(
          ioc_.get_executor(),
          http::ServerOptions{"metrics", 128, std::chrono::seconds(5), std::chrono::seconds(10),
                              16 * 1024, 8, std::chrono::seconds(2)},
          metrics_handler_, metrics_http_probe_, logs.get("metrics")),
      probe_server_(
          ioc_.get_executor(),
          http::ServerOptions{"probes", 16, std::chrono::seconds(5), std::chrono::seconds(10),
                              16 * 1024, 0, std::chrono::seconds(2)},
          metrics_handler_, probes_http_probe_, logs.get("metrics")),
      installer_(ioc_.get_executor(), pool_, *runner_, installer_options(cfg_), installer_probe_,
                 logs.get("installer")),
      watchdog_timer_(ioc_) {
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

asio::awaitable<void> Application::start() {
  log_->info("datera-agent {} ({}) starting on node {}", version::kVersion, version::kGitCommit,
             cfg_.node_name);
  readiness_.add("driver", "not installed yet");

  if (auto st = api_server_.listen_unix(cfg_.socket_path); !st) {
    log_->critical("cannot serve the API: {}", st.error().message);
    exit_code_ = 1;
    ioc_.stop();
    co_return;
  }
  auto bound = metrics_server_.listen_tcp(cfg_.metrics.host, cfg_.metrics.port);
  if (!bound) {
    log_->critical("cannot serve metrics: {} (metrics.listen)", bound.error().message);
    api_server_.remove_socket_file();
    exit_code_ = 1;
    ioc_.stop();
    co_return;
  }
  if (!cfg_.metrics.probe_listen.empty()) {
    auto probes = probe_server_.listen_tcp(cfg_.metrics.probe_host, cfg_.metrics.probe_port);
    if (!probes) {
      log_->critical("cannot serve the probes: {} (metrics.probe_listen)", probes.error().message);
      api_server_.remove_socket_file();
      exit_code_ = 1;
      ioc_.stop();
      co_return;
    }
  }
  if (auto st = make_backend(); !st) {
    log_->critical("{}", st.error().message);
    api_server_.remove_socket_file();
    exit_code_ = 1;
    ioc_.stop();
    co_return;
  }
  if (cfg_.choices.initiator == config::InitiatorKind::open_iscsi &&
      cfg_.choices.multipath != config::MultipathMode::off) {
    // Before make_volumes() looks for them: a node without multipathd may never have loaded them.
    co_await multipath::load_modules(*runner_, "/", "/sbin/modprobe", logs_.get("multipath"));
  }
  if (auto st = make_volumes(); !st) {
    log_->critical("{}", st.error().message);
    api_server_.remove_socket_file();
    exit_code_ = 1;
    ioc_.stop();
    co_return;
  }
  // Sessions and mounts outlive the agent: bring the journal in line with them before serving
  // anything, so no call acts on a stale picture.
  readiness_.add("volumes", "reconciling the journal with sessions and mounts");
  const auto summary = co_await volumes_->reconcile();
  log_->info("{}", summary);
  readiness_.set("volumes", true, summary);
  flex_.set_volume_ops(volumes_.get());
  volumes_served_ = true;
  // Releases that need the array run while the API serves: only their own volumes wait.
  asio::co_spawn(ioc_, volumes_->release_leftovers(), [log = log_](const std::exception_ptr& e) {
    log_exception(log, "releasing leftover volumes", e);
  });
  if (attacher_) flex_.set_controller_ops(attacher_.get());
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
  if (cfg_.attach) {
    asio::co_spawn(ioc_, register_initiator(), [log = log_](const std::exception_ptr& e) {
      log_exception(log, "initiator registration", e);
    });
  }
  if (coordinator_ || cfg_.attach) {
    asio::co_spawn(ioc_, renew_leases_forever(), [log = log_](const std::exception_ptr& e) {
      log_exception(log, "lease renewal", e);
    });
  }
  asio::co_spawn(ioc_, trim_memory_forever(), asio::detached);
  api_server_.start();
  metrics_server_.start();
  probe_server_.start();
  log_->info("API on unix:{} (uids allowed: {}), metrics on http://{}:{}{}", cfg_.socket_path,
             cfg_.api.allowed_uids.size(), bound->address().to_string(), bound->port(),
             cfg_.metrics.probe_listen.empty()
                 ? std::string()
                 : ", probes also on http://" + cfg_.metrics.probe_listen);

  asio::co_spawn(ioc_, handle_signals(), [log = log_](const std::exception_ptr& e) {
    log_exception(log, "signal handling", e);
  });
  if (auto interval = notifier_->watchdog_interval()) {
    asio::co_spawn(ioc_, watchdog_loop(*interval), asio::detached);
  }

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
      ioc_, installer_.run(watcher_.get(), on_state),
      [log = log_](const std::exception_ptr& e) { log_exception(log, "driver installer", e); });
  if (backend_monitor_) {
    auto on_backend = [this](bool up, const std::string& detail) {
      readiness_.set("backend", up, detail);
    };
    asio::co_spawn(
        ioc_, backend_monitor_->run(on_backend),
        [log = log_](const std::exception_ptr& e) { log_exception(log, "backend monitor", e); });
  }
}

asio::awaitable<void> Application::handle_signals() {
  asio::signal_set signals(ioc_, SIGTERM, SIGINT, SIGHUP);
  for (;;) {
    boost::system::error_code ec;
    const int sig = co_await signals.async_wait(asio::redirect_error(use_awaitable, ec));
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
    watchdog_timer_.expires_after(interval / 2);
    boost::system::error_code ec;
    co_await watchdog_timer_.async_wait(asio::redirect_error(use_awaitable, ec));
    if (ec || stopping_) co_return;
  }
}

asio::awaitable<void> Application::shutdown() {
  if (stopping_) co_return;
  stopping_ = true;
  notifier_->stopping();
  log_->info("draining: {} call(s) in flight, waiting up to {}", api_server_.in_flight(),
             format_duration(cfg_.shutdown_grace));
  installer_.stop();
  if (backend_monitor_) backend_monitor_->stop();
  if (keeper_) keeper_->stop();
  if (kernel_log_) kernel_log_->stop();
  watchdog_timer_.cancel();
  const bool clean = co_await api_server_.drain(cfg_.shutdown_grace);
  api_server_.remove_socket_file();
  co_await metrics_server_.drain(std::chrono::seconds(1));
  co_await probe_server_.drain(std::chrono::seconds(1));
  log_->info("stopped{}; iSCSI sessions, mounts and the installed driver are left as they are",
             clean ? "" : " (some calls were cut off at the grace period)");
  ioc_.stop();
}

Status Application::make_backend() {
  const auto& b = cfg_.backend;
  if (!b.configured()) return ok_status();
  auto target = backend_target(cfg_);
  if (!target) return target.error();
  auto transport =
      edf::make_beast_transport(ioc_.get_executor(), edf::Endpoint{target->host, target->port},
                                logs_.get("edf"), tls_options(cfg_));
  if (!transport) return transport.error().wrap("config key 'backend'");
  edf_transport_ = std::move(*transport);
  edf_probe_ = std::make_unique<edf::Probe>(*registry_);
  edf::ClientOptions o;
  o.server = target->server();
  o.credentials = target->credentials;
  o.tenant = b.tenant;
  o.request_timeout = b.request_timeout;
  edf_client_ = std::make_unique<edf::Client>(ioc_.get_executor(), *edf_transport_, o, *edf_probe_,
                                              logs_.get("edf"));
  backend_probe_ = std::make_unique<backend::Probe>(*registry_, o.server);
  backend_monitor_ =
      std::make_unique<backend::Monitor>(ioc_.get_executor(), *edf_client_, o.server,
                                         b.check_interval, *backend_probe_, logs_.get("backend"));
  readiness_.add("backend", "not checked yet");
  return ok_status();
}

Status Application::make_volumes() {
  volume_probe_ = std::make_unique<volume::Probe>(*registry_);
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
  mount_probe_ = std::make_unique<mount::Probe>(*registry_);
  mounter_ = mount::make_linux_mounter(ioc_.get_executor(), pool_, *runner_, {}, *mount_probe_,
                                       logs_.get("mount"));
  const auto& ic = cfg_.initiator;
  if (cfg_.choices.initiator == config::InitiatorKind::loop) {
    // datera-sim's file backend, reached like the default array (validate() requires one).
    auto target = backend_target(cfg_);
    if (!target) return target.error();
    auto t =
        edf::make_beast_transport(ioc_.get_executor(), edf::Endpoint{target->host, target->port},
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
      multipath_probe_ = std::make_unique<multipath::Probe>(*registry_);
      multipath::DmsetupOptions dm;
      dm.dmsetup = ic.dmsetup;
      dm.hold_io = ic.io_hold.count() > 0;
      multipath_ = std::make_unique<multipath::Dmsetup>(*runner_, pool_, dm, *multipath_probe_,
                                                        logs_.get("multipath"));
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
        return Error{"initiator.multipath is 'on' but dm-multipath is unusable: " + why +
                     " (modprobe dm_multipath dm_round_robin, install dmsetup)"};
      } else {
        log_->warn(
            "dm-multipath unusable ({}): volumes mount on the raw session disk, and an "
            "access IP change waits for the volume's pods to leave this node",
            why);
      }
    }
  }
  if (auto iqn = initiator_->initiator_iqn(); !iqn) {
    log_->warn("initiator IQN unknown ({}); volume mounts will fail until it is set",
               iqn.error().message);
  } else {
    log_->info("initiator {} with IQN {}", initiator_->kind(), *iqn);
  }
  journal_ = std::make_unique<volume::Journal>(fs::join(cfg_.state_dir, "journal"), pool_,
                                               logs_.get("journal"));
  if (!edf_probe_) edf_probe_ = std::make_unique<edf::Probe>(*registry_);
  // The agent's own array and account. Volumes refer to it (is_default) and EdfArrays supplies
  // its credentials at each use; other arrays need backend.allowed_servers and their own.
  edf::BackendTarget default_backend;
  if (cfg_.backend.configured()) {
    auto target = backend_target(cfg_);
    if (!target) return target.error();
    default_backend = *target;
  }
  volume::EdfArraysOptions ao;
  ao.default_backend = default_backend;
  ao.tls = tls_options(cfg_);
  ao.tenant = cfg_.backend.tenant;
  ao.request_timeout = cfg_.backend.request_timeout;
  // Two attempts of ttl/6 each: a renewal ends (renewed or failed) within about ttl/3.
  ao.lease_request_timeout = std::min(cfg_.backend.request_timeout, cfg_.handoff.lease_ttl / 6);
  ao.lease_attempts = 2;
  arrays_ =
      std::make_unique<volume::EdfArrays>(ioc_.get_executor(), ao, *edf_probe_, logs_.get("edf"));
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
  mo.default_backend = default_backend;
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
  if (cfg_.choices.handoff == config::HandoffMode::agent && !cfg_.attach) {
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
  volumes_ = std::make_unique<volume::Manager>(mo, *arrays_, *initiator_, *mounter_, *journal_,
                                               *volume_probe_, logs_.get("volume"),
                                               multipath_.get(), coordinator_.get());
  // Registered in both modes, so dashboards and alerts find the series (zero without attach).
  controller_probe_ = std::make_unique<controller::Probe>(*registry_);
  if (cfg_.attach) {
    controller::AttacherOptions co;
    co.default_backend = mo.default_backend;
    co.allowed_servers = mo.allowed_servers;
    co.online_timeout = ic.online_timeout;
    attacher_ = std::make_unique<controller::Attacher>(co, *arrays_, *controller_probe_,
                                                       logs_.get("controller"));
  }
  keeper_probe_ = std::make_unique<keeper::Probe>(*registry_);
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
  kmsg_probe_ = std::make_unique<kmsg::Probe>(*registry_);
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
  keeper_ =
      std::make_unique<keeper::Keeper>(ioc_.get_executor(), ko, *initiator_, watch, udev_.get(),
                                       *keeper_probe_, logs_.get("keeper"), std::move(hooks));
  return ok_status();
}

asio::awaitable<void> Application::register_initiator() {
  // Controller mode: the controller finds this node's IQN by the name registered here, so an
  // attach to this node fails until it is. Retried until it works.
  auto iqn = initiator_->initiator_iqn();
  if (!iqn) {
    log_->error(
        "attach: true, but this node's initiator IQN is unknown ({}); no volume can be "
        "attached here",
        iqn.error().message);
    co_return;
  }
  auto target = volumes_ ? volumes_->default_backend() : edf::BackendTarget{};
  auto array = arrays_->get(target);
  if (!array) {
    log_->error("cannot register initiator {}: {}", *iqn, array.error().message);
    co_return;
  }
  const std::string name = edf::initiator_name_for_node(cfg_.node_name);
  asio::steady_timer timer(ioc_);
  for (int attempt = 0; !stopping_; ++attempt) {
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
    timer.expires_after(std::chrono::seconds(5));
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> Application::trim_memory_forever() {
  // Start-up (reconcile, the first look at every session, the first listing of the array) parses
  // large transient documents; what glibc keeps free between live chunks stays resident until it
  // is handed back (run() also fixes glibc's thresholds, which was the larger part). So: soon
  // after start-up, once its transients are over, then once a minute (about a millisecond each).
  asio::steady_timer timer(ioc_);
  auto wait = std::chrono::seconds(5);
  while (!stopping_) {
    timer.expires_after(wait);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    ::malloc_trim(0);
    wait = std::chrono::seconds(60);
  }
}

asio::awaitable<void> Application::renew_leases_forever() {
  // Every ttl/3: a lease survives two failed renewals before it can expire elsewhere.
  // Rounds start at a fixed rate (each volume is renewed every ttl/3 however long a round takes),
  // and a round spreads its renewals over half the period.
  asio::steady_timer timer(ioc_);
  const auto every = cfg_.handoff.lease_ttl / 3;
  auto next = std::chrono::steady_clock::now();
  while (!stopping_) {
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
    timer.expires_at(next);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
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

nlohmann::json Application::status() {
  const auto uptime =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_);
  const auto& counts = flex_.counts();
  // What the agent logs in with: initiator.iqn, or the host's initiatorname.iscsi.
  const Result<std::string> iqn = initiator_
                                      ? initiator_->initiator_iqn()
                                      : Result<std::string>(Error{"no data path configured"});
  return {{"version", version::kVersion},
          {"commit", version::kGitCommit},
          {"protocol", version::kProtocol},
          {"node", cfg_.node_name},
          {"attach", cfg_.attach},
          {"initiator", std::string(config::to_string(cfg_.choices.initiator))},
          {"multipath",
           {{"maps", multipath_ && multipath_->available()},
            {"multipathd", multipathd_},
            {"io_hold_seconds", std::chrono::duration<double>(cfg_.initiator.io_hold).count()}}},
          {"initiator_iqn", iqn ? nlohmann::json(*iqn) : nlohmann::json(nullptr)},
          {"initiator_iqn_error", iqn ? std::string() : iqn.error().message},
          {"kubelet_root", cfg_.kubelet_root},
          {"plugin_dir", cfg_.plugin_dir},
          {"pid", ::getpid()},
          {"uptime_seconds", uptime.count()},
          {"ready", readiness_.ready()},
          {"readiness", readiness_.to_json()["conditions"]},
          {"driver", installer_.state()},
          {"api",
           {{"socket", cfg_.socket_path},
            {"connections", api_server_.connections()},
            {"in_flight", api_server_.in_flight()}}},
          {"backend",
           backend_monitor_ ? backend_monitor_->state() : nlohmann::json{{"configured", false}}},
          {"flexvolume",
           {{"calls_total", counts.total},
            {"calls_failed", counts.failed},
            {"calls_in_flight", counts.in_flight}}}};
}

nlohmann::json Application::volumes() {
  auto list = volumes_ ? volumes_->volumes() : nlohmann::json::array();
  for (auto& v : list) {
    if (keeper_) v["session"] = keeper_->state(v.value("volume", ""));
  }
  return {{"volumes", list}};
}

asio::awaitable<nlohmann::json> Application::release(std::string volume, bool force) {
  if (!volumes_ || !volumes_served_) {
    co_return nlohmann::json{{"volume", volume},
                             {"result", "failed"},
                             {"message",
                              "the agent is still starting (reconciling its journal "
                              "with sessions and mounts); retry in a moment"},
                             {"pods", nlohmann::json::array()}};
  }
  auto done = co_await volumes_->give_up(std::move(volume), force);
  co_return done.to_json();
}

asio::awaitable<nlohmann::json> Application::drain(bool force) {
  nlohmann::json out = nlohmann::json::array();
  if (!volumes_ || !volumes_served_) {
    out.push_back(co_await release("", force));
    co_return out;
  }
  auto all = co_await volumes_->drain(force);
  for (const auto& one : all) out.push_back(one.to_json());
  co_return out;
}

}  // namespace datera::app

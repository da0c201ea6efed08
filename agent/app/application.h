#pragma once

// The composition root: wire() builds every service by constructor injection (construction only:
// it reads what it must, such as kubelet_root's real path and the initiator's IQN, but listens
// on nothing, contacts no array and writes nothing), then start() runs the start phases of
// phases.h in this order (agent/app/README.md says what each does):
//
// Start phases: `bind` `data_path` `reconcile` `serve` `watch` `signals` `driver` `backend`
//
// A phase that starts something pushes how to stop it onto a stack; shutdown (SIGTERM/SIGINT)
// and a failed start-up unwind that stack in reverse: stop the loops, stop accepting, drain
// in-flight calls within shutdown_grace, remove our socket file. iSCSI sessions, mounts and the
// installed driver are left untouched. SIGHUP re-reads the config file and applies its log level.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/thread_pool.hpp>
#include <prometheus/registry.h>

#include "agent/api/admin.h"
#include "agent/api/router.h"
#include "agent/app/sleeper.h"
#include "agent/backend/monitor.h"
#include "agent/config/config.h"
#include "agent/controller/attacher.h"
#include "agent/csi/controller.h"
#include "agent/csi/identity.h"
#include "agent/csi/metrics.h"
#include "agent/csi/node.h"
#include "agent/csi/server.h"
#include "agent/flexvolume/service.h"
#include "agent/http/server.h"
#include "agent/installer/installer.h"
#include "agent/keeper/keeper.h"
#include "agent/kmsg/kmsg.h"
#include "agent/lifecycle/notifier.h"
#include "agent/mount/metrics.h"
#include "agent/multipath/dmsetup.h"
#include "agent/ownership/lease.h"
#include "agent/udev/udev_monitor.h"
#include "agent/volume/manager.h"
#include "base/logging.h"
#include "base/process/process_runner.h"
#include "metrics/handler.h"
#include "metrics/readiness.h"
#include "plugins/edf/client.h"
#include "plugins/edf/transport.h"

namespace datera::app {

/// Installer options derived from the agent config (shared with `uninstall-driver`).
installer::Options installer_options(const config::Config& cfg);

class Application {
 public:
  Application(config::Config cfg, std::string config_path, LogFactory& logs,
              std::unique_ptr<lifecycle::Notifier> notifier);
  ~Application();

  /// Runs until shutdown; returns the process exit code.
  int run();

 private:
  // Wiring: one function per subsystem, called in this order by wire().
  Status wire();
  void wire_installer();
  Status wire_array();
  Status wire_data_path();
  Status wire_initiator();  ///< part of wire_data_path()
  void wire_ownership();
  void wire_volumes();
  void wire_keeper();
  void wire_api();
  /// The CSI front end (csi.enabled): its handlers over the volume core and the grants, and the
  /// gRPC server that start() serves after reconcile.
  void wire_csi();

  // The start phases (phases.h), run in order by start().
  boost::asio::awaitable<void> start();
  boost::asio::awaitable<Status> bind();
  boost::asio::awaitable<Status> find_data_path();
  boost::asio::awaitable<Status> reconcile();
  boost::asio::awaitable<Status> serve();
  boost::asio::awaitable<Status> watch();
  boost::asio::awaitable<Status> handle_signals();
  boost::asio::awaitable<Status> install_driver();
  boost::asio::awaitable<Status> monitor_backend();

  /// Pushes how to undo what a phase just started; shutdown() runs the stack in reverse.
  void on_stop(std::function<void()> stop);
  void on_stop_await(std::function<boost::asio::awaitable<void>()> stop);
  boost::asio::awaitable<void> unwind();
  boost::asio::awaitable<void> fail_startup(std::string message);
  boost::asio::awaitable<void> shutdown();

  // Long-running loops; each ends when its Sleeper is stopped.
  boost::asio::awaitable<void> wait_for_signals();
  boost::asio::awaitable<void> watchdog_loop(std::chrono::microseconds interval);
  boost::asio::awaitable<void> renew_leases_forever();
  boost::asio::awaitable<void> trim_memory_forever();
  /// Controller mode: registers this node's IQN under its node's name (retried until it works).
  boost::asio::awaitable<void> register_initiator();
  void reload_log_level();
  decltype(keeper::KeeperHooks::check) access_check();

  config::Config cfg_;
  std::string config_path_;
  LogFactory& logs_;
  LoggerPtr log_;
  std::unique_ptr<lifecycle::Notifier> notifier_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  int exit_code_ = 0;
  bool notified_ready_ = false;
  bool drained_clean_ = true;  ///< the API's in-flight calls all ended within shutdown_grace
  bool multipathd_ = false;    ///< multipathd runs on this node (seen at start-up)
  boost::asio::ip::tcp::endpoint metrics_endpoint_;
  std::vector<std::function<boost::asio::awaitable<void>()>> stops_;

  // The environment every service is built on.
  boost::asio::io_context ioc_{1};
  boost::asio::thread_pool pool_{2};  ///< blocking file work; never the event loop
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  metrics::Readiness readiness_;
  http::Metrics api_probe_;
  http::Metrics metrics_http_probe_;
  http::Metrics probes_http_probe_;
  flexvolume::Metrics flex_probe_;
  installer::Metrics installer_probe_;
  process::ProcessRunnerPtr runner_;

  // wire_installer()
  std::unique_ptr<installer::Installer> installer_;
  std::unique_ptr<installer::FileWatcher> watcher_;
  // wire_array(): the default Datera array (optional) and every array volumes name.
  edf::BackendTarget default_backend_;  ///< empty host without backend.server
  std::unique_ptr<edf::Metrics> edf_probe_;
  std::unique_ptr<edf::Transport> edf_transport_;
  std::unique_ptr<edf::Client> edf_client_;
  std::unique_ptr<backend::Metrics> backend_probe_;
  std::unique_ptr<backend::Monitor> backend_monitor_;
  std::unique_ptr<volume::EdfArrays> arrays_;
  // wire_data_path(), wire_initiator()
  std::unique_ptr<volume::Metrics> volume_probe_;
  udev::MonitorPtr udev_;
  std::unique_ptr<mount::Metrics> mount_probe_;  // before mounter_, which uses it
  mount::MounterPtr mounter_;
  std::unique_ptr<edf::Transport> sim_transport_;  ///< loop initiator only
  initiator::InitiatorPtr initiator_;
  std::unique_ptr<multipath::Metrics> multipath_probe_;
  std::unique_ptr<multipath::Dmsetup> multipath_;
  std::unique_ptr<volume::Journal> journal_;
  // wire_ownership()
  std::unique_ptr<ownership::Coordinator> coordinator_;
  // wire_volumes()
  std::unique_ptr<volume::Manager> volumes_;
  std::unique_ptr<controller::Metrics> controller_probe_;
  std::unique_ptr<controller::Grants> grants_;
  std::unique_ptr<controller::Attacher> attacher_;
  std::unique_ptr<flexvolume::Service> flex_;
  std::function<void()> serve_volume_calls_;  ///< after reconcile: the FlexVolume calls go through
  // wire_keeper()
  std::unique_ptr<keeper::Metrics> keeper_probe_;
  std::unique_ptr<kmsg::Metrics> kmsg_probe_;
  std::unique_ptr<kmsg::KernelLog> kernel_log_;
  kmsg::FsFailures fs_failures_;  ///< from the kernel log, for the keeper
  kmsg::Silences silences_;       ///< sessions' ping timeouts, from the kernel log, for the keeper
  std::unique_ptr<keeper::Keeper> keeper_;
  // wire_api()
  std::unique_ptr<api::Admin> admin_;
  std::unique_ptr<api::Router> router_;
  std::unique_ptr<http::Server> api_server_;
  std::unique_ptr<metrics::Handler> metrics_handler_;
  std::unique_ptr<http::Server> metrics_server_;
  std::unique_ptr<http::Server> probe_server_;  ///< metrics.probe_listen (loopback), if configured
  // wire_csi(): the handlers before the server, so they outlive it.
  std::unique_ptr<csi::Metrics> csi_metrics_;
  std::unique_ptr<csi::Stats> csi_stats_;
  std::unique_ptr<csi::Identity> csi_identity_;
  std::unique_ptr<csi::Controller> csi_controller_;
  std::unique_ptr<csi::Node> csi_node_;
  std::unique_ptr<csi::Server> csi_server_;

  bool reconciled_ = false;  ///< the reconcile phase ran (CSI's Probe)

  Sleeper watchdog_sleep_{ioc_.get_executor()};
  Sleeper lease_sleep_{ioc_.get_executor()};
  Sleeper registration_sleep_{ioc_.get_executor()};
  Sleeper trim_sleep_{ioc_.get_executor()};
};

}  // namespace datera::app

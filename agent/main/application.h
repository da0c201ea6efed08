#pragma once

// The composition root: builds every service by constructor injection, starts them in order, and
// stops them in reverse. Nothing else in the agent constructs a service.
//
// Start-up: API socket (fatal if taken) -> metrics port and, when configured, the loopback probe
// port (fatal if taken) -> driver install and
// self-test through the socket (retried while failing; /readyz waits for it) -> READY=1 to systemd.
// Shutdown (SIGTERM/SIGINT): stop accepting, drain in-flight calls within shutdown_grace, remove
// our socket file, exit 0. iSCSI sessions, mounts and the installed driver are left untouched.
// SIGHUP re-reads the config file and applies its log level.

#include <chrono>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <prometheus/registry.h>

#include "agent/api/router.h"
#include "agent/backend/monitor.h"
#include "agent/common/logging.h"
#include "agent/config/config.h"
#include "agent/controller/attacher.h"
#include "agent/flexvolume/service.h"
#include "agent/http/server.h"
#include "agent/installer/installer.h"
#include "agent/keeper/keeper.h"
#include "agent/kmsg/kmsg.h"
#include "agent/lifecycle/notifier.h"
#include "agent/mount/probe.h"
#include "agent/multipath/dmsetup.h"
#include "agent/ownership/lease.h"
#include "agent/process/process_runner.h"
#include "agent/udev/udev_monitor.h"
#include "agent/volume/manager.h"
#include "metrics/handler.h"
#include "metrics/readiness.h"
#include "plugins/datera/client.h"
#include "plugins/datera/transport.h"

namespace datera::app {

/// Installer options derived from the agent config (shared with `uninstall-driver`).
installer::Options installer_options(const config::Config& cfg);

class Application : public api::StatusSource, public api::Maintenance {
 public:
  Application(config::Config cfg, std::string config_path, LogFactory& logs,
              std::unique_ptr<lifecycle::Notifier> notifier);
  ~Application() override;

  /// Runs until shutdown; returns the process exit code.
  int run();

  nlohmann::json status() override;
  nlohmann::json volumes() override;
  boost::asio::awaitable<nlohmann::json> release(std::string volume, bool force) override;
  boost::asio::awaitable<nlohmann::json> drain(bool force) override;

 private:
  boost::asio::awaitable<void> start();
  boost::asio::awaitable<void> handle_signals();
  boost::asio::awaitable<void> watchdog_loop(std::chrono::microseconds interval);
  boost::asio::awaitable<void> shutdown();
  /// Builds the default-array client and monitor when `backend.server` is set.
  Status make_backend();
  /// Builds the data path: udev monitor, mounter, initiator, journal, volume manager.
  Status make_volumes();
  void reload_log_level();

  config::Config cfg_;
  std::string config_path_;
  LogFactory& logs_;
  LoggerPtr log_;
  std::unique_ptr<lifecycle::Notifier> notifier_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  int exit_code_ = 0;
  bool notified_ready_ = false;
  bool stopping_ = false;
  bool volumes_served_ = false;  ///< the journal is reconciled; volume calls are served

  boost::asio::io_context ioc_{1};
  boost::asio::thread_pool pool_{2};  ///< blocking file work; never the event loop
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  metrics::Readiness readiness_;

  http::Probe api_probe_;
  http::Probe metrics_http_probe_;
  http::Probe probes_http_probe_;
  flexvolume::Probe flex_probe_;
  installer::Probe installer_probe_;

  process::ProcessRunnerPtr runner_;
  flexvolume::Service flex_;
  api::Router router_;
  http::Server api_server_;
  metrics::Handler metrics_handler_;
  http::Server metrics_server_;
  http::Server probe_server_;  ///< metrics.probe_listen (loopback); listens only when configured
  installer::Installer installer_;
  std::unique_ptr<installer::FileWatcher> watcher_;

  // The default Datera array (optional).
  std::unique_ptr<edf::Probe> edf_probe_;
  std::unique_ptr<edf::Transport> edf_transport_;
  std::unique_ptr<edf::Client> edf_client_;
  std::unique_ptr<backend::Probe> backend_probe_;
  std::unique_ptr<backend::Monitor> backend_monitor_;
  // The data path.
  std::unique_ptr<volume::Probe> volume_probe_;
  udev::MonitorPtr udev_;
  std::unique_ptr<mount::Probe> mount_probe_;  // before mounter_, which uses it
  mount::MounterPtr mounter_;
  std::unique_ptr<edf::Transport> sim_transport_;  ///< loop initiator only
  initiator::InitiatorPtr initiator_;
  std::unique_ptr<multipath::Probe> multipath_probe_;
  std::unique_ptr<multipath::Dmsetup> multipath_;
  std::unique_ptr<ownership::Coordinator> coordinator_;
  boost::asio::awaitable<void> renew_leases_forever();
  boost::asio::awaitable<void> trim_memory_forever();
  /// Controller mode: registers this node's IQN under its node's name (retried until it works).
  boost::asio::awaitable<void> register_initiator();
  std::unique_ptr<controller::Probe> controller_probe_;
  std::unique_ptr<controller::Attacher> attacher_;
  std::unique_ptr<volume::Journal> journal_;
  std::unique_ptr<volume::EdfArrays> arrays_;
  std::unique_ptr<volume::Manager> volumes_;
  std::unique_ptr<keeper::Probe> keeper_probe_;
  std::unique_ptr<kmsg::Probe> kmsg_probe_;
  std::unique_ptr<kmsg::KernelLog> kernel_log_;
  kmsg::FsFailures fs_failures_;  ///< from the kernel log, for the keeper
  bool multipathd_ = false;       ///< multipathd runs on this node (seen at start-up)
  kmsg::Silences silences_;       ///< sessions' ping timeouts, from the kernel log, for the keeper
  decltype(keeper::KeeperHooks::check) access_check();
  std::unique_ptr<keeper::Keeper> keeper_;
  boost::asio::steady_timer watchdog_timer_;
};

}  // namespace datera::app

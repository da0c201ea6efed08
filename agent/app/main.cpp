// datera-agent: thin entry point. Parses the command line, loads the config, and hands over to the
// composition root (application.h).

#include <csignal>
#include <cstdio>
#include <iostream>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "agent/app/application.h"
#include "agent/config/config.h"
#include "agent/installer/installer.h"
#include "agent/lifecycle/notifier.h"
#include "base/version.h"

int main(int argc, char** argv) {  // NOLINT(bugprone-exception-escape): an escape is a bug: abort
  using namespace datera;
  CLI::App cli{"datera-agent: node agent for Datera EDF iSCSI volumes (FlexVolume datera/iscsi)"};
  cli.set_version_flag("--version", std::string("datera-agent ") + version::kVersion + " (" +
                                        version::kGitCommit + ", protocol " +
                                        std::to_string(version::kProtocol) + ")");
  std::string config_path;
  std::string log_level;
  cli.add_option("-c,--config", config_path, "YAML configuration file")->check(CLI::ExistingFile);
  cli.add_option("--log-level", log_level, "trace|debug|info|warn|error (overrides the config)");
  auto* uninstall = cli.add_subcommand(
      "uninstall-driver", "remove the installed FlexVolume driver from the plugin dir and exit");
  uninstall->fallthrough();  // `uninstall-driver --config FILE` reads the parent's options
  CLI11_PARSE(cli, argc, argv);

  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  auto cfg = config::load(config_path, config::process_env(), host);
  if (cfg && !log_level.empty()) {
    cfg->log_level = log_level;
    if (auto st = config::validate(*cfg); !st) cfg = st.error();
  }
  if (!cfg) {
    std::cerr << "datera-agent: " << cfg.error().message << "\n";
    return 2;
  }

  if (uninstall->parsed()) {
    const auto options = app::installer_options(*cfg);
    if (auto st = installer::uninstall(options); !st) {
      std::cerr << "datera-agent: uninstall-driver: " << st.error().message << "\n";
      return 1;
    }
    std::cout << "removed " << options.driver_dir() << "\n";
    return 0;
  }

  ::signal(SIGPIPE, SIG_IGN);
  LogFactory logs(cfg->choices.log_level, cfg->choices.log_format);
  app::Application application(std::move(*cfg), config_path, logs,
                               lifecycle::make_systemd_notifier());
  return application.run();
}

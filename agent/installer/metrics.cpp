#include "agent/installer/metrics.h"

namespace datera::installer {

Metrics::Metrics(prometheus::Registry& registry)
    : installs_(prometheus::BuildCounter()
                    .Name("datera_agent_driver_install_total")
                    .Help("Driver install attempts by result")
                    .Register(registry)),
      self_tests_(prometheus::BuildCounter()
                      .Name("datera_agent_driver_self_test_total")
                      .Help("Self-tests of the installed FlexVolume driver by result")
                      .Register(registry)),
      info_(prometheus::BuildGauge()
                .Name("datera_agent_driver_installed_info")
                .Help("The installed FlexVolume driver build; always 1")
                .Register(registry)),
      ready_(prometheus::BuildGauge()
                 .Name("datera_agent_driver_ready")
                 .Help("1 when the FlexVolume driver is installed and passed its self-test")
                 .Register(registry)
                 .Add({})),
      foreign_replaced_(prometheus::BuildCounter()
                            .Name("datera_agent_driver_foreign_files_replaced_total")
                            .Help("Non-regular files (FIFO, symlink, socket, device node) found "
                                  "at the driver's paths and replaced by the agent's own")
                            .Register(registry)
                            .Add({})) {}

void Metrics::install(const std::string& result) {
  installs_.Add({{"result", result}}).Increment();
}

void Metrics::self_test(bool ok) {
  self_tests_.Add({{"result", ok ? "ok" : "failed"}}).Increment();
}

void Metrics::installed(const std::string& version, const std::string& digest) {
  if (current_info_ != nullptr) info_.Remove(current_info_);
  current_info_ = &info_.Add({{"version", version}, {"digest", digest}});
  current_info_->Set(1);
}

}  // namespace datera::installer

#pragma once

#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

namespace datera::installer {

/// datera_agent_driver_install_total{result=installed|updated|unchanged|failed}
/// datera_agent_driver_self_test_total{result=ok|failed}
/// datera_agent_driver_installed_info{version,digest} 1 for the installed build
/// datera_agent_driver_ready 1 when installed and self-tested
/// datera_agent_driver_foreign_files_replaced_total: a FIFO, symlink, socket or device node found
///   at the driver's paths and replaced (someone or something else put it there)
class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  void install(const std::string& result);
  void self_test(bool ok);
  void installed(const std::string& version, const std::string& digest);
  void ready(bool ok) { ready_.Set(ok ? 1 : 0); }
  void foreign_replaced() { foreign_replaced_.Increment(); }

 private:
  prometheus::Family<prometheus::Counter>& installs_;
  prometheus::Family<prometheus::Counter>& self_tests_;
  prometheus::Family<prometheus::Gauge>& info_;
  prometheus::Gauge* current_info_ = nullptr;
  prometheus::Gauge& ready_;
  prometheus::Counter& foreign_replaced_;
};

}  // namespace datera::installer

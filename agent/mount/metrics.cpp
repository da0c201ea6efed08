#include "agent/mount/metrics.h"

namespace datera::mount {

Metrics::Metrics(prometheus::Registry& registry)
    : repairs_(prometheus::BuildCounter()
                   .Name("datera_agent_filesystem_repairs_total")
                   .Help("Filesystem checks and repairs run before or after a staging mount, by "
                         "filesystem and result")
                   .Register(registry)) {
  for (const char* result : {"clean", "repaired", "failed"})
    repairs_.Add({{"fs", "ext4"}, {"result", result}});
  for (const char* result : {"repaired", "failed"})
    repairs_.Add({{"fs", "xfs"}, {"result", result}});
}

void Metrics::repair(const std::string& fs, const std::string& result) {
  repairs_.Add({{"fs", fs}, {"result", result}}).Increment();
}

}  // namespace datera::mount

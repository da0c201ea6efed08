#pragma once

#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

namespace datera::mount {

/// datera_agent_filesystem_repairs_total{fs,result}: the repair tools the mounter ran.
///   fs="ext4": fsck.ext4 -p before every read-write mount; result clean | repaired | failed.
///   fs="xfs":  xfs_repair after a mount failed with EUCLEAN; result repaired | failed.
/// These five series exist at 0 from start-up, so increase() sees the first repair.
class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  void repair(const std::string& fs, const std::string& result);

 private:
  prometheus::Family<prometheus::Counter>& repairs_;
};

}  // namespace datera::mount

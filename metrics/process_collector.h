#pragma once

// The standard process metrics, under the names every Prometheus client library uses (so stock
// dashboards and alerts apply), read from /proc/self at scrape time:
//   process_resident_memory_bytes, process_virtual_memory_bytes, process_cpu_seconds_total,
//   process_open_fds, process_max_fds, process_start_time_seconds

#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace datera::metrics {

struct ProcSample {
  double resident_bytes = 0;
  double virtual_bytes = 0;
  double cpu_seconds = 0;
  double open_fds = 0;
  double max_fds = 0;
  double start_time_seconds = 0;
};

/// Parses /proc/<pid>/stat text (fields after the command name) plus the boot time; pure.
bool parse_proc_stat(const std::string& stat, double boot_time, long ticks_per_second,
                     long page_size, ProcSample& out);

class ProcessCollector : public prometheus::Collectable {
 public:
  /// `proc_dir` is "/proc/self" in production; tests point it elsewhere.
  explicit ProcessCollector(std::string proc_dir = "/proc/self",
                            std::string proc_stat = "/proc/stat");
  std::vector<prometheus::MetricFamily> Collect() const override;
  ProcSample sample() const;

 private:
  std::string proc_dir_;
  std::string proc_stat_;
};

}  // namespace datera::metrics

#include "metrics/process_collector.h"

#include <dirent.h>
#include <fstream>
#include <sstream>
#include <sys/resource.h>
#include <unistd.h>

namespace datera::metrics {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

prometheus::MetricFamily single(const std::string& name, const std::string& help,
                                prometheus::MetricType type, double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(m);
  return f;
}

}  // namespace

bool parse_proc_stat(const std::string& stat, double boot_time, long ticks_per_second,
                     long page_size, ProcSample& out) {
  // The command name (field 2) may contain spaces and parentheses: skip to the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos || ticks_per_second <= 0) return false;
  std::istringstream in(stat.substr(close + 2));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string tok; in >> tok;) f.push_back(tok);
  if (f.size() < 22) return false;
  try {
    const double utime = std::stod(f[11]);      // field 14
    const double stime = std::stod(f[12]);      // field 15
    const double starttime = std::stod(f[19]);  // field 22, ticks after boot
    out.cpu_seconds = (utime + stime) / static_cast<double>(ticks_per_second);
    out.start_time_seconds = boot_time + starttime / static_cast<double>(ticks_per_second);
    out.virtual_bytes = std::stod(f[20]);                                    // field 23
    out.resident_bytes = std::stod(f[21]) * static_cast<double>(page_size);  // field 24
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

ProcessCollector::ProcessCollector(std::string proc_dir, std::string proc_stat)
    : proc_dir_(std::move(proc_dir)), proc_stat_(std::move(proc_stat)) {}

ProcSample ProcessCollector::sample() const {
  ProcSample s;
  double boot_time = 0;
  std::istringstream stat(slurp(proc_stat_));
  for (std::string line; std::getline(stat, line);) {
    if (line.rfind("btime ", 0) == 0) boot_time = std::stod(line.substr(6));
  }
  parse_proc_stat(slurp(proc_dir_ + "/stat"), boot_time, ::sysconf(_SC_CLK_TCK),
                  ::sysconf(_SC_PAGESIZE), s);
  if (DIR* d = ::opendir((proc_dir_ + "/fd").c_str()); d != nullptr) {
    int n = 0;
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    s.open_fds = n - 1;  // minus the fd opendir itself holds
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) s.max_fds = static_cast<double>(rl.rlim_cur);
  return s;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  const auto s = sample();
  return {
      single("process_resident_memory_bytes", "Resident memory size in bytes", MetricType::Gauge,
             s.resident_bytes),
      single("process_virtual_memory_bytes", "Virtual memory size in bytes", MetricType::Gauge,
             s.virtual_bytes),
      single("process_cpu_seconds_total", "User and system CPU time in seconds",
             MetricType::Counter, s.cpu_seconds),
      single("process_open_fds", "Open file descriptors", MetricType::Gauge, s.open_fds),
      single("process_max_fds", "Maximum open file descriptors", MetricType::Gauge, s.max_fds),
      single("process_start_time_seconds", "Start time since the Unix epoch in seconds",
             MetricType::Gauge, s.start_time_seconds),
  };
}

}  // namespace datera::metrics

#pragma once

// The host's mount table and loop devices as host-tier tests and harnesses see them: what is
// mounted where (from /proc/self/mountinfo), which loop devices sit on files under a directory,
// and clean-up of whatever a test left behind.

#include <dirent.h>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <sys/mount.h>
#include <vector>

namespace datera::testing {

struct MountInfo {
  std::string target;
  std::string source_dev;  ///< major:minor
  bool read_only = false;
};

inline std::vector<MountInfo> mountinfo() {
  std::vector<MountInfo> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string id, parent, devno, root, target, opts;
    ss >> id >> parent >> devno >> root >> target >> opts;
    out.push_back({target, devno, opts.rfind("ro", 0) == 0});
  }
  return out;
}

/// The visible (last) mount at `target`.
inline std::optional<MountInfo> mount_at(const std::string& target) {
  std::optional<MountInfo> found;
  for (auto& m : mountinfo()) {
    if (m.target == target) found = m;
  }
  return found;
}

inline bool is_mounted(const std::string& target) {
  return mount_at(target).has_value();
}

/// Unmounts everything mounted under `root`, the most recent first.
inline void unmount_under(const std::string& root) {
  auto all = mountinfo();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->target.rfind(root, 0) == 0) ::umount2(it->target.c_str(), 0);
  }
}

/// Loop devices whose backing file lives under `dir`.
inline std::vector<std::string> loops_under(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir("/sys/block");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind("loop", 0) != 0) continue;
    std::ifstream in("/sys/block/" + name + "/loop/backing_file");
    std::string backing;
    if (std::getline(in, backing) && backing.rfind(dir, 0) == 0) out.push_back("/dev/" + name);
  }
  ::closedir(d);
  return out;
}

}  // namespace datera::testing

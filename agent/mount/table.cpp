#include <algorithm>

#include "agent/mount/mounter.h"

namespace datera::mount {

MountTable::MountTable(std::vector<MountEntry> entries) : entries_(std::move(entries)) {
  by_target_.reserve(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) {
    const MountEntry& e = entries_[i];
    by_target_[e.target] = i;  // later entries are mounted on top
    by_device_.emplace(std::make_pair(e.major, e.minor), i);
    by_source_.emplace(e.source, i);
  }
}

const MountEntry* MountTable::at(const std::string& target) const {
  const auto it = by_target_.find(target);
  return it == by_target_.end() ? nullptr : &entries_[it->second];
}

std::vector<const MountEntry*> MountTable::of_device(unsigned major, unsigned minor) const {
  std::vector<const MountEntry*> out;
  auto [from, to] = by_device_.equal_range({major, minor});
  for (auto it = from; it != to; ++it) out.push_back(&entries_[it->second]);
  return out;  // a multimap keeps equal keys in insertion (table) order
}

std::vector<const MountEntry*> MountTable::of_source(const std::string& source) const {
  std::vector<size_t> at;
  auto [from, to] = by_source_.equal_range(source);
  for (auto it = from; it != to; ++it) at.push_back(it->second);
  std::sort(at.begin(), at.end());
  std::vector<const MountEntry*> out;
  out.reserve(at.size());
  for (size_t i : at) out.push_back(&entries_[i]);
  return out;
}

}  // namespace datera::mount

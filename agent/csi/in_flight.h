#pragma once

// CSI asks a plugin to answer ABORTED while an operation on the same volume is in flight (the
// sidecars and kubelet retry with backoff), rather than queue behind it. The volume core would
// serialize them anyway; this makes the overlap visible and bounded. Single-threaded (the agent's
// event loop), so a plain set.

#include <set>
#include <string>

namespace datera::csi {

class InFlight {
 public:
  /// Holds the volume's slot until destroyed; ok() is false when another call holds it.
  class Slot {
   public:
    Slot(InFlight& owner, std::string volume)
        : owner_(owner), volume_(std::move(volume)), ok_(owner_.busy_.insert(volume_).second) {}
    ~Slot() {
      if (ok_) owner_.busy_.erase(volume_);
    }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    bool ok() const { return ok_; }

   private:
    InFlight& owner_;
    std::string volume_;
    bool ok_;
  };

  size_t size() const { return busy_.size(); }

 private:
  std::set<std::string> busy_;
};

}  // namespace datera::csi

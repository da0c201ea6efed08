#pragma once

// What NodeGetVolumeStats reports about a published volume: its filesystem's usage, or a block
// volume's size. An interface, so the node handler is unit tested without a kernel; the Linux one
// (linux_stats.cpp) runs statvfs(2) and BLKGETSIZE64 on the agent's worker pool, never the loop.

#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "base/result.h"

namespace datera::csi {

struct Usage {
  int64_t total_bytes = 0;
  int64_t available_bytes = 0;
  int64_t used_bytes = 0;
  int64_t total_inodes = 0;  ///< 0 for a block volume
  int64_t free_inodes = 0;
  int64_t used_inodes = 0;
};

class Stats {
 public:
  virtual ~Stats() = default;
  /// The filesystem mounted at `path` (kubelet's checked target or staging path).
  virtual boost::asio::awaitable<Result<Usage>> filesystem(std::string path) = 0;
  /// The size of the block device `device` (a /dev path the journal names).
  virtual boost::asio::awaitable<Result<Usage>> block(std::string device) = 0;
};

std::unique_ptr<Stats> make_linux_stats(boost::asio::thread_pool& pool);

}  // namespace datera::csi

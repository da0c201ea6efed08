#pragma once

// The loop initiator: development and tests only, never production. It stands in for iSCSI on
// machines whose kernel has no SCSI (the development VMs): a volume of datera-sim's `file` backend
// is a sparse file, and "logging in" attaches that file to a loop device, but only after the
// simulator's GET /_sim/exports?initiator=<this node's IQN> lists the volume, i.e. the node is in
// the volume's ACL and the volume is online. So the ACL is enforced just as an array would.
//
// The device is verified from the kernel's side: /sys/block/loopN/loop/backing_file must be
// `<volume uuid>.img`, whatever the simulator said; a misrouted export is refused.

#include <string>

#include <boost/asio/thread_pool.hpp>

#include "base/logging.h"
#include "plugins/edf/transport.h"
#include "plugins/initiator/initiator.h"

namespace datera::initiator {

struct LoopOptions {
  std::string iqn;                  ///< this node's initiator IQN (required)
  std::string sysfs_root = "/sys";  ///< tests
  std::string dev_root = "/dev";
  std::chrono::milliseconds request_timeout{10'000};
};

/// `sim` is the transport to datera-sim (its /_sim/exports endpoint); `pool` runs the ioctls.
InitiatorPtr make_loop_initiator(edf::Transport& sim, boost::asio::thread_pool& pool,
                                 LoopOptions options, LoggerPtr log);

}  // namespace datera::initiator

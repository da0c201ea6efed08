#pragma once

// The `lio` export backend: every volume becomes a real Linux-IO (LIO) iSCSI target, configured
// through configfs, so the kernel test tier's initiator logs in to the kernel's own target.
//
//   volume        -> core/fileio_0/<uuid>: a fileio backstore on the volume's sparse file (the
//                    file backend's layout), with wwn/vpd_unit_serial = the volume uuid, so the LUN
//                    serial the initiator reads is the uuid the agent verifies
//   app instance  -> iscsi/<storage instance IQN>/tpgt_1, enabled while online, lun_0
//   ACL           -> tpgt_1/acls/<initiator IQN> with lun_0 mapped; removing an initiator removes
//                    its node ACL, which makes LIO end that initiator's sessions, as an array does
//   access IPs    -> tpgt_1/np/<ip>:3260 portals, created from inside the network namespace of the
//                    storage node holding the VIPs (LIO listens in the creator's namespace), with
//                    the address moved there and a gratuitous ARP sent (failover, rebalance)
//
// It needs configfs mounted where `ip netns exec` can still see it (that command remounts /sys;
// the kernel tier mounts configfs at /cfg). Everything here is blocking: the Committer runs it on
// its worker thread. Commands run by argv, never through a shell.

#include <map>
#include <string>
#include <vector>

#include "base/logging.h"
#include "tools/datera-sim/runtime.h"

namespace datera::sim {

struct LioNode {
  std::string netns;  ///< network namespace of this storage node
  std::string iface;  ///< its interface that carries the VIPs
};

struct LioOptions {
  std::string configfs = "/sys/kernel/config/target";  ///< the target/ dir inside configfs
  std::string file_dir;                                ///< volumes' sparse files
  std::map<std::string, LioNode> nodes;                ///< storage node name -> namespace
  int prefix_len = 24;                                 ///< of the VIPs added to interfaces
  std::string ip = "/sbin/ip";
  std::string arping = "/bin/arping";
};

class LioBackend : public ExportBackend {
 public:
  LioBackend(LioOptions options, LoggerPtr log);

  /// Checks configfs and the namespaces; creates the file dir.
  Status prepare();
  Status reconcile(const std::vector<ExportView>& exports,
                   const std::vector<SnapshotView>& snapshots) override;
  std::string path_for(const ExportView& e) const override { return files_.path_for(e); }

 private:
  Status ensure_volume(const ExportView& e);
  Status ensure_acls(const ExportView& e, const std::string& tpg);
  Status ensure_portals(const ExportView& e, const std::string& tpg);
  Status remove_target(const std::string& iqn);
  Status move_vip(const std::string& ip, const std::string& from, const std::string& to);
  /// Runs argv; an Error carries its stderr when it fails.
  Status run(const std::vector<std::string>& argv) const;
  Status in_netns(const std::string& netns, std::vector<std::string> argv) const;

  LioOptions options_;
  LoggerPtr log_;
  FileBackend files_;
  std::map<std::string, std::string> vip_netns_;  ///< VIP -> namespace holding it now
};

}  // namespace datera::sim

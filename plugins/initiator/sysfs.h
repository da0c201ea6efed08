#pragma once

// What the kernel shows about iSCSI sessions and their SCSI devices, read from sysfs below a
// configurable root ("/" in production, a recorded fake tree in a temp dir in tests):
//
//   <root>/sys/class/iscsi_session/sessionN/{targetname,state}
//   <root>/sys/class/iscsi_session/sessionN/device -> .../hostH/sessionN   (H from this path)
//   <root>/sys/class/iscsi_session/sessionN/device/targetH:0:T/H:0:T:L/{vpd_pg80,wwid,state}
//   <root>/sys/class/iscsi_session/sessionN/device/targetH:0:T/H:0:T:L/block/sdX/dev
//   <root>/sys/class/iscsi_connection/connectionN:0/{persistent_address,persistent_port}
//   <root>/sys/class/scsi_host/hostH/scan                                    (written: "0 0 L")
//
// This is the walk open-iscsi's own iscsi_sysfs_for_each_device does. Every call is synchronous
// and may block on the kernel (a LUN scan sends SCSI commands over the network), so code on the
// event loop calls it through run_blocking(). The reader holds no state: it is safe from any
// thread. A session or device that vanishes mid-walk is skipped, not an error.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace datera::initiator {

struct SysfsSession {
  int sid = -1;
  std::string target_iqn;
  std::string state;    ///< LOGGED_IN, FAILED, FREE ("" if unreadable)
  std::string address;  ///< persistent_address (the login portal, not a redirect)
  int port = -1;        ///< persistent_port
  int host = -1;        ///< SCSI host number, -1 if not found
  std::string iface;    ///< the open-iscsi iface it was logged in through ("" if unreadable)
};

/// One SCSI device (LUN) of a session with its block device, if the kernel made one yet.
struct SysfsLun {
  int host = -1, channel = 0, target = 0, lun = 0;
  std::string dir;    ///< the H:C:T:L directory
  std::string block;  ///< "sdc"; "" while the disk is not registered yet
  unsigned major = 0, minor = 0;
  std::string scsi_state;  ///< running, blocked, transport-offline...
};

/// The unit serial from a VPD page 0x80 as the kernel exposes it in `vpd_pg80` (4-byte header:
/// peripheral byte, page code 0x80, 16-bit length; then ASCII, space/NUL padded). nullopt when the
/// bytes are not a page 0x80.
std::optional<std::string> parse_vpd_pg80(std::string_view bytes);

/// The serial inside a `wwid` of the T10 vendor-id form ("t10.<vendor 8><product 16><serial>",
/// the kernel collapses blanks): the last blank-separated word. nullopt for naa./eui. forms, which
/// do not hold the whole serial.
std::optional<std::string> serial_from_t10_wwid(std::string_view wwid);

/// Serial equality as SCSI presents it: surrounding blanks/NULs ignored, hex case ignored. Nothing
/// else is forgiven: "abc-1" never matches "abc1".
bool serials_match(std::string_view device_serial, std::string_view expected);

class SysfsReader {
 public:
  explicit SysfsReader(std::string root = "/");

  const std::string& root() const { return root_; }
  /// `<root>` + an absolute path ("/sys/..." or "/dev/...").
  std::string path(std::string_view absolute) const;

  /// All sessions, sorted by sid. No iscsi_session class dir (no iscsi module) means none.
  Result<std::vector<SysfsSession>> sessions() const;
  /// One session's LUNs (sorted), with block devices where present.
  std::vector<SysfsLun> luns(int sid) const;
  /// Asks the SCSI layer to re-read one disk's capacity (writes "1" to `<lun dir>/rescan`).
  Status rescan(const SysfsLun& lun) const;
  /// Asks the kernel to scan one LUN: "0 0 <lun>" into scsi_host/host<H>/scan.
  Status scan_lun(int host, int lun) const;
  /// The device's unit serial: vpd_pg80 first, else a t10. wwid. nullopt when neither says it.
  std::optional<std::string> serial(const SysfsLun& lun) const;
  /// The raw wwid attribute (for messages), "" if unreadable.
  std::string wwid(const SysfsLun& lun) const;
  /// The session ids present now (sorted); none without the iscsi_session class dir.
  std::vector<int> session_ids() const;
  /// One attribute file, trimmed; nullopt when it cannot be read (gone).
  std::optional<std::string> attr(const std::string& file) const;

 private:
  std::string root_;
};

}  // namespace datera::initiator

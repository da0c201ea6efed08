#pragma once

// Validation of everything that comes from outside (EDF, FlexVolume options, the node's config)
// before it reaches an argv or a sysfs path: iSCSI names, portals, LUNs, serials. Shared by both
// initiator implementations. Pure functions, no I/O.

#include <string>
#include <string_view>

#include "base/result.h"

namespace datera::initiator {

/// An iSCSI name as RFC 3720 §3.2.6 allows it, restricted to ASCII: "iqn.YYYY-MM.reversed.domain"
/// with an optional ":identifier" ([A-Za-z0-9.:_-]), "eui." + 16 hex digits, or "naa." + 16 or 32
/// hex digits; at most 223 bytes. Never starts with '-', never holds spaces or '/'.
Status validate_iqn(std::string_view iqn);

/// A portal as given by EDF: "10.0.0.5", "10.0.0.5:3260", "[fd00::5]:3260" or "fd00::5".
/// Host names are refused (EDF hands out access IPs, and iscsiadm would resolve a name once only).
struct Portal {
  std::string address;  ///< "10.0.0.5" or "fd00::5" (no brackets), as sysfs persistent_address
  unsigned port = 3260;
  bool ipv6 = false;

  /// The form iscsiadm -p takes and Session::portal uses: "10.0.0.5:3260", "[fd00::5]:3260".
  std::string str() const;
  bool operator==(const Portal&) const = default;
};
Result<Portal> parse_portal(std::string_view text);

/// LUN numbers we can scan one by one ("0 0 L" into scsi_host/hostH/scan): 0..16383.
Status validate_lun(int lun);

/// The LUN serial we verify a device against (the EDF volume uuid): 1..64 printable ASCII
/// characters without spaces.
Status validate_serial(std::string_view serial);

/// The value of the last `InitiatorName=` line of an initiatorname.iscsi file ('#' comments and
/// surrounding blanks ignored), validated. Errors say the file content was not usable.
Result<std::string> parse_initiator_name(std::string_view file_text);

}  // namespace datera::initiator

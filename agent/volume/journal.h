#pragma once

// The per-volume journal: what this node intends and has done for each volume it serves, written
// before and after every step so a crash at any point can be finished or rolled back at start-up.
// One file per volume, `<dir>/<volume>.json`, replaced atomically (temp file, fsync, rename, fsync
// of the directory) and checksummed, so a torn or edited record is detected, never half-trusted.
//
// A volume on the agent's default array is recorded as such (`"default": true`), without
// credentials: they are the agent's current ones at each use, so a rotated password_file applies.
// A volume that brought its own (a secretRef, serverUser/serverPasswd) keeps them in its record
// (unmount gets no options from kubelet, yet must reach the array), refreshed by the next mount
// that carries them: the directory is 0700 and the files 0600, root only, and no log line, metric
// or status output ever includes them.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <nlohmann/json.hpp>

#include "base/logging.h"
#include "base/result.h"
#include "plugins/edf/options.h"
#include "plugins/initiator/initiator.h"

namespace datera::volume {

/// Where a volume is in its life on this node.
enum class Phase {
  attaching,  ///< a mount is in progress (or crashed mid-way)
  attached,   ///< the staging mount is up; `pods` lists its bind mounts
  detaching,  ///< the last pod left; tear-down is in progress (or crashed mid-way)
};
const char* to_string(Phase p);

/// Who drives the volume on this node: how access is gained and where the volume is staged.
enum class Mode {
  agent,       ///< FlexVolume, attach: false: this node's lease and ACL entry; the agent's staging
  controller,  ///< FlexVolume, attach: true: the controller's grant; kubelet's device mount path
  csi,         ///< CSI: the controller's grant (ControllerPublishVolume); kubelet's staging path
};
const char* to_string(Mode m);

struct PodMount {
  std::string dir;  ///< kubelet's pod volume dir
  bool read_only = false;
};

struct Record {
  std::string volume;  ///< app instance name (also the file name)
  Phase phase = Phase::attaching;
  Mode mode = Mode::agent;
  /// Not stored: false for a record of an agent older than modes (its mode is the FlexVolume mode
  /// configured, filled in at load).
  bool mode_recorded = true;
  /// CSI raw block (volumeMode: Block): staged = logged in and mapped, no filesystem; each publish
  /// binds the device itself onto kubelet's target file.
  bool block = false;
  /// The array the volume was attached from: the default array (is_default, no credentials) or
  /// another one with the volume's own credentials.
  edf::BackendTarget backend;
  std::string fs_type = "xfs";
  std::vector<std::string> mount_options;
  bool delete_on_release = false;
  std::string initiator_iqn;  ///< this node's IQN as put into the ACL
  initiator::Target target;   ///< filled once the array answered
  std::string device;         ///< what the staging mount is on (the map, or the session disk)
  /// The volume's dm-multipath map ("datera-<uuid>"), "" when mounted on the raw session disk.
  /// Written before the map is created, so a crash never leaves a map the journal cannot name.
  std::string map;
  std::string staging;  ///< the per-volume staging mount point
  std::vector<PodMount> pods;
  std::string pending_pod;  ///< the pod dir of the mount or unmount in progress
  uint64_t epoch = 0;       ///< the ownership lease this node holds (0 = none, or ownership off)
  /// Set (and journaled) before this node's IQN is added to the ACL: until then a release has
  /// nothing on the array to undo. Records of older agents count as true.
  bool acl_added = false;
  /// The snapshot freeze request (freeze.h) whose FIFREEZE holds the staging mount now: journaled
  /// before the freeze, cleared after the thaw, so an agent that died in between thaws at start.
  std::string frozen;
  uint64_t generation = 0;  ///< bumped by every save

  bool has_pod(const std::string& dir) const;
  /// The record without credentials, for status output.
  nlohmann::json public_json() const;
};

class Journal {
 public:
  Journal(std::string dir, boost::asio::thread_pool& pool, LoggerPtr log);

  /// Creates the directory (0700).
  Status prepare() const;
  /// Writes `rec` atomically, off the event loop; bumps its generation first.
  boost::asio::awaitable<Status> save(Record& rec);
  boost::asio::awaitable<Status> remove(const std::string& volume);

  /// The start-up crash guard: note_attempt() counts one more try at handling `volume` (written
  /// before the handling starts), clear_attempt() forgets the count once it ended, and attempts()
  /// reads it (start-up only; blocking): a count left over means the agent died in between.
  boost::asio::awaitable<Status> note_attempt(const std::string& volume);
  boost::asio::awaitable<Status> clear_attempt(const std::string& volume);
  int attempts(const std::string& volume) const;
  /// Moves the record of `volume` aside (`<file>.set-aside-<time>`, never loaded again) and yields
  /// the new path; the attempt count goes with it (start-up only; blocking).
  Result<std::string> set_aside(const std::string& volume) const;

  /// Reads every record (start-up only; blocking). A record that fails its checksum or does not
  /// parse is moved aside to `<file>.corrupt-<time>` and reported in `problems`, never used.
  std::vector<Record> load_all(std::vector<std::string>* problems) const;

  const std::string& dir() const { return dir_; }

  // The file format, exposed for tests.
  static std::string encode(const Record& rec);
  static Result<Record> decode(const std::string& text);

 private:
  std::string path_of(const std::string& volume) const;
  std::string attempts_path(const std::string& volume) const;

  std::string dir_;
  boost::asio::thread_pool& pool_;
  LoggerPtr log_;
};

}  // namespace datera::volume

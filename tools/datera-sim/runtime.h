#pragma once

// The simulator's side effects, kept out of the model and the protocol: the `file` export backend
// (one sparse file per volume) and the Committer that, after every mutating request, writes the
// state file atomically and brings the backend in line with the model. Disk work runs on a small
// thread pool, so the event loop never waits on fsync.

#include <cstdint>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "base/logging.h"
#include "base/result.h"
#include "tools/datera-sim/model.h"

namespace datera::sim {

/// Where exported volumes live. Reconciling against the model's export list is idempotent and
/// blocking (the Committer runs it on its worker thread).
class ExportBackend {
 public:
  virtual ~ExportBackend() = default;
  /// `snapshots`: every snapshot the model has; a new one is copied from its volume now.
  virtual Status reconcile(const std::vector<ExportView>& exports,
                           const std::vector<SnapshotView>& snapshots) = 0;
  /// The data of a volume ("" when the backend keeps none), for GET /_sim/exports.
  virtual std::string path_for(const ExportView& e) const = 0;
};

/// Each volume is `<dir>/<volume uuid>.img`, a sparse file of the volume's size: created with the
/// volume, grown on resize, removed with it. Each snapshot is `<dir>/snap-<volume
/// uuid>-<utc_ts>.img`, a copy of the volume's file made when the snapshot first appears (FICLONE
/// where the filesystem shares extents, else a copy of the data extents only, so it stays sparse);
/// a clone's volume file starts as a copy of its source's file. Reconciling against the model's
/// lists is idempotent, so a restart or a crash between two steps heals by itself (a snapshot file
/// that was never made is then copied from the volume as it is at that moment).
class FileBackend : public ExportBackend {
 public:
  explicit FileBackend(std::string dir) : dir_(std::move(dir)) {}

  Status prepare() const;  ///< creates the directory (0750)
  std::string path_for(const ExportView& e) const override;
  std::string snapshot_path(const std::string& volume_uuid, const std::string& utc_ts) const;
  /// Blocking: creates, copies, grows and removes files to match `exports` and `snapshots`.
  Status reconcile(const std::vector<ExportView>& exports,
                   const std::vector<SnapshotView>& snapshots) override;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

class Committer {
 public:
  /// `state_path` "" = keep nothing; `backend` may be null (memory backend).
  Committer(boost::asio::any_io_executor executor, boost::asio::thread_pool& pool, Model& model,
            std::string state_path, ExportBackend* backend, LoggerPtr log);

  /// Persists the model as it is now (and everything before). Concurrent callers share writes:
  /// while one write runs, later callers wait for the next one, which covers them all.
  boost::asio::awaitable<void> commit();
  /// Synchronous save for start-up and shutdown (nothing else runs then).
  Status save_now();

 private:
  Status write(const std::string& state, const std::vector<ExportView>& exports,
               const std::vector<SnapshotView>& snapshots);

  boost::asio::thread_pool& pool_;
  Model& model_;
  std::string state_path_;
  ExportBackend* backend_;
  LoggerPtr log_;
  boost::asio::steady_timer written_signal_;
  bool writing_ = false;
  uint64_t requested_ = 0;
  uint64_t written_ = 0;
};

/// Reads a state file into the model; a missing file is a fresh start, a bad one an error.
Status load_state(Model& model, const std::string& path);

}  // namespace datera::sim

// CSI snapshots and clones, on the Controller: CreateSnapshot, DeleteSnapshot, ListSnapshots and
// CreateVolume's content source. The array makes the copies (EDF snapshots of volume-1, new app
// instances from clone_snapshot_src / clone_volume_src); what this adds is the freeze of the node's
// filesystem around the copy (agent/volume/freeze.h), and the ids:
// - a snapshot id is "<source app instance>:<utc_ts>", the form Datera's own CSI driver uses, so
//   its snapshots read the same;
// - a snapshot's EDF uuid is derived from the CSI name, so a retried CreateSnapshot finds the
//   snapshot it made (the array refuses a second uuid, code 15).

#include <algorithm>
#include <charconv>
#include <cstdio>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "agent/csi/controller.h"
#include "agent/ownership/lease.h"
#include "agent/volume/freeze.h"
#include "base/hash.h"

namespace datera::csi {

namespace asio = boost::asio;

namespace {

Status aborted(const std::string& volume) {
  return Status(grpc::StatusCode::ABORTED,
                "volume " + volume + ": another operation on it is in flight; retry");
}

std::string snapshot_id(const edf::Snapshot& s) {
  return s.app_instance + ":" + s.timestamp;
}

struct SnapshotRef {
  std::string volume;
  std::string timestamp;
};

/// nullopt for an id this plugin could not have made (hostile until checked: it reaches paths).
std::optional<SnapshotRef> parse_snapshot_id(const std::string& id) {
  const auto colon = id.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  SnapshotRef r{id.substr(0, colon), id.substr(colon + 1)};
  if (!edf::is_valid_name(r.volume) || !edf::is_valid_snapshot_timestamp(r.timestamp)) {
    return std::nullopt;
  }
  return r;
}

/// A name-based UUID (version 8, RFC 9562) from the CSI snapshot name: the idempotency key sent
/// as the EDF snapshot's uuid. FNV-1a is no cryptographic hash; nothing here needs one (names
/// come from the snapshotter, and a collision needs two names on the same volume).
std::string snapshot_key(const std::string& name) {
  const uint64_t hi = fnv1a64("datera-agent snapshot " + name);
  const uint64_t lo = fnv1a64(name + " datera-agent snapshot");
  const uint64_t v_hi = (hi & ~0xF000ULL) | 0x8000ULL;                  // version 8
  const uint64_t v_lo = (lo & ~(0xC000ULL << 48)) | (0x8000ULL << 48);  // variant 10
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx",
                static_cast<unsigned long long>(v_hi >> 32),
                static_cast<unsigned long long>((v_hi >> 16) & 0xFFFF),
                static_cast<unsigned long long>(v_hi & 0xFFFF),
                static_cast<unsigned long long>(v_lo >> 48),
                static_cast<unsigned long long>(v_lo & 0xFFFFFFFFFFFFULL));
  return buf;
}

void fill(pb::Snapshot& out, const edf::Snapshot& s, int64_t size_gib) {
  out.set_snapshot_id(snapshot_id(s));
  out.set_source_volume_id(s.app_instance);
  out.set_size_bytes(size_gib * kGiB);
  out.set_ready_to_use(s.available());
  // utc_ts is "seconds[.nanoseconds]".
  const std::string& ts = s.timestamp;
  const auto dot = ts.find('.');
  int64_t seconds = 0;
  int32_t nanos = 0;
  std::from_chars(ts.data(), ts.data() + (dot == std::string::npos ? ts.size() : dot), seconds);
  if (dot != std::string::npos) {
    std::string frac = ts.substr(dot + 1, 9);
    frac.resize(9, '0');
    std::from_chars(frac.data(), frac.data() + frac.size(), nanos);
  }
  out.mutable_creation_time()->set_seconds(seconds);
  out.mutable_creation_time()->set_nanos(nanos);
}

}  // namespace

Task<std::string> Controller::freeze(volume::Array& array, const std::string& volume,
                                     const std::string& id, std::string& why, bool& requested) {
  requested = false;
  auto md = co_await array.metadata(volume);
  if (!md) {
    why = "no freeze: its ownership record could not be read (" + md.error().message + ")";
    co_return "crash_consistent";
  }
  const ownership::Lease held = ownership::decode(*md);
  if (held.free()) {
    why = "no node holds it, so no node has unwritten data";
    co_return "unheld";
  }
  const volume::FreezeRequest req{
      id, held.owner, volume::unix_ms() + (options_.freeze_wait + options_.freeze_hold).count()};
  edf::Metadata keys;
  keys[volume::kFreezeKey] = volume::encode(req);
  keys[volume::kFrozenKey] = "";  // an answer to an earlier request is not this one's
  if (auto st = co_await array.put_metadata(volume, keys); !st) {
    why = "no freeze: the request could not be written (" + st.error().message + ")";
    co_return "crash_consistent";
  }
  requested = true;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto deadline = std::chrono::steady_clock::now() + options_.freeze_wait;
  while (std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(options_.freeze_poll);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    auto now = co_await array.metadata(volume);
    if (!now) continue;
    const auto reply = volume::freeze_reply(*now);
    if (!reply || reply->id != id) continue;
    if (reply->state == "frozen") {
      why = "filesystem frozen on node " + held.owner;
      co_return "frozen";
    }
    if (reply->state == "unstaged") {
      why = "not mounted on node " + held.owner;
      co_return "not_mounted";
    }
    why = "node " + held.owner + " could not freeze its filesystem (see that node's log)";
    co_return "crash_consistent";
  }
  why = "node " + held.owner + " did not answer the freeze request within " +
        std::to_string(options_.freeze_wait.count()) + " ms";
  co_return "crash_consistent";
}

void Controller::copy_taken(const char* kind, const std::string& volume, const std::string& what,
                            const std::string& consistency, const std::string& why) {
  metrics_.copy_taken(kind, consistency);
  if (consistency == "crash_consistent") {
    log_->warn("volume {}: {} is crash-consistent only: {}", volume, what, why);
  } else {
    log_->info("volume {}: {} taken; {}", volume, what, why);
  }
}

Task<void> Controller::end_freeze(volume::Array& array, const std::string& volume) {
  edf::Metadata keys;
  keys[volume::kFreezeKey] = "";
  keys[volume::kFrozenKey] = "";
  if (auto st = co_await array.put_metadata(volume, keys); !st) {
    // The node thaws anyway when the request expires (its own bound comes first).
    log_->warn(
        "volume {}: cannot withdraw the freeze request: {}; the node thaws at its own "
        "bound",
        volume, st.error().message);
  }
}

Task<Status> Controller::create_snapshot(const pb::CreateSnapshotRequest& req,
                                         pb::CreateSnapshotResponse& resp) {
  const std::string& source = req.source_volume_id();
  const std::string& name = req.name();
  if (name.empty()) co_return invalid("CreateSnapshot: name is required");
  if (source.empty()) co_return invalid("CreateSnapshot: source_volume_id is required");
  auto vo = target(source, req.secrets());
  if (!vo) {
    if (!edf::is_valid_name(source)) {
      co_return Status(grpc::StatusCode::NOT_FOUND,
                       "CreateSnapshot " + name + ": no volume " + source);
    }
    co_return invalid("CreateSnapshot " + name + " of " + source + ": " + vo.error().message);
  }
  // Serialized with the source's other calls: its grant must not move while it is frozen.
  InFlight::Slot slot(in_flight_, source);
  if (!slot.ok()) co_return aborted(source);
  auto found = co_await find(vo->backend, source);
  if (!found.volume) co_return found.answer;
  volume::Array& array = *found.array;
  const std::string key = snapshot_key(name);
  for (const auto& s : found.volume->snapshots) {
    if (s.uuid == key) {  // a retry: the snapshot this name made
      fill(*resp.mutable_snapshot(), s, found.volume->size_gib);
      co_return Status::OK;
    }
  }
  std::string why;
  bool requested = false;
  const std::string consistency = co_await freeze(array, source, key, why, requested);
  auto made = co_await array.create_snapshot(source, key);
  if (requested) co_await end_freeze(array, source);
  if (!made) co_return to_status(made.error());
  copy_taken("snapshot", source, "snapshot " + name + " (" + snapshot_id(*made) + ")", consistency,
             why);
  fill(*resp.mutable_snapshot(), *made, found.volume->size_gib);
  co_return Status::OK;
}

Task<Status> Controller::delete_snapshot(const pb::DeleteSnapshotRequest& req,
                                         pb::DeleteSnapshotResponse&) {
  const std::string& id = req.snapshot_id();
  if (id.empty()) co_return invalid("DeleteSnapshot: snapshot_id is required");
  const auto ref = parse_snapshot_id(id);
  if (!ref) co_return Status::OK;  // never one of ours, so nothing of it exists
  auto vo = existing("DeleteSnapshot", ref->volume, req.secrets());
  if (!vo.options) co_return vo.answer;
  InFlight::Slot slot(in_flight_, ref->volume);
  if (!slot.ok()) co_return aborted(ref->volume);
  auto array = arrays_.get(vo.options->backend);
  if (!array) co_return to_status(array.error());
  if (auto st = co_await (*array)->delete_snapshot(ref->volume, ref->timestamp); !st) {
    co_return to_status(st.error());
  }
  log_->info("volume {}: snapshot {} deleted", ref->volume, id);
  co_return Status::OK;
}

Task<Status> Controller::list_snapshots(const pb::ListSnapshotsRequest& req,
                                        pb::ListSnapshotsResponse& resp) {
  if (req.max_entries() < 0) co_return invalid("ListSnapshots: max_entries is negative");
  std::string only_volume = req.source_volume_id();
  std::optional<SnapshotRef> only;
  if (!req.snapshot_id().empty()) {
    only = parse_snapshot_id(req.snapshot_id());
    if (!only) co_return Status::OK;  // no such snapshot: an empty list
    if (!only_volume.empty() && only_volume != only->volume) co_return Status::OK;
    only_volume = only->volume;
  }
  if (!only_volume.empty() && !edf::is_valid_name(only_volume)) co_return Status::OK;
  auto vo = target(only_volume.empty() ? std::string("list") : only_volume, req.secrets());
  if (!vo) co_return invalid("ListSnapshots: " + vo.error().message);
  auto array = arrays_.get(vo->backend);
  if (!array) co_return to_status(array.error());
  // One request: the source's app instance, or one listing of them all (snapshots inline).
  std::vector<edf::AppInstance> volumes;
  if (!only_volume.empty()) {
    auto one = co_await (*array)->find_volume(only_volume);
    if (!one) co_return to_status(one.error());
    if (*one) volumes.push_back(std::move(**one));
  } else {
    auto all = co_await (*array)->list_volumes();
    if (!all) co_return to_status(all.error());
    volumes = std::move(*all);
  }
  std::vector<std::pair<const edf::Snapshot*, int64_t>> snaps;
  for (const auto& v : volumes) {
    for (const auto& s : v.snapshots) {
      if (only && s.timestamp != only->timestamp) continue;
      snaps.emplace_back(&s, v.size_gib);
    }
  }
  std::sort(snaps.begin(), snaps.end(), [](const auto& a, const auto& b) {
    return snapshot_id(*a.first) < snapshot_id(*b.first);
  });
  Page p;
  if (auto st = page("ListSnapshots", "snapshots", req.starting_token(), req.max_entries(),
                     snaps.size(), p);
      !st.ok()) {
    co_return st;
  }
  for (size_t i = p.start; i < p.end; ++i) {
    fill(*resp.add_entries()->mutable_snapshot(), *snaps[i].first, snaps[i].second);
  }
  resp.set_next_token(p.next_token);
  co_return Status::OK;
}

std::string Controller::source_text(const pb::VolumeContentSource& source) {
  if (source.has_snapshot()) return "snapshot " + source.snapshot().snapshot_id();
  if (source.has_volume()) return "volume " + source.volume().volume_id();
  return "nothing";
}

Task<Status> Controller::clone_source(const pb::VolumeContentSource& source, volume::Array& array,
                                      edf::VolumeSpec& spec, std::string& recorded) {
  const std::string& name = spec.name;
  if (source.has_snapshot()) {
    const std::string& id = source.snapshot().snapshot_id();
    const auto ref = parse_snapshot_id(id);
    if (!ref) {
      co_return Status(grpc::StatusCode::NOT_FOUND,
                       "CreateVolume of " + name + ": no snapshot " + id);
    }
    auto found = co_await array.find_volume(ref->volume);
    if (!found) co_return to_status(found.error());
    const edf::Snapshot* snap = nullptr;
    if (*found) {
      for (const auto& s : (*found)->snapshots) {
        if (s.timestamp == ref->timestamp) snap = &s;
      }
    }
    if (snap == nullptr) {
      co_return Status(grpc::StatusCode::NOT_FOUND,
                       "CreateVolume of " + name + ": no snapshot " + id + " on the array");
    }
    if (!snap->available()) {
      co_return Status(grpc::StatusCode::UNAVAILABLE,
                       "CreateVolume of " + name + ": snapshot " + id + " is still '" +
                           snap->op_state + "' on the array; retry once it is available");
    }
    if (spec.size_gib < (*found)->size_gib) {
      co_return Status(grpc::StatusCode::OUT_OF_RANGE,
                       "CreateVolume of " + name + ": " + std::to_string(spec.size_gib) +
                           " GiB is smaller than snapshot " + id + " (" +
                           std::to_string((*found)->size_gib) + " GiB)");
    }
    spec.clone_snapshot_src = edf::snapshot_path(ref->volume, ref->timestamp);
    recorded = source_text(source);
    co_return Status::OK;
  }
  if (source.has_volume()) {
    const std::string& from = source.volume().volume_id();
    if (!edf::is_valid_name(from)) {
      co_return Status(grpc::StatusCode::NOT_FOUND,
                       "CreateVolume of " + name + ": no volume " + from);
    }
    auto found = co_await array.find_volume(from);
    if (!found) co_return to_status(found.error());
    if (!*found) {
      co_return Status(grpc::StatusCode::NOT_FOUND,
                       "CreateVolume of " + name + ": no volume " + from + " on the array");
    }
    if (spec.size_gib < (*found)->size_gib) {
      co_return Status(grpc::StatusCode::OUT_OF_RANGE,
                       "CreateVolume of " + name + ": " + std::to_string(spec.size_gib) +
                           " GiB is smaller than volume " + from + " (" +
                           std::to_string((*found)->size_gib) + " GiB)");
    }
    spec.clone_volume_src = edf::volume_path(from);
    recorded = source_text(source);
    co_return Status::OK;
  }
  co_return invalid("CreateVolume of " + name + ": volume_content_source names no source");
}

}  // namespace datera::csi

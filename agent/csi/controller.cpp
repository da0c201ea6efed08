#include "agent/csi/controller.h"

#include <algorithm>
#include <charconv>

#include "agent/csi/mapping.h"
#include "agent/ownership/lease.h"

namespace datera::csi {

namespace {

Status aborted(const std::string& volume) {
  return Status(grpc::StatusCode::ABORTED,
                "volume " + volume + ": another operation on it is in flight; retry");
}

Status no_volume(const std::string& volume) {
  return Status(grpc::StatusCode::NOT_FOUND, "volume " + volume + ": the array has no such volume");
}

/// The provisioner's PV name (--extra-create-metadata), recorded for `datera-agent.pv`.
std::string pv_name(const StringMap& parameters) {
  const auto it = parameters.find("csi.storage.k8s.io/pv/name");
  return it != parameters.end() ? it->second : std::string();
}

}  // namespace

Controller::Controller(ControllerOptions options, volume::Arrays& arrays,
                       controller::Grants& grants, Metrics& metrics, LoggerPtr log)
    : options_(std::move(options)),
      arrays_(arrays),
      grants_(grants),
      metrics_(metrics),
      log_(std::move(log)) {}

Result<edf::VolumeOptions> Controller::target(const std::string& volume,
                                              const StringMap& secrets) const {
  return volume_options(volume, StringMap(), secrets, "", 0, options_.default_backend,
                        options_.allowed_servers);
}

Controller::Existing Controller::existing(const char* method, const std::string& volume,
                                          const StringMap& secrets) const {
  auto vo = target(volume, secrets);
  if (vo) return {std::move(*vo), Status::OK};
  // An id this agent could never have created: nothing of it exists here, which is the success
  // of a call that removes it.
  if (!edf::is_valid_name(volume)) return {std::nullopt, Status::OK};
  return {std::nullopt, invalid(std::string(method) + " of " + volume + ": " + vo.error().message)};
}

Task<Controller::Found> Controller::find(const edf::BackendTarget& backend,
                                         const std::string& volume) {
  auto array = arrays_.get(backend);
  if (!array) co_return Found{nullptr, std::nullopt, to_status(array.error())};
  auto found = co_await (*array)->find_volume(volume);
  if (!found) co_return Found{nullptr, std::nullopt, to_status(found.error())};
  if (!*found) co_return Found{*array, std::nullopt, no_volume(volume)};
  co_return Found{*array, std::move(*found), Status::OK};
}

Task<Status> Controller::create_volume(const pb::CreateVolumeRequest& req,
                                       pb::CreateVolumeResponse& resp) {
  const std::string& name = req.name();
  if (name.empty()) co_return invalid("CreateVolume: name is required");
  if (req.volume_capabilities_size() == 0) {
    co_return invalid("CreateVolume: volume_capabilities are required");
  }
  std::string fs_type;
  for (const auto& cap : req.volume_capabilities()) {
    if (auto st = check_capability(cap); !st) co_return invalid(st.error().message);
    if (cap.has_mount() && !cap.mount().fs_type().empty()) fs_type = cap.mount().fs_type();
  }
  auto gib = size_gib(req.capacity_range());
  if (!gib) co_return Status(grpc::StatusCode::OUT_OF_RANGE, gib.error().message);
  auto vo = volume_options(name, req.parameters(), req.secrets(), fs_type, *gib,
                           options_.default_backend, options_.allowed_servers);
  if (!vo) co_return invalid("CreateVolume of " + name + ": " + vo.error().message);
  InFlight::Slot slot(in_flight_, name);
  if (!slot.ok()) co_return aborted(name);
  auto found = co_await find(vo->backend, name);
  if (!found.array) co_return found.answer;
  volume::Array* array = found.array;
  int64_t size = *gib;
  const bool cloned = req.has_volume_content_source();
  std::string source;  // what kSourceKey records
  if (found.volume) {
    // Idempotent by name, as long as the existing volume fits the request.
    size = found.volume->size_gib;
    const int64_t limit = req.capacity_range().limit_bytes();
    if (size < *gib || (limit != 0 && size * kGiB > limit)) {
      co_return Status(grpc::StatusCode::ALREADY_EXISTS,
                       "CreateVolume of " + name + ": a volume of that name exists with " +
                           std::to_string(size) + " GiB, which does not fit the capacity range");
    }
    if (cloned) {
      source = source_text(req.volume_content_source());
      auto md = co_await array->metadata(name);
      if (!md) co_return to_status(md.error());
      const auto had = md->find(kSourceKey);
      if (had == md->end() || had->second != source) {
        co_return Status(grpc::StatusCode::ALREADY_EXISTS,
                         "CreateVolume of " + name + ": a volume of that name exists, made from " +
                             (had == md->end() ? std::string("no source") : had->second) +
                             ", not from " + source);
      }
    }
  } else {
    edf::VolumeSpec spec = vo->spec;
    std::string consistency;
    std::string why;
    bool requested = false;
    const std::string& from_volume = req.volume_content_source().volume().volume_id();
    if (cloned) {
      if (auto st = co_await clone_source(req.volume_content_source(), *array, spec, source);
          !st.ok()) {
        co_return st;
      }
      if (!spec.clone_volume_src.empty()) {
        // A clone of a live volume: frozen around the copy, as a snapshot is.
        consistency = co_await freeze(*array, from_volume, name, why, requested);
      }
    }
    auto made = co_await array->ensure_volume(spec);
    if (requested) co_await end_freeze(*array, from_volume);
    if (!made) co_return to_status(made.error());
    size = made->size_gib > 0 ? made->size_gib : *gib;
    if (cloned && size < *gib) {
      // A clone has its source's size; the request may ask for more.
      if (auto st = co_await array->resize(name, *gib); !st) co_return to_status(st.error());
      size = *gib;
    }
    if (!consistency.empty()) copy_taken("clone", name, "clone of " + source, consistency, why);
    log_->info("volume {}: created for CSI ({} GiB{}{})", name, size, cloned ? " from " : "",
               source);
  }
  edf::Metadata keys;
  if (const auto pv = pv_name(req.parameters()); !pv.empty()) keys[controller::kPvKey] = pv;
  if (cloned) keys[kSourceKey] = source;
  if (!keys.empty()) {
    if (auto st = co_await array->put_metadata(name, keys); !st) {
      co_return to_status(st.error());
    }
  }
  auto* v = resp.mutable_volume();
  v->set_volume_id(name);
  v->set_capacity_bytes(size * kGiB);
  for (const auto& [k, value] : volume_context(req.parameters())) {
    (*v->mutable_volume_context())[k] = value;
  }
  (*v->mutable_volume_context())["fsType"] = vo->fs_type;
  if (cloned) {
    *v->mutable_content_source() = req.volume_content_source();
    (*v->mutable_volume_context())[std::string(kCopyOfContext)] = source;
  }
  co_return Status::OK;
}

Task<Status> Controller::delete_volume(const pb::DeleteVolumeRequest& req,
                                       pb::DeleteVolumeResponse&) {
  const std::string& name = req.volume_id();
  if (name.empty()) co_return invalid("DeleteVolume: volume_id is required");
  auto vo = existing("DeleteVolume", name, req.secrets());
  if (!vo.options) co_return vo.answer;
  InFlight::Slot slot(in_flight_, name);
  if (!slot.ok()) co_return aborted(name);
  auto array = arrays_.get(vo.options->backend);
  if (!array) co_return to_status(array.error());
  auto md = co_await (*array)->metadata(name);
  if (!md) {
    if (volume::is_not_found(md.error())) co_return Status::OK;
    co_return to_status(md.error());
  }
  if (const auto held = ownership::decode(*md); !held.free()) {
    co_return Status(grpc::StatusCode::FAILED_PRECONDITION,
                     "DeleteVolume of " + name + ": node " + held.owner +
                         " still holds it (epoch " + std::to_string(held.epoch) +
                         "); ControllerUnpublishVolume comes first");
  }
  // The array deletes a volume's snapshots with it: a VolumeSnapshot would lose its data.
  auto snaps = co_await (*array)->snapshots(name);
  if (!snaps && !volume::is_not_found(snaps.error())) co_return to_status(snaps.error());
  if (snaps && !snaps->empty()) {
    co_return Status(grpc::StatusCode::FAILED_PRECONDITION,
                     "DeleteVolume of " + name + ": it has " + std::to_string(snaps->size()) +
                         " snapshot(s) (" + snaps->front().app_instance + ":" +
                         snaps->front().timestamp +
                         "...), which the array would delete with it; delete the VolumeSnapshots "
                         "first");
  }
  if (auto st = co_await (*array)->delete_volume(name); !st) co_return to_status(st.error());
  log_->info("volume {}: deleted (CSI DeleteVolume)", name);
  co_return Status::OK;
}

Task<Status> Controller::controller_publish_volume(const pb::ControllerPublishVolumeRequest& req,
                                                   pb::ControllerPublishVolumeResponse& resp) {
  const std::string& name = req.volume_id();
  if (name.empty()) co_return invalid("ControllerPublishVolume: volume_id is required");
  if (req.node_id().empty()) co_return invalid("ControllerPublishVolume: node_id is required");
  if (!req.has_volume_capability()) {
    co_return invalid("ControllerPublishVolume: volume_capability is required");
  }
  if (auto st = check_capability(req.volume_capability()); !st) {
    co_return invalid(st.error().message);
  }
  if (auto st = controller::check_node(req.node_id()); !st) {
    co_return Status(grpc::StatusCode::NOT_FOUND, st.error().message);
  }
  auto vo = volume_options(name, req.volume_context(), req.secrets(), "", 0,
                           options_.default_backend, options_.allowed_servers);
  if (!vo) co_return invalid("ControllerPublishVolume of " + name + ": " + vo.error().message);
  InFlight::Slot slot(in_flight_, name);
  if (!slot.ok()) co_return aborted(name);
  // No app instance: the grant's metadata read says so (NOT_FOUND); it creates nothing.
  auto granted = co_await grants_.grant(*vo, req.node_id(), "", /*create=*/false);
  if (!granted) co_return to_status(granted.error());
  auto& ctx = *resp.mutable_publish_context();
  ctx["epoch"] = std::to_string(granted->epoch);
  ctx["initiator"] = granted->iqn;
  co_return Status::OK;
}

Task<Status> Controller::controller_unpublish_volume(
    const pb::ControllerUnpublishVolumeRequest& req, pb::ControllerUnpublishVolumeResponse&) {
  const std::string& name = req.volume_id();
  if (name.empty()) co_return invalid("ControllerUnpublishVolume: volume_id is required");
  auto vo = existing("ControllerUnpublishVolume", name, req.secrets());
  if (!vo.options) co_return vo.answer;
  InFlight::Slot slot(in_flight_, name);
  if (!slot.ok()) co_return aborted(name);
  std::string node = req.node_id();
  if (node.empty()) {
    // From every node: the one the ownership record names, if any.
    auto array = arrays_.get(vo.options->backend);
    if (!array) co_return to_status(array.error());
    auto md = co_await (*array)->metadata(name);
    if (!md) {
      if (volume::is_not_found(md.error())) co_return Status::OK;
      co_return to_status(md.error());
    }
    node = ownership::decode(*md).owner;
    if (node.empty()) co_return Status::OK;
  }
  auto done =
      co_await grants_.revoke(vo.options->backend, name, node,
                              "ControllerUnpublishVolume of " + name + " from node " + node);
  // A node the array never knew holds nothing: unpublished already.
  if (!done && !volume::is_not_found(done.error())) co_return to_status(done.error());
  co_return Status::OK;
}

Task<Status> Controller::validate_volume_capabilities(
    const pb::ValidateVolumeCapabilitiesRequest& req,
    pb::ValidateVolumeCapabilitiesResponse& resp) {
  const std::string& name = req.volume_id();
  if (name.empty()) co_return invalid("ValidateVolumeCapabilities: volume_id is required");
  if (req.volume_capabilities_size() == 0) {
    co_return invalid("ValidateVolumeCapabilities: volume_capabilities are required");
  }
  auto vo = target(name, req.secrets());
  if (!vo) co_return Status(grpc::StatusCode::NOT_FOUND, vo.error().message);
  auto found = co_await find(vo->backend, name);
  if (!found.volume) co_return found.answer;
  for (const auto& cap : req.volume_capabilities()) {
    if (auto st = check_capability(cap); !st) {
      resp.set_message(st.error().message);
      co_return Status::OK;  // not confirmed: the message says why
    }
  }
  auto* confirmed = resp.mutable_confirmed();
  *confirmed->mutable_volume_context() = req.volume_context();
  *confirmed->mutable_volume_capabilities() = req.volume_capabilities();
  *confirmed->mutable_parameters() = req.parameters();
  co_return Status::OK;
}

Task<Status> Controller::list_volumes(const pb::ListVolumesRequest& req,
                                      pb::ListVolumesResponse& resp) {
  if (req.max_entries() < 0) co_return invalid("ListVolumes: max_entries is negative");
  auto array = arrays_.get(options_.default_backend);
  if (!array) co_return to_status(array.error());
  // One listing of the array (in pages), whatever the number of volumes.
  auto all = co_await (*array)->list_volumes();
  if (!all) co_return to_status(all.error());
  std::sort(all->begin(), all->end(),
            [](const edf::AppInstance& a, const edf::AppInstance& b) { return a.name < b.name; });
  Page p;
  if (auto st =
          page("ListVolumes", "volumes", req.starting_token(), req.max_entries(), all->size(), p);
      !st.ok()) {
    co_return st;
  }
  for (size_t i = p.start; i < p.end; ++i) {
    auto* v = resp.add_entries()->mutable_volume();
    v->set_volume_id((*all)[i].name);
    v->set_capacity_bytes((*all)[i].size_gib * kGiB);
  }
  resp.set_next_token(p.next_token);
  co_return Status::OK;
}

Task<Status> Controller::controller_get_capabilities(const pb::ControllerGetCapabilitiesRequest&,
                                                     pb::ControllerGetCapabilitiesResponse& resp) {
  using R = pb::ControllerServiceCapability::RPC;
  for (auto type :
       {R::CREATE_DELETE_VOLUME, R::PUBLISH_UNPUBLISH_VOLUME, R::LIST_VOLUMES, R::EXPAND_VOLUME,
        R::GET_VOLUME, R::VOLUME_CONDITION, R::SINGLE_NODE_MULTI_WRITER, R::PUBLISH_READONLY,
        R::CREATE_DELETE_SNAPSHOT, R::LIST_SNAPSHOTS, R::CLONE_VOLUME}) {
    resp.add_capabilities()->mutable_rpc()->set_type(type);
  }
  co_return Status::OK;
}

Task<Status> Controller::controller_expand_volume(const pb::ControllerExpandVolumeRequest& req,
                                                  pb::ControllerExpandVolumeResponse& resp) {
  const std::string& name = req.volume_id();
  if (name.empty()) co_return invalid("ControllerExpandVolume: volume_id is required");
  if (!req.has_capacity_range()) {
    co_return invalid("ControllerExpandVolume: capacity_range is required");
  }
  auto gib = size_gib(req.capacity_range());
  if (!gib) co_return Status(grpc::StatusCode::OUT_OF_RANGE, gib.error().message);
  auto vo = target(name, req.secrets());
  if (!vo) co_return invalid("ControllerExpandVolume of " + name + ": " + vo.error().message);
  InFlight::Slot slot(in_flight_, name);
  if (!slot.ok()) co_return aborted(name);
  auto found = co_await find(vo->backend, name);
  if (!found.volume) co_return found.answer;
  int64_t size = found.volume->size_gib;
  if (size < *gib) {  // never shrink
    if (auto st = co_await found.array->resize(name, *gib); !st) co_return to_status(st.error());
    log_->info("volume {}: grown on the array from {} to {} GiB (CSI)", name, size, *gib);
    size = *gib;
  }
  resp.set_capacity_bytes(size * kGiB);
  resp.set_node_expansion_required(true);  // the node rescans (and grows the filesystem)
  co_return Status::OK;
}

Task<Status> Controller::controller_get_volume(const pb::ControllerGetVolumeRequest& req,
                                               pb::ControllerGetVolumeResponse& resp) {
  const std::string& name = req.volume_id();
  if (name.empty()) co_return invalid("ControllerGetVolume: volume_id is required");
  auto vo = target(name, StringMap());
  if (!vo) co_return Status(grpc::StatusCode::NOT_FOUND, vo.error().message);
  auto found = co_await find(vo->backend, name);
  if (!found.volume) co_return found.answer;
  const edf::AppInstance& ai = *found.volume;
  auto* v = resp.mutable_volume();
  v->set_volume_id(name);
  v->set_capacity_bytes(ai.size_gib * kGiB);
  auto* status = resp.mutable_status();
  if (auto md = co_await found.array->metadata(name); md) {
    if (const auto held = ownership::decode(*md); !held.free()) {
      status->add_published_node_ids(held.owner);
    }
  }
  auto* cond = status->mutable_volume_condition();
  const bool ok = ai.op_state == "available" || ai.admin_state == "offline";
  cond->set_abnormal(!ok);
  cond->set_message(ok ? "the array reports it " +
                             (ai.admin_state.empty() ? std::string("known") : ai.admin_state)
                       : "the array reports storage op_state '" + ai.op_state + "' while " +
                             ai.admin_state);
  co_return Status::OK;
}

}  // namespace datera::csi

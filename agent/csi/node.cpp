#include "agent/csi/node.h"

#include <algorithm>

#include "agent/csi/mapping.h"
#include "agent/mount/linux_mounter.h"

namespace datera::csi {

namespace {

using volume::Mode;

Status aborted(const std::string& volume) {
  return Status(grpc::StatusCode::ABORTED,
                "volume " + volume + ": another operation on it is in flight; retry");
}

Status not_found(const std::string& volume) {
  return Status(grpc::StatusCode::NOT_FOUND, "volume " + volume + " is not staged on this node");
}

bool reader_only(const pb::VolumeCapability& cap) {
  return cap.access_mode().mode() == pb::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY;
}

}  // namespace

Node::Node(NodeOptions options, volume::Manager& core, Stats& stats, ConditionSource condition,
           LoggerPtr log)
    : options_(std::move(options)),
      core_(core),
      stats_(stats),
      condition_(std::move(condition)),
      log_(std::move(log)) {}

Task<Status> Node::node_stage_volume(const pb::NodeStageVolumeRequest& req,
                                     pb::NodeStageVolumeResponse&) {
  if (req.volume_id().empty()) co_return invalid("NodeStageVolume: volume_id is required");
  if (req.staging_target_path().empty()) {
    co_return invalid("NodeStageVolume: staging_target_path is required");
  }
  if (!req.has_volume_capability()) {
    co_return invalid("NodeStageVolume: volume_capability is required");
  }
  const auto& cap = req.volume_capability();
  if (auto st = check_capability(cap); !st) co_return invalid(st.error().message);
  auto path = core_.csi_staging_path(req.staging_target_path());
  if (!path) co_return invalid("NodeStageVolume: " + path.error().message);
  InFlight::Slot slot(in_flight_, req.volume_id());
  if (!slot.ok()) co_return aborted(req.volume_id());
  const bool block = cap.has_block();
  auto vo = volume_options(req.volume_id(), req.volume_context(), req.secrets(),
                           block ? "" : cap.mount().fs_type(), 0, options_.default_backend,
                           options_.allowed_servers);
  if (!vo)
    co_return invalid("NodeStageVolume of volume " + req.volume_id() + ": " + vo.error().message);
  std::vector<std::string> flags;
  if (!block) {
    flags.assign(cap.mount().mount_flags().begin(), cap.mount().mount_flags().end());
    if (vo->fs_type == "xfs" && req.volume_context().count(std::string(kCopyOfContext)) != 0 &&
        std::find(flags.begin(), flags.end(), "nouuid") == flags.end()) {
      flags.push_back("nouuid");
    }
    if (auto st = mount::validate_mount_options(vo->fs_type, flags, false); !st) {
      co_return invalid("NodeStageVolume of volume " + req.volume_id() +
                        ": mount_flags: " + st.error().message);
    }
  }
  volume::StageRequest stage{std::move(*vo), std::move(flags), *path, !block, Mode::csi, block};
  auto done = co_await core_.stage(std::move(stage));
  if (!done) co_return to_status(done.error());
  co_return Status::OK;
}

Task<Status> Node::node_unstage_volume(const pb::NodeUnstageVolumeRequest& req,
                                       pb::NodeUnstageVolumeResponse&) {
  if (req.volume_id().empty()) co_return invalid("NodeUnstageVolume: volume_id is required");
  if (req.staging_target_path().empty()) {
    co_return invalid("NodeUnstageVolume: staging_target_path is required");
  }
  auto path = core_.csi_staging_path(req.staging_target_path());
  if (!path) co_return invalid("NodeUnstageVolume: " + path.error().message);
  InFlight::Slot slot(in_flight_, req.volume_id());
  if (!slot.ok()) co_return aborted(req.volume_id());
  if (auto s = core_.served(req.volume_id()); s && s->staging != *path && !s->staging.empty()) {
    co_return Status(grpc::StatusCode::FAILED_PRECONDITION,
                     "NodeUnstageVolume of volume " + req.volume_id() + ": it is staged at " +
                         s->staging + ", not " + *path);
  }
  auto done = co_await core_.unstage(*path, Mode::csi);
  if (!done) co_return to_status(done.error());
  co_return Status::OK;
}

Task<Status> Node::node_publish_volume(const pb::NodePublishVolumeRequest& req,
                                       pb::NodePublishVolumeResponse&) {
  if (req.volume_id().empty()) co_return invalid("NodePublishVolume: volume_id is required");
  if (req.target_path().empty()) co_return invalid("NodePublishVolume: target_path is required");
  if (req.staging_target_path().empty()) {
    co_return invalid("NodePublishVolume: staging_target_path is required (STAGE_UNSTAGE_VOLUME)");
  }
  if (!req.has_volume_capability()) {
    co_return invalid("NodePublishVolume: volume_capability is required");
  }
  const auto& cap = req.volume_capability();
  if (auto st = check_capability(cap); !st) co_return invalid(st.error().message);
  auto target = core_.csi_target_path(req.target_path());
  if (!target) co_return invalid("NodePublishVolume: " + target.error().message);
  InFlight::Slot slot(in_flight_, req.volume_id());
  if (!slot.ok()) co_return aborted(req.volume_id());
  const auto served = core_.served(req.volume_id());
  if (!served || !served->staged) {
    co_return Status(grpc::StatusCode::FAILED_PRECONDITION,
                     "NodePublishVolume of volume " + req.volume_id() +
                         ": it is not staged on this node; NodeStageVolume comes first");
  }
  if (served->block != cap.has_block()) {
    co_return Status(grpc::StatusCode::FAILED_PRECONDITION,
                     "NodePublishVolume of volume " + req.volume_id() + ": it is staged as a " +
                         (served->block ? "raw block device" : "filesystem") +
                         ", and the capability asks for the other");
  }
  volume::PublishRequest publish{req.volume_id(), *target, req.readonly() || reader_only(cap),
                                 std::nullopt, Mode::csi};
  auto done = co_await core_.publish(std::move(publish));
  if (!done) co_return to_status(done.error());
  co_return Status::OK;
}

Task<Status> Node::node_unpublish_volume(const pb::NodeUnpublishVolumeRequest& req,
                                         pb::NodeUnpublishVolumeResponse&) {
  if (req.volume_id().empty()) co_return invalid("NodeUnpublishVolume: volume_id is required");
  if (req.target_path().empty()) {
    co_return invalid("NodeUnpublishVolume: target_path is required");
  }
  auto target = core_.csi_target_path(req.target_path());
  if (!target) co_return invalid("NodeUnpublishVolume: " + target.error().message);
  InFlight::Slot slot(in_flight_, req.volume_id());
  if (!slot.ok()) co_return aborted(req.volume_id());
  auto done = co_await core_.unpublish(*target, Mode::csi);
  if (!done) co_return to_status(done.error());
  co_return Status::OK;
}

pb::VolumeCondition Node::condition_of(const volume::Manager::Served& s) const {
  pb::VolumeCondition c;
  if (!s.staged) {
    c.set_abnormal(true);
    c.set_message("not staged on this node (phase " + std::string(to_string(s.phase)) + ")");
    return c;
  }
  const auto seen = condition_ ? condition_(s.volume) : std::nullopt;
  if (!seen) {
    c.set_message("staged; the session keeper has not looked at it yet");
    return c;
  }
  c.set_abnormal(seen->abnormal);
  c.set_message(seen->message);
  return c;
}

Task<Status> Node::node_get_volume_stats(const pb::NodeGetVolumeStatsRequest& req,
                                         pb::NodeGetVolumeStatsResponse& resp) {
  if (req.volume_id().empty()) co_return invalid("NodeGetVolumeStats: volume_id is required");
  if (req.volume_path().empty()) co_return invalid("NodeGetVolumeStats: volume_path is required");
  const auto served = core_.served(req.volume_id());
  if (!served || served->mode != Mode::csi) co_return not_found(req.volume_id());
  // The path must be where this volume is: a pod's target or its staging path (never a path a
  // caller picks to probe the node's filesystems).
  auto path = core_.csi_target_path(req.volume_path());
  if (!path) path = core_.csi_staging_path(req.volume_path());
  bool known = path && *path == served->staging;
  for (const auto& p : served->pods) known = known || (path && p.dir == *path);
  if (!known) {
    co_return Status(
        grpc::StatusCode::NOT_FOUND,
        "volume " + req.volume_id() + " is not staged or published at " + req.volume_path());
  }
  *resp.mutable_volume_condition() = condition_of(*served);
  if (!served->staged) co_return Status::OK;
  // Not `?:` around co_await (GCC 12).
  Result<Usage> usage = Error{""};
  if (served->block) {
    usage = co_await stats_.block(served->device);
  } else {
    usage = co_await stats_.filesystem(*path);
  }
  if (!usage) {
    // The condition says what is wrong; stats that cannot be read are not a failed call.
    log_->warn("volume {}: no usage for {}: {}", req.volume_id(), *path, usage.error().message);
    auto* cond = resp.mutable_volume_condition();
    cond->set_abnormal(true);
    cond->set_message(cond->message() + "; usage unreadable: " + usage.error().message);
    co_return Status::OK;
  }
  auto* bytes = resp.add_usage();
  bytes->set_unit(pb::VolumeUsage::BYTES);
  bytes->set_total(usage->total_bytes);
  bytes->set_available(usage->available_bytes);
  bytes->set_used(usage->used_bytes);
  if (!served->block) {
    auto* inodes = resp.add_usage();
    inodes->set_unit(pb::VolumeUsage::INODES);
    inodes->set_total(usage->total_inodes);
    inodes->set_available(usage->free_inodes);
    inodes->set_used(usage->used_inodes);
  }
  co_return Status::OK;
}

Task<Status> Node::node_expand_volume(const pb::NodeExpandVolumeRequest& req,
                                      pb::NodeExpandVolumeResponse& resp) {
  if (req.volume_id().empty()) co_return invalid("NodeExpandVolume: volume_id is required");
  if (req.volume_path().empty()) co_return invalid("NodeExpandVolume: volume_path is required");
  const auto served = core_.served(req.volume_id());
  if (!served || served->mode != Mode::csi) co_return not_found(req.volume_id());
  auto gib = size_gib(req.capacity_range());
  if (!gib) co_return Status(grpc::StatusCode::OUT_OF_RANGE, gib.error().message);
  InFlight::Slot slot(in_flight_, req.volume_id());
  if (!slot.ok()) co_return aborted(req.volume_id());
  volume::ExpandRequest expand;
  expand.volume.spec.name = req.volume_id();  // the core grows it where it was attached from
  expand.bytes = *gib * kGiB;
  expand.filesystem = true;
  auto done = co_await core_.expand(std::move(expand));
  if (!done) co_return to_status(done.error());
  resp.set_capacity_bytes(*done);
  co_return Status::OK;
}

Task<Status> Node::node_get_capabilities(const pb::NodeGetCapabilitiesRequest&,
                                         pb::NodeGetCapabilitiesResponse& resp) {
  using R = pb::NodeServiceCapability::RPC;
  for (auto type : {R::STAGE_UNSTAGE_VOLUME, R::EXPAND_VOLUME, R::GET_VOLUME_STATS,
                    R::VOLUME_CONDITION, R::SINGLE_NODE_MULTI_WRITER}) {
    resp.add_capabilities()->mutable_rpc()->set_type(type);
  }
  co_return Status::OK;
}

Task<Status> Node::node_get_info(const pb::NodeGetInfoRequest&, pb::NodeGetInfoResponse& resp) {
  resp.set_node_id(options_.node_id);
  resp.set_max_volumes_per_node(options_.max_volumes_per_node);
  co_return Status::OK;
}

}  // namespace datera::csi

// The CSI handlers over the real volume core and controller grants, with fakes for the array, the
// initiator and the mounter: the lifecycle, idempotency, the error codes the specification asks
// for, raw block, ABORTED while a call is in flight, and self-fencing when the grant moves. The
// same lifecycle through gRPC, datera-sim and loop devices is the host tier (tests/csi).

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "agent/controller/grants.h"
#include "agent/csi/controller.h"
#include "agent/csi/identity.h"
#include "agent/csi/mapping.h"
#include "agent/csi/node.h"
#include "agent/ownership/lease.h"
#include "tests/agent/volume/fakes.h"
#include "tests/testing/fake_array.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

namespace datera::csi {
namespace {

namespace asio = boost::asio;
using grpc::StatusCode;

constexpr const char* kVol = "pvc-1";
constexpr const char* kIqnA = "iqn.1993-08.org.debian:01:node-a";
const std::string kStaging =
    "/var/lib/kubelet/plugins/kubernetes.io/csi/agent.iscsi.datera.io/abc123/globalmount";
const std::string kTarget = "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/pv-1/mount";
const std::string kTarget2 = "/var/lib/kubelet/pods/u2/volumes/kubernetes.io~csi/pv-1/mount";
const std::string kBlockStaging =
    "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/staging/pv-1";
const std::string kBlockTarget =
    "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pv-1/u1";

struct FakeStats : Stats {
  asio::awaitable<Result<Usage>> filesystem(std::string path) override {
    paths.push_back(path);
    co_return Usage{10 * kGiB, 7 * kGiB, 3 * kGiB, 1000, 900, 100};
  }
  asio::awaitable<Result<Usage>> block(std::string device) override {
    paths.push_back(device);
    co_return Usage{10 * kGiB, 0, 0, 0, 0, 0};
  }
  std::vector<std::string> paths;
};

/// A mounter whose staging mount takes a while: the window in which a second call is ABORTED.
struct SlowMounter : volume::FakeMounter {
  bool slow = false;
  std::function<void(const std::string&)> on_freeze;  ///< "freeze" / "thaw", when they happen
  asio::awaitable<datera::Status> freeze(const std::string& target) override {
    if (on_freeze) on_freeze("freeze");
    co_return co_await FakeMounter::freeze(target);
  }
  asio::awaitable<datera::Status> thaw(const std::string& target) override {
    if (on_freeze) on_freeze("thaw");
    co_return co_await FakeMounter::thaw(target);
  }
  asio::awaitable<datera::Status> mount(const mount::MountRequest& r) override {
    if (slow) {
      asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(30));
      co_await t.async_wait(asio::use_awaitable);
    }
    co_return co_await FakeMounter::mount(r);
  }
};

pb::VolumeCapability mount_cap(pb::VolumeCapability::AccessMode::Mode mode =
                                   pb::VolumeCapability::AccessMode::SINGLE_NODE_WRITER) {
  pb::VolumeCapability c;
  c.mutable_mount()->set_fs_type("xfs");
  c.mutable_access_mode()->set_mode(mode);
  return c;
}

pb::VolumeCapability block_cap() {
  pb::VolumeCapability c;
  c.mutable_block();
  c.mutable_access_mode()->set_mode(pb::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return c;
}

class CsiTest : public ::testing::Test {
 protected:
  CsiTest() : journal_(dir_ / "journal", pool_, null_logger()) {
    array().registered = {
        {kIqnA, edf::initiator_name_for_node("node-a")},
        {"iqn.1993-08.org.debian:01:node-b", edf::initiator_name_for_node("node-b")}};
    restart();
    controller::GrantOptions go;
    go.default_backend = volume::base_manager_options().default_backend;
    grants_ = std::make_unique<controller::Grants>(go, arrays_, controller_metrics_, null_logger());
    ControllerOptions co;
    co.default_backend = go.default_backend;
    co.freeze_wait = std::chrono::milliseconds(1'000);
    co.freeze_poll = std::chrono::milliseconds(5);
    controller_ = std::make_unique<Controller>(co, arrays_, *grants_, csi_metrics_, null_logger());
  }
  /// A new agent over the same journal (a restart).
  void restart() {
    node_.reset();
    auto mo = volume::base_manager_options();
    mo.freeze_poll = std::chrono::milliseconds(5);
    manager_ = std::make_unique<volume::Manager>(mo, arrays_, initiator_, mounter_, journal_,
                                                 metrics_, null_logger());
    (void)testing::run_async(ioc_, manager_->reconcile());
    NodeOptions no;
    no.node_id = "node-a";
    no.max_volumes_per_node = 64;
    no.default_backend = volume::base_manager_options().default_backend;
    node_ = std::make_unique<Node>(
        no, *manager_, stats_, [this](const std::string&) { return condition_; }, null_logger());
  }
  testing::FakeArray& array() { return arrays_.array; }

  template <class Req, class Resp, class H, class M>
  StatusCode call(H& handler, M method, const Req& req, Resp* out = nullptr) {
    Resp resp;
    auto st = testing::run_async(ioc_, (handler.*method)(req, resp));
    last_message_ = st.error_message();
    if (out) *out = resp;
    return st.error_code();
  }
  StatusCode create(int64_t gib = 3, pb::CreateVolumeResponse* out = nullptr) {
    pb::CreateVolumeRequest r;
    r.set_name(kVol);
    r.mutable_capacity_range()->set_required_bytes(gib * kGiB);
    *r.add_volume_capabilities() = mount_cap();
    (*r.mutable_parameters())["replica"] = "2";
    (*r.mutable_parameters())["csi.storage.k8s.io/pv/name"] = "pv-1";
    return call(*controller_, &Controller::create_volume, r, out);
  }
  StatusCode publish_to(const std::string& node) {
    pb::ControllerPublishVolumeRequest r;
    r.set_volume_id(kVol);
    r.set_node_id(node);
    *r.mutable_volume_capability() = mount_cap();
    return call<pb::ControllerPublishVolumeRequest, pb::ControllerPublishVolumeResponse>(
        *controller_, &Controller::controller_publish_volume, r);
  }
  StatusCode unpublish_from(const std::string& node) {
    pb::ControllerUnpublishVolumeRequest r;
    r.set_volume_id(kVol);
    r.set_node_id(node);
    return call<pb::ControllerUnpublishVolumeRequest, pb::ControllerUnpublishVolumeResponse>(
        *controller_, &Controller::controller_unpublish_volume, r);
  }
  StatusCode stage(const pb::VolumeCapability& cap = mount_cap(),
                   const std::string& path = kStaging) {
    pb::NodeStageVolumeRequest r;
    r.set_volume_id(kVol);
    r.set_staging_target_path(path);
    *r.mutable_volume_capability() = cap;
    return call<pb::NodeStageVolumeRequest, pb::NodeStageVolumeResponse>(
        *node_, &Node::node_stage_volume, r);
  }
  StatusCode node_publish(const std::string& target, const pb::VolumeCapability& cap = mount_cap(),
                          const std::string& staging = kStaging) {
    pb::NodePublishVolumeRequest r;
    r.set_volume_id(kVol);
    r.set_staging_target_path(staging);
    r.set_target_path(target);
    *r.mutable_volume_capability() = cap;
    return call<pb::NodePublishVolumeRequest, pb::NodePublishVolumeResponse>(
        *node_, &Node::node_publish_volume, r);
  }
  StatusCode node_unpublish(const std::string& target) {
    pb::NodeUnpublishVolumeRequest r;
    r.set_volume_id(kVol);
    r.set_target_path(target);
    return call<pb::NodeUnpublishVolumeRequest, pb::NodeUnpublishVolumeResponse>(
        *node_, &Node::node_unpublish_volume, r);
  }
  StatusCode unstage(const std::string& path = kStaging) {
    pb::NodeUnstageVolumeRequest r;
    r.set_volume_id(kVol);
    r.set_staging_target_path(path);
    return call<pb::NodeUnstageVolumeRequest, pb::NodeUnstageVolumeResponse>(
        *node_, &Node::node_unstage_volume, r);
  }
  bool mounted(const std::string& target) const {
    return std::any_of(mounter_.table.begin(), mounter_.table.end(),
                       [&](const mount::MountEntry& m) { return m.target == target; });
  }
  ownership::Lease lease() { return ownership::decode(array().md[kVol]); }

  testing::TempDir dir_{"dt-csi"};
  asio::io_context ioc_;
  asio::thread_pool pool_{1};
  prometheus::Registry registry_;
  volume::Metrics metrics_{registry_};
  controller::Metrics controller_metrics_{registry_};
  Metrics csi_metrics_{registry_};
  testing::FakeArrays arrays_;
  volume::FakeInitiator initiator_;
  SlowMounter mounter_;
  volume::Journal journal_;
  FakeStats stats_;
  std::optional<Condition> condition_;
  std::unique_ptr<volume::Manager> manager_;
  std::unique_ptr<controller::Grants> grants_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<Node> node_;
  std::string last_message_;
};

TEST_F(CsiTest, TheWholeLifecycleGrantsStagesPublishesAndUndoesEachStep) {
  pb::CreateVolumeResponse created;
  ASSERT_EQ(create(3, &created), StatusCode::OK) << last_message_;
  EXPECT_EQ(created.volume().volume_id(), kVol);
  EXPECT_EQ(created.volume().capacity_bytes(), 3 * kGiB);
  EXPECT_EQ(created.volume().volume_context().at("replica"), "2");
  EXPECT_EQ(created.volume().volume_context().count("csi.storage.k8s.io/pv/name"), 0u);
  EXPECT_EQ(array().sizes[kVol], 3);
  EXPECT_EQ(array().md[kVol][controller::kPvKey], "pv-1");

  ASSERT_EQ(publish_to("node-a"), StatusCode::OK) << last_message_;
  EXPECT_EQ(lease().owner, "node-a");
  EXPECT_EQ(array().acl_iqns, std::vector<std::string>{kIqnA});

  ASSERT_EQ(stage(), StatusCode::OK) << last_message_;
  EXPECT_TRUE(mounted(kStaging));
  EXPECT_EQ(mounter_.formats, 1);
  ASSERT_EQ(node_publish(kTarget), StatusCode::OK) << last_message_;
  ASSERT_EQ(
      node_publish(kTarget2, mount_cap(pb::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY)),
      StatusCode::OK)
      << last_message_;
  EXPECT_TRUE(mounted(kTarget));
  const auto ro = std::find_if(mounter_.table.begin(), mounter_.table.end(),
                               [](const mount::MountEntry& m) { return m.target == kTarget2; });
  ASSERT_NE(ro, mounter_.table.end());
  EXPECT_TRUE(ro->read_only);
  const auto served = manager_->served(kVol);
  ASSERT_TRUE(served);
  EXPECT_EQ(served->mode, volume::Mode::csi);

  ASSERT_EQ(node_unpublish(kTarget), StatusCode::OK) << last_message_;
  ASSERT_EQ(node_unpublish(kTarget2), StatusCode::OK) << last_message_;
  EXPECT_TRUE(mounted(kStaging)) << "kubelet's staging stays until NodeUnstageVolume";
  ASSERT_EQ(unstage(), StatusCode::OK) << last_message_;
  EXPECT_FALSE(mounted(kStaging));
  EXPECT_FALSE(manager_->served(kVol));
  EXPECT_EQ(array().acl_iqns, std::vector<std::string>{kIqnA}) << "the grant is the controller's";

  ASSERT_EQ(unpublish_from("node-a"), StatusCode::OK) << last_message_;
  EXPECT_TRUE(array().acl_iqns.empty());
  EXPECT_TRUE(lease().free());
  pb::DeleteVolumeRequest del;
  del.set_volume_id(kVol);
  ASSERT_EQ((call<pb::DeleteVolumeRequest, pb::DeleteVolumeResponse>(
                *controller_, &Controller::delete_volume, del)),
            StatusCode::OK)
      << last_message_;
  EXPECT_FALSE(array().names.count(kVol));
}

TEST_F(CsiTest, EveryCallIsIdempotent) {
  ASSERT_EQ(create(), StatusCode::OK);
  ASSERT_EQ(create(), StatusCode::OK) << last_message_;
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK);
  const auto epoch = lease().epoch;
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK) << last_message_;
  EXPECT_EQ(lease().epoch, epoch) << "a retried publish keeps its epoch";
  ASSERT_EQ(stage(), StatusCode::OK);
  ASSERT_EQ(stage(), StatusCode::OK) << last_message_;
  EXPECT_EQ(mounter_.formats, 1);
  ASSERT_EQ(node_publish(kTarget), StatusCode::OK);
  ASSERT_EQ(node_publish(kTarget), StatusCode::OK) << last_message_;
  ASSERT_EQ(node_unpublish(kTarget), StatusCode::OK);
  ASSERT_EQ(node_unpublish(kTarget), StatusCode::OK) << last_message_;
  ASSERT_EQ(unstage(), StatusCode::OK);
  ASSERT_EQ(unstage(), StatusCode::OK) << last_message_;
  ASSERT_EQ(unpublish_from("node-a"), StatusCode::OK);
  ASSERT_EQ(unpublish_from("node-a"), StatusCode::OK) << last_message_;
  pb::DeleteVolumeRequest del;
  del.set_volume_id(kVol);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ((call<pb::DeleteVolumeRequest, pb::DeleteVolumeResponse>(
                  *controller_, &Controller::delete_volume, del)),
              StatusCode::OK)
        << last_message_;
  }
}

TEST_F(CsiTest, ErrorCodesAreTheOnesTheSpecificationAsksFor) {
  // The request's own faults.
  pb::NodeStageVolumeRequest no_cap;
  no_cap.set_volume_id(kVol);
  no_cap.set_staging_target_path(kStaging);
  EXPECT_EQ((call<pb::NodeStageVolumeRequest, pb::NodeStageVolumeResponse>(
                *node_, &Node::node_stage_volume, no_cap)),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(stage(mount_cap(pb::VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER)),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(stage(mount_cap(), "/var/lib/kubelet/pods/u1/volumes/elsewhere/x"),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(stage(mount_cap(), "/etc/globalmount"), StatusCode::INVALID_ARGUMENT);
  pb::CreateVolumeRequest creds;
  creds.set_name(kVol);
  *creds.add_volume_capabilities() = mount_cap();
  (*creds.mutable_parameters())["serverPasswd"] = "hunter2";
  EXPECT_EQ((call<pb::CreateVolumeRequest, pb::CreateVolumeResponse>(
                *controller_, &Controller::create_volume, creds)),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(last_message_.find("hunter2"), std::string::npos) << "never echo a secret";

  // Not there, or not in the state the call needs.
  EXPECT_EQ(publish_to("node-a"), StatusCode::NOT_FOUND) << last_message_;
  ASSERT_EQ(create(3), StatusCode::OK);
  EXPECT_EQ(create(5), StatusCode::ALREADY_EXISTS) << "a bigger volume of the same name";
  EXPECT_EQ(publish_to("node-c"), StatusCode::NOT_FOUND) << "no initiator registered for node-c";
  EXPECT_EQ(stage(), StatusCode::UNAVAILABLE) << "not granted to this node yet: retry";
  EXPECT_EQ(node_publish(kTarget), StatusCode::FAILED_PRECONDITION) << "not staged";
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK);
  EXPECT_EQ(publish_to("node-b"), StatusCode::FAILED_PRECONDITION) << last_message_;
  pb::DeleteVolumeRequest del;
  del.set_volume_id(kVol);
  EXPECT_EQ((call<pb::DeleteVolumeRequest, pb::DeleteVolumeResponse>(
                *controller_, &Controller::delete_volume, del)),
            StatusCode::FAILED_PRECONDITION)
      << "still published to node-a";
  EXPECT_TRUE(array().names.count(kVol));
}

TEST_F(CsiTest, ACallForAVolumeWithAnotherInFlightIsAborted) {
  ASSERT_EQ(create(), StatusCode::OK);
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK);
  mounter_.slow = true;
  pb::NodeStageVolumeRequest r;
  r.set_volume_id(kVol);
  r.set_staging_target_path(kStaging);
  *r.mutable_volume_capability() = mount_cap();
  pb::NodeStageVolumeResponse first_resp, second_resp;
  std::optional<grpc::Status> first, second;
  asio::co_spawn(ioc_, node_->node_stage_volume(r, first_resp),
                 [&](std::exception_ptr, grpc::Status s) { first = s; });
  asio::co_spawn(ioc_, node_->node_stage_volume(r, second_resp),
                 [&](std::exception_ptr, grpc::Status s) { second = s; });
  ioc_.restart();
  ioc_.run();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->error_code(), StatusCode::OK) << first->error_message();
  EXPECT_EQ(second->error_code(), StatusCode::ABORTED);
  EXPECT_EQ(stage(), StatusCode::OK) << "the slot is free again";
}

TEST_F(CsiTest, ARawBlockVolumeIsStagedWithoutAFilesystemAndPublishedAsTheDevice) {
  ASSERT_EQ(create(), StatusCode::OK);
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK);
  ASSERT_EQ(stage(block_cap(), kBlockStaging), StatusCode::OK) << last_message_;
  EXPECT_EQ(mounter_.formats, 0) << "no mkfs on a block volume";
  EXPECT_FALSE(mounted(kBlockStaging));
  ASSERT_EQ(node_publish(kBlockTarget, block_cap(), kBlockStaging), StatusCode::OK)
      << last_message_;
  const auto bound =
      std::find_if(mounter_.table.begin(), mounter_.table.end(),
                   [](const mount::MountEntry& m) { return m.target == kBlockTarget; });
  ASSERT_NE(bound, mounter_.table.end());
  EXPECT_EQ(bound->source, "/dev/sdz") << "the session disk itself, bound onto kubelet's file";
  EXPECT_EQ(node_publish(kTarget, mount_cap(), kBlockStaging), StatusCode::FAILED_PRECONDITION);

  pb::NodeGetVolumeStatsRequest sr;
  sr.set_volume_id(kVol);
  sr.set_volume_path(kBlockTarget);
  pb::NodeGetVolumeStatsResponse stats;
  ASSERT_EQ((call(*node_, &Node::node_get_volume_stats, sr, &stats)), StatusCode::OK)
      << last_message_;
  ASSERT_EQ(stats.usage_size(), 1);
  EXPECT_EQ(stats.usage(0).total(), 10 * kGiB);
  EXPECT_EQ(stats_.paths.back(), "/dev/sdz");

  ASSERT_EQ(node_unpublish(kBlockTarget), StatusCode::OK);
  ASSERT_EQ(unstage(kBlockStaging), StatusCode::OK) << last_message_;
  EXPECT_FALSE(manager_->served(kVol));
  EXPECT_TRUE(initiator_.live.empty() || initiator_.calls.back().rfind("disconnect", 0) == 0);
}

TEST_F(CsiTest, StatsCarryTheKeepersConditionAndRefuseOtherPaths) {
  ASSERT_EQ(create(), StatusCode::OK);
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK);
  ASSERT_EQ(stage(), StatusCode::OK);
  ASSERT_EQ(node_publish(kTarget), StatusCode::OK);
  pb::NodeGetVolumeStatsRequest sr;
  sr.set_volume_id(kVol);
  sr.set_volume_path(kTarget);
  pb::NodeGetVolumeStatsResponse stats;
  condition_ = Condition{false, "session healthy"};
  ASSERT_EQ((call(*node_, &Node::node_get_volume_stats, sr, &stats)), StatusCode::OK);
  EXPECT_FALSE(stats.volume_condition().abnormal());
  ASSERT_EQ(stats.usage_size(), 2);
  EXPECT_EQ(stats.usage(0).used(), 3 * kGiB);
  EXPECT_EQ(stats.usage(1).unit(), pb::VolumeUsage::INODES);

  condition_ = Condition{true, "session recovering: portal 172.28.0.1:3260 unreachable"};
  ASSERT_EQ((call(*node_, &Node::node_get_volume_stats, sr, &stats)), StatusCode::OK);
  EXPECT_TRUE(stats.volume_condition().abnormal());
  EXPECT_NE(stats.volume_condition().message().find("recovering"), std::string::npos);

  sr.set_volume_path("/var/lib/kubelet/pods/u9/volumes/kubernetes.io~csi/other/mount");
  EXPECT_EQ((call(*node_, &Node::node_get_volume_stats, sr, &stats)), StatusCode::NOT_FOUND);
  sr.set_volume_id("pvc-unknown");
  EXPECT_EQ((call(*node_, &Node::node_get_volume_stats, sr, &stats)), StatusCode::NOT_FOUND);
}

TEST_F(CsiTest, ARestartKeepsTheStagedVolumeAsCsiAndAMovedGrantSelfFences) {
  ASSERT_EQ(create(), StatusCode::OK);
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK);
  ASSERT_EQ(stage(), StatusCode::OK);
  ASSERT_EQ(node_publish(kTarget), StatusCode::OK);
  restart();
  auto served = manager_->served(kVol);
  ASSERT_TRUE(served);
  EXPECT_EQ(served->mode, volume::Mode::csi);
  EXPECT_EQ(served->pods.size(), 1u);
  EXPECT_EQ(node_publish(kTarget), StatusCode::OK) << "still published after the restart";

  // Kubernetes force-detached node-a and attached node-b: node-a's next grant check fences.
  ASSERT_EQ(unpublish_from("node-a"), StatusCode::OK);
  ASSERT_EQ(publish_to("node-b"), StatusCode::OK);
  testing::run_async(ioc_, manager_->renew_leases());
  EXPECT_FALSE(mounted(kTarget));
  EXPECT_FALSE(mounted(kStaging));
  EXPECT_FALSE(manager_->served(kVol));
}

TEST_F(CsiTest, ARestartKeepsAStagedVolumeNoPodUsesYet) {
  // kubelet staged it and has not published it: the staging is kubelet's, kept across a restart
  // (in an agent whose FlexVolume side runs in agent mode) until NodeUnstageVolume.
  ASSERT_EQ(create(), StatusCode::OK);
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK);
  ASSERT_EQ(stage(), StatusCode::OK);
  restart();
  testing::run_async(ioc_, manager_->release_leftovers());
  const auto served = manager_->served(kVol);
  ASSERT_TRUE(served) << "the staged volume was released at start-up";
  EXPECT_TRUE(served->staged);
  EXPECT_TRUE(mounted(kStaging));
  EXPECT_EQ(node_publish(kTarget), StatusCode::OK) << last_message_;
}

TEST_F(CsiTest, AVolumeAFlexVolumePodUsesHereIsNotStagedThroughCsiToo) {
  ASSERT_EQ(create(), StatusCode::OK);
  auto vo = edf::parse_volume_options({{"volumeID", kVol}},
                                      volume::base_manager_options().default_backend);
  ASSERT_TRUE(vo);
  volume::PublishRequest flex{kVol, "/var/lib/kubelet/pods/u7/volumes/datera~iscsi/pv", false,
                              volume::StageRequest{*vo, {}, "", true, volume::Mode::agent},
                              volume::Mode::agent};
  auto done = testing::run_async(ioc_, manager_->publish(flex));
  ASSERT_TRUE(done) << done.error().message();
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK) << last_message_;  // the controller cannot know
  EXPECT_EQ(stage(), StatusCode::FAILED_PRECONDITION) << last_message_;
  EXPECT_NE(last_message_.find("in use on this node in agent mode"), std::string::npos)
      << last_message_;
}

TEST_F(CsiTest, MkfsOverAVolumeTheArraySaysIsFormattedIsAFailedPrecondition) {
  ASSERT_EQ(create(), StatusCode::OK);
  array().md[kVol]["formatted"] = "true";  // what Datera's CSI and this agent write after mkfs
  mounter_.fs = std::nullopt;              // but the device reads blank
  ASSERT_EQ(publish_to("node-a"), StatusCode::OK) << last_message_;
  EXPECT_EQ(stage(), StatusCode::FAILED_PRECONDITION) << last_message_;
  EXPECT_NE(last_message_.find("refusing mkfs"), std::string::npos) << last_message_;
  EXPECT_EQ(mounter_.formats, 0);
}

TEST_F(CsiTest, ListVolumesPagesThroughOneListing) {
  for (const char* n : {"pvc-a", "pvc-b", "pvc-c"}) array().names.insert(n);
  pb::ListVolumesRequest r;
  r.set_max_entries(2);
  pb::ListVolumesResponse page;
  ASSERT_EQ((call(*controller_, &Controller::list_volumes, r, &page)), StatusCode::OK);
  ASSERT_EQ(page.entries_size(), 2);
  EXPECT_EQ(page.entries(0).volume().volume_id(), "pvc-a");
  ASSERT_FALSE(page.next_token().empty());
  r.set_starting_token(page.next_token());
  ASSERT_EQ((call(*controller_, &Controller::list_volumes, r, &page)), StatusCode::OK);
  ASSERT_EQ(page.entries_size(), 1);
  EXPECT_EQ(page.entries(0).volume().volume_id(), "pvc-c");
  EXPECT_TRUE(page.next_token().empty());
  EXPECT_EQ(std::count(array().calls.begin(), array().calls.end(), "list"), 2);
  r.set_starting_token("garbage");
  EXPECT_EQ((call(*controller_, &Controller::list_volumes, r, &page)), StatusCode::ABORTED);
}

TEST(CsiMapping, SizesAreWholeGibWithinTheRange) {
  pb::CapacityRange r;
  EXPECT_EQ(*size_gib(r), 1);
  r.set_required_bytes(kGiB + 1);
  EXPECT_EQ(*size_gib(r), 2);
  r.set_limit_bytes(kGiB + 100);
  EXPECT_FALSE(size_gib(r)) << "2 GiB does not fit under the limit";
  r.set_required_bytes(kMaxGiB * kGiB + 1);
  r.set_limit_bytes(0);
  EXPECT_FALSE(size_gib(r));
}

TEST(CsiMapping, SecretsSelectAnotherArrayOnlyWithItsOwnCredentials) {
  edf::BackendTarget def;
  def.host = "10.0.0.1";
  def.credentials = {"admin", "password"};
  StringMap params, secrets;
  secrets["server"] = "10.0.0.9";
  EXPECT_FALSE(volume_options("pvc-1", params, secrets, "", 0, def, {"10.0.0.9"}))
      << "another array never gets the agent's credentials";
  secrets["username"] = "u";
  secrets["password"] = "p";
  auto vo = volume_options("pvc-1", params, secrets, "", 0, def, {"10.0.0.9"});
  ASSERT_TRUE(vo) << vo.error().message;
  EXPECT_EQ(vo->backend.host, "10.0.0.9");
  EXPECT_EQ(vo->backend.credentials.user, "u");
  EXPECT_FALSE(volume_options("pvc-1", params, secrets, "", 0, def, {}))
      << "not in allowed_servers";
}

TEST(CsiIdentity, ProbeIsReadyOnlyOnceReconciled) {
  asio::io_context ioc;
  bool ready = false;
  Identity id(IdentityOptions{"agent.iscsi.datera.io", "1.2.3", true}, [&] { return ready; });
  pb::ProbeResponse probe;
  (void)testing::run_async(ioc, id.probe(pb::ProbeRequest(), probe));
  EXPECT_FALSE(probe.ready().value());
  ready = true;
  (void)testing::run_async(ioc, id.probe(pb::ProbeRequest(), probe));
  EXPECT_TRUE(probe.ready().value());
  pb::GetPluginInfoResponse info;
  (void)testing::run_async(ioc, id.get_plugin_info(pb::GetPluginInfoRequest(), info));
  EXPECT_EQ(info.name(), "agent.iscsi.datera.io");
  EXPECT_EQ(info.vendor_version(), "1.2.3");
}

// ---- snapshots and clones ---------------------------------------------------------------------

class SnapshotTest : public CsiTest {
 protected:
  /// A volume granted to node-a and staged there.
  void staged_volume() {
    ASSERT_EQ(create(3), StatusCode::OK) << last_message_;
    ASSERT_EQ(publish_to("node-a"), StatusCode::OK) << last_message_;
    ASSERT_EQ(stage(), StatusCode::OK) << last_message_;
  }
  pb::CreateSnapshotRequest snap_req(const std::string& name = "snapshot-1") {
    pb::CreateSnapshotRequest r;
    r.set_name(name);
    r.set_source_volume_id(kVol);
    return r;
  }
  /// CreateSnapshot while node-a's agent runs its grant checks (with_node).
  StatusCode snapshot_with_node(const pb::CreateSnapshotRequest& r, pb::CreateSnapshotResponse* out,
                                int node_checks) {
    pb::CreateSnapshotResponse resp;
    const auto st = with_node(controller_->create_snapshot(r, resp), node_checks);
    if (out) *out = resp;
    return st;
  }
  /// Runs a controller call while node-a's agent runs its grant checks (every 20 ms,
  /// `node_checks` times): the controller's freeze request reaches the node only through the
  /// array.
  StatusCode with_node(asio::awaitable<grpc::Status> call, int node_checks) {
    grpc::Status st;
    auto run_call = [&](asio::awaitable<grpc::Status> c) -> asio::awaitable<void> {
      st = co_await std::move(c);
    };
    auto node = [&]() -> asio::awaitable<void> {
      asio::steady_timer t(co_await asio::this_coro::executor);
      for (int i = 0; i < node_checks; ++i) {
        t.expires_after(std::chrono::milliseconds(20));
        co_await t.async_wait(asio::use_awaitable);
        co_await manager_->renew_leases(std::chrono::milliseconds(0));
      }
    };
    asio::co_spawn(ioc_, run_call(std::move(call)), asio::detached);
    asio::co_spawn(ioc_, node(), asio::detached);
    ioc_.restart();
    ioc_.run();
    last_message_ = st.error_message();
    return st.error_code();
  }
  double copies(const std::string& kind, const std::string& consistency) {
    for (const auto& f : registry_.Collect()) {
      if (f.name != "datera_agent_csi_copies_total") continue;
      for (const auto& m : f.metric) {
        std::map<std::string, std::string> l;
        for (const auto& p : m.label) l[p.name] = p.value;
        if (l["kind"] == kind && l["consistency"] == consistency) return m.counter.value;
      }
    }
    return -1;
  }
};

TEST_F(SnapshotTest, TheNodeFreezesItsFilesystemAroundTheArraysSnapshot) {
  staged_volume();
  std::vector<std::string> seen;  // what happened, with the array's snapshot count at the time
  mounter_.on_freeze = [&](const std::string& what) {
    seen.push_back(what + " with " + std::to_string(array().snaps[kVol].size()) + " snapshot(s)");
  };
  pb::CreateSnapshotResponse made;
  ASSERT_EQ(snapshot_with_node(snap_req(), &made, 10), StatusCode::OK) << last_message_;
  EXPECT_EQ(seen,
            (std::vector<std::string>{"freeze with 0 snapshot(s)", "thaw with 1 snapshot(s)"}));
  EXPECT_TRUE(mounter_.frozen.empty());
  const auto& s = made.snapshot();
  ASSERT_EQ(array().snaps[kVol].size(), 1u);
  EXPECT_EQ(s.snapshot_id(), std::string(kVol) + ":" + array().snaps[kVol][0].timestamp);
  EXPECT_EQ(s.source_volume_id(), kVol);
  EXPECT_EQ(s.size_bytes(), 3 * kGiB);
  EXPECT_TRUE(s.ready_to_use());
  EXPECT_EQ(s.creation_time().seconds(), 1'700'000'000);
  EXPECT_EQ(s.creation_time().nanos(), 1);
  EXPECT_EQ(copies("snapshot", "frozen"), 1);
  // The request and the answer are gone from the array; the record no longer says frozen.
  EXPECT_EQ(array().md[kVol].count(volume::kFreezeKey), 0u);
  EXPECT_EQ(array().md[kVol].count(volume::kFrozenKey), 0u);
  const auto rec = manager_->served(kVol);
  ASSERT_TRUE(rec);
}

TEST_F(SnapshotTest, ANodeThatNeverAnswersGetsACrashConsistentSnapshotAfterTheWait) {
  staged_volume();
  const auto start = std::chrono::steady_clock::now();
  pb::CreateSnapshotResponse made;
  ASSERT_EQ(snapshot_with_node(snap_req(), &made, 0), StatusCode::OK) << last_message_;
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1'000));
  EXPECT_EQ(array().snaps[kVol].size(), 1u);
  EXPECT_TRUE(std::none_of(mounter_.calls.begin(), mounter_.calls.end(),
                           [](const std::string& c) { return c.rfind("freeze", 0) == 0; }));
  EXPECT_EQ(copies("snapshot", "crash_consistent"), 1);
  EXPECT_EQ(copies("snapshot", "frozen"), 0);
  EXPECT_EQ(array().md[kVol].count(volume::kFreezeKey), 0u) << "the request is withdrawn";
}

TEST_F(SnapshotTest, AFilesystemThatCannotFreezeIsSaidSoAndTheSnapshotGoesOn) {
  staged_volume();
  mounter_.freeze_error = Error{"EPERM"};
  ASSERT_EQ(snapshot_with_node(snap_req(), nullptr, 10), StatusCode::OK) << last_message_;
  EXPECT_EQ(array().snaps[kVol].size(), 1u);
  EXPECT_EQ(copies("snapshot", "crash_consistent"), 1);
}

TEST_F(SnapshotTest, AVolumeNoNodeHoldsIsSnapshotWithoutAFreeze) {
  ASSERT_EQ(create(3), StatusCode::OK) << last_message_;
  ASSERT_EQ(snapshot_with_node(snap_req(), nullptr, 0), StatusCode::OK) << last_message_;
  EXPECT_EQ(copies("snapshot", "unheld"), 1);
  EXPECT_EQ(array().md[kVol].count(volume::kFreezeKey), 0u);
}

TEST_F(SnapshotTest, ARetriedCreateSnapshotYieldsTheSameSnapshot) {
  staged_volume();
  pb::CreateSnapshotResponse first, again;
  ASSERT_EQ(snapshot_with_node(snap_req(), &first, 10), StatusCode::OK) << last_message_;
  ASSERT_EQ(snapshot_with_node(snap_req(), &again, 0), StatusCode::OK) << last_message_;
  EXPECT_EQ(first.snapshot().snapshot_id(), again.snapshot().snapshot_id());
  EXPECT_EQ(array().snaps[kVol].size(), 1u);
  pb::CreateSnapshotResponse other;
  ASSERT_EQ(snapshot_with_node(snap_req("snapshot-2"), &other, 10), StatusCode::OK);
  EXPECT_NE(other.snapshot().snapshot_id(), first.snapshot().snapshot_id());
  EXPECT_EQ(array().snaps[kVol].size(), 2u);
}

TEST_F(SnapshotTest, CreateSnapshotChecksItsArguments) {
  pb::CreateSnapshotResponse resp;
  auto r = snap_req();
  r.clear_name();
  EXPECT_EQ(call(*controller_, &Controller::create_snapshot, r, &resp),
            StatusCode::INVALID_ARGUMENT);
  r = snap_req();
  r.set_source_volume_id("../etc");
  EXPECT_EQ(call(*controller_, &Controller::create_snapshot, r, &resp), StatusCode::NOT_FOUND);
  r = snap_req();  // a valid name the array does not have
  EXPECT_EQ(call(*controller_, &Controller::create_snapshot, r, &resp), StatusCode::NOT_FOUND);
}

TEST_F(SnapshotTest, AVolumeWithSnapshotsIsNotDeletedUntilTheyAre) {
  ASSERT_EQ(create(3), StatusCode::OK) << last_message_;
  pb::CreateSnapshotResponse made;
  ASSERT_EQ(snapshot_with_node(snap_req(), &made, 0), StatusCode::OK) << last_message_;
  pb::DeleteVolumeRequest del;
  del.set_volume_id(kVol);
  EXPECT_EQ((call<pb::DeleteVolumeRequest, pb::DeleteVolumeResponse>(
                *controller_, &Controller::delete_volume, del)),
            StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(last_message_.find(made.snapshot().snapshot_id()), std::string::npos) << last_message_;
  pb::DeleteSnapshotRequest ds;
  ds.set_snapshot_id(made.snapshot().snapshot_id());
  for (int i = 0; i < 2; ++i) {  // idempotent
    EXPECT_EQ((call<pb::DeleteSnapshotRequest, pb::DeleteSnapshotResponse>(
                  *controller_, &Controller::delete_snapshot, ds)),
              StatusCode::OK);
  }
  EXPECT_TRUE(array().snaps[kVol].empty());
  for (const char* junk : {"no-colon", "pvc-1:12a", "../x:1", "pvc-1:"}) {
    ds.set_snapshot_id(junk);
    EXPECT_EQ((call<pb::DeleteSnapshotRequest, pb::DeleteSnapshotResponse>(
                  *controller_, &Controller::delete_snapshot, ds)),
              StatusCode::OK)
        << junk;
  }
  EXPECT_EQ((call<pb::DeleteVolumeRequest, pb::DeleteVolumeResponse>(
                *controller_, &Controller::delete_volume, del)),
            StatusCode::OK)
      << last_message_;
}

TEST_F(SnapshotTest, ListSnapshotsFiltersAndPagesOverOneListing) {
  ASSERT_EQ(create(3), StatusCode::OK) << last_message_;
  std::vector<std::string> ids;
  for (const char* n : {"s1", "s2", "s3"}) {
    pb::CreateSnapshotResponse made;
    ASSERT_EQ(snapshot_with_node(snap_req(n), &made, 0), StatusCode::OK) << last_message_;
    ids.push_back(made.snapshot().snapshot_id());
  }
  array().calls.clear();
  pb::ListSnapshotsRequest r;
  r.set_max_entries(2);
  pb::ListSnapshotsResponse page;
  ASSERT_EQ(call(*controller_, &Controller::list_snapshots, r, &page), StatusCode::OK);
  ASSERT_EQ(page.entries_size(), 2);
  EXPECT_EQ(page.entries(0).snapshot().snapshot_id(), ids[0]);
  EXPECT_EQ(page.next_token(), "2");
  EXPECT_EQ(array().calls, std::vector<std::string>{"list"});
  r.set_starting_token(page.next_token());
  ASSERT_EQ(call(*controller_, &Controller::list_snapshots, r, &page), StatusCode::OK);
  ASSERT_EQ(page.entries_size(), 1);
  EXPECT_EQ(page.entries(0).snapshot().snapshot_id(), ids[2]);
  EXPECT_TRUE(page.next_token().empty());

  pb::ListSnapshotsRequest by_id;
  by_id.set_snapshot_id(ids[1]);
  ASSERT_EQ(call(*controller_, &Controller::list_snapshots, by_id, &page), StatusCode::OK);
  ASSERT_EQ(page.entries_size(), 1);
  EXPECT_EQ(page.entries(0).snapshot().snapshot_id(), ids[1]);
  by_id.set_snapshot_id("pvc-1:1");
  ASSERT_EQ(call(*controller_, &Controller::list_snapshots, by_id, &page), StatusCode::OK);
  EXPECT_EQ(page.entries_size(), 0);
  pb::ListSnapshotsRequest by_source;
  by_source.set_source_volume_id("other-volume");
  ASSERT_EQ(call(*controller_, &Controller::list_snapshots, by_source, &page), StatusCode::OK);
  EXPECT_EQ(page.entries_size(), 0);
  r.set_starting_token("x");
  EXPECT_EQ(call(*controller_, &Controller::list_snapshots, r, &page), StatusCode::ABORTED);
}

TEST_F(SnapshotTest, AVolumeRestoredFromASnapshotIsAClone) {
  ASSERT_EQ(create(3), StatusCode::OK) << last_message_;
  pb::CreateSnapshotResponse snap;
  ASSERT_EQ(snapshot_with_node(snap_req(), &snap, 0), StatusCode::OK) << last_message_;
  pb::CreateVolumeRequest r;
  r.set_name("restored");
  r.mutable_capacity_range()->set_required_bytes(5 * kGiB);
  *r.add_volume_capabilities() = mount_cap();
  r.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id(
      snap.snapshot().snapshot_id());
  pb::CreateVolumeResponse made;
  ASSERT_EQ(call(*controller_, &Controller::create_volume, r, &made), StatusCode::OK)
      << last_message_;
  EXPECT_EQ(array().cloned_from["restored"],
            edf::snapshot_path(kVol, array().snaps[kVol][0].timestamp));
  EXPECT_EQ(array().sizes["restored"], 5) << "grown from the snapshot's 3 GiB to the request";
  EXPECT_EQ(made.volume().capacity_bytes(), 5 * kGiB);
  EXPECT_EQ(made.volume().content_source().snapshot().snapshot_id(), snap.snapshot().snapshot_id());
  EXPECT_EQ(made.volume().volume_context().at("copyOf"),
            "snapshot " + snap.snapshot().snapshot_id())
      << "the node mounts it with xfs's nouuid";
  // A retry is the same volume; the same name from another source is not.
  ASSERT_EQ(call(*controller_, &Controller::create_volume, r, &made), StatusCode::OK)
      << last_message_;
  auto other = r;
  other.mutable_volume_content_source()->mutable_volume()->set_volume_id(kVol);
  EXPECT_EQ(call(*controller_, &Controller::create_volume, other, &made),
            StatusCode::ALREADY_EXISTS);
  // Smaller than the source, an unknown snapshot, one not ready yet.
  auto small = r;
  small.set_name("small");
  small.mutable_capacity_range()->set_required_bytes(1 * kGiB);
  EXPECT_EQ(call(*controller_, &Controller::create_volume, small, &made), StatusCode::OUT_OF_RANGE);
  auto unknown = r;
  unknown.set_name("unknown");
  unknown.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id("pvc-1:42.0");
  EXPECT_EQ(call(*controller_, &Controller::create_volume, unknown, &made), StatusCode::NOT_FOUND);
  array().new_snapshot_state = "unavailable";
  pb::CreateSnapshotResponse pending;
  ASSERT_EQ(snapshot_with_node(snap_req("later"), &pending, 0), StatusCode::OK);
  EXPECT_FALSE(pending.snapshot().ready_to_use());
  auto early = r;
  early.set_name("early");
  early.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id(
      pending.snapshot().snapshot_id());
  EXPECT_EQ(call(*controller_, &Controller::create_volume, early, &made), StatusCode::UNAVAILABLE);
  EXPECT_EQ(array().names.count("early"), 0u);
}

TEST_F(SnapshotTest, ACloneOfAStagedVolumeIsTakenFrozen) {
  staged_volume();
  pb::CreateVolumeRequest r;
  r.set_name("clone");
  r.mutable_capacity_range()->set_required_bytes(3 * kGiB);
  *r.add_volume_capabilities() = mount_cap();
  r.mutable_volume_content_source()->mutable_volume()->set_volume_id(kVol);
  pb::CreateVolumeResponse made;
  ASSERT_EQ(with_node(controller_->create_volume(r, made), 10), StatusCode::OK) << last_message_;
  EXPECT_EQ(array().cloned_from["clone"], edf::volume_path(kVol));
  EXPECT_EQ(copies("clone", "frozen"), 1);
  EXPECT_TRUE(mounter_.frozen.empty());
}

TEST_F(SnapshotTest, AFreezeLeftByACrashedAgentIsThawedAtStart) {
  staged_volume();
  // The journal as an agent that died frozen left it.
  std::vector<std::string> problems;
  auto records = journal_.load_all(&problems);
  ASSERT_EQ(records.size(), 1u);
  records[0].frozen = "some-request";
  ASSERT_TRUE(testing::run_async(ioc_, journal_.save(records[0])));
  mounter_.frozen.insert(kStaging);
  restart();
  EXPECT_TRUE(mounter_.frozen.empty());
  EXPECT_NE(std::find(mounter_.calls.begin(), mounter_.calls.end(), "thaw " + kStaging),
            mounter_.calls.end());
  records = journal_.load_all(&problems);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(records[0].frozen.empty());
}

TEST(FreezeCodec, RoundTripsAndRefusesWhatTheArrayShouldNotHold) {
  const volume::FreezeRequest req{"abc-1", "node-a", 1'700'000'000'000};
  edf::Metadata md{{volume::kFreezeKey, volume::encode(req)}};
  const auto back = volume::freeze_request(md);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->id, "abc-1");
  EXPECT_EQ(back->node, "node-a");
  EXPECT_EQ(back->expires_ms, 1'700'000'000'000);
  for (const char* bad : {"", "a b", "a b c d", "a b -5", "a b 12x", "a\tb 5 6", "a b\n 5"}) {
    md[volume::kFreezeKey] = bad;
    EXPECT_FALSE(volume::freeze_request(md)) << bad;
  }
  md[volume::kFrozenKey] = volume::encode(volume::FreezeReply{"abc-1", "frozen"});
  ASSERT_TRUE(volume::freeze_reply(md));
  EXPECT_EQ(volume::freeze_reply(md)->state, "frozen");
  md[volume::kFrozenKey] = "abc-1";
  EXPECT_FALSE(volume::freeze_reply(md));
}

}  // namespace
}  // namespace datera::csi

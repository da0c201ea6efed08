// The volume::Array contract: what the volume manager and the controller rely on from an array,
// checked against both implementations they meet. FakeArray is what the unit tier runs on; the real
// one is EdfArrays (its EDF client) talking to datera-sim's Api in this process, without a socket:
// the client's transport (EdfArraysOptions::make_transport) calls the Api's handler. A case that
// passes for one and fails for the other means the unit tier proves something the agent does not
// do: fix the fake, or report the client.

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "agent/volume/array.h"
#include "tests/testing/fake_array.h"
#include "tests/testing/handler_transport.h"
#include "tests/testing/run_async.h"
#include "tools/datera-sim/api.h"

namespace datera::volume {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

const std::string kIqnA = "iqn.1993-08.org.debian:01:node-a";
const std::string kIqnB = "iqn.1993-08.org.debian:01:node-b";

edf::VolumeSpec spec(const std::string& name, int64_t gib = 16) {
  edf::VolumeSpec s;
  s.name = name;
  s.size_gib = gib;
  return s;
}

/// The unit tier's in-memory array.
struct FakeBackend {
  asio::io_context ioc;
  testing::FakeArray fake;
  Array& array() { return fake; }
  /// New snapshots stay unavailable for the rest of the test.
  void slow_snapshots() { fake.new_snapshot_state = "unavailable"; }
};

/// The real client stack (EdfArrays, EDF client) against the simulator's protocol layer, both on
/// `ioc`: the client's transport hands each request to the simulator's Api in process.
struct SimBackend {
  SimBackend() {
    EdfArraysOptions o;
    o.request_timeout = 5s;
    o.make_transport = [this](const edf::Endpoint& at) -> Result<std::unique_ptr<edf::Transport>> {
      auto t = std::make_unique<testing::HandlerTransport>(api, at.host);
      transport = t.get();
      return std::unique_ptr<edf::Transport>(std::move(t));
    };
    arrays = std::make_unique<EdfArrays>(ioc.get_executor(), o, edf_probe, null_logger());
    auto got = arrays->get(edf::BackendTarget{"datera-sim.test", 7717, {"admin", "password"}});
    if (!got) throw std::runtime_error(got.error().message);
    real = *got;
  }
  Array& array() { return *real; }
  /// New snapshots stay unavailable for the rest of the test (call before creating anything).
  void slow_snapshots() {
    sim::ModelOptions o;
    o.op_state_delay = 1h;
    model = sim::Model{o, sim::system_clock()};
  }

  asio::io_context ioc;
  sim::Model model{sim::ModelOptions{}, sim::system_clock()};
  sim::Sessions sessions{sim::system_clock(), 15min, {{"admin", "password"}}};
  sim::Api api{model, sessions, null_logger()};
  prometheus::Registry registry;
  edf::Metrics edf_probe{registry};
  testing::HandlerTransport* transport = nullptr;  ///< the client's, made by EdfArrays
  std::unique_ptr<EdfArrays> arrays;
  Array* real = nullptr;
};

template <typename Backend>
class ArrayContract : public ::testing::Test {
 protected:
  Array& array() { return backend_.array(); }
  template <typename T>
  T run(asio::awaitable<T> task) {
    return testing::run_async(backend_.ioc, std::move(task));
  }
  edf::AppInstance create(const std::string& name, int64_t gib = 16) {
    auto ai = run(array().ensure_volume(spec(name, gib)));
    EXPECT_TRUE(ai) << ai.error().message;
    return ai ? *ai : edf::AppInstance{};
  }
  std::optional<edf::AppInstance> find(const std::string& name) {
    auto found = run(array().find_volume(name));
    EXPECT_TRUE(found) << found.error().message;
    return found ? *found : std::nullopt;
  }
  void ok(asio::awaitable<Status> task, const std::string& why = "") {
    const auto st = run(std::move(task));
    EXPECT_TRUE(st) << st.error().message << " " << why;
  }
  std::vector<std::string> acl(const std::string& name) {
    auto a = run(array().acl(name));
    EXPECT_TRUE(a) << a.error().message;
    return a ? *a : std::vector<std::string>{};
  }

  Backend backend_;
};

using Backends = ::testing::Types<FakeBackend, SimBackend>;
class BackendNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, FakeBackend> ? "FakeArray" : "EdfArraysOnDateraSim";
  }
};
TYPED_TEST_SUITE(ArrayContract, Backends, BackendNames);

TYPED_TEST(ArrayContract, EnsureVolumeCreatesOnceAndIsIdempotentByName) {
  const auto first = this->create("vol-1");
  EXPECT_EQ(first.name, "vol-1");
  EXPECT_FALSE(first.iqn.empty());
  EXPECT_FALSE(first.ips.empty());
  EXPECT_FALSE(first.volume_uuid.empty());
  const auto again = this->create("vol-1");
  EXPECT_EQ(again.volume_uuid, first.volume_uuid) << "the same app instance, not a second one";
  auto names = this->run(this->array().volume_names());
  ASSERT_TRUE(names);
  EXPECT_EQ(*names, std::vector<std::string>{"vol-1"});
}

TYPED_TEST(ArrayContract, AnUnknownVolumeIsNotFoundWithoutAnError) {
  EXPECT_EQ(this->find("vol-none"), std::nullopt);
  this->create("vol-1");
  const auto found = this->find("vol-1");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->name, "vol-1");
  EXPECT_EQ(found->size_gib, 16);
}

TYPED_TEST(ArrayContract, AclAddAndRemoveAreIdempotent) {
  this->create("vol-1");
  this->ok(this->array().ensure_initiator(kIqnA, "k8s_node_a"));
  this->ok(this->array().ensure_initiator(kIqnB, "k8s_node_b"));
  this->ok(this->array().acl_add("vol-1", kIqnA));
  this->ok(this->array().acl_add("vol-1", kIqnA));
  this->ok(this->array().acl_add("vol-1", kIqnB));
  auto both = this->acl("vol-1");
  std::sort(both.begin(), both.end());
  EXPECT_EQ(both, (std::vector<std::string>{kIqnA, kIqnB})) << "each initiator once";
  this->ok(this->array().acl_remove("vol-1", kIqnA));
  this->ok(this->array().acl_remove("vol-1", kIqnA), "already gone is removed");
  EXPECT_EQ(this->acl("vol-1"), std::vector<std::string>{kIqnB});
}

TYPED_TEST(ArrayContract, AclChangesOnAnUnknownVolumeFailWithNotFound) {
  this->ok(this->array().ensure_initiator(kIqnA, "k8s_node_a"));
  auto added = this->run(this->array().acl_add("vol-none", kIqnA));
  ASSERT_FALSE(added);
  EXPECT_EQ(added.error().code, HttpStatus::not_found) << added.error().message;
}

TYPED_TEST(ArrayContract, OnlyARegisteredInitiatorCanBeAddedToAnAcl) {
  this->create("vol-1");
  auto added = this->run(this->array().acl_add("vol-1", kIqnA));
  ASSERT_FALSE(added) << "EDF wants POST /initiators first";
  EXPECT_EQ(added.error().code, HttpStatus::not_found) << added.error().message;
  EXPECT_TRUE(this->acl("vol-1").empty());
}

TYPED_TEST(ArrayContract, BringOnlineYieldsAnAvailableOnlineVolume) {
  this->create("vol-1");
  auto on = this->run(this->array().bring_online("vol-1", 2s));
  ASSERT_TRUE(on) << on.error().message;
  EXPECT_EQ(on->op_state, "available");
  EXPECT_EQ(on->admin_state, "online");
  EXPECT_EQ(this->find("vol-1")->admin_state, "online");
}

TYPED_TEST(ArrayContract, MetadataPutMergesAndAnEmptyValueDeletesTheKey) {
  this->create("vol-1");
  this->ok(this->array().put_metadata("vol-1", {{"a", "1"}, {"b", "2"}}));
  this->ok(this->array().put_metadata("vol-1", {{"a", ""}, {"c", "3"}}));
  auto md = this->run(this->array().metadata("vol-1"));
  ASSERT_TRUE(md) << md.error().message;
  EXPECT_EQ(*md, (edf::Metadata{{"b", "2"}, {"c", "3"}}));
}

TYPED_TEST(ArrayContract, MetadataOfAnUnknownVolumeFailsWithNotFound) {
  auto md = this->run(this->array().metadata("vol-none"));
  ASSERT_FALSE(md);
  EXPECT_EQ(md.error().code, HttpStatus::not_found);
  auto put = this->run(this->array().put_metadata("vol-none", {{"a", "1"}}));
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, HttpStatus::not_found);
}

TYPED_TEST(ArrayContract, ResizeGrowsAndNeverShrinks) {
  this->create("vol-1", 16);
  this->ok(this->array().resize("vol-1", 20));
  EXPECT_EQ(this->find("vol-1")->size_gib, 20);
  auto shrink = this->run(this->array().resize("vol-1", 10));
  EXPECT_FALSE(shrink) << "a volume is never shrunk";
  EXPECT_EQ(this->find("vol-1")->size_gib, 20);
}

TYPED_TEST(ArrayContract, ListingReturnsEveryVolumeAcrossPages) {
  std::vector<std::string> want;
  for (size_t i = 0; i < edf::Client::kListPage + 5; ++i) {
    want.push_back("vol-" + std::to_string(1000 + i));
    this->create(want.back());
  }
  auto all = this->run(this->array().list_volumes());
  ASSERT_TRUE(all) << all.error().message;
  std::vector<std::string> listed;
  for (const auto& ai : *all) listed.push_back(ai.name);
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(listed, want);
  auto names = this->run(this->array().volume_names());
  ASSERT_TRUE(names);
  std::sort(names->begin(), names->end());
  EXPECT_EQ(*names, want);
}

TYPED_TEST(ArrayContract, AnInitiatorIsRegisteredOnceUnderItsLabel) {
  this->ok(this->array().ensure_initiator(kIqnA, "k8s_node_a"));
  this->ok(this->array().ensure_initiator(kIqnA, "k8s_node_a"));
  auto all = this->run(this->array().initiators());
  ASSERT_TRUE(all) << all.error().message;
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().iqn, kIqnA);
  EXPECT_EQ(all->front().name, "k8s_node_a");
}

TYPED_TEST(ArrayContract, DeleteRemovesTheVolumeAndIsIdempotent) {
  this->create("vol-1");
  this->ok(this->array().put_metadata("vol-1", {{"a", "1"}}));
  this->ok(this->array().delete_volume("vol-1"));
  EXPECT_EQ(this->find("vol-1"), std::nullopt);
  this->ok(this->array().delete_volume("vol-1"), "already gone counts as deleted");
  auto names = this->run(this->array().volume_names());
  ASSERT_TRUE(names);
  EXPECT_TRUE(names->empty());
  // A volume created again under the name starts with no metadata of the old one.
  this->create("vol-1");
  auto md = this->run(this->array().metadata("vol-1"));
  ASSERT_TRUE(md);
  EXPECT_TRUE(md->empty());
}

const std::string kUuid1 = "6a1c4e2f-0b3d-4c5e-8f70-112233445566";
const std::string kUuid2 = "7b2d5f30-1c4e-4d6f-9081-223344556677";

TYPED_TEST(ArrayContract, ASnapshotIsTakenOncePerUuidAndListedOldestFirst) {
  this->create("vol-1");
  auto first = this->run(this->array().create_snapshot("vol-1", kUuid1));
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->app_instance, "vol-1");
  EXPECT_EQ(first->uuid, kUuid1);
  EXPECT_FALSE(first->timestamp.empty());
  EXPECT_TRUE(first->available());
  auto again = this->run(this->array().create_snapshot("vol-1", kUuid1));
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->timestamp, first->timestamp) << "the same uuid is the same snapshot";
  auto second = this->run(this->array().create_snapshot("vol-1", kUuid2));
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_NE(second->timestamp, first->timestamp);

  auto all = this->run(this->array().snapshots("vol-1"));
  ASSERT_TRUE(all) << all.error().message;
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].uuid, kUuid1);
  EXPECT_EQ((*all)[1].uuid, kUuid2);
  // The app instance lists them too (a listing of every volume shows every snapshot).
  const auto found = this->find("vol-1");
  ASSERT_TRUE(found);
  ASSERT_EQ(found->snapshots.size(), 2u);
  EXPECT_EQ(found->snapshots[0].timestamp, first->timestamp);
  auto listed = this->run(this->array().list_volumes());
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().snapshots.size(), 2u);
}

TYPED_TEST(ArrayContract, SnapshotsOfAnUnknownVolumeFailWithNotFound) {
  auto taken = this->run(this->array().create_snapshot("vol-none", kUuid1));
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, HttpStatus::not_found) << taken.error().message;
  auto listed = this->run(this->array().snapshots("vol-none"));
  ASSERT_FALSE(listed);
  EXPECT_EQ(listed.error().code, HttpStatus::not_found) << listed.error().message;
}

TYPED_TEST(ArrayContract, DeleteSnapshotIsIdempotent) {
  this->create("vol-1");
  auto s = this->run(this->array().create_snapshot("vol-1", kUuid1));
  ASSERT_TRUE(s) << s.error().message;
  this->ok(this->array().delete_snapshot("vol-1", s->timestamp));
  this->ok(this->array().delete_snapshot("vol-1", s->timestamp), "already gone is deleted");
  this->ok(this->array().delete_snapshot("vol-none", s->timestamp), "so is its app instance");
  auto all = this->run(this->array().snapshots("vol-1"));
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->empty());
}

TYPED_TEST(ArrayContract, DeletingAVolumeDeletesItsSnapshots) {
  this->create("vol-1");
  ASSERT_TRUE(this->run(this->array().create_snapshot("vol-1", kUuid1)));
  this->ok(this->array().delete_volume("vol-1"));
  this->create("vol-1");
  auto all = this->run(this->array().snapshots("vol-1"));
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->empty()) << "a new volume under the old name has none of its snapshots";
}

TYPED_TEST(ArrayContract, ClonesTakeTheSizeOfTheirSource) {
  this->create("vol-1", 20);
  auto s = this->run(this->array().create_snapshot("vol-1", kUuid1));
  ASSERT_TRUE(s) << s.error().message;
  this->ok(this->array().resize("vol-1", 24));

  auto from_snapshot = spec("vol-2", 16);
  from_snapshot.clone_snapshot_src = edf::snapshot_path("vol-1", s->timestamp);
  auto c1 = this->run(this->array().ensure_volume(from_snapshot));
  ASSERT_TRUE(c1) << c1.error().message;
  EXPECT_EQ(c1->size_gib, 20) << "the snapshot's size";
  auto from_volume = spec("vol-3", 16);
  from_volume.clone_volume_src = edf::volume_path("vol-1");
  auto c2 = this->run(this->array().ensure_volume(from_volume));
  ASSERT_TRUE(c2) << c2.error().message;
  EXPECT_EQ(c2->size_gib, 24) << "the volume's size now";
  EXPECT_TRUE(this->acl("vol-2").empty());
  EXPECT_TRUE(this->find("vol-2")->snapshots.empty());
  auto again = this->run(this->array().ensure_volume(from_snapshot));
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->volume_uuid, c1->volume_uuid) << "idempotent by name";
}

TYPED_TEST(ArrayContract, ACloneOfAMissingSourceIsNotFound) {
  this->create("vol-1");
  auto from_snapshot = spec("vol-2");
  from_snapshot.clone_snapshot_src = edf::snapshot_path("vol-1", "1700000000.000000001");
  auto c1 = this->run(this->array().ensure_volume(from_snapshot));
  ASSERT_FALSE(c1);
  EXPECT_EQ(c1.error().code, HttpStatus::not_found) << c1.error().message;
  auto from_volume = spec("vol-3");
  from_volume.clone_volume_src = edf::volume_path("vol-none");
  auto c2 = this->run(this->array().ensure_volume(from_volume));
  ASSERT_FALSE(c2);
  EXPECT_EQ(c2.error().code, HttpStatus::not_found) << c2.error().message;
  EXPECT_EQ(this->find("vol-2"), std::nullopt);
}

TYPED_TEST(ArrayContract, ASnapshotThatIsNotAvailableYetCannotBeCloned) {
  this->backend_.slow_snapshots();
  this->create("vol-1");
  auto s = this->run(this->array().create_snapshot("vol-1", kUuid1));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_FALSE(s->available());
  auto from_snapshot = spec("vol-2");
  from_snapshot.clone_snapshot_src = edf::snapshot_path("vol-1", s->timestamp);
  auto c = this->run(this->array().ensure_volume(from_snapshot));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, HttpStatus::conflict) << c.error().message;
  EXPECT_EQ(this->find("vol-2"), std::nullopt);
}

// The real stack's requests all went through the injected transport: no socket, no Beast.
TEST(ArrayContractSeam, EdfArraysSendsThroughTheTransportItIsGiven) {
  SimBackend sim;
  ASSERT_NE(sim.transport, nullptr) << "EdfArrays made its own transport";
  auto names = testing::run_async(sim.ioc, sim.array().volume_names());
  ASSERT_TRUE(names) << names.error().message;
  EXPECT_GE(sim.transport->requests(), 2u) << "a login and the listing";
}

}  // namespace
}  // namespace datera::volume

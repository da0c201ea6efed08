// The EDF client against the real datera-sim process over TCP: every operation, injected faults,
// token expiry mid-sequence, and 200 concurrent creations with nothing lost or duplicated.

#include <set>
#include <sys/stat.h>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "plugins/edf/client.h"
#include "plugins/edf/transport.h"
#include "tests/testing/run_async.h"
#include "tests/testing/sim_process.h"

namespace datera::edf {
namespace {

using namespace std::chrono_literals;
using testing::run_async;

const std::string kNodeA = "iqn.1993-08.org.debian:01:node-a";
const std::string kNodeB = "iqn.1993-08.org.debian:01:node-b";

class EdfClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(sim_.start()) << sim_.log();
    auto t =
        make_beast_transport(ioc_.get_executor(), Endpoint{"127.0.0.1", sim_.port}, null_logger());
    ASSERT_TRUE(t.ok());
    transport_ = std::move(*t);
    ClientOptions o;
    o.server = sim_.server();
    o.credentials = {"admin", sim_.password};
    o.retry = RetryPolicy{8, 5ms, 50ms};
    o.request_timeout = 5s;
    client_ =
        std::make_unique<Client>(ioc_.get_executor(), *transport_, o, metrics_, null_logger());
  }
  template <typename T>
  T run(boost::asio::awaitable<T> task) {
    return run_async(ioc_, std::move(task));
  }
  /// POSTs a control request to the simulator (no auth; not EDF).
  unsigned control(const std::string& method, const std::string& path,
                   const Json& body = Json::object()) {
    HttpRequest r{method, path, {{"Content-Type", "application/json"}}, body.dump(), 5s};
    auto res = run(transport_->send(std::move(r)));
    return res ? res->status : 0;
  }
  double counter(const std::string& name, const std::string& label = "",
                 const std::string& value = "") {
    double total = 0;
    for (const auto& f : registry_.Collect()) {
      if (f.name != name) continue;
      for (const auto& m : f.metric) {
        bool match = label.empty();
        for (const auto& l : m.label) match |= l.name == label && l.value == value;
        if (match) total += m.counter.value;
      }
    }
    return total;
  }
  VolumeSpec spec(const std::string& name, int64_t size = 4) {
    VolumeSpec s;
    s.name = name;
    s.size_gib = size;
    return s;
  }

  testing::SimProcess sim_{DATERA_SIM_PATH};
  boost::asio::io_context ioc_;
  std::unique_ptr<Transport> transport_;
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  std::unique_ptr<Client> client_;
};

TEST_F(EdfClientTest, EveryOperationEndToEnd) {
  EXPECT_EQ(*run(client_->version()), "v2.2");
  auto sys = run(client_->system());
  ASSERT_TRUE(sys.ok()) << sys.error().message;

  ASSERT_TRUE(run(client_->ensure_initiator(kNodeA, "node-a")).ok());
  ASSERT_TRUE(run(client_->ensure_initiator(kNodeA, "node-a")).ok()) << "idempotent";

  auto created = run(client_->ensure_app_instance(spec("vol-e2e", 4)));
  ASSERT_TRUE(created.ok()) << created.error().message;
  EXPECT_EQ(created->size_gib, 4);
  EXPECT_FALSE(created->volume_uuid.empty());
  EXPECT_TRUE(created->iqn.starts_with("iqn.2013-05.com.daterainc:tc:01:sn:")) << created->iqn;
  EXPECT_EQ(created->ips.size(), 2u);
  auto again = run(client_->ensure_app_instance(spec("vol-e2e", 4)));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->volume_uuid, created->volume_uuid) << "ensure must not create a second one";

  ASSERT_TRUE(run(client_->acl_add("vol-e2e", kNodeA)).ok());
  ASSERT_TRUE(run(client_->acl_add("vol-e2e", kNodeA)).ok()) << "adding twice is harmless";
  EXPECT_EQ(*run(client_->get_acl("vol-e2e")), std::vector<std::string>{kNodeA});

  ASSERT_TRUE(run(client_->set_online("vol-e2e", true)).ok());
  auto ready = run(client_->wait_available("vol-e2e", 5s, 20ms));
  ASSERT_TRUE(ready.ok()) << ready.error().message;
  EXPECT_EQ(ready->op_state, "available");

  ASSERT_TRUE(run(client_->put_metadata("vol-e2e", {{"owner", "node-a"}, {"epoch", "1"}})).ok());
  ASSERT_TRUE(run(client_->put_metadata("vol-e2e", {{"epoch", "2"}})).ok());
  auto md = run(client_->get_metadata("vol-e2e"));
  ASSERT_TRUE(md.ok()) << md.error().message;
  EXPECT_EQ(md->at("owner"), "node-a") << "PUT merges";
  EXPECT_EQ(md->at("epoch"), "2");

  ASSERT_TRUE(run(client_->resize("vol-e2e", 8)).ok());
  EXPECT_EQ(run(client_->get_app_instance("vol-e2e"))->size_gib, 8);

  ASSERT_TRUE(run(client_->acl_remove("vol-e2e", kNodeA)).ok());
  EXPECT_TRUE(run(client_->get_acl("vol-e2e"))->empty());

  auto all = run(client_->list_app_instances());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);

  ASSERT_TRUE(run(client_->delete_app_instance("vol-e2e")).ok());
  auto gone = run(client_->get_app_instance("vol-e2e"));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, http_status(404));
  EXPECT_NE(gone.error().message.find("NotFoundError"), std::string::npos) << gone.error().message;
  ASSERT_TRUE(run(client_->delete_app_instance("vol-e2e")).ok()) << "deleting twice is done";
}

TEST_F(EdfClientTest, ValidationErrorsCarryTheArraysVerdict) {
  auto big = run(client_->put_metadata("no-such-vol", {{"k", "v"}}));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, http_status(404));
  EXPECT_NE(big.error().message.find("for volume no-such-vol"), std::string::npos);
}

TEST_F(EdfClientTest, TokenExpiryMidSequenceIsInvisibleToTheCaller) {
  ASSERT_TRUE(run(client_->ensure_app_instance(spec("vol-tok"))).ok());
  ASSERT_EQ(control("POST", "/_sim/expire_tokens"), 200u);
  ASSERT_TRUE(run(client_->set_online("vol-tok", true)).ok());
  EXPECT_EQ(counter("datera_agent_backend_relogins_total"), 1);
  ASSERT_EQ(control("POST", "/_sim/expire_tokens"), 200u);
  ASSERT_TRUE(run(client_->get_app_instance("vol-tok")).ok());
  EXPECT_EQ(counter("datera_agent_backend_relogins_total"), 2);
}

TEST_F(EdfClientTest, OverloadedArrayIsRetriedThenReported) {
  ASSERT_TRUE(run(client_->ensure_app_instance(spec("vol-503"))).ok());
  ASSERT_EQ(control("POST", "/_sim/faults", Json{{"error_rate", 1.0}}), 200u);
  auto r = run(client_->get_app_instance("vol-503"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, http_status(503));
  EXPECT_EQ(counter("datera_agent_backend_retries_total", "reason", "unavailable"), 7);
  ASSERT_EQ(control("POST", "/_sim/faults", Json{{"error_rate", 0.5}, {"seed", 7}}), 200u);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(run(client_->get_app_instance("vol-503")).ok()) << i;
  ASSERT_EQ(control("DELETE", "/_sim/faults"), 200u);
}

TEST_F(EdfClientTest, LostRepliesAndDroppedConnectionsNeverLoseOrDuplicateVolumes) {
  ASSERT_EQ(control("POST", "/_sim/faults",
                    Json{{"lost_reply_rate", 0.25}, {"drop_rate", 0.1}, {"seed", 11}}),
            200u);
  std::set<std::string> uuids;
  for (int i = 0; i < 30; ++i) {
    const auto name = "vol-lost-" + std::to_string(i);
    auto ai = run(client_->ensure_app_instance(spec(name)));
    ASSERT_TRUE(ai.ok()) << name << ": " << ai.error().message;
    EXPECT_EQ(ai->name, name);
    uuids.insert(ai->volume_uuid);
  }
  ASSERT_EQ(control("DELETE", "/_sim/faults"), 200u);
  EXPECT_GT(counter("datera_agent_backend_retries_total"), 0) << "the faults must have fired";
  auto all = run(client_->list_app_instances());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 30u);
  EXPECT_EQ(uuids.size(), 30u);
}

TEST_F(EdfClientTest, SnapshotsAndClones) {
  const std::string uuid = "3c9e1a7b-5d2f-4e8a-b6c0-d4e5f6a7b8c9";
  ASSERT_TRUE(run(client_->ensure_app_instance(spec("vol-snap", 6))).ok());
  auto taken = run(client_->create_snapshot("vol-snap", uuid));
  ASSERT_TRUE(taken.ok()) << taken.error().message;
  EXPECT_EQ(taken->uuid, uuid);
  EXPECT_EQ(taken->app_instance, "vol-snap");
  EXPECT_NE(taken->path.find("/snapshots/" + taken->timestamp), std::string::npos) << taken->path;
  // Again with the same uuid: EDF refuses (400, code 15) and the client answers with that one.
  auto again = run(client_->create_snapshot("vol-snap", uuid));
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->timestamp, taken->timestamp);
  auto listed = run(client_->list_snapshots("vol-snap"));
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().timestamp, taken->timestamp);
  auto ai = run(client_->get_app_instance("vol-snap"));
  ASSERT_TRUE(ai.ok());
  ASSERT_EQ(ai->snapshots.size(), 1u) << "inline in the app instance";
  EXPECT_EQ(ai->snapshots[0].uuid, uuid);

  // Clones: the source's size whatever size_gib says; their own identity.
  ASSERT_TRUE(run(client_->wait_available("vol-snap", 5s, 20ms)).ok());
  VolumeSpec from_snap = spec("vol-from-snap", 1);
  from_snap.clone_snapshot_src = snapshot_path("vol-snap", taken->timestamp);
  for (int i = 0; i < 100; ++i) {  // the snapshot becomes available after --op-state-delay
    auto s = run(client_->list_snapshots("vol-snap"));
    if (s.ok() && !s->empty() && s->front().available()) break;
    std::this_thread::sleep_for(20ms);
  }
  auto c1 = run(client_->ensure_app_instance(from_snap));
  ASSERT_TRUE(c1.ok()) << c1.error().message;
  EXPECT_EQ(c1->size_gib, 6);
  EXPECT_NE(c1->volume_uuid, ai->volume_uuid);
  EXPECT_NE(c1->iqn, ai->iqn);
  EXPECT_TRUE(c1->snapshots.empty());
  VolumeSpec from_vol = spec("vol-from-vol", 1);
  from_vol.clone_volume_src = volume_path("vol-snap");
  auto c2 = run(client_->ensure_app_instance(from_vol));
  ASSERT_TRUE(c2.ok()) << c2.error().message;
  EXPECT_EQ(c2->size_gib, 6);

  // Deletes are idempotent; an app instance's deletion takes its snapshots along.
  ASSERT_TRUE(run(client_->delete_snapshot("vol-snap", taken->timestamp)).ok());
  ASSERT_TRUE(run(client_->delete_snapshot("vol-snap", taken->timestamp)).ok()) << "already gone";
  EXPECT_TRUE(run(client_->list_snapshots("vol-snap"))->empty());
  ASSERT_TRUE(run(client_->create_snapshot("vol-snap", uuid)).ok()) << "the uuid is free again";
  ASSERT_TRUE(run(client_->delete_app_instance("vol-snap")).ok());
  ASSERT_TRUE(run(client_->ensure_app_instance(spec("vol-snap", 6))).ok());
  EXPECT_TRUE(run(client_->list_snapshots("vol-snap"))->empty());
  auto gone = run(client_->list_snapshots("vol-none"));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, HttpStatus::not_found);
}

TEST_F(EdfClientTest, SnapshotInputsAreCheckedBeforeAnyRequest) {
  const std::string uuid = "3c9e1a7b-5d2f-4e8a-b6c0-d4e5f6a7b8c9";
  ASSERT_TRUE(run(client_->version()).ok());
  const double before = counter("datera_agent_backend_requests_total");
  auto bad_ts = run(client_->delete_snapshot("vol-a", "1/../../x"));
  ASSERT_FALSE(bad_ts.ok());
  EXPECT_EQ(bad_ts.error().code, Errc::invalid_arg);
  EXPECT_EQ(run(client_->delete_snapshot("vol-a", "")).error().code, Errc::invalid_arg);
  EXPECT_EQ(run(client_->delete_snapshot("vol-a", "1.2.3")).error().code, Errc::invalid_arg);
  EXPECT_EQ(run(client_->delete_snapshot("../x", "1.5")).error().code, Errc::invalid_arg);
  EXPECT_EQ(run(client_->create_snapshot("vol-a", "not-a-uuid")).error().code, Errc::invalid_arg);
  EXPECT_EQ(run(client_->create_snapshot("a/b", uuid)).error().code, Errc::invalid_arg);
  EXPECT_EQ(run(client_->list_snapshots("a?b")).error().code, Errc::invalid_arg);
  VolumeSpec s = spec("vol-c");
  s.clone_volume_src = "/app_instances/x/../../initiators";
  EXPECT_EQ(run(client_->create_app_instance(s)).error().code, Errc::invalid_arg);
  s.clone_volume_src = "";
  s.clone_snapshot_src = volume_path("vol-a") + "/snapshots/1.5?x=1";
  EXPECT_EQ(run(client_->create_app_instance(s)).error().code, Errc::invalid_arg);
  s.clone_volume_src = volume_path("vol-a");
  s.clone_snapshot_src = snapshot_path("vol-a", "1.5");
  EXPECT_EQ(run(client_->create_app_instance(s)).error().code, Errc::invalid_arg) << "both";
  EXPECT_EQ(counter("datera_agent_backend_requests_total"), before) << "nothing was sent";
}

TEST_F(EdfClientTest, LostSnapshotRepliesNeverDuplicateASnapshot) {
  ASSERT_TRUE(run(client_->ensure_app_instance(spec("vol-lost-snap"))).ok());
  ASSERT_EQ(control("POST", "/_sim/faults",
                    Json{{"lost_reply_rate", 0.25}, {"drop_rate", 0.1}, {"seed", 5}}),
            200u);
  std::set<std::string> timestamps;
  for (int i = 0; i < 20; ++i) {
    char uuid[40];
    std::snprintf(uuid, sizeof uuid, "5a5a5a5a-0000-4000-8000-%012d", i);
    auto s = run(client_->create_snapshot("vol-lost-snap", uuid));
    ASSERT_TRUE(s.ok()) << uuid << ": " << s.error().message;
    EXPECT_EQ(s->uuid, uuid);
    timestamps.insert(s->timestamp);
  }
  ASSERT_EQ(control("DELETE", "/_sim/faults"), 200u);
  EXPECT_GT(counter("datera_agent_backend_retries_total"), 0) << "the faults must have fired";
  auto all = run(client_->list_snapshots("vol-lost-snap"));
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 20u) << "one snapshot per uuid";
  EXPECT_EQ(timestamps.size(), 20u);
}

boost::asio::awaitable<void> create_one(Client& c, VolumeSpec s, int& ok,
                                        std::vector<std::string>& errors) {
  auto r = co_await c.ensure_app_instance(s);
  if (r) {
    ++ok;
  } else {
    errors.push_back(r.error().message);
  }
}

TEST_F(EdfClientTest, TwoHundredConcurrentCreationsNoneLostNoneDuplicated) {
  int ok = 0;
  std::vector<std::string> errors;
  for (int i = 0; i < 200; ++i) {
    auto s = spec("vol-par-" + std::to_string(i), 1);
    boost::asio::co_spawn(ioc_, create_one(*client_, std::move(s), ok, errors),
                          boost::asio::detached);
  }
  ioc_.restart();
  ioc_.run_for(60s);
  ASSERT_TRUE(errors.empty()) << errors.size() << " failed, first: " << errors.front();
  EXPECT_EQ(ok, 200);
  auto all = run(client_->list_app_instances());
  ASSERT_TRUE(all.ok());
  std::set<std::string> names, uuids;
  for (const auto& ai : *all) {
    names.insert(ai.name);
    uuids.insert(ai.volume_uuid);
  }
  EXPECT_EQ(all->size(), 200u);
  EXPECT_EQ(names.size(), 200u);
  EXPECT_EQ(uuids.size(), 200u);
}

}  // namespace
}  // namespace datera::edf

namespace datera::edf {
namespace {

/// Real EDF passwords hold any printable character, non-ASCII included. The client must carry
/// them to the array exactly (quotes, backslash, &, %, +, =, spaces, umlauts) and log in.
TEST(EdfClientLoginTest, PasswordsWithAnyPrintableCharacterLogInEndToEnd) {
  const std::string password = "pä ss\"w&o%r+d=\\ü'{}<>";
  testing::SimProcess sim(DATERA_SIM_PATH);
  sim.password = password;
  ASSERT_TRUE(sim.start()) << sim.log();
  boost::asio::io_context ioc;
  prometheus::Registry registry;
  Metrics probe{registry};
  auto t = make_beast_transport(ioc.get_executor(), Endpoint{"127.0.0.1", sim.port}, null_logger());
  ASSERT_TRUE(t.ok());
  ClientOptions o;
  o.server = sim.server();
  o.credentials = {"admin", password};
  o.retry = RetryPolicy{2, 5ms, 20ms};
  o.request_timeout = 5s;
  Client client(ioc.get_executor(), **t, o, probe, null_logger());
  auto sys = run_async(ioc, client.system());
  ASSERT_TRUE(sys.ok()) << sys.error().message << "\n" << sim.log();
  VolumeSpec spec;
  spec.name = "vol-pw";
  spec.size_gib = 1;
  auto created = run_async(ioc, client.ensure_app_instance(spec));
  ASSERT_TRUE(created.ok()) << created.error().message;

  // One character off is refused as bad credentials, not as a malformed request.
  ClientOptions wrong = o;
  wrong.credentials.password = password.substr(0, password.size() - 1);
  Client refused(ioc.get_executor(), **t, wrong, probe, null_logger());
  auto r = run_async(ioc, refused.system());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("check the credentials"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(r.error().message.find(password.substr(0, password.size() - 1)), std::string::npos)
      << "the password is never echoed";

  // Bytes that are not UTF-8 cannot go into EDF's JSON login: a clear error, not a throw.
  ClientOptions binary = o;
  binary.credentials.password = "pw\xff\xfe";
  Client bad(ioc.get_executor(), **t, binary, probe, null_logger());
  Result<Json> b = Error{""};
  ASSERT_NO_THROW(b = run_async(ioc, bad.system()));
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("not valid UTF-8"), std::string::npos) << b.error().message;
  EXPECT_EQ(sim.log().find(password), std::string::npos) << "the simulator never logs it";
}

/// HTTPS as an array serves it on 7718: the simulator makes a self-signed certificate, and the
/// client verifies it when given that certificate as its CA file, and refuses it otherwise.
TEST(EdfClientHttpsTest, VerifiesTheSimulatorsCertificateAndRefusesAnUntrustedOne) {
  testing::SimProcess sim(DATERA_SIM_PATH, {"--tls-listen", "127.0.0.1:0"});
  ASSERT_TRUE(sim.start()) << sim.log();
  ASSERT_NE(sim.tls_port, 0) << sim.log();
  const std::string ca = sim.dir() / "cert.pem";
  struct stat key_stat {};
  ASSERT_EQ(::stat((sim.dir() / "key.pem").c_str(), &key_stat), 0);
  EXPECT_EQ(key_stat.st_mode & 0777, 0600) << "the private key must not be readable by others";

  boost::asio::io_context ioc;
  prometheus::Registry registry;
  Metrics probe{registry};
  ClientOptions o;
  o.server = "127.0.0.1:" + std::to_string(sim.tls_port);
  o.credentials = {"admin", sim.password};
  o.retry = RetryPolicy{2, 5ms, 20ms};
  o.request_timeout = 5s;

  TlsOptions trusted;
  trusted.enabled = true;
  trusted.ca_file = ca;
  auto t = make_beast_transport(ioc.get_executor(), Endpoint{"127.0.0.1", sim.tls_port},
                                null_logger(), trusted);
  ASSERT_TRUE(t.ok()) << t.error().message;
  Client client(ioc.get_executor(), **t, o, probe, null_logger());
  VolumeSpec spec;
  spec.name = "vol-tls";
  spec.size_gib = 2;
  auto created = run_async(ioc, client.ensure_app_instance(spec));
  ASSERT_TRUE(created.ok()) << created.error().message;
  EXPECT_EQ(created->name, "vol-tls");

  // The system store does not know the simulator's certificate: verification must fail, and say so.
  TlsOptions system_store;
  system_store.enabled = true;
  auto u = make_beast_transport(ioc.get_executor(), Endpoint{"127.0.0.1", sim.tls_port},
                                null_logger(), system_store);
  ASSERT_TRUE(u.ok()) << u.error().message;
  Client untrusting(ioc.get_executor(), **u, o, probe, null_logger());
  auto refused = run_async(ioc, untrusting.system());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("certificate verify failed"), std::string::npos)
      << refused.error().message;
}

}  // namespace
}  // namespace datera::edf

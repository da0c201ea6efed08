// The controller side of attach: true with an in-memory array: who ends up in the ACL and in the
// ownership record after attach, detach and isattached. The real path (the controller manager's
// calls through the shim, two node agents, datera-sim) is tests/integration/controller_test.cpp.

#include "agent/controller/attacher.h"

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "agent/ownership/lease.h"
#include "tests/testing/fake_array.h"
#include "tests/testing/run_async.h"

namespace datera::controller {
namespace {

const std::string kIqnA = "iqn.1993-08.org.debian:01:node-a";
const std::string kIqnB = "iqn.1993-08.org.debian:01:node-b";

class AttacherTest : public ::testing::Test {
 protected:
  AttacherTest() {
    GrantOptions o;
    o.default_backend.host = "10.0.0.1";
    o.default_backend.credentials = {"admin", "password"};
    grants_ = std::make_unique<Grants>(o, arrays_, metrics_, null_logger());
    attacher_ = std::make_unique<Attacher>(*grants_, metrics_, null_logger());
    array().registered = {{kIqnA, edf::initiator_name_for_node("node-a")},
                          {kIqnB, edf::initiator_name_for_node("node-b")},
                          {"iqn.2000-01.com.example:other", "some-other-host"}};
  }
  testing::FakeArray& array() { return arrays_.array; }
  static flex::Json opts(const std::string& vol, const std::string& pv) {
    return {
        {"volumeID", vol}, {"kubernetes.io/fsType", "xfs"}, {"kubernetes.io/pvOrVolumeName", pv}};
  }
  flex::Json run(const std::string& command, std::vector<std::string> args,
                 flex::Json options = flex::Json::object()) {
    flex::Request r;
    r.command = command;
    r.args = std::move(args);
    r.options = std::move(options);
    if (command == "attach") return testing::run_async(ioc_, attacher_->attach(r));
    if (command == "detach") return testing::run_async(ioc_, attacher_->detach(r));
    return testing::run_async(ioc_, attacher_->isattached(r));
  }
  flex::Json attach(const std::string& node, const std::string& vol = "vol-1",
                    const std::string& pv = "pv-1") {
    return run("attach", {node}, opts(vol, pv));
  }
  bool attached(const std::string& node, const std::string& vol = "vol-1") {
    auto r = run("isattached", {node}, opts(vol, "pv-1"));
    EXPECT_EQ(r["status"], "Success") << r.dump();
    return r.value("attached", false);
  }
  ownership::Lease lease(const std::string& vol = "vol-1") {
    return ownership::decode(array().md[vol]);
  }
  double refusals() {
    for (const auto& f : registry_.Collect()) {
      if (f.name == "datera_agent_controller_refusals_total") return f.metric.at(0).counter.value;
    }
    return -1;
  }

  boost::asio::io_context ioc_;
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  testing::FakeArrays arrays_;
  std::unique_ptr<Grants> grants_;
  std::unique_ptr<Attacher> attacher_;
};

TEST_F(AttacherTest, AttachGrantsTheNamedNodeAloneAndRecordsItInTheLease) {
  array().acl_iqns = {"iqn.2000-01.com.example:stale"};
  auto r = attach("node-a");
  ASSERT_EQ(r["status"], "Success") << r.dump();
  EXPECT_EQ(array().acl_iqns, std::vector<std::string>{kIqnA}) << "the stale entry is gone";
  const auto l = lease();
  EXPECT_EQ(l.owner, "node-a");
  EXPECT_EQ(l.owner_iqn, kIqnA);
  EXPECT_EQ(l.epoch, 1u);
  EXPECT_EQ(array().md["vol-1"][kPvKey], "pv-1");
  EXPECT_TRUE(attached("node-a"));
  EXPECT_FALSE(attached("node-b"));
  EXPECT_EQ(array().calls.back(), "online vol-1");
}

TEST_F(AttacherTest, AttachIsIdempotent) {
  ASSERT_EQ(attach("node-a")["status"], "Success");
  ASSERT_EQ(attach("node-a")["status"], "Success");
  EXPECT_EQ(lease().epoch, 1u) << "a retried attach is not a new grant";
  EXPECT_EQ(array().acl_iqns, std::vector<std::string>{kIqnA});
  EXPECT_EQ(refusals(), 0);
}

TEST_F(AttacherTest, AttachingElsewhereWhileANodeHoldsItIsRefusedAsMultiAttach) {
  ASSERT_EQ(attach("node-a")["status"], "Success");
  auto r = attach("node-b");
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("attached to node node-a"), std::string::npos)
      << r.dump();
  EXPECT_EQ(array().acl_iqns, std::vector<std::string>{kIqnA}) << "node-a keeps it";
  EXPECT_EQ(lease().owner, "node-a");
  EXPECT_EQ(refusals(), 1);
  // What Kubernetes does, also when it force-detaches node-a: detach, then attach.
  ASSERT_EQ(run("detach", {"pv-1", "node-a"})["status"], "Success");
  ASSERT_EQ(attach("node-b")["status"], "Success");
  EXPECT_EQ(array().acl_iqns, std::vector<std::string>{kIqnB}) << "never two nodes";
  EXPECT_EQ(lease().epoch, 2u) << "node-a's agent sees its grant gone and self-fences";
  EXPECT_FALSE(attached("node-a"));
}

TEST_F(AttacherTest, ANodeWithoutARegisteredInitiatorIsRefusedSayingWhatToCheck) {
  auto r = attach("node-c");
  ASSERT_EQ(r["status"], "Failure");
  const std::string msg = r["message"];
  EXPECT_NE(msg.find("node node-c has no initiator registered"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vol-1"), std::string::npos) << msg;
  EXPECT_TRUE(array().acl_iqns.empty());
  EXPECT_TRUE(lease().free());

  array().registered.push_back(
      {"iqn.1993-08.org.debian:01:node-a-old", edf::initiator_name_for_node("node-a")});
  r = attach("node-a");
  ASSERT_EQ(r["status"], "Failure");
  EXPECT_NE(r["message"].get<std::string>().find("refusing to guess"), std::string::npos);
}

TEST_F(AttacherTest, DetachFindsAVolumeNamedOtherwiseThanItsPvAndFreesIt) {
  array().names.insert("unrelated");
  ASSERT_EQ(attach("node-a", "vol-x", "pv-x")["status"], "Success");
  auto r = run("detach", {"pv-x", "node-a"});
  ASSERT_EQ(r["status"], "Success") << r.dump();
  EXPECT_TRUE(array().acl_iqns.empty());
  EXPECT_TRUE(lease("vol-x").free());
  EXPECT_EQ(lease("vol-x").epoch, 1u) << "the epoch goes on from here at the next attach";
  EXPECT_EQ(run("detach", {"pv-x", "node-a"})["status"], "Success") << "idempotent";
  EXPECT_EQ(run("detach", {"pv-nothing", "node-a"})["status"], "Success")
      << "nothing to detach is not an error";
  ASSERT_EQ(attach("node-b", "vol-x", "pv-x")["status"], "Success");
  EXPECT_EQ(lease("vol-x").epoch, 2u);
  EXPECT_EQ(refusals(), 0) << "a detached volume is not taken from anyone";
}

TEST_F(AttacherTest, DetachingANodeThatNoLongerHoldsTheVolumeLeavesTheHolderAlone) {
  ASSERT_EQ(attach("node-a")["status"], "Success");
  ASSERT_EQ(run("detach", {"pv-1", "node-a"})["status"], "Success");
  ASSERT_EQ(attach("node-b")["status"], "Success");
  ASSERT_EQ(run("detach", {"pv-1", "node-a"})["status"], "Success") << "a retried old detach";
  EXPECT_EQ(array().acl_iqns, std::vector<std::string>{kIqnB});
  EXPECT_EQ(lease().owner, "node-b");
  EXPECT_TRUE(attached("node-b"));
}

TEST_F(AttacherTest, BadNodeNamesAreRefusedBeforeTheArray) {
  for (const std::string bad : {"", "Node_A", "../x"}) {
    EXPECT_EQ(attach(bad)["status"], "Failure") << bad;
    EXPECT_EQ(run("detach", {"pv-1", bad})["status"], "Failure") << bad;
  }
  EXPECT_TRUE(array().calls.empty());
}

TEST(InitiatorNameForNode, IsAValidEdfNameForAnyNodeName) {
  EXPECT_EQ(edf::initiator_name_for_node("worker-1"), "k8s_node_worker-1");
  EXPECT_EQ(edf::initiator_name_for_node("10-0-0-7.ec2.internal"), "k8s_node_10-0-0-7.ec2.internal")
      << "starts with a letter even when the node name starts with a digit";
  EXPECT_EQ(edf::initiator_name_for_node(std::string(253, 'a')).size(), 128u);
}

}  // namespace
}  // namespace datera::controller

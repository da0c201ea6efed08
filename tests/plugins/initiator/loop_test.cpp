// The loop initiator against real loop devices and the real datera-sim (file backend): what a
// look reports when a device of ours changes behind the initiator's back. Its looks read only its
// own devices' diskseq, through descriptors kept open, so these are the cases that memo must not
// hide.

#include "plugins/initiator/loop.h"

#include <algorithm>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gtest/gtest.h>

#include "plugins/edf/client.h"
#include "plugins/edf/transport.h"
#include "tests/testing/agent_process.h"
#include "tests/testing/loop_node.h"
#include "tests/testing/run_async.h"
#include "tests/testing/sim_process.h"

namespace datera::initiator {
namespace {

using namespace std::chrono_literals;
using testing::run_async;

const std::string kIqn = "iqn.1993-08.org.debian:01:loop-test";

class LoopInitiatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "******** SKIPPED: loop devices need root ********";
    if (::access("/dev/loop-control", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "******** SKIPPED: no /dev/loop-control ********";
    }
    ASSERT_TRUE(sim_.start()) << sim_.log();
    auto t = edf::make_beast_transport(ioc_.get_executor(), edf::Endpoint{"127.0.0.1", sim_.port},
                                       null_logger());
    ASSERT_TRUE(t.ok());
    transport_ = std::move(*t);
    edf::ClientOptions o;
    o.server = sim_.server();
    o.credentials = {"admin", sim_.password};
    o.request_timeout = 5s;
    client_ =
        std::make_unique<edf::Client>(ioc_.get_executor(), *transport_, o, metrics_, null_logger());
    LoopOptions lo;
    lo.iqn = kIqn;
    initiator_ = make_loop_initiator(*transport_, pool_, lo, null_logger());
  }
  void TearDown() override { testing::detach_loops_under(sim_.dir().path()); }

  /// A new volume exported to this initiator.
  Target volume(const std::string& name) {
    edf::VolumeSpec spec;
    spec.name = name;
    spec.size_gib = 1;
    auto ai = run_async(ioc_, client_->create_app_instance(spec));
    EXPECT_TRUE(ai.ok()) << (ai ? "" : ai.error().message);
    if (!ai) return {};
    EXPECT_TRUE(run_async(ioc_, client_->ensure_initiator(kIqn, "loop_test")).ok());
    EXPECT_TRUE(run_async(ioc_, client_->acl_add(name, kIqn)).ok());
    return Target{name, ai->iqn, ai->ips, ai->volume_uuid, 0};
  }
  std::vector<std::string> devices() {
    auto found = run_async(ioc_, initiator_->sessions());
    EXPECT_TRUE(found.ok()) << (found ? "" : found.error().message);
    std::vector<std::string> out;
    if (found) {
      for (const auto& s : *found) out.push_back(s.device ? s.device->path : "?");
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  static std::vector<std::string> sorted(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  }

  testing::SimProcess sim_{DATERA_SIM_PATH, {"--backend", "file", "--file-dir", "{dir}/volumes"}};
  boost::asio::io_context ioc_;
  boost::asio::thread_pool pool_{2};
  std::unique_ptr<edf::Transport> transport_;
  prometheus::Registry registry_;
  edf::Metrics metrics_{registry_};
  std::unique_ptr<edf::Client> client_;
  InitiatorPtr initiator_;
};

TEST_F(LoopInitiatorTest, ALookSeesADeviceOfOursDetachedOrReusedBehindItsBack) {
  const Target a = volume("vol-loop-a");
  const Target b = volume("vol-loop-b");
  auto dev_a = run_async(ioc_, initiator_->connect(a, 10s));
  ASSERT_TRUE(dev_a.ok()) << dev_a.error().message;
  auto dev_b = run_async(ioc_, initiator_->connect(b, 10s));
  ASSERT_TRUE(dev_b.ok()) << dev_b.error().message;
  EXPECT_EQ(devices(), sorted({dev_a->path, dev_b->path}));
  EXPECT_EQ(devices(), sorted({dev_a->path, dev_b->path})) << "a quiet look";

  // Someone else detaches a's device: the next look no longer reports it.
  const std::string file_a = sim_.dir().path() + "/volumes/" + a.serial + ".img";
  ASSERT_EQ(testing::exec_capture({"/usr/sbin/losetup", "-d", dev_a->path}).exit_code, 0);
  EXPECT_EQ(devices(), (std::vector<std::string>{dev_b->path}));

  // And attaches the same file again (not through this initiator): not ours, at any later look.
  auto again = testing::exec_capture({"/usr/sbin/losetup", "--find", "--show", file_a});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  std::string foreign = again.output;
  while (!foreign.empty() && foreign.back() == '\n') foreign.pop_back();
  EXPECT_EQ(devices(), (std::vector<std::string>{dev_b->path}));
  EXPECT_EQ(devices(), (std::vector<std::string>{dev_b->path}));

  // Ours again through connect, then detached through disconnect.
  ASSERT_EQ(testing::exec_capture({"/usr/sbin/losetup", "-d", foreign}).exit_code, 0);
  auto reattached = run_async(ioc_, initiator_->connect(a, 10s));
  ASSERT_TRUE(reattached.ok()) << reattached.error().message;
  EXPECT_EQ(devices().size(), 2u);
  ASSERT_TRUE(run_async(ioc_, initiator_->disconnect(b)).ok());
  EXPECT_EQ(devices(), (std::vector<std::string>{reattached->path}));
}

}  // namespace
}  // namespace datera::initiator

// Claims, renewals, handoffs and takeovers against an in-memory array that behaves like EDF's
// metadata (merge-PUT, last write wins, no compare-and-swap), in virtual time: every wait (the
// coordinators', the fake array's delays, the test's own) goes through one VirtualClock, so a race
// runs in the same order every time and takes no wall time.

#include "agent/ownership/lease.h"

#include <random>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "tests/testing/virtual_clock.h"

namespace datera::ownership {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// One volume's metadata and ACL; every request takes a random 0..max_delay.
class FakeArray : public Store {
 public:
  explicit FakeArray(Clock& clock) : clock_(clock) {}
  edf::Metadata md;
  std::vector<std::string> acl;
  std::vector<std::string> fenced;
  std::chrono::milliseconds max_delay{0};
  int writes = 0;

  asio::awaitable<Result<Lease>> read(const std::string&) override {
    co_await delay();
    co_return decode(md);
  }
  asio::awaitable<Status> write(const std::string&, const edf::Metadata& keys) override {
    co_await delay();
    ++writes;
    for (const auto& [k, v] : keys) {
      if (v.empty()) {
        md.erase(k);
      } else {
        md[k] = v;
      }
    }
    co_return ok_status();
  }
  asio::awaitable<Status> fence(const std::string&, const std::string& iqn) override {
    co_await delay();
    fenced.push_back(iqn);
    std::erase(acl, iqn);
    co_return ok_status();
  }

 private:
  asio::awaitable<void> delay() {
    if (max_delay.count() == 0) co_return;
    std::uniform_int_distribution<int> d(0, static_cast<int>(max_delay.count()));
    co_await clock_.sleep(std::chrono::milliseconds(d(rng_)));
  }
  Clock& clock_;
  std::mt19937 rng_{42};
};

Options opts(const std::string& node) {
  Options o;
  o.node = node;
  o.iqn = "iqn.1993-08.org.debian:01:" + node;
  o.ttl = 400ms;
  o.settle = 60ms;
  o.write_bound = 40ms;
  o.poll = 20ms;
  return o;
}

class LeaseTest : public ::testing::Test {
 protected:
  Coordinator node(const std::string& name) {
    return Coordinator(ioc_.get_executor(), opts(name), null_logger(), clock_);
  }
  /// `owner` renews every ttl/4 saying a pod uses the volume (it refuses asks), until `stop`.
  void renew_while_in_use(Coordinator& owner, uint64_t epoch, const bool& stop) {
    asio::co_spawn(
        ioc_,
        [&, epoch]() -> asio::awaitable<void> {
          while (!stop) {
            auto r = co_await owner.renew("vol-1", array_, epoch, "pod uid-1 uses it");
            EXPECT_TRUE(r && *r == Renewal::renewed);
            co_await clock_.sleep(100ms);
          }
        },
        asio::detached);
  }
  testing::VirtualClock clock_;
  asio::io_context ioc_;
  FakeArray array_{clock_};
};

TEST(LeaseCodec, RoundTripsAndEmptyMeansFree) {
  Lease l{"node-a", "iqn.x:a", 7, 3, "node-b", "pod uses it"};
  const Lease back = decode(encode(l));
  EXPECT_EQ(back.owner, "node-a");
  EXPECT_EQ(back.epoch, 7u);
  EXPECT_EQ(back.seq, 3u);
  EXPECT_EQ(back.handoff, "node-b");
  EXPECT_EQ(back.refused, "pod uses it");
  EXPECT_TRUE(decode({}).free());
}

TEST_F(LeaseTest, AFreeVolumeIsClaimedAtTheNextEpochAndKeptOnRetry) {
  array_.md = encode(Lease{"", "", 4, 0, "", ""});  // released earlier at epoch 4
  auto a = node("node-a");
  auto held = clock_.run(ioc_, a.acquire("vol-1", array_));
  ASSERT_TRUE(held) << held.error().message;
  EXPECT_EQ(held->epoch, 5u);
  EXPECT_EQ(decode(array_.md).owner, "node-a");
  auto again = clock_.run(ioc_, a.acquire("vol-1", array_));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->epoch, 5u) << "a retry keeps the epoch";
  ASSERT_TRUE(clock_.run(ioc_, a.release("vol-1", array_, 5)));
  EXPECT_TRUE(decode(array_.md).free());
  EXPECT_EQ(decode(array_.md).epoch, 5u);
}

TEST_F(LeaseTest, ALiveOwnerThatStillUsesTheVolumeRefusesAndTheClaimantIsToldWhy) {
  auto a = node("node-a");
  auto b = node("node-b");
  auto held = clock_.run(ioc_, a.acquire("vol-1", array_));
  ASSERT_TRUE(held);
  // A renews every ttl/4 and says a pod uses the volume.
  bool stop = false;
  renew_while_in_use(a, held->epoch, stop);
  auto got = clock_.run(ioc_, b.acquire("vol-1", array_));
  stop = true;
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, errno_code(EBUSY));
  EXPECT_NE(got.error().message.find("in use on node node-a: pod uid-1 uses it"), std::string::npos)
      << got.error().message;
  EXPECT_EQ(decode(array_.md).owner, "node-a");
  EXPECT_TRUE(array_.fenced.empty()) << "a live owner is never fenced";
}

TEST_F(LeaseTest, AnOwnerAskedWhileNothingUsesItHandsOver) {
  auto a = node("node-a");
  auto held = clock_.run(ioc_, a.acquire("vol-1", array_));
  ASSERT_TRUE(held);
  edf::Metadata ask{{"datera-agent.handoff", "node-b"}};
  array_.md.merge(ask);
  auto r = clock_.run(ioc_, a.renew("vol-1", array_, held->epoch, ""));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, Renewal::handoff);
  r = clock_.run(ioc_, a.renew("vol-1", array_, held->epoch, "pod x"));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, Renewal::renewed);
  EXPECT_EQ(decode(array_.md).refused, "pod x");
}

TEST_F(LeaseTest, AnOwnerNobodyAsksForRenewsWithReadsOnly) {
  auto a = node("node-a");
  auto held = clock_.run(ioc_, a.acquire("vol-1", array_));
  ASSERT_TRUE(held);
  const int writes = array_.writes;
  const uint64_t seq = decode(array_.md).seq;
  for (int i = 0; i < 5; ++i) {
    auto r = clock_.run(ioc_, a.renew("vol-1", array_, held->epoch, "pod x"));
    ASSERT_TRUE(r && *r == Renewal::renewed);
  }
  EXPECT_EQ(array_.writes, writes) << "an idle renewal wrote to the array";
  EXPECT_EQ(decode(array_.md).seq, seq);
  // An ask: answered at once, and the sequence keeps moving at every renewal while a claimant may
  // still be watching it.
  array_.md.merge(edf::Metadata{{"datera-agent.handoff", "node-b"}});
  for (int i = 0; i < 3; ++i) {
    auto r = clock_.run(ioc_, a.renew("vol-1", array_, held->epoch, "pod x"));
    ASSERT_TRUE(r && *r == Renewal::renewed);
  }
  EXPECT_EQ(decode(array_.md).refused, "pod x");
  EXPECT_EQ(decode(array_.md).seq, seq + 3);
}

// Two claimants ask at once; the second ask overwrites the first. The owner answers the second,
// and the first claimant, still watching the sequence number, must see it move until it gives up:
// a live owner is never fenced.
TEST_F(LeaseTest, TwoClaimantsAtOnceNeverFenceALiveOwner) {
  auto a = node("node-a");
  auto b = node("node-b");
  auto c = node("node-c");
  auto held = clock_.run(ioc_, a.acquire("vol-1", array_));
  ASSERT_TRUE(held);
  array_.acl = {"iqn.1993-08.org.debian:01:node-a"};
  bool stop = false;
  renew_while_in_use(a, held->epoch, stop);
  Result<Held> got_b = Error{"not run"}, got_c = Error{"not run"};
  int done = 0;
  asio::co_spawn(
      ioc_,
      [&]() -> asio::awaitable<void> {
        got_b = co_await b.acquire("vol-1", array_);
        ++done;
      },
      asio::detached);
  asio::co_spawn(
      ioc_,
      [&]() -> asio::awaitable<void> {
        co_await clock_.sleep(5ms);  // after b's ask, before the owner's next look
        got_c = co_await c.acquire("vol-1", array_);
        ++done;
      },
      asio::detached);
  clock_.run_until(ioc_, [&] { return done == 2; });
  stop = true;
  EXPECT_FALSE(got_b);
  EXPECT_FALSE(got_c);
  EXPECT_TRUE(array_.fenced.empty()) << "a live owner was fenced";
  EXPECT_EQ(decode(array_.md).owner, "node-a");
}

TEST_F(LeaseTest, ADeadOwnerIsFencedAfterOneTtlThenTheVolumeIsTakenOver) {
  array_.md = encode(Lease{"node-a", "iqn.1993-08.org.debian:01:node-a", 3, 17, "", ""});
  array_.acl = {"iqn.1993-08.org.debian:01:node-a"};
  auto b = node("node-b");
  const auto t0 = clock_.now();
  auto held = clock_.run(ioc_, b.acquire("vol-1", array_));
  const auto took = clock_.now() - t0;
  ASSERT_TRUE(held) << held.error().message;
  EXPECT_EQ(held->epoch, 4u);
  EXPECT_EQ(held->fenced, "node-a");
  EXPECT_EQ(array_.fenced, std::vector<std::string>{"iqn.1993-08.org.debian:01:node-a"});
  EXPECT_TRUE(array_.acl.empty());
  EXPECT_GE(took, 400ms) << "never before a whole TTL without renewal";
  EXPECT_LT(took, 1000ms);
  // A comes back (partition healed): its renewal sees the new epoch and must stop writing.
  auto a = node("node-a");
  auto r = clock_.run(ioc_, a.renew("vol-1", array_, 3, ""));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, Renewal::superseded);
}

TEST_F(LeaseTest, ARefusalLeftByAnOwnerThatDiedSinceDoesNotBlockTheTakeover) {
  // node-b was refused earlier; then node-a died. Its old answer must not count for ever.
  array_.md = encode(Lease{"node-a", "iqn.1993-08.org.debian:01:node-a", 3, 17, "node-b",
                           "pod uid-1 uses it there"});
  auto b = node("node-b");
  auto held = clock_.run(ioc_, b.acquire("vol-1", array_));
  ASSERT_TRUE(held) << held.error().message;
  EXPECT_EQ(held->fenced, "node-a");
}

TEST_F(LeaseTest, ExactlyOneOfThreeSimultaneousClaimantsWins) {
  array_.max_delay = 15ms;  // within the write bound: every attempt counts
  for (int round = 0; round < 10; ++round) {
    array_.md.clear();
    auto a = node("node-a");
    auto b = node("node-b");
    auto c = node("node-c");
    std::vector<Result<Held>> results;
    int done = 0;
    bool stop = false;
    for (Coordinator* n : {&a, &b, &c}) {
      asio::co_spawn(
          ioc_,
          [&, n]() -> asio::awaitable<void> {
            auto r = co_await n->acquire("vol-1", array_);
            results.push_back(r);
            ++done;
            if (!r) co_return;
            // A winner behaves like an agent whose pod uses the volume: it renews, and refuses.
            while (!stop) {
              auto renewed = co_await n->renew("vol-1", array_, r->epoch, "a pod uses it");
              EXPECT_TRUE(renewed && *renewed == Renewal::renewed) << n->options().node;
              co_await clock_.sleep(100ms);
            }
          },
          asio::detached);
    }
    clock_.run_until(ioc_, [&] { return done == 3; });
    stop = true;
    clock_.run_all(ioc_);
    int winners = 0;
    for (const auto& r : results) {
      if (r) {
        ++winners;
      } else {
        EXPECT_EQ(r.error().code, errno_code(EBUSY)) << r.error().message;
      }
    }
    EXPECT_EQ(winners, 1) << "round " << round;
    EXPECT_TRUE(array_.fenced.empty()) << "nobody is fenced while its owner is alive";
  }
}

}  // namespace
}  // namespace datera::ownership

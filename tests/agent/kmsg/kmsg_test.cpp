// Parsing the kernel log's filesystem records and remembering failures per device.

#include "agent/kmsg/kmsg.h"

#include <gtest/gtest.h>

namespace datera::kmsg {
namespace {

// Lines as the 6.1 and 6.18 kernels print them (the xfs ones seen on this VM after
// `xfs_io -x -c shutdown`).
const std::string kXfsMount = "6,2301,24070980535,-;XFS (loop0): Mounting V5 Filesystem 4146d84e\n";
const std::string kXfsDown =
    "1,2304,24070996693,-;XFS (loop0): Log I/O Error (0x6) detected at xfs_fs_goingdown+0x63/0xb0 "
    "(fs/xfs/xfs_fsops.c:475).  Shutting down filesystem.\n SUBSYSTEM=block\n DEVICE=b7:0\n";

TEST(KmsgRecords, FilesystemMountsAndFailuresAreRecognised) {
  auto m = fs_event_of(kXfsMount);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind, FsEvent::Kind::mounted);
  EXPECT_EQ(m->device, "loop0");
  EXPECT_EQ(m->fs, "xfs");
  auto d = fs_event_of(kXfsDown);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->kind, FsEvent::Kind::failed);
  EXPECT_EQ(d->device, "loop0");
  EXPECT_EQ(d->text.find("XFS (loop0): Log I/O Error"), 0u);
  EXPECT_EQ(d->text.find('\n'), std::string::npos) << "the dictionary lines are not the text";

  // Debian 12's 6.1, after a failed log write (seen on the kernel tier).
  EXPECT_FALSE(fs_event_of("3,900,38359731,-;XFS (dm-0): log I/O error -5\n"));
  d = fs_event_of(
      "1,901,38359979,-;XFS (dm-0): Filesystem has been shut down due to log error "
      "(0x2).\n");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->kind, FsEvent::Kind::failed);
  EXPECT_EQ(d->device, "dm-0");
  d = fs_event_of(
      "1,902,38360009,-;XFS (dm-0): Please unmount the filesystem and rectify the "
      "problem(s).\n");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->kind, FsEvent::Kind::failed);
  m = fs_event_of("5,880,12463849,-;XFS (dm-0): Mounting V5 Filesystem\n");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind, FsEvent::Kind::mounted);

  auto e = fs_event_of("6,10,5,-;EXT4-fs (dm-3): mounted filesystem with ordered data mode.\n");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, FsEvent::Kind::mounted);
  EXPECT_EQ(e->device, "dm-3");
  e = fs_event_of("2,11,6,-;EXT4-fs (dm-3): Remounting filesystem read-only\n");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, FsEvent::Kind::failed);
  EXPECT_EQ(e->fs, "ext4");
  e = fs_event_of(
      "2,12,7,-;EXT4-fs error (device sdb): ext4_find_entry:1663: inode #2: comm ls: reading "
      "directory lblock 0\n");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, FsEvent::Kind::failed);
  EXPECT_EQ(e->device, "sdb");
}

TEST(KmsgRecords, OnlyTheKernelIsBelievedAndOddRecordsAreIgnored) {
  // pri 14 = user.info: what `echo ... > /dev/kmsg` makes. pri 9 = user.alert.
  EXPECT_FALSE(fs_event_of("14,1,1,-;XFS (dm-3): Log I/O Error. Shutting down filesystem.\n"));
  EXPECT_FALSE(fs_event_of("9,1,1,-;XFS (dm-3): Log I/O Error. Shutting down filesystem.\n"));
  EXPECT_FALSE(fs_event_of("XFS (dm-3): Shutting down filesystem.\n")) << "no header";
  EXPECT_FALSE(fs_event_of("x,1,1,-;XFS (dm-3): Shutting down filesystem.\n"));
  EXPECT_FALSE(fs_event_of("1x,1,1,-;XFS (dm-3): Shutting down filesystem.\n"));
  EXPECT_FALSE(fs_event_of("1,1,1,-;XFS (../../x): Shutting down filesystem.\n"));
  EXPECT_FALSE(fs_event_of("1,1,1,-;XFS (): Shutting down filesystem.\n"));
  EXPECT_FALSE(fs_event_of("1,1,1,-;XFS (dm-3): Ending clean mount\n"));
  EXPECT_FALSE(fs_event_of("1,1,1,-;XFS (dm-3" + std::string(2000, 'x') + "\n"));
  EXPECT_FALSE(fs_event_of("6,1,1,-;sd 2:0:0:0: [sdb] Synchronizing SCSI cache\n"));
  EXPECT_FALSE(fs_event_of(""));
}

// Debian 12's 6.1 (HZ=250), as the kernel tier's guest logs it when a portal goes dark under
// writes with noop_out_interval/timeout 5/5: the last rx 10.0 s before the verdict.
constexpr const char* kPing61 =
    "3,2001,95000000,-;connection7:0: ping timeout of 5 secs expired, recv timeout 5, last rx "
    "4294958226, last ping 4294959477, now 4294960728\n SUBSYSTEM=iscsi_connection\n";

TEST(KmsgRecords, APingTimeoutSaysHowLongTheSessionWasSilent) {
  struct Case {
    std::string record;
    int sid;
    double seconds;
    const char* why;
  };
  const Case cases[] = {
      {kPing61, 7, 10.008, "2502 jiffies at HZ 250"},
      {"3,1,1,-; connection2:0: ping timeout of 2 secs expired, recv timeout 3, last rx 1000, "
       "last ping 4000, now 6040\n",
       2, 5.04, "HZ 1000, the timer a little late"},
      {"3,1,1,-;iscsi connection3:1: ping timeout of 5 secs expired, recv timeout 10, last rx "
       "100, last ping 1100, now 1610\n",
       3, 15.1, "HZ 100, a driver name in front"},
      {"3,1,1,-;connection1:0: ping timeout of 5 secs expired, recv timeout 5, last rx "
       "18446744073709551000, last ping 634, now 1884\n",
       1, 10.0, "jiffies wrap as an unsigned long"},
  };
  for (const auto& c : cases) {
    auto p = ping_timeout_of(c.record);
    ASSERT_TRUE(p) << c.why;
    EXPECT_EQ(p->sid, c.sid) << c.why;
    EXPECT_NEAR(p->silent_seconds, c.seconds, 0.001) << c.why;
  }
}

TEST(KmsgRecords, OnlyTheKernelsWellFormedPingTimeoutsCount) {
  const std::string text =
      "connection1:0: ping timeout of 5 secs expired, recv timeout 5, last rx 4294958226, last "
      "ping 4294959477, now 4294960728\n";
  EXPECT_TRUE(ping_timeout_of("3,1,1,-;" + text));
  EXPECT_FALSE(ping_timeout_of("11,1,1,-;" + text)) << "user.err: written by a process";
  EXPECT_FALSE(
      ping_timeout_of("3,1,1,-;connectionX:0: ping timeout of 5 secs expired, recv "
                      "timeout 5, last rx 1, last ping 2, now 2600\n"));
  EXPECT_FALSE(
      ping_timeout_of("3,1,1,-;connection1:0: ping timeout of 5 secs expired, last rx "
                      "1, last ping 2, now 2600\n"))
      << "a format without the recv timeout: HZ cannot be told";
  EXPECT_FALSE(
      ping_timeout_of("3,1,1,-;connection1:0: ping timeout of 5 secs expired, recv "
                      "timeout 5, last rx 1000, last ping 2000, now 1500\n"))
      << "less than a second per jiffy-second: not one kernel's clock";
  EXPECT_FALSE(
      ping_timeout_of("3,1,1,-;connection1:0: ping timeout of 0 secs expired, recv "
                      "timeout 0, last rx 1, last ping 2, now 3\n"));
  EXPECT_FALSE(
      ping_timeout_of("3,1,1,-;connection1:0: ping timeout of 5 secs expired, recv "
                      "timeout 5, last rx 1, last ping 2, now 99999999\n"))
      << "days of silence are not one stall";
  EXPECT_FALSE(ping_timeout_of("3,1,1,-;XFS (dm-3): Mounting V5 Filesystem\n"));
}

TEST(Silences, AStallStartsWhenTheSessionLastHeardFromTheTarget) {
  Silences s(2);
  const auto t = [](int ms) {
    return std::chrono::steady_clock::time_point(std::chrono::milliseconds(ms));
  };
  s.feed(PingTimeout{7, 10.0}, t(100'000));
  ASSERT_TRUE(s.since(7, t(95'000)));
  EXPECT_EQ(*s.since(7, t(95'000)), t(90'000));
  EXPECT_FALSE(s.since(7, t(100'001))) << "declared before the stall began: an older one";
  EXPECT_FALSE(s.since(8, t(0)));
  s.feed(PingTimeout{8, 1.0}, t(101'000));
  s.feed(PingTimeout{9, 1.0}, t(102'000));
  EXPECT_FALSE(s.since(7, t(0))) << "bounded: the oldest went";
  EXPECT_TRUE(s.since(9, t(0)));

  // Records read in one burst share a read time: the one fed last stays, whatever its number
  // (the fuzzer found the newest evicted at once when its session number was the lowest).
  Silences burst(2);
  burst.feed(PingTimeout{5, 1.0}, t(1'000));
  burst.feed(PingTimeout{6, 1.0}, t(1'000));
  burst.feed(PingTimeout{1, 1.0}, t(1'000));
  EXPECT_TRUE(burst.since(1, t(0)));
  EXPECT_TRUE(burst.since(6, t(0)));
  EXPECT_FALSE(burst.since(5, t(0)));
}

TEST(FsFailures, AFailureCountsUntilTheNextMountAndKeepsItsFirstLine) {
  FsFailures f;
  f.feed(*fs_event_of(kXfsMount));
  EXPECT_FALSE(f.failure("loop0"));
  f.feed(*fs_event_of(kXfsDown));
  f.feed(*fs_event_of("1,2305,1,-;XFS (loop0): Metadata I/O error: Shutting down filesystem\n"));
  ASSERT_TRUE(f.failure("loop0"));
  EXPECT_EQ(f.failure("loop0")->find("XFS (loop0): Log I/O Error"), 0u)
      << "the first line says why";
  EXPECT_FALSE(f.failure("loop1"));
  f.feed(*fs_event_of(kXfsMount));
  EXPECT_FALSE(f.failure("loop0")) << "mounted afresh";
}

TEST(FsFailures, RememberAtMostTheirBoundOfDevices) {
  FsFailures f(2);
  f.feed({FsEvent::Kind::failed, "dm-1", "xfs", "one"});
  f.feed({FsEvent::Kind::failed, "dm-2", "xfs", "two"});
  f.feed({FsEvent::Kind::failed, "dm-3", "xfs", "three"});
  EXPECT_FALSE(f.failure("dm-1")) << "the oldest went";
  EXPECT_EQ(f.failure("dm-2"), "two");
  EXPECT_EQ(f.failure("dm-3"), "three");
}

}  // namespace
}  // namespace datera::kmsg

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

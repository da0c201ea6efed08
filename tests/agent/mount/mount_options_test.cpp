// Unit tier: the mount-option allow-list, the mount table parser on a fixture file, and the
// requests refused before anything touches the system (no root, no devices).

#include <cerrno>
#include <fstream>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "agent/mount/linux_mounter.h"
#include "tests/testing/fake_process_runner.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

namespace datera::mount {
namespace {

namespace asio = boost::asio;
using ::testing::HasSubstr;
using testing::run_async;

TEST(MountOptions, AllowsSafeCommonAndFsSpecificOptions) {
  EXPECT_TRUE(validate_mount_options("xfs",
                                     {"noatime", "nodiratime", "nosuid", "nodev", "noexec",
                                      "discard", "inode64", "nouuid", "logbsize=256k"},
                                     false)
                  .ok());
  EXPECT_TRUE(validate_mount_options("ext4",
                                     {"relatime", "nodiscard", "data=ordered", "errors=remount-ro",
                                      "commit=30", "user_xattr"},
                                     false)
                  .ok());
  EXPECT_TRUE(validate_mount_options("xfs", {"ro"}, true).ok());
  EXPECT_TRUE(validate_mount_options("xfs", {"rw"}, false).ok());
  EXPECT_TRUE(validate_mount_options("xfs", {}, false).ok());
}

TEST(MountOptions, RejectsInjectionUnknownAndDangerousOptions) {
  const std::vector<std::vector<std::string>> bad = {
      {"noatime,suid"},      // comma injection
      {"noatime nosuid"},    // whitespace
      {""},                  // empty
      {"loop"},              // libmount would set up a loop device
      {"X-mount.mkdir"},     // userspace options
      {"nobarrier"},         // unsafe on power loss
      {"errors=panic"},      // panics the node
      {"suid"},              // not on the allow-list
      {"inode64"},           // xfs only, asked for ext4 below
      {"data=journal,dev"},  // comma in a value
      {"logbsize=1;x"},      // odd characters
      {"NOATIME"},           // upper case is not an option
  };
  for (const auto& opts : bad) {
    const auto st = validate_mount_options("ext4", opts, false);
    EXPECT_FALSE(st.ok()) << opts[0];
    if (!st.ok()) {
      EXPECT_EQ(st.error().code, errno_code(EINVAL)) << opts[0];
    }
  }
  EXPECT_FALSE(validate_mount_options("xfs", {"data=ordered"}, false).ok());
  EXPECT_FALSE(validate_mount_options("xfs", {"logbufs=x"}, false).ok());
  const auto contradiction = validate_mount_options("xfs", {"ro"}, false);
  ASSERT_FALSE(contradiction.ok());
  EXPECT_THAT(contradiction.error().message, HasSubstr("contradicts"));
  EXPECT_FALSE(validate_mount_options("xfs", {"rw"}, true).ok());
}

process::Outcome exited(int code, std::string out = "", std::string err = "") {
  return testing::FakeProcessRunner::exited(code, std::move(out), std::move(err));
}

TEST(RepairVerdicts, FsckExt4ExitStatusIsABitSet) {
  EXPECT_EQ(fsck_ext4_verdict(exited(0)), RepairVerdict::clean);
  EXPECT_EQ(fsck_ext4_verdict(exited(1)), RepairVerdict::repaired);
  // "Corrected, reboot" only matters for a mounted root; this filesystem is not mounted.
  EXPECT_EQ(fsck_ext4_verdict(exited(2)), RepairVerdict::repaired);
  EXPECT_EQ(fsck_ext4_verdict(exited(3)), RepairVerdict::repaired);
  for (int code : {4, 5, 6, 8, 12, 16, 32, 128, 255})
    EXPECT_EQ(fsck_ext4_verdict(exited(code)), RepairVerdict::failed) << code;
  process::Outcome killed;
  killed.signal = 9;
  EXPECT_EQ(fsck_ext4_verdict(killed), RepairVerdict::failed);
  process::Outcome late = exited(0);
  late.timed_out = true;
  EXPECT_EQ(fsck_ext4_verdict(late), RepairVerdict::failed) << "a timeout is never clean";
  EXPECT_EQ(fsck_ext4_verdict(process::Outcome{}), RepairVerdict::failed) << "no exit code";
}

TEST(RepairVerdicts, XfsRepairZeroRepairedTwoDirtyLogElseFailed) {
  EXPECT_EQ(xfs_repair_verdict(exited(0)), RepairVerdict::repaired);
  EXPECT_EQ(xfs_repair_verdict(exited(2)), RepairVerdict::dirty_log);
  for (int code : {1, 3, 4, 127, 255})
    EXPECT_EQ(xfs_repair_verdict(exited(code)), RepairVerdict::failed) << code;
  process::Outcome late = exited(0);
  late.timed_out = true;
  EXPECT_EQ(xfs_repair_verdict(late), RepairVerdict::failed);
  process::Outcome killed;
  killed.signal = 15;
  EXPECT_EQ(xfs_repair_verdict(killed), RepairVerdict::failed);
}

TEST(RepairSummary, OneBoundedPrintableLineWithoutProgress) {
  const auto fsck = exited(4,
                           "loop3 contains a file system with errors, check forced.\n"
                           "loop3: Root inode is not a directory.  ",
                           "\n\nloop3: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.\n"
                           "\t(i.e., without -a or -p options)\n");
  EXPECT_EQ(repair_summary(fsck, 1000),
            "loop3 contains a file system with errors, check forced. | loop3: Root inode is not a "
            "directory. | loop3: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY. | (i.e., without -a "
            "or -p options)");
  const auto xfs = exited(0, "",
                          "Phase 1 - find and verify superblock...\n"
                          "bad primary superblock - filesystem mkfs-in-progress bit set !!!\n"
                          "        - agno = 0\n"
                          "writing modified primary superblock\n"
                          "done\n");
  EXPECT_EQ(repair_summary(xfs, 1000),
            "bad primary superblock - filesystem mkfs-in-progress bit set !!! | writing modified "
            "primary superblock");
  // Hostile output: escapes, other controls and malformed UTF-8 are dropped, and the end is kept.
  const auto evil = exited(1, "\x1b[31mred\x1b[0m\r\x07 caf\xc3\xa9 \xff\xfe ok\n");
  const std::string clean = repair_summary(evil, 1000);
  EXPECT_EQ(clean, "[31mred[0m caf\xc3\xa9 ok");
  // Too long: both ends are kept (xfs_repair's findings come first, fsck's verdict last), and no
  // cut falls inside a character.
  const auto huge = exited(1, std::string(100000, 'x') + "\n\xc3\xa9 the end");
  EXPECT_EQ(repair_summary(huge, 20), "xxxxxxxxxx ... \xc3\xa9 the end");
  EXPECT_EQ(repair_summary(huge, 18), "xxxxxxxxx ...  the end");
  EXPECT_EQ(repair_summary(exited(1, "a\xc3\xa9" + std::string(50, 'y') + "end"), 4), "a ... nd");
  EXPECT_EQ(repair_summary(exited(8), 100), "(no output)");
}

class MounterUnit : public ::testing::Test {
 protected:
  MounterPtr make(MounterOptions opts = {}) {
    return make_linux_mounter(ioc_.get_executor(), pool_, runner_, std::move(opts), metrics_,
                              nullptr);
  }
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  asio::io_context ioc_;
  asio::thread_pool pool_{1};
  testing::FakeProcessRunner runner_;
  testing::TempDir dir_{"dt-mnt"};
};

TEST_F(MounterUnit, ParsesMountinfoWithDevnoRootAndReadOnly) {
  const std::string path = dir_ / "mountinfo";
  std::ofstream(path)
      << "21 26 0:20 / /proc rw,relatime - proc proc rw\n"
         "91 42 7:3 / /var/lib/kubelet/plugins/stage\\0401 rw,noatime shared:3 - xfs /dev/loop3 "
         "rw,inode64,logbufs=8\n"
         "93 88 7:3 /sub /var/lib/kubelet/pods/p1 ro,nosuid master:3 - xfs /dev/loop3 rw\n";
  MounterOptions opts;
  opts.mountinfo_path = path;
  auto m = make(opts);
  auto table = m->mounts();
  ASSERT_TRUE(table.ok()) << table.error().message;
  const auto& entries = (*table)->entries();
  ASSERT_EQ(entries.size(), 3u);
  const auto& stage = entries[1];
  EXPECT_EQ(stage.source, "/dev/loop3");
  EXPECT_EQ(stage.target, "/var/lib/kubelet/plugins/stage 1");
  EXPECT_EQ(stage.fstype, "xfs");
  EXPECT_EQ(stage.root, "/");
  EXPECT_EQ(stage.major, 7u);
  EXPECT_EQ(stage.minor, 3u);
  EXPECT_FALSE(stage.read_only);
  EXPECT_THAT(stage.options, HasSubstr("noatime"));
  EXPECT_THAT(stage.options, HasSubstr("inode64"));
  const auto& pod = entries[2];
  EXPECT_TRUE(pod.read_only);
  EXPECT_EQ(pod.root, "/sub");
  // The index: the visible mount per target, and every mount of a device in table order.
  EXPECT_EQ((*table)->at("/var/lib/kubelet/pods/p1"), &pod);
  EXPECT_EQ((*table)->at("/nowhere"), nullptr);
  ASSERT_EQ((*table)->of_device(7, 3).size(), 2u);
  EXPECT_EQ((*table)->of_device(7, 3)[0], &stage);
  EXPECT_EQ((*table)->of_source("/dev/loop3").size(), 2u);
  EXPECT_TRUE((*table)->of_device(7, 4).empty());
  // A file that is not procfs cannot flag changes: it is read again on every call.
  std::ofstream(path, std::ios::app) << "94 88 7:4 / /mnt/x rw - xfs /dev/loop4 rw\n";
  auto again = m->mounts();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->entries().size(), 4u);
}

TEST_F(MounterUnit, MissingMountinfoIsAnError) {
  MounterOptions opts;
  opts.mountinfo_path = dir_ / "nope";
  auto table = make(opts)->mounts();
  ASSERT_FALSE(table.ok());
  EXPECT_THAT(table.error().message, HasSubstr("nope"));
}

TEST_F(MounterUnit, RefusesUnsupportedFilesystemsAndBadRequestsWithoutRunningAnything) {
  auto m = make();
  auto st = run_async(ioc_, m->format("/dev/loop7", "btrfs"));
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("only xfs and ext4"));

  MountRequest req{"/dev/loop7", dir_ / "t", "xfs", {"noatime,suid"}, false};
  st = run_async(ioc_, m->mount(req));
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("noatime,suid"));

  MountRequest relative{"loop7", "t", "xfs", {}, false};
  st = run_async(ioc_, m->mount(relative));
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("absolute"));

  st = run_async(ioc_, m->grow("/dev/loop7", dir_ / "t", "vfat"));
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(runner_.commands().empty());
}

TEST_F(MounterUnit, ProbeOfAMissingDeviceIsAnErrorNotEmpty) {
  auto m = make();
  auto r = run_async(ioc_, m->probe(dir_ / "no-such-device"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errno_code(ENOENT));
}

TEST_F(MounterUnit, ProbeOfAnEmptyImageFileIsAnErrorNotEmpty) {
  const std::string img = dir_ / "zero.img";
  std::ofstream(img).flush();
  auto r = run_async(ioc_, make()->probe(img));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("size 0"));
}

TEST_F(MounterUnit, FormatRefusesAnythingButABlockDevice) {
  // A regular image file passes probe() but format() insists on a block device.
  const std::string img = dir_ / "img";
  {
    std::ofstream f(img);
    f << std::string(1 << 16, '\0');
  }
  auto st = run_async(ioc_, make()->format(img, "xfs"));
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("not a block device"));
  EXPECT_TRUE(runner_.commands().empty());
}

}  // namespace
}  // namespace datera::mount

// Host tier: the Linux Mounter against real loop devices, real mkfs and real mounts, all under a
// private temp dir. Needs root and /dev/loop-control; skips loudly otherwise. TearDown kills the
// test's child processes, unmounts everything below the temp dir and detaches the loop devices,
// whether the test passed or not.

#include "agent/mount/linux_mounter.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <signal.h>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/common/fs.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

namespace datera::mount {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;  // NOLINT(google-build-using-namespace)
using ::testing::HasSubstr;
using testing::run_async;

std::string find_program(const std::string& name) {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    const std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

/// CAP_SYS_RESOURCE (bit 24) in the effective set: ext4 online resize needs it.
bool has_cap_sys_resource() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("CapEff:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> 24) & 1;
  return false;
}

uint64_t fs_size(const std::string& path) {
  struct statvfs sv {};
  if (::statvfs(path.c_str(), &sv) != 0) return 0;
  return static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize;
}

class LinuxMounterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0)
      GTEST_SKIP() << "******** SKIPPED: the mount tests need root (mount, losetup) ********";
    if (::access("/dev/loop-control", F_OK) != 0)
      GTEST_SKIP() << "******** SKIPPED: no /dev/loop-control, loop devices unavailable ********";
    losetup_ = find_program("losetup");
    if (losetup_.empty()) GTEST_SKIP() << "******** SKIPPED: losetup not installed ********";
    if (find_program("mkfs.xfs").empty() || find_program("mkfs.ext4").empty())
      GTEST_SKIP() << "******** SKIPPED: xfsprogs / e2fsprogs not installed ********";
    runner_ = process::make_process_runner(ioc_.get_executor(), null_logger());
    mounter_ =
        make_linux_mounter(ioc_.get_executor(), pool_, *runner_, MounterOptions{}, null_logger());
  }

  void TearDown() override {
    for (const pid_t pid : children_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (mounter_) {
      // Unmount everything below the temp dir, newest first; repeat for stacked mounts.
      for (int round = 0; round < 4; ++round) {
        auto table = mounter_->mounts();
        if (!table) break;
        bool any = false;
        const auto& all = (*table)->entries();
        for (auto it = all.rbegin(); it != all.rend(); ++it) {
          if (it->target.rfind(dir_.path() + "/", 0) != 0) continue;
          any = true;
          if (::umount2(it->target.c_str(), 0) != 0) {
            ADD_FAILURE() << "cleanup: umount " << it->target << ": " << std::strerror(errno);
            ::umount2(it->target.c_str(), MNT_DETACH);  // test cleanup only, never in the agent
          }
        }
        if (!any) break;
      }
    }
    for (const auto& dev : loops_) {
      auto out = run(losetup_, {"-d", dev});
      if (!out.success()) ADD_FAILURE() << "cleanup: losetup -d " << dev << ": " << out.err;
    }
  }

  process::Outcome run(const std::string& program, std::vector<std::string> args) {
    process::Command cmd;
    cmd.program = program;
    cmd.args = std::move(args);
    cmd.timeout = 60s;
    auto r = run_async(ioc_, runner_->run(std::move(cmd)));
    if (!r) {
      process::Outcome o;
      o.err = r.error().message;
      return o;
    }
    return std::move(*r);
  }

  /// A sparse backing file of `size` bytes attached to a free loop device.
  std::string attach(const std::string& name, off_t size, bool read_only = false,
                     const std::string& first_sector = "") {
    const std::string file = dir_ / name;
    const int fd = ::open(file.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, size), 0);
    if (!first_sector.empty()) {
      EXPECT_EQ(::pwrite(fd, first_sector.data(), first_sector.size(), 0),
                static_cast<ssize_t>(first_sector.size()));
    }
    ::close(fd);
    std::vector<std::string> args = {"--find", "--show"};
    if (read_only) args.push_back("--read-only");
    args.push_back(file);
    auto out = run(losetup_, args);
    EXPECT_TRUE(out.success()) << "losetup: " << out.describe() << " " << out.err;
    std::string dev = out.out;
    while (!dev.empty() && dev.back() == '\n') dev.pop_back();
    if (!dev.empty()) loops_.push_back(dev);
    files_[dev] = file;
    // A block device's read-only flag (BLKROSET) outlives a loop attachment, and ctest runs the
    // handoff tests, which write-protect a node's loop device, beside these: clear what a previous
    // user of this loop number may have left.
    if (!dev.empty() && !read_only) {
      auto rw = run("/sbin/blockdev", {"--setrw", dev});
      EXPECT_TRUE(rw.success()) << "blockdev --setrw " << dev << ": " << rw.err;
    }
    return dev;
  }

  void format(const std::string& dev, const std::string& fstype) {
    auto st = run_async(ioc_, mounter_->format(dev, fstype));
    ASSERT_TRUE(st.ok()) << st.error().message;
  }

  /// Mount entries whose device is `dev`.
  std::vector<MountEntry> mounts_of(const std::string& dev) {
    struct stat st {};
    EXPECT_EQ(::stat(dev.c_str(), &st), 0);
    std::vector<MountEntry> out;
    auto table = mounter_->mounts();
    EXPECT_TRUE(table.ok());
    if (!table) return out;
    for (const auto& e : (*table)->entries())
      if (makedev(e.major, e.minor) == st.st_rdev) out.push_back(e);
    return out;
  }

  /// Starts /bin/sleep with its cwd in `cwd` (or holding `open_file` open), returns its pid once
  /// the hold is in place.
  pid_t hold(const std::string& cwd, const std::string& open_file = "") {
    int pipefd[2];
    EXPECT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(10);
      if (!open_file.empty() && ::open(open_file.c_str(), O_RDONLY) < 0) ::_exit(11);
      if (::chdir(open_file.empty() ? cwd.c_str() : "/") != 0) ::_exit(12);
      const char ok = 'x';
      if (::write(pipefd[1], &ok, 1) != 1) ::_exit(13);
      ::execl("/bin/sleep", "sleep", "300", static_cast<char*>(nullptr));
      ::_exit(14);
    }
    ::close(pipefd[1]);
    EXPECT_GT(pid, 0);
    if (pid > 0) children_.push_back(pid);
    char c = 0;
    EXPECT_EQ(::read(pipefd[0], &c, 1), 1);
    // EOF comes when exec closes the (close-on-exec) write end: from then on the holder is
    // "sleep", as the error message names it. Without this wait a loaded machine sometimes saw
    // the test binary's name there.
    EXPECT_EQ(::read(pipefd[0], &c, 1), 0);
    ::close(pipefd[0]);
    return pid;
  }

  void release(pid_t pid) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    std::erase(children_, pid);
  }

  testing::TempDir dir_{"dt-lm"};
  asio::io_context ioc_;
  asio::thread_pool pool_{2};
  process::ProcessRunnerPtr runner_;
  MounterPtr mounter_;
  std::string losetup_;
  std::vector<std::string> loops_;
  std::map<std::string, std::string> files_;
  std::vector<pid_t> children_;
};

constexpr off_t kXfsSize = off_t{512} << 20;  // xfsprogs 6 refuses filesystems under 300 MiB

TEST_F(LinuxMounterTest, ProbeFormatAndRefuseToFormatAgain) {
  const std::string dev = attach("a.img", kXfsSize);
  ASSERT_FALSE(dev.empty());
  auto empty = run_async(ioc_, mounter_->probe(dev));
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_FALSE(empty->has_value());

  format(dev, "xfs");
  auto found = run_async(ioc_, mounter_->probe(dev));
  ASSERT_TRUE(found.ok()) << found.error().message;
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(**found, "xfs");

  auto again = run_async(ioc_, mounter_->format(dev, "ext4"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, EEXIST);
  EXPECT_THAT(again.error().message, HasSubstr("existing xfs signature"));
  EXPECT_THAT(again.error().message, HasSubstr(dev));
}

TEST_F(LinuxMounterTest, FormatsExt4) {
  const std::string dev = attach("e.img", off_t{64} << 20);
  ASSERT_FALSE(dev.empty());
  format(dev, "ext4");
  auto found = run_async(ioc_, mounter_->probe(dev));
  ASSERT_TRUE(found.ok()) << found.error().message;
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(**found, "ext4");
}

TEST_F(LinuxMounterTest, PartitionTableIsNotEmptyAndIsNeverFormatted) {
  std::string mbr(512, '\0');
  mbr[446 + 4] = static_cast<char>(0x83);  // one Linux partition at LBA 2048, 20480 sectors
  mbr[446 + 8] = 0x00;
  mbr[446 + 9] = 0x08;
  mbr[446 + 12] = 0x00;
  mbr[446 + 13] = 0x50;
  mbr[510] = 0x55;
  mbr[511] = static_cast<char>(0xAA);
  const std::string dev = attach("pt.img", off_t{64} << 20, false, mbr);
  ASSERT_FALSE(dev.empty());
  auto found = run_async(ioc_, mounter_->probe(dev));
  ASSERT_TRUE(found.ok()) << found.error().message;
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(**found, "partition-table:dos");
  auto st = run_async(ioc_, mounter_->format(dev, "xfs"));
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("partition-table:dos"));
}

TEST_F(LinuxMounterTest, MountIsIdempotentAndRefusesASecondPlaceOrAnOccupiedTarget) {
  const std::string dev = attach("m.img", kXfsSize);
  ASSERT_FALSE(dev.empty());
  format(dev, "xfs");
  const std::string stage = dir_ / "stage";  // created by mount()
  MountRequest req{dev, stage, "xfs", {"noatime", "nouuid"}, false};
  auto st = run_async(ioc_, mounter_->mount(req));
  ASSERT_TRUE(st.ok()) << st.error().message;

  auto entries = mounts_of(dev);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].target, stage);
  EXPECT_EQ(entries[0].fstype, "xfs");
  EXPECT_FALSE(entries[0].read_only);
  EXPECT_THAT(entries[0].options, HasSubstr("noatime"));
  EXPECT_TRUE(fs::write_synced(stage + "/hello", "data", 0644).ok());

  st = run_async(ioc_, mounter_->mount(req));  // same device, same target
  EXPECT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(mounts_of(dev).size(), 1u);

  MountRequest elsewhere{dev, dir_ / "other", "xfs", {}, false};
  st = run_async(ioc_, mounter_->mount(elsewhere));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EBUSY);
  EXPECT_THAT(st.error().message, HasSubstr("already mounted at " + stage));
  EXPECT_EQ(mounts_of(dev).size(), 1u);

  const std::string dev2 = attach("m2.img", kXfsSize);
  ASSERT_FALSE(dev2.empty());
  format(dev2, "xfs");
  MountRequest over{dev2, stage, "xfs", {}, false};
  st = run_async(ioc_, mounter_->mount(over));
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("already holds " + dev));
  EXPECT_TRUE(mounts_of(dev2).empty());

  MountRequest wrong_mode{dev, stage, "xfs", {}, true};
  st = run_async(ioc_, mounter_->mount(wrong_mode));
  EXPECT_FALSE(st.ok());
}

TEST_F(LinuxMounterTest, ReadWriteMountOfAReadOnlyDeviceFailsInsteadOfFallingBack) {
  const std::string rw = attach("ro.img", kXfsSize);
  ASSERT_FALSE(rw.empty());
  format(rw, "xfs");
  ASSERT_TRUE(run(losetup_, {"-d", rw}).success());
  std::erase(loops_, rw);
  // The same image again, write-protected at the block layer.
  auto out = run(losetup_, {"--find", "--show", "--read-only", files_[rw]});
  ASSERT_TRUE(out.success()) << out.err;
  std::string dev = out.out;
  while (!dev.empty() && dev.back() == '\n') dev.pop_back();
  loops_.push_back(dev);

  MountRequest req{dev, dir_ / "t", "xfs", {"norecovery"}, false};
  auto st = run_async(ioc_, mounter_->mount(req));
  ASSERT_FALSE(st.ok()) << "norecovery is not on the allow-list";
  req.options.clear();
  st = run_async(ioc_, mounter_->mount(req));
  ASSERT_FALSE(st.ok()) << "a read-write mount of a write-protected device must fail";
  EXPECT_TRUE(st.error().code == EACCES || st.error().code == EROFS) << st.error().message;
  EXPECT_TRUE(mounts_of(dev).empty()) << "left mounted after a refused read-write mount";

  req.read_only = true;
  st = run_async(ioc_, mounter_->mount(req));
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto entries = mounts_of(dev);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_TRUE(entries[0].read_only);
}

TEST_F(LinuxMounterTest, ReadOnlyBindRejectsWritesAndIsIdempotent) {
  const std::string dev = attach("b.img", kXfsSize);
  ASSERT_FALSE(dev.empty());
  format(dev, "xfs");
  const std::string stage = dir_ / "stage";
  MountRequest req{dev, stage, "xfs", {}, false};
  ASSERT_TRUE(run_async(ioc_, mounter_->mount(req)).ok());
  ASSERT_TRUE(fs::write_synced(stage + "/f", "x", 0644).ok());

  const std::string pod_ro = dir_ / "pods/p1/vol";
  auto st = run_async(ioc_, mounter_->bind(stage, pod_ro, true));
  ASSERT_TRUE(st.ok()) << st.error().message;
  const int fd = ::open((pod_ro + "/new").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  const int err = errno;
  EXPECT_LT(fd, 0);
  if (fd >= 0) ::close(fd);
  EXPECT_EQ(err, EROFS);
  EXPECT_TRUE(fs::exists(pod_ro + "/f"));

  st = run_async(ioc_, mounter_->bind(stage, pod_ro, true));
  EXPECT_TRUE(st.ok()) << st.error().message;
  st = run_async(ioc_, mounter_->bind(stage, pod_ro, false));
  EXPECT_FALSE(st.ok()) << "rw asked where a ro bind exists";

  const std::string pod_rw = dir_ / "pods/p2/vol";
  st = run_async(ioc_, mounter_->bind(stage, pod_rw, false));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(fs::write_synced(pod_rw + "/g", "y", 0644).ok());
  EXPECT_TRUE(fs::exists(stage + "/g"));
  EXPECT_TRUE(fs::write_synced(stage + "/h", "z", 0644).ok()) << "the stage stays writable";

  auto entries = mounts_of(dev);
  EXPECT_EQ(entries.size(), 3u);
  // The staging mount is still idempotent with binds of its device elsewhere.
  EXPECT_TRUE(run_async(ioc_, mounter_->mount(req)).ok());

  EXPECT_TRUE(run_async(ioc_, mounter_->unmount(pod_ro)).ok());
  EXPECT_TRUE(run_async(ioc_, mounter_->unmount(pod_rw)).ok());
  EXPECT_EQ(mounts_of(dev).size(), 1u);
}

TEST_F(LinuxMounterTest, BusyUnmountNamesTheHolderAndNeverDetaches) {
  const std::string dev = attach("u.img", kXfsSize);
  ASSERT_FALSE(dev.empty());
  format(dev, "xfs");
  const std::string stage = dir_ / "stage";
  MountRequest req{dev, stage, "xfs", {}, false};
  ASSERT_TRUE(run_async(ioc_, mounter_->mount(req)).ok());
  ASSERT_TRUE(fs::ensure_dir(stage + "/sub", 0755).ok());
  ASSERT_TRUE(fs::write_synced(stage + "/file", "x", 0644).ok());

  const pid_t by_cwd = hold(stage + "/sub");
  auto st = run_async(ioc_, mounter_->unmount(stage));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EBUSY);
  EXPECT_THAT(st.error().message, HasSubstr("pid " + std::to_string(by_cwd) + " (sleep, cwd "));
  EXPECT_THAT(st.error().message, HasSubstr(stage));
  EXPECT_EQ(mounts_of(dev).size(), 1u) << "still mounted: no lazy unmount";
  release(by_cwd);

  const pid_t by_fd = hold("", stage + "/file");
  st = run_async(ioc_, mounter_->unmount(stage));
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("pid " + std::to_string(by_fd) + " (sleep, fd "));
  EXPECT_THAT(st.error().message, HasSubstr(stage + "/file"));
  release(by_fd);

  st = run_async(ioc_, mounter_->unmount(stage));
  EXPECT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(mounts_of(dev).empty());
  st = run_async(ioc_, mounter_->unmount(stage));
  EXPECT_TRUE(st.ok()) << "unmounting an unmounted target: " << st.error().message;
}

// The snapshot is shared while the kernel says nothing changed, and re-read once anything is
// mounted or unmounted, by the agent or by anyone else on the node (here: mount(2) directly).
TEST_F(LinuxMounterTest, MountTableIsReusedUntilTheKernelSaysItChanged) {
  auto first = mounter_->mounts();
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = mounter_->mounts();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(first->get(), second->get()) << "an unchanged table was parsed again";

  const std::string target = dir_ / "tmpfs-here";
  ASSERT_TRUE(fs::ensure_dir(target, 0755).ok());
  ASSERT_EQ(::mount("dt-test", target.c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  auto after = mounter_->mounts();
  ASSERT_TRUE(after.ok());
  EXPECT_NE(after->get(), first->get());
  ASSERT_NE((*after)->at(target), nullptr) << "a mount made outside the mounter was missed";
  EXPECT_EQ((*after)->at(target)->fstype, "tmpfs");

  ASSERT_EQ(::umount2(target.c_str(), 0), 0);
  auto gone = mounter_->mounts();
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ((*gone)->at(target), nullptr) << "an unmount was missed";
}

TEST_F(LinuxMounterTest, UnmountOfSomethingNotMountedSucceeds) {
  ASSERT_TRUE(fs::ensure_dir(dir_ / "plain", 0755).ok());
  auto st = run_async(ioc_, mounter_->unmount(dir_ / "plain"));
  EXPECT_TRUE(st.ok()) << st.error().message;
  st = run_async(ioc_, mounter_->unmount(dir_ / "missing"));
  EXPECT_TRUE(st.ok()) << st.error().message;
}

TEST_F(LinuxMounterTest, GrowsXfsAfterTheDeviceGrows) {
  const std::string dev = attach("g.img", kXfsSize);
  ASSERT_FALSE(dev.empty());
  format(dev, "xfs");
  const std::string stage = dir_ / "stage";
  MountRequest req{dev, stage, "xfs", {}, false};
  ASSERT_TRUE(run_async(ioc_, mounter_->mount(req)).ok());
  const uint64_t before = fs_size(stage);
  ASSERT_EQ(::truncate(files_[dev].c_str(), kXfsSize * 2), 0);
  ASSERT_TRUE(run(losetup_, {"-c", dev}).success());
  auto st = run_async(ioc_, mounter_->grow(dev, stage, "xfs"));
  ASSERT_TRUE(st.ok()) << st.error().message;
  const uint64_t after = fs_size(stage);
  EXPECT_GT(after, before + (uint64_t{400} << 20)) << before << " -> " << after;
}

TEST_F(LinuxMounterTest, GrowsExt4AfterTheDeviceGrows) {
  if (!has_cap_sys_resource())
    GTEST_SKIP() << "******** SKIPPED: no CAP_SYS_RESOURCE in this process, and the kernel refuses "
                    "ext4 online resize (EXT4_IOC_RESIZE_FS) without it ********";
  const std::string dev = attach("g4.img", off_t{64} << 20);
  ASSERT_FALSE(dev.empty());
  format(dev, "ext4");
  const std::string stage = dir_ / "stage";
  MountRequest req{dev, stage, "ext4", {"noatime"}, false};
  auto st = run_async(ioc_, mounter_->mount(req));
  ASSERT_TRUE(st.ok()) << st.error().message;
  const uint64_t before = fs_size(stage);
  ASSERT_EQ(::truncate(files_[dev].c_str(), off_t{256} << 20), 0);
  ASSERT_TRUE(run(losetup_, {"-c", dev}).success());
  st = run_async(ioc_, mounter_->grow(dev, stage, "ext4"));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_GT(fs_size(stage), before + (uint64_t{150} << 20));
  // Not mounted there: refused before running anything.
  st = run_async(ioc_, mounter_->grow(dev, dir_.path(), "ext4"));
  EXPECT_FALSE(st.ok());
}

}  // namespace
}  // namespace datera::mount

// Host tier: the Linux Mounter against real loop devices, real mkfs and real mounts, all under a
// private temp dir. Needs root and /dev/loop-control; skips loudly otherwise. TearDown kills the
// test's child processes, unmounts everything below the temp dir and detaches the loop devices,
// whether the test passed or not.

#include "agent/mount/linux_mounter.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/ostream_sink.h>

#include "base/fs.h"
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

/// The real runner, recording every program it is asked to run: which repair tool ran, with which
/// arguments, or that none did.
class RecordingRunner : public process::ProcessRunner {
 public:
  explicit RecordingRunner(process::ProcessRunner& inner) : inner_(inner) {}
  boost::asio::awaitable<Result<process::Outcome>> run(process::Command cmd) override {
    std::string line = cmd.program.substr(cmd.program.rfind('/') + 1);
    for (const auto& a : cmd.args) line += " " + a;
    commands.push_back(line);
    co_return co_await inner_.run(std::move(cmd));
  }
  /// The recorded commands of `tool` ("fsck.ext4"), arguments included.
  std::vector<std::string> of(const std::string& tool) const {
    std::vector<std::string> out;
    for (const auto& c : commands)
      if (c.rfind(tool + " ", 0) == 0) out.push_back(c);
    return out;
  }
  std::vector<std::string> commands;

 private:
  process::ProcessRunner& inner_;
};

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
    recorder_ = std::make_unique<RecordingRunner>(*runner_);
    mounter_ = make_linux_mounter(ioc_.get_executor(), pool_, *recorder_, MounterOptions{},
                                  metrics_, log_);
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

  /// A fresh xfs on `dev`, mounted at `stage`, "payload" written to hello, then shut down as an
  /// outage does it (its log left dirty) and unmounted.
  void shut_down_xfs(const std::string& dev, const std::string& stage) {
    format(dev, "xfs");
    MountRequest req{dev, stage, "xfs", {}, false};
    ASSERT_TRUE(run_async(ioc_, mounter_->mount(req)).ok());
    ASSERT_TRUE(fs::write_synced(stage + "/hello", "payload", 0644).ok());
    auto down = run(find_program("xfs_io"), {"-x", "-c", "shutdown", stage});
    ASSERT_TRUE(down.success()) << down.err;
    ASSERT_TRUE(run_async(ioc_, mounter_->unmount(stage)).ok());
  }

  /// Runs a tool that changes an unmounted image (debugfs, xfs_db) and asserts it worked.
  void offline(const std::string& tool, std::vector<std::string> args) {
    const std::string program = find_program(tool);
    ASSERT_FALSE(program.empty()) << tool << " not installed";
    auto out = run(program, std::move(args));
    ASSERT_TRUE(out.success()) << tool << ": " << out.describe() << " " << out.out << out.err;
  }

  /// datera_agent_filesystem_repairs_total{fs,result}; -1 when the series is missing.
  double repairs(const std::string& fs, const std::string& result) {
    for (const auto& f : registry_.Collect()) {
      if (f.name != "datera_agent_filesystem_repairs_total") continue;
      for (const auto& m : f.metric) {
        std::map<std::string, std::string> labels;
        for (const auto& l : m.label) labels[l.name] = l.value;
        if (labels["fs"] == fs && labels["result"] == result) return m.counter.value;
      }
    }
    return -1;
  }

  /// Mounts `dev` at `stage`, writes `name` with `content` (fsync'd) and unmounts it again.
  void write_file(const std::string& dev, const std::string& fstype, const std::string& stage,
                  const std::string& name, const std::string& content) {
    MountRequest req{dev, stage, fstype, {}, false};
    auto st = run_async(ioc_, mounter_->mount(req));
    ASSERT_TRUE(st.ok()) << st.error().message;
    ASSERT_TRUE(fs::write_synced(stage + "/" + name, content, 0644).ok());
    st = run_async(ioc_, mounter_->unmount(stage));
    ASSERT_TRUE(st.ok()) << st.error().message;
  }

  std::string read(const std::string& path) {
    auto text = fs::read_file(path, 4096);
    return text ? *text : "<" + text.error().message + ">";
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
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  std::ostringstream log_text_;
  LoggerPtr log_ = std::make_shared<spdlog::logger>(
      "mount", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text_));
  process::ProcessRunnerPtr runner_;
  std::unique_ptr<RecordingRunner> recorder_;
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
  EXPECT_EQ(again.error().code, errno_code(EEXIST));
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
  EXPECT_EQ(st.error().code, errno_code(EBUSY));
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
  EXPECT_TRUE(st.error().code == errno_code(EACCES) || st.error().code == errno_code(EROFS))
      << st.error().message;
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
  EXPECT_EQ(st.error().code, errno_code(EBUSY));
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

TEST_F(LinuxMounterTest, FreezeHoldsWritersUntilTheThawAndIsNeverTakenTwice) {
  const std::string dev = attach("fz.img", kXfsSize);
  ASSERT_FALSE(dev.empty());
  format(dev, "xfs");
  const std::string stage = dir_ / "stage";
  MountRequest req{dev, stage, "xfs", {}, false};
  ASSERT_TRUE(run_async(ioc_, mounter_->mount(req)).ok());
  // Thawed whatever happens below: an unmount of a frozen filesystem would hang the cleanup.
  struct Thaw {
    std::string path;
    ~Thaw() {
      const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY);
      if (fd >= 0) {
        (void)::ioctl(fd, _IOWR('X', 120, int), 0);
        ::close(fd);
      }
    }
  } thaw_anyway{stage};

  auto st = run_async(ioc_, mounter_->thaw(stage));
  EXPECT_TRUE(st.ok()) << "thawing what is not frozen: " << st.error().message;
  st = run_async(ioc_, mounter_->freeze(stage));
  ASSERT_TRUE(st.ok()) << st.error().message;
  std::atomic<bool> written{false};
  std::thread writer([&] {
    const std::string file = stage + "/while-frozen";
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      (void)!::write(fd, "x", 1);
      ::fsync(fd);
      ::close(fd);
    }
    written = true;
  });
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(written) << "a write went through a frozen filesystem";
  st = run_async(ioc_, mounter_->freeze(stage));
  EXPECT_FALSE(st.ok()) << "a second freeze must be refused, not thawed later under its owner";
  EXPECT_EQ(st.ok() ? 0 : st.error().code.value(), EBUSY);
  st = run_async(ioc_, mounter_->thaw(stage));
  ASSERT_TRUE(st.ok()) << st.error().message;
  writer.join();
  EXPECT_TRUE(written);

  // Only a mount point, reached without a symlink.
  ASSERT_TRUE(fs::ensure_dir(dir_ / "plain", 0755).ok());
  st = run_async(ioc_, mounter_->freeze(dir_ / "plain"));
  EXPECT_FALSE(st.ok());
  ASSERT_EQ(::symlink(stage.c_str(), (dir_ / "link").c_str()), 0);
  st = run_async(ioc_, mounter_->freeze(dir_ / "link"));
  EXPECT_FALSE(st.ok()) << "froze through a symlink";
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

// ---------------------------------------------------------------------------------------------
// Repairs: a failed filesystem comes back at the next staging mount, or is refused with what to
// do; never reformatted.

// An ext4 error (the kernel records it in the superblock, as after a storage outage with
// errors=remount-ro) plus a real inconsistency: fsck.ext4 -p fixes both before the mount.
TEST_F(LinuxMounterTest, Ext4WithErrorsRecordedIsCheckedAndRepairedBeforeTheMount) {
  const std::string dev = attach("fsck.img", off_t{64} << 20);
  ASSERT_FALSE(dev.empty());
  format(dev, "ext4");
  const std::string stage = dir_ / "stage";
  write_file(dev, "ext4", stage, "hello", "payload");
  EXPECT_EQ(repairs("ext4", "clean"), 1) << "every read-write ext4 mount is checked first";
  EXPECT_EQ(repairs("ext4", "repaired"), 0);

  offline("debugfs", {"-w", "-R", "set_inode_field /hello links_count 5", dev});
  offline("debugfs", {"-w", "-R", "ssv state 2", dev});  // EXT2_ERROR_FS: "errors recorded"
  recorder_->commands.clear();
  MountRequest req{dev, stage, "ext4", {}, false};
  auto st = run_async(ioc_, mounter_->mount(req));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_THAT(recorder_->of("fsck.ext4"), ::testing::ElementsAre("fsck.ext4 -p " + dev));
  EXPECT_EQ(repairs("ext4", "repaired"), 1);
  EXPECT_EQ(repairs("ext4", "failed"), 0);
  const std::string log = log_text_.str();
  EXPECT_THAT(log, HasSubstr(dev + ": fsck.ext4 -p repaired the filesystem before mounting: "));
  EXPECT_THAT(log, HasSubstr("ref count is 5, should be 1. FIXED."));
  EXPECT_EQ(read(stage + "/hello"), "payload");

  // Mounted there already: nothing is checked again (fsck never meets a mounted device).
  recorder_->commands.clear();
  st = run_async(ioc_, mounter_->mount(req));
  ASSERT_TRUE(st.ok()) << st.error().message;
  MountRequest elsewhere{dev, dir_ / "other", "ext4", {}, false};
  st = run_async(ioc_, mounter_->mount(elsewhere));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, errno_code(EBUSY));
  EXPECT_TRUE(recorder_->commands.empty()) << recorder_->commands.front();

  // The error state is gone for good: the superblock says clean once unmounted.
  ASSERT_TRUE(run_async(ioc_, mounter_->unmount(stage)).ok());
  auto sb = run(find_program("dumpe2fs"), {"-h", dev});
  ASSERT_TRUE(sb.success()) << sb.err;
  EXPECT_THAT(sb.out, ::testing::ContainsRegex("Filesystem state: +clean\n"));
}

// The kernel refuses the mount with EUCLEAN ("Offline file system operation in progress!", a
// superblock flag); xfs_repair rewrites the superblock from a secondary copy and the retry mounts.
TEST_F(LinuxMounterTest, XfsMountRefusedAsCorruptIsRepairedByXfsRepairAndMounted) {
  const std::string dev = attach("xr.img", kXfsSize);
  ASSERT_FALSE(dev.empty());
  format(dev, "xfs");
  const std::string stage = dir_ / "stage";
  write_file(dev, "xfs", stage, "hello", "payload");
  offline("xfs_db", {"-x", "-c", "sb 0", "-c", "write inprogress 1", dev});

  recorder_->commands.clear();
  MountRequest req{dev, stage, "xfs", {}, false};
  auto st = run_async(ioc_, mounter_->mount(req));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_THAT(recorder_->of("xfs_repair"), ::testing::ElementsAre("xfs_repair " + dev))
      << "exactly once, and never with -L";
  EXPECT_EQ(repairs("xfs", "repaired"), 1);
  EXPECT_EQ(repairs("xfs", "failed"), 0);
  const std::string log = log_text_.str();
  EXPECT_THAT(log,
              HasSubstr(dev + ": xfs_repair repaired the filesystem after the mount failed: "));
  EXPECT_THAT(log, HasSubstr("mkfs-in-progress bit set"));
  ASSERT_EQ(mounts_of(dev).size(), 1u);
  EXPECT_EQ(read(stage + "/hello"), "payload");
}

// The normal case after an outage: xfs shut down with changes in its log. The next mount replays
// the log itself; xfs_repair must not run (it would refuse the dirty log, exit 2).
TEST_F(LinuxMounterTest, XfsAfterAShutdownIsMountedByLogReplayWithoutXfsRepair) {
  const std::string dev = attach("xs.img", kXfsSize);
  ASSERT_FALSE(dev.empty());
  const std::string stage = dir_ / "stage";
  MountRequest req{dev, stage, "xfs", {}, false};
  ASSERT_NO_FATAL_FAILURE(shut_down_xfs(dev, stage));
  auto logprint = run(find_program("xfs_logprint"), {"-t", dev});
  ASSERT_THAT(logprint.out, HasSubstr("<DIRTY>")) << "the shutdown left no changes in the log";

  recorder_->commands.clear();
  auto st = run_async(ioc_, mounter_->mount(req));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(recorder_->of("xfs_repair").empty());
  EXPECT_EQ(repairs("xfs", "repaired"), 0);
  EXPECT_EQ(repairs("xfs", "failed"), 0);
  EXPECT_THAT(log_text_.str(), ::testing::Not(HasSubstr("xfs_repair")));
  EXPECT_EQ(read(stage + "/hello"), "payload");
}

// A cleared root inode: fsck.ext4 -p stops ("UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY", exit
// 4). Not mounted, an Error that says what to run, and the filesystem is still there.
TEST_F(LinuxMounterTest, Ext4ThatFsckCannotRepairIsRefusedWithWhatToDoAndNeverReformatted) {
  const std::string dev = attach("fbad.img", off_t{64} << 20);
  ASSERT_FALSE(dev.empty());
  format(dev, "ext4");
  offline("debugfs", {"-w", "-R", "clri <2>", dev});
  offline("debugfs", {"-w", "-R", "ssv state 2", dev});

  recorder_->commands.clear();
  MountRequest req{dev, dir_ / "stage", "ext4", {}, false};
  auto st = run_async(ioc_, mounter_->mount(req));
  ASSERT_FALSE(st.ok()) << "mounted a filesystem fsck.ext4 -p could not repair";
  EXPECT_EQ(st.error().code, errno_code(EUCLEAN));
  const std::string& msg = st.error().message;
  EXPECT_THAT(
      msg, HasSubstr("fsck.ext4 -p could not repair the filesystem on " + dev + " (exit code 4)"));
  EXPECT_THAT(msg, HasSubstr("UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY"));
  EXPECT_THAT(msg, HasSubstr("run `fsck.ext4 -f " + dev + "` by hand"));
  EXPECT_THAT(msg, HasSubstr("never reformats"));
  EXPECT_LT(msg.size(), 1500u);
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  EXPECT_EQ(repairs("ext4", "failed"), 1);
  EXPECT_TRUE(mounts_of(dev).empty());
  EXPECT_THAT(recorder_->commands, ::testing::ElementsAre("fsck.ext4 -p " + dev));
  auto found = run_async(ioc_, mounter_->probe(dev));
  ASSERT_TRUE(found.ok()) << found.error().message;
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(**found, "ext4");
}

// Refused as corrupt, and the log is dirty too (a shutdown): xfs_repair stops at exit 2 because
// only a mount, or -L, settles the log. -L is the operator's decision: an Error that says so.
TEST_F(LinuxMounterTest, XfsThatXfsRepairCannotRepairIsRefusedWithWhatToDoAndNeverReformatted) {
  const std::string dev = attach("xbad.img", kXfsSize);
  ASSERT_FALSE(dev.empty());
  const std::string stage = dir_ / "stage";
  MountRequest req{dev, stage, "xfs", {}, false};
  ASSERT_NO_FATAL_FAILURE(shut_down_xfs(dev, stage));
  offline("xfs_db", {"-x", "-c", "sb 0", "-c", "write inprogress 1", dev});

  recorder_->commands.clear();
  auto st = run_async(ioc_, mounter_->mount(req));
  ASSERT_FALSE(st.ok()) << "mounted a filesystem xfs_repair did not repair";
  EXPECT_EQ(st.error().code, errno_code(EUCLEAN));
  const std::string& msg = st.error().message;
  EXPECT_THAT(msg, HasSubstr("the mount failed with \"Structure needs cleaning\""));
  EXPECT_THAT(msg, HasSubstr("xfs_repair could not repair " + dev + " (exit code 2"));
  EXPECT_THAT(msg, HasSubstr("the -L option to destroy the log"));  // xfs_repair's own words
  EXPECT_THAT(msg, HasSubstr("`xfs_repair -L " + dev + "` zeroes the log and so loses"));
  EXPECT_THAT(msg, HasSubstr("never runs xfs_repair -L and never reformats"));
  EXPECT_LT(msg.size(), 2000u);
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  EXPECT_EQ(repairs("xfs", "failed"), 1);
  EXPECT_EQ(repairs("xfs", "repaired"), 0);
  EXPECT_TRUE(mounts_of(dev).empty());
  EXPECT_THAT(recorder_->commands, ::testing::ElementsAre("xfs_repair " + dev));
  auto found = run_async(ioc_, mounter_->probe(dev));
  ASSERT_TRUE(found.ok()) << found.error().message;
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(**found, "xfs");
}

}  // namespace
}  // namespace datera::mount

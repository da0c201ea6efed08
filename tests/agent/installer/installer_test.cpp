// The installer against real files, the real shim binary and the real process runner. The
// self-test's round trip goes through a real API server on a Unix socket in the same io_context.

#include "agent/installer/installer.h"

#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <optional>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "agent/api/router.h"
#include "agent/http/server.h"
#include "base/fs.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

extern char** environ;

namespace datera::installer {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using testing::run_async;

std::string slurp(const std::string& p) {
  auto r = fs::read_file(p);
  return r ? *r : std::string();
}

ino_t inode_of(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? st.st_ino : 0;
}

struct NoStatus : api::StatusSource, api::Maintenance {
  nlohmann::json status() override { return {}; }
  nlohmann::json volumes() override { return {}; }
  asio::awaitable<nlohmann::json> release(std::string, bool) override { co_return nullptr; }
  asio::awaitable<nlohmann::json> drain(bool) override { co_return nullptr; }
};

class InstallerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::ensure_dir(dir_ + "/src", 0755).ok());
    source_ = dir_ + "/src/datera-flexvolume";
    shim_ = slurp(DATERA_SHIM_PATH);
    ASSERT_GT(shim_.size(), 1000u);
    write_source(shim_);
    opts_.plugin_dir = dir_ + "/plugins";
    opts_.shim_source = source_;
    opts_.info.socket = dir_ + "/agent.sock";
    opts_.info.agent_version = "test";
    opts_.self_test_timeout = 5s;
  }
  void TearDown() override {
    server_.reset();
    installer_.reset();
  }
  void write_source(const std::string& bytes) {
    ASSERT_TRUE(fs::atomic_write(source_, bytes, 0755).ok());
  }
  void serve_api() {
    server_ = std::make_unique<http::Server>(ioc_.get_executor(), http::ServerOptions{}, router_,
                                             http_probe_, null_logger(), http::Admission{});
    ASSERT_TRUE(server_->listen_unix(opts_.info.socket).ok());
    server_->start();
  }
  Installer& installer() {
    if (!installer_) {
      installer_ = std::make_unique<Installer>(ioc_.get_executor(), pool_, *runner_, opts_,
                                               metrics_, null_logger());
    }
    return *installer_;
  }
  Result<Change> ensure() { return run_async(ioc_, installer().ensure()); }
  std::vector<std::string> entries(const std::string& d) {
    std::vector<std::string> out;
    if (DIR* dd = ::opendir(d.c_str())) {
      while (auto* e = ::readdir(dd)) {
        if (std::string(e->d_name) != "." && std::string(e->d_name) != "..")
          out.push_back(e->d_name);
      }
      ::closedir(dd);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  testing::TempDir tmp_{"dt-inst"};
  const std::string dir_ = tmp_.path();
  std::string source_, shim_;
  Options opts_;
  asio::io_context ioc_;
  asio::thread_pool pool_{1};
  process::ProcessRunnerPtr runner_ =
      process::make_process_runner(ioc_.get_executor(), null_logger());
  prometheus::Registry registry_;
  Metrics metrics_{registry_};
  flexvolume::Metrics flex_probe_{registry_};
  flexvolume::Service flex_{
      flexvolume::ServiceOptions{"datera/iscsi", flex::DriverInfo::default_capabilities(), 5s},
      flex_probe_, null_logger()};
  NoStatus no_status_;
  api::Router router_{flex_, no_status_, no_status_, null_logger()};
  http::Metrics http_probe_{registry_, "api"};
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<Installer> installer_;
};

TEST_F(InstallerTest, FreshInstallLaysOutDriverAndSelfTests) {
  serve_api();
  auto r = ensure();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, Change::installed);
  EXPECT_EQ(entries(opts_.plugin_dir), std::vector<std::string>{"datera~iscsi"})
      << "no temp dir left";
  EXPECT_EQ(entries(opts_.driver_dir()), (std::vector<std::string>{".datera-agent.json", "iscsi"}));
  EXPECT_EQ(slurp(opts_.exe_path()), shim_);
  struct stat st {};
  ASSERT_EQ(::stat(opts_.exe_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  auto info = flex::DriverInfo::from_json(nlohmann::json::parse(slurp(opts_.info_path())));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->socket, opts_.info.socket);
  EXPECT_TRUE(installer().ready());
  EXPECT_EQ(installer().state()["self_test"], "ok");
  EXPECT_EQ(installer().state()["digest"], digest(shim_));
}

TEST_F(InstallerTest, IdenticalContentIsLeftAlone) {
  serve_api();
  ASSERT_TRUE(ensure().ok());
  const auto ino = inode_of(opts_.exe_path());
  auto again = ensure();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, Change::unchanged);
  EXPECT_EQ(inode_of(opts_.exe_path()), ino) << "an unchanged driver must not be rewritten";
}

TEST_F(InstallerTest, UpdateReplacesAtomicallyByRename) {
  serve_api();
  ASSERT_TRUE(ensure().ok());
  const auto ino = inode_of(opts_.exe_path());
  write_source(shim_ + std::string(4096, '\0'));  // trailing bytes: still a valid ELF, new digest
  auto r = ensure();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, Change::updated);
  EXPECT_NE(inode_of(opts_.exe_path()), ino) << "updates must rename a new inode into place";
  EXPECT_EQ(slurp(opts_.exe_path()).size(), shim_.size() + 4096);
  EXPECT_EQ(entries(opts_.driver_dir()), (std::vector<std::string>{".datera-agent.json", "iscsi"}));
}

TEST_F(InstallerTest, BrokenSourceNeverReplacesAWorkingDriver) {
  serve_api();
  ASSERT_TRUE(ensure().ok());
  write_source("#!/bin/sh\necho hi\n");
  auto notelf = ensure();
  ASSERT_FALSE(notelf.ok());
  EXPECT_NE(notelf.error().message.find("not an executable (ELF)"), std::string::npos)
      << notelf.error().message;
  // A real ELF that does not answer init properly.
  write_source(slurp("/bin/false"));
  auto bad = ensure();
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("left as it was"), std::string::npos) << bad.error().message;
  EXPECT_EQ(slurp(opts_.exe_path()), shim_);
  EXPECT_EQ(entries(opts_.driver_dir()), (std::vector<std::string>{".datera-agent.json", "iscsi"}))
      << "the staged file must be cleaned up";
  EXPECT_FALSE(installer().ready());
  EXPECT_EQ(installer().state()["state"], "failed");
}

TEST_F(InstallerTest, SelfTestFailsWhenAgentUnreachable) {
  // No API server: init works (local) but the round trip cannot.
  auto r = ensure();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("self-test"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("not reachable"), std::string::npos) << r.error().message;
  EXPECT_TRUE(fs::exists(opts_.exe_path())) << "installed even though the agent is not serving yet";
  EXPECT_FALSE(installer().ready());
  // Once the API serves, the next ensure() self-tests again and becomes ready.
  serve_api();
  auto again = ensure();
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, Change::unchanged);
  EXPECT_TRUE(installer().ready());
}

TEST_F(InstallerTest, LeftoversOfACrashedInstallAreRemoved) {
  serve_api();
  ASSERT_TRUE(fs::ensure_dir(opts_.plugin_dir + "/.datera~iscsi.tmp-1", 0755).ok());
  ASSERT_TRUE(fs::atomic_write(opts_.plugin_dir + "/.datera~iscsi.tmp-1/iscsi", "half", 0755).ok());
  ASSERT_TRUE(ensure().ok());
  ASSERT_TRUE(fs::atomic_write(opts_.driver_dir() + "/.iscsi.new-1", "half", 0755).ok());
  write_source(shim_ + "x");
  ASSERT_TRUE(ensure().ok());
  EXPECT_EQ(entries(opts_.plugin_dir), std::vector<std::string>{"datera~iscsi"});
  EXPECT_EQ(entries(opts_.driver_dir()), (std::vector<std::string>{".datera-agent.json", "iscsi"}));
}

// Something other than a regular file where the driver goes (a FIFO, a symlink, a device node) is
// never opened or followed: opening a FIFO blocks until a writer appears, which used to hang the
// installer's pool thread forever and with it the agent's SIGTERM. It is replaced by the shim.
class ForeignDriverPathTest : public InstallerTest {
 protected:
  /// ensure(), bounded: on timeout, a reader blocked in open() of a FIFO is let go by opening
  /// the other end, so a failing run reports instead of hanging the test binary.
  std::optional<Result<Change>> ensure_within(std::chrono::milliseconds limit) {
    std::optional<Result<Change>> out;
    asio::co_spawn(
        ioc_, testing::wrap_optional(installer().ensure()),
        [&](std::exception_ptr, std::optional<Result<Change>> r) { out = std::move(r); });
    const auto end = std::chrono::steady_clock::now() + limit;
    ioc_.restart();
    while (!out && std::chrono::steady_clock::now() < end) ioc_.run_for(20ms);
    if (!out) {
      while (!out) {  // each FIFO may be waited on in turn
        for (const auto& p : fifos_) {
          const int fd = ::open(p.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
          if (fd >= 0) ::close(fd);
        }
        ioc_.run_for(20ms);
      }
      return std::nullopt;
    }
    return out;
  }
  void plant_fifo(const std::string& p) {
    ASSERT_EQ(::mkfifo(p.c_str(), 0644), 0) << std::strerror(errno);
    fifos_.push_back(p);
  }
  static bool is_regular(const std::string& p) {
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  }
  void SetUp() override {
    InstallerTest::SetUp();
    ASSERT_TRUE(fs::ensure_dir(opts_.driver_dir(), 0755).ok());
  }
  std::vector<std::string> fifos_;
};

TEST_F(ForeignDriverPathTest, FifosAtTheDriverAndInfoPathsAreReplacedNotOpened) {
  serve_api();
  plant_fifo(opts_.exe_path());
  plant_fifo(opts_.info_path());
  const auto started = std::chrono::steady_clock::now();
  auto r = ensure_within(5s);
  ASSERT_TRUE(r.has_value()) << "install blocked on a FIFO at the driver path";
  ASSERT_TRUE(r->ok()) << r->error().message;
  EXPECT_EQ(**r, Change::updated);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_TRUE(is_regular(opts_.exe_path()));
  EXPECT_TRUE(is_regular(opts_.info_path()));
  EXPECT_EQ(slurp(opts_.exe_path()), shim_);
  EXPECT_TRUE(nlohmann::json::parse(slurp(opts_.info_path()), nullptr, false).is_object());
  EXPECT_TRUE(installer().ready());
  EXPECT_EQ(entries(opts_.driver_dir()), (std::vector<std::string>{".datera-agent.json", "iscsi"}));
}

TEST_F(ForeignDriverPathTest, SymlinksAreReplacedAndTheirTargetsLeftUntouched) {
  serve_api();
  // A link to a file that even holds the right shim: kubelet would exec whatever it points to
  // later, so the path itself must become the agent's regular file.
  const std::string elsewhere = dir_ + "/elsewhere-shim";
  const std::string elsewhere_info = dir_ + "/elsewhere.json";
  ASSERT_TRUE(fs::atomic_write(elsewhere, shim_, 0755).ok());
  ASSERT_TRUE(fs::atomic_write(elsewhere_info, "not ours\n", 0600).ok());
  const auto ino = inode_of(elsewhere), info_ino = inode_of(elsewhere_info);
  ASSERT_EQ(::symlink(elsewhere.c_str(), opts_.exe_path().c_str()), 0);
  ASSERT_EQ(::symlink(elsewhere_info.c_str(), opts_.info_path().c_str()), 0);
  auto r = ensure_within(5s);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->ok()) << r->error().message;
  EXPECT_TRUE(is_regular(opts_.exe_path())) << "the symlink is still there";
  EXPECT_TRUE(is_regular(opts_.info_path()));
  EXPECT_EQ(slurp(opts_.exe_path()), shim_);
  EXPECT_EQ(slurp(elsewhere), shim_);
  EXPECT_EQ(inode_of(elsewhere), ino);
  EXPECT_EQ(slurp(elsewhere_info), "not ours\n");
  EXPECT_EQ(inode_of(elsewhere_info), info_ino);
  struct stat st {};
  ASSERT_EQ(::stat(elsewhere_info.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the target's mode must not change";
}

TEST_F(ForeignDriverPathTest, SymlinkToAFifoIsNotFollowed) {
  serve_api();
  const std::string fifo = dir_ + "/elsewhere-fifo";
  plant_fifo(fifo);
  ASSERT_EQ(::symlink(fifo.c_str(), opts_.exe_path().c_str()), 0);
  ASSERT_EQ(::symlink(fifo.c_str(), opts_.info_path().c_str()), 0);
  auto r = ensure_within(5s);
  ASSERT_TRUE(r.has_value()) << "install followed a symlink into a FIFO and blocked";
  ASSERT_TRUE(r->ok()) << r->error().message;
  EXPECT_TRUE(is_regular(opts_.exe_path()));
  struct stat st {};
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the link's target is left alone";
}

TEST_F(ForeignDriverPathTest, ADirectoryAtTheDriverPathIsReportedNotDeleted) {
  serve_api();
  ASSERT_TRUE(fs::ensure_dir(opts_.exe_path() + "/somebody", 0755).ok());
  auto r = ensure_within(5s);
  ASSERT_TRUE(r.has_value());
  ASSERT_FALSE(r->ok());
  EXPECT_NE(r->error().message.find(opts_.exe_path() + " is a directory"), std::string::npos)
      << r->error().message;
  EXPECT_TRUE(fs::exists(opts_.exe_path() + "/somebody"));
  for (const auto& e : entries(opts_.driver_dir()))
    EXPECT_NE(e.rfind(".iscsi.new-", 0), 0u) << "a staged file was left behind: " << e;
}

TEST_F(InstallerTest, UninstallRemovesDriverAndIsIdempotent) {
  serve_api();
  ASSERT_TRUE(ensure().ok());
  ASSERT_TRUE(uninstall(opts_).ok());
  EXPECT_FALSE(fs::exists(opts_.driver_dir()));
  EXPECT_TRUE(uninstall(opts_).ok());
}

TEST(NeedsReinstall, OnlyEventsThatMatter) {
  Options o;
  o.plugin_dir = "/p";
  o.shim_source = "/opt/bin/datera-flexvolume";
  using K = FileEvent::Kind;
  EXPECT_TRUE(needs_reinstall(o, {"/opt/bin", "datera-flexvolume", K::written}));
  EXPECT_FALSE(needs_reinstall(o, {"/opt/bin", "datera-agent", K::written}));
  EXPECT_TRUE(needs_reinstall(o, {"/p/datera~iscsi", "iscsi", K::removed}));
  EXPECT_TRUE(needs_reinstall(o, {"/p/datera~iscsi", ".datera-agent.json", K::removed}));
  EXPECT_TRUE(needs_reinstall(o, {"/p/datera~iscsi", "", K::dir_gone}));
  EXPECT_TRUE(needs_reinstall(o, {"/p", "datera~iscsi", K::removed}));
  // The installer's own writes: renames into place and temp files going away.
  EXPECT_FALSE(needs_reinstall(o, {"/p/datera~iscsi", "iscsi", K::written}));
  EXPECT_FALSE(needs_reinstall(o, {"/p/datera~iscsi", ".iscsi.new-42", K::removed}));
  EXPECT_FALSE(needs_reinstall(o, {"/p", ".datera~iscsi.tmp-42", K::removed}));
  EXPECT_FALSE(needs_reinstall(o, {"/p", "other~driver", K::removed}));
}

TEST_F(InstallerTest, RunReinstallsWhenTheDriverIsDeletedOrTheSourceChanges) {
  serve_api();
  auto watcher = make_inotify_watcher(ioc_.get_executor());
  ASSERT_TRUE(watcher.ok()) << watcher.error().message;
  std::vector<std::pair<bool, std::string>> states;
  asio::co_spawn(
      ioc_,
      installer().run(watcher->get(),
                      [&](bool ok, const std::string& d) { states.emplace_back(ok, d); }),
      asio::detached);
  auto run_until = [&](auto pred, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!pred() && std::chrono::steady_clock::now() < end) ioc_.run_for(20ms);
    return pred();
  };
  ASSERT_TRUE(run_until([&] { return states.size() == 1; }, 10s));
  EXPECT_TRUE(states[0].first) << states[0].second;

  ASSERT_EQ(::unlink(opts_.exe_path().c_str()), 0);  // someone deletes the driver
  ASSERT_TRUE(run_until([&] { return states.size() == 2; }, 10s));
  EXPECT_TRUE(fs::exists(opts_.exe_path()));
  EXPECT_TRUE(states[1].first);

  write_source(shim_ + "v2");  // a new shim build appears next to the agent
  ASSERT_TRUE(run_until([&] { return states.size() == 3; }, 10s));
  EXPECT_EQ(slurp(opts_.exe_path()), shim_ + "v2");
  EXPECT_EQ(installer().state()["last_change"], "updated");
  installer().stop();
  ioc_.run_for(100ms);
}

// kubelet may exec the driver at any moment, including mid-update. A separate process (forked
// before any thread exists, so it holds no descriptor of ours) execs the installed path in a
// tight loop while the installer replaces it back and forth; every exec must run a whole shim.
TEST(InstallerAtomicity, ConcurrentExecNeverSeesAPartialFile) {
  testing::TempDir tmp("dt-atom");
  const std::string& dir = tmp.path();
  Options o;
  o.plugin_dir = dir + "/plugins";
  o.shim_source = dir + "/datera-flexvolume";
  o.info.socket = dir + "/agent.sock";
  o.info.agent_version = "test";
  const std::string shim = slurp(DATERA_SHIM_PATH);
  ASSERT_TRUE(fs::atomic_write(o.shim_source, shim, 0755).ok());
  ASSERT_TRUE(fs::ensure_dir(o.plugin_dir, 0755).ok());

  int stop_pipe[2], result_pipe[2];
  ASSERT_EQ(::pipe(stop_pipe), 0);
  ASSERT_EQ(::pipe(result_pipe), 0);
  const std::string exe = o.exe_path();
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(stop_pipe[1]);
    ::close(result_pipe[0]);
    long runs = 0, bad = 0, absent = 0;
    char* argv[] = {const_cast<char*>("iscsi"), const_cast<char*>("init"), nullptr};
    for (;;) {
      pollfd p{stop_pipe[0], POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) break;
      if (::access(exe.c_str(), X_OK) != 0) {  // before the first install
        ++absent;
        continue;
      }
      int out[2];
      if (::pipe2(out, O_CLOEXEC) != 0) ::_exit(5);
      posix_spawn_file_actions_t fa;
      posix_spawn_file_actions_init(&fa);
      posix_spawn_file_actions_adddup2(&fa, out[1], 1);
      posix_spawn_file_actions_adddup2(&fa, out[1], 2);
      pid_t pid = 0;
      const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv, environ);
      posix_spawn_file_actions_destroy(&fa);
      ::close(out[1]);
      char buf[512];
      ssize_t got = 0;
      for (ssize_t n;
           (n = ::read(out[0], buf + got, sizeof buf - 1 - static_cast<size_t>(got))) > 0;)
        got += n;
      ::close(out[0]);
      int status = 0;
      if (rc == 0) ::waitpid(pid, &status, 0);
      buf[got] = '\0';
      ++runs;
      const bool ok = rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                      std::strstr(buf, "\"status\":\"Success\"") != nullptr;
      if (!ok) ++bad;
    }
    long res[3] = {runs, bad, absent};
    ssize_t w = ::write(result_pipe[1], res, sizeof res);
    ::_exit(w == sizeof res ? 0 : 6);
  }
  ::close(stop_pipe[0]);
  ::close(result_pipe[1]);

  // Only now create threads (pool, io_context users).
  asio::io_context ioc;
  asio::thread_pool pool(1);
  auto runner = process::make_process_runner(ioc.get_executor(), null_logger());
  prometheus::Registry registry;
  Metrics probe(registry);
  Installer inst(ioc.get_executor(), pool, *runner, o, probe, null_logger());
  int updates = 0;
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(fs::atomic_write(o.shim_source,
                                 shim + std::string(static_cast<size_t>(i % 2) * 65536, 'p'), 0755)
                    .ok());
    auto r = run_async(ioc, inst.ensure());  // the self-test round trip fails (no agent): fine here
    if (fs::exists(exe) && slurp(exe).size() == shim.size() + static_cast<size_t>(i % 2) * 65536)
      ++updates;
    (void)r;
  }
  ::close(stop_pipe[1]);
  long res[3] = {0, 0, 0};
  ASSERT_EQ(::read(result_pipe[0], res, sizeof res), static_cast<ssize_t>(sizeof res));
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(updates, 40);
  EXPECT_GT(res[0], 100) << "the exec loop should have run many times during the updates";
  EXPECT_EQ(res[1], 0) << res[1] << " of " << res[0] << " execs saw a broken driver";
  std::printf("concurrent execs: %ld during 40 updates, %ld failed\n", res[0], res[1]);
}

}  // namespace
}  // namespace datera::installer

// The Linux ProcessRunner against real programs (no mocks), plus the FakeProcessRunner that other
// components' tests use in its place. Every test drives its own io_context with run_for(), so a
// hang fails that test instead of stalling the suite.

#include "base/process/process_runner.h"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <fcntl.h>
#include <fstream>
#include <optional>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include "base/logging.h"
#include "tests/testing/fake_process_runner.h"
#include "tests/testing/temp_dir.h"

namespace datera::process {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;  // NOLINT(google-build-using-namespace)
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;
using Clock = std::chrono::steady_clock;

Command command(std::string program, std::vector<std::string> args = {}) {
  Command cmd;
  cmd.program = std::move(program);
  cmd.args = std::move(args);
  cmd.timeout = 10s;
  return cmd;
}

asio::awaitable<void> run_into(ProcessRunner& runner, Command cmd,
                               std::optional<Result<Outcome>>& slot) {
  slot.emplace(co_await runner.run(std::move(cmd)));
}

void fail_on_exception(const std::exception_ptr& e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    ADD_FAILURE() << "run() threw: " << ex.what();
  }
}

// Runs one command to completion on `ioc`; an Error mentioning "did not complete" if it hangs.
Result<Outcome> run_one(asio::io_context& ioc, ProcessRunner& runner, Command cmd) {
  std::optional<Result<Outcome>> slot;
  asio::co_spawn(ioc, run_into(runner, std::move(cmd), slot), fail_on_exception);
  ioc.restart();
  ioc.run_for(15s);
  if (!slot) return Error{"run() did not complete within 15s"};
  return std::move(*slot);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// True once `pid` is gone or a zombie (dead, waiting for its new parent to reap it).
bool dead_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  do {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    const auto paren = line.rfind(')');
    if (paren != std::string::npos && line.size() > paren + 2 && line[paren + 2] == 'Z')
      return true;
    std::this_thread::sleep_for(20ms);
  } while (Clock::now() < deadline);
  return false;
}

/// A shared TempDir that can also drop executable scripts into itself.
class TempDir : public testing::TempDir {
 public:
  TempDir() : testing::TempDir("dt-proc") {}

  std::string write(const std::string& name, const std::string& content, mode_t mode) const {
    const std::string file = path() + "/" + name;
    std::ofstream(file) << content;
    ::chmod(file.c_str(), mode);
    return file;
  }
};

class ProcessRunnerTest : public ::testing::Test {
 protected:
  Result<Outcome> run(Command cmd) { return run_one(ioc_, *runner_, std::move(cmd)); }

  asio::io_context ioc_;
  ProcessRunnerPtr runner_ = make_process_runner(ioc_.get_executor(), null_logger());
};

// ---------------------------------------------------------------------------------------------
// Output, exit status, stdin, environment

TEST_F(ProcessRunnerTest, ChildrenInheritNoDescriptorsButStdio) {
  // A descriptor without close-on-exec, as Asio's sockets are.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const std::string leaked = "/proc/self/fd/" + std::to_string(fds[1]);
  auto r = run(command("/usr/bin/readlink", {leaked}));
  ::close(fds[0]);
  ::close(fds[1]);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_NE(r->exit_code, 0) << "the child still holds fd " << fds[1] << ": " << r->out;
  auto stdio = run(command("/usr/bin/readlink", {"/proc/self/fd/1"}));
  ASSERT_TRUE(stdio.ok());
  EXPECT_EQ(stdio->exit_code, 0) << "stdout must stay";
}

TEST_F(ProcessRunnerTest, CapturesStdoutOfEcho) {
  auto r = run(command("/bin/echo", {"hello", "world"}));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->out, "hello world\n");
  EXPECT_EQ(r->err, "");
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->signal, 0);
  EXPECT_FALSE(r->timed_out);
  EXPECT_FALSE(r->truncated);
  EXPECT_TRUE(r->success());
  EXPECT_EQ(r->describe(), "exit code 0");
}

TEST_F(ProcessRunnerTest, CapturesStderrAndExitCode) {
  auto r = run(command("/bin/sh", {"-c", "echo x >&2; exit 3"}));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->out, "");
  EXPECT_EQ(r->err, "x\n");
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->signal, 0);
  EXPECT_FALSE(r->success());
  EXPECT_EQ(r->describe(), "exit code 3");
}

TEST_F(ProcessRunnerTest, ArgumentsAreNotInterpretedByAShell) {
  auto r = run(command("/bin/echo", {"$HOME", "a;b", "`id`", "*"}));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->out, "$HOME a;b `id` *\n");
}

TEST_F(ProcessRunnerTest, ReportsTheKillingSignal) {
  auto r = run(command("/bin/sh", {"-c", "kill -9 $$"}));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->signal, SIGKILL);
  EXPECT_EQ(r->exit_code, -1);
  EXPECT_FALSE(r->timed_out);
  EXPECT_FALSE(r->success());
  EXPECT_EQ(r->describe(), "killed by signal 9");
}

TEST_F(ProcessRunnerTest, FeedsStdinDataToCat) {
  auto cmd = command("/bin/cat");
  cmd.stdin_data = "line one\nline two\n";
  auto r = run(std::move(cmd));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->out, "line one\nline two\n");
  EXPECT_TRUE(r->success());
}

TEST_F(ProcessRunnerTest, FeedsLargeStdinWhileReadingOutput) {
  // Far beyond the pipe buffers both ways: only works if writing and reading run concurrently.
  std::string data;
  for (int i = 0; data.size() < (4u << 20); ++i) data += std::to_string(i) + "\n";
  auto cmd = command("/bin/cat");
  cmd.stdin_data = data;
  cmd.max_output = 8 << 20;
  auto r = run(std::move(cmd));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->success()) << r->describe();
  EXPECT_FALSE(r->truncated);
  EXPECT_EQ(r->out.size(), data.size());
  EXPECT_TRUE(r->out == data);
}

TEST_F(ProcessRunnerTest, StdinIsDevNullWithoutData) {
  auto r = run(command("/usr/bin/readlink", {"/proc/self/fd/0"}));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->out, "/dev/null\n");

  const auto start = Clock::now();
  auto cat = run(command("/bin/cat"));  // would block forever on an open stdin
  ASSERT_TRUE(cat.ok()) << cat.error().message;
  EXPECT_TRUE(cat->success()) << cat->describe();
  EXPECT_EQ(cat->out, "");
  EXPECT_LT(seconds_since(start), 2.0);
}

TEST_F(ProcessRunnerTest, ChildNotReadingStdinDoesNotRaiseSigpipeHere) {
  // gtest does not ignore SIGPIPE: a raw write to the closed pipe would kill this binary.
  auto cmd = command("/bin/true");
  cmd.stdin_data = std::string(4 << 20, 'x');
  auto r = run(std::move(cmd));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->success()) << r->describe();
  sigset_t pending;
  ::sigpending(&pending);
  EXPECT_EQ(::sigismember(&pending, SIGPIPE), 0);
}

TEST_F(ProcessRunnerTest, PassesExactlyTheGivenEnvironment) {
  auto cmd = command("/usr/bin/env");
  cmd.env = std::vector<std::string>{"A=1"};
  auto r = run(std::move(cmd));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->out, "A=1\n");

  auto empty = command("/usr/bin/env");
  empty.env = std::vector<std::string>{};
  auto e = run(std::move(empty));
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->out, "");
  EXPECT_TRUE(e->success());
}

TEST_F(ProcessRunnerTest, InheritsTheEnvironmentWhenNoneIsGiven) {
  ::setenv("DATERA_PROCESS_TEST", "inherited", 1);
  auto r = run(command("/usr/bin/env"));
  ::unsetenv("DATERA_PROCESS_TEST");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_THAT(r->out, HasSubstr("DATERA_PROCESS_TEST=inherited\n"));
}

TEST_F(ProcessRunnerTest, ChildHasItsOwnProcessGroupAndCleanSignalState) {
  // Block SIGUSR1 and ignore SIGPIPE here, as the agent does; neither may reach the child.
  sigset_t usr1;
  sigset_t old_mask;
  ::sigemptyset(&usr1);
  ::sigaddset(&usr1, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
  auto* old_pipe = ::signal(SIGPIPE, SIG_IGN);
  auto r = run(command("/bin/grep", {"-E", "^(SigBlk|SigIgn):", "/proc/self/status"}));
  ::signal(SIGPIPE, old_pipe);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ASSERT_TRUE(r.ok()) << r.error().message;
  std::istringstream status(r->out);
  std::string blk_label, ign_label;
  unsigned long long blocked = ~0ull;
  unsigned long long ignored = ~0ull;
  status >> blk_label >> std::hex >> blocked >> ign_label >> ignored;
  EXPECT_EQ(blk_label, "SigBlk:") << r->out;
  EXPECT_EQ(blocked, 0u) << r->out;
  EXPECT_EQ(ign_label, "SigIgn:") << r->out;
  // Signals 1..31 only: glibc's posix_spawn leaves its internal signals 32 and 33 ignored.
  EXPECT_EQ(ignored & 0x7fffffffull, 0u) << r->out;

  auto g = run(command("/bin/sh", {"-c",
                                   "read -r pid comm state ppid pgrp rest < /proc/self/stat; "
                                   "echo \"$pid $pgrp\""}));
  ASSERT_TRUE(g.ok()) << g.error().message;
  std::istringstream fields(g->out);
  pid_t pid = 0;
  pid_t pgrp = 0;
  fields >> pid >> pgrp;
  EXPECT_GT(pid, 0) << g->out;
  EXPECT_EQ(pgrp, pid) << g->out;
  EXPECT_NE(pgrp, ::getpgrp());
}

// ---------------------------------------------------------------------------------------------
// Start failures

TEST_F(ProcessRunnerTest, MissingProgramIsAnError) {
  auto r = run(command("/nonexistent/datera-no-such-program", {"x"}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, errno_code(ENOENT));
  EXPECT_THAT(r.error().message, HasSubstr("/nonexistent/datera-no-such-program"));
  EXPECT_THAT(r.error().message, HasSubstr("No such file or directory"));
}

TEST_F(ProcessRunnerTest, RelativeProgramIsAnError) {
  for (const char* program : {"echo", "bin/echo", ""}) {
    auto r = run(command(program, {"x"}));
    ASSERT_FALSE(r.ok()) << program;
    EXPECT_EQ(r.error().code, errno_code(EINVAL));
    EXPECT_THAT(r.error().message, HasSubstr("absolute path")) << program;
    EXPECT_THAT(r.error().message, HasSubstr("'" + std::string(program) + "'"));
  }
}

TEST_F(ProcessRunnerTest, UnexecutableFilesAreErrors) {
  TempDir dir;
  auto denied = run(command(dir.write("plain", "#!/bin/sh\necho hi\n", 0644)));
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, errno_code(EACCES));
  EXPECT_THAT(denied.error().message, HasSubstr("plain: Permission denied"));

  auto garbage =
      run(command(dir.write("garbage", std::string("\x01\x02\x03 not a program\n"), 0755)));
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().code, errno_code(ENOEXEC));
  EXPECT_THAT(garbage.error().message, HasSubstr("garbage: Exec format error"));
}

// ---------------------------------------------------------------------------------------------
// Time and size bounds

TEST_F(ProcessRunnerTest, TimeoutTerminatesSleep) {
  auto cmd = command("/bin/sleep", {"30"});
  cmd.timeout = 300ms;
  const auto start = Clock::now();
  auto r = run(std::move(cmd));
  const double took = seconds_since(start);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->signal, SIGTERM);
  EXPECT_FALSE(r->success());
  EXPECT_GE(r->elapsed, 300ms);
  EXPECT_LT(took, 2.0);  // well inside timeout + grace: sleep dies on SIGTERM
  EXPECT_THAT(r->describe(), MatchesRegex("timed out after [0-9]+ms \\(killed\\)"));
}

TEST_F(ProcessRunnerTest, TimeoutKillsTheWholeProcessGroup) {
  auto cmd = command("/bin/sh", {"-c", "/bin/sleep 30 & echo $!; wait"});
  cmd.timeout = 300ms;
  auto r = run(std::move(cmd));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  const pid_t grandchild = std::atoi(r->out.c_str());
  ASSERT_GT(grandchild, 0) << r->out;
  EXPECT_TRUE(dead_within(grandchild, 2s)) << "grandchild " << grandchild << " survived";
  ::kill(grandchild, SIGKILL);  // in case the assertion above failed
}

TEST_F(ProcessRunnerTest, ChildIgnoringSigtermEndsWithSigkill) {
  auto cmd = command("/bin/sh", {"-c", "trap '' TERM; /bin/sleep 30"});
  cmd.timeout = 500ms;
  const auto start = Clock::now();
  auto r = run(std::move(cmd));
  const double took = seconds_since(start);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->signal, SIGKILL);
  EXPECT_GE(took, 2.4);  // timeout + the 2 s grace
  EXPECT_LT(took, 5.0);
  EXPECT_EQ(r->describe(), "timed out after 2s (killed)");
}

TEST_F(ProcessRunnerTest, GrandchildHoldingStdoutDoesNotHangTheCall) {
  const auto start = Clock::now();
  auto r = run(command("/bin/sh", {"-c", "/bin/sleep 30 & echo $!"}));
  const double took = seconds_since(start);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->success()) << r->describe();
  EXPECT_FALSE(r->timed_out);
  EXPECT_LT(took, 2.0);
  const pid_t grandchild = std::atoi(r->out.c_str());
  EXPECT_GT(grandchild, 0) << r->out;
  if (grandchild > 0) ::kill(grandchild, SIGKILL);  // not ours to wait for; just tidy up
}

TEST_F(ProcessRunnerTest, OutputBeyondMaxOutputIsTruncated) {
  auto cmd = command("/usr/bin/head", {"-c", "1000000", "/dev/zero"});
  cmd.max_output = 4096;
  auto r = run(std::move(cmd));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->out.size(), 4096u);
  EXPECT_TRUE(r->truncated);
  EXPECT_TRUE(r->success()) << r->describe();  // the excess was drained, head was never stuck

  auto exact = command("/usr/bin/head", {"-c", "4096", "/dev/zero"});
  exact.max_output = 4096;
  auto e = run(std::move(exact));
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->out.size(), 4096u);
  EXPECT_FALSE(e->truncated);
}

TEST_F(ProcessRunnerTest, TwentyConcurrentRunsOnOneIoContext) {
  constexpr int kRuns = 20;
  std::vector<std::optional<Result<Outcome>>> slots(kRuns);
  for (int i = 0; i < kRuns; ++i) {
    auto cmd = command("/bin/sh", {"-c", "read x; /bin/sleep 0.3; echo \"$x-$1\"; exit $(($1 % 4))",
                                   "sh", std::to_string(i)});
    cmd.stdin_data = "in" + std::to_string(i) + "\n";
    asio::co_spawn(ioc_, run_into(*runner_, std::move(cmd), slots[i]), fail_on_exception);
  }
  const auto start = Clock::now();
  ioc_.run_for(15s);
  EXPECT_LT(seconds_since(start), 3.0);  // 20 x 0.3 s one after another would take 6 s
  for (int i = 0; i < kRuns; ++i) {
    ASSERT_TRUE(slots[i].has_value()) << "run " << i << " did not complete";
    const auto& r = *slots[i];
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->out, "in" + std::to_string(i) + "-" + std::to_string(i) + "\n");
    EXPECT_EQ(r->exit_code, i % 4);
    EXPECT_FALSE(r->timed_out);
  }
}

TEST_F(ProcessRunnerTest, ReapsEveryChildAndClosesEveryDescriptor) {
  auto count_fds = [] {
    int n = 0;
    for (int fd = 0; fd < 4096; ++fd) n += ::fcntl(fd, F_GETFD) != -1 ? 1 : 0;
    return n;
  };
  auto warm_up = run(command("/bin/true"));  // the io_context opens its epoll, eventfd, timerfd
  ASSERT_TRUE(warm_up.ok());
  const int before = count_fds();
  auto fed = command("/bin/cat");
  fed.stdin_data = "x";
  auto ok = run(std::move(fed));
  auto failed = run(command("/bin/sh", {"-c", "exit 7"}));
  auto missing = run(command("/nonexistent/prog"));
  auto timed = command("/bin/sleep", {"30"});
  timed.timeout = 50ms;
  auto killed = run(std::move(timed));
  ASSERT_TRUE(ok.ok() && failed.ok() && killed.ok());
  EXPECT_FALSE(missing.ok());
  EXPECT_EQ(ok->out, "x");
  EXPECT_EQ(failed->exit_code, 7);
  EXPECT_TRUE(killed->timed_out);
  EXPECT_EQ(count_fds(), before);
  int status = 0;
  EXPECT_EQ(::waitpid(-1, &status, WNOHANG), -1);  // no child left, running or zombie
  EXPECT_EQ(errno, ECHILD);
}

TEST_F(ProcessRunnerTest, CancellingTheCallKillsTheChild) {
  TempDir dir;
  const std::string pid_file = dir.write("pid", "", 0644);
  asio::cancellation_signal cancel;
  std::optional<Result<Outcome>> slot;
  bool threw = false;
  asio::co_spawn(
      ioc_,
      run_into(*runner_,
               command("/bin/sh", {"-c", "echo $$ > " + pid_file + "; exec /bin/sleep 30"}), slot),
      asio::bind_cancellation_slot(cancel.slot(),
                                   [&](std::exception_ptr e) { threw = e != nullptr; }));
  asio::steady_timer later(ioc_, 300ms);
  later.async_wait(
      [&](boost::system::error_code) { cancel.emit(asio::cancellation_type::terminal); });
  const auto start = Clock::now();
  ioc_.run_for(10s);  // returns once the background reaper has reaped the child
  EXPECT_LT(seconds_since(start), 3.0);
  EXPECT_TRUE(threw || slot.has_value());
  std::ifstream in(pid_file);
  pid_t pid = 0;
  in >> pid;
  ASSERT_GT(pid, 0);
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, WNOHANG), -1);  // already reaped, not left a zombie
  EXPECT_EQ(errno, ECHILD);
  EXPECT_TRUE(dead_within(pid, 1s));
}

// ---------------------------------------------------------------------------------------------
// Reporting

TEST(OutcomeTest, DescribesHowTheProgramEnded) {
  Outcome exited;
  exited.exit_code = 3;
  EXPECT_EQ(exited.describe(), "exit code 3");
  EXPECT_FALSE(exited.success());

  Outcome killed;
  killed.signal = 9;
  EXPECT_EQ(killed.describe(), "killed by signal 9");

  Outcome timed_out;
  timed_out.timed_out = true;
  timed_out.signal = 15;
  timed_out.elapsed = 10'040ms;
  EXPECT_EQ(timed_out.describe(), "timed out after 10s (killed)");
  EXPECT_FALSE(timed_out.success());

  Outcome ok;
  ok.exit_code = 0;
  EXPECT_TRUE(ok.success());
  EXPECT_EQ(ok.describe(), "exit code 0");
}

TEST(ProcessRunnerLogTest, LogsOnlyAtDebug) {
  std::ostringstream lines;
  LogFactory logs(spdlog::level::trace, std::make_shared<spdlog::sinks::ostream_sink_mt>(lines));
  asio::io_context ioc;
  auto runner = make_process_runner(ioc.get_executor(), logs.get("process"));
  auto ok = run_one(ioc, *runner, command("/bin/echo", {"a", "b"}));
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  auto missing = run_one(ioc, *runner, command("/nonexistent/prog"));
  ASSERT_FALSE(missing.ok());

  const std::string text = lines.str();
  EXPECT_THAT(text, HasSubstr("/bin/echo (2 args) pid "));
  EXPECT_THAT(text, HasSubstr("exit code 0 in "));
  EXPECT_THAT(text, HasSubstr("/nonexistent/prog"));
  std::istringstream in(text);
  int count = 0;
  for (std::string line; std::getline(in, line); ++count) {
    EXPECT_THAT(line, HasSubstr(" debug [process] ")) << line;
  }
  EXPECT_GE(count, 3);
}

// ---------------------------------------------------------------------------------------------
// The fake used by other components' tests

TEST(FakeProcessRunnerTest, RepliesFromItsScriptAndRecordsCommands) {
  using datera::testing::FakeProcessRunner;
  FakeProcessRunner fake;
  fake.on("/sbin/iscsiadm", FakeProcessRunner::exited(0, "any"))
      .on("/sbin/iscsiadm", "--mode", FakeProcessRunner::exited(21, "", "no records"))
      .on("/sbin/mkfs.ext4",
          Error{"cannot start /sbin/mkfs.ext4: No such file", errno_code(ENOENT)});
  asio::io_context ioc;

  auto specific = run_one(ioc, fake, command("/sbin/iscsiadm", {"--mode", "session"}));
  ASSERT_TRUE(specific.ok());
  EXPECT_EQ(specific->exit_code, 21);
  EXPECT_EQ(specific->err, "no records");

  auto general = run_one(ioc, fake, command("/sbin/iscsiadm", {"-m", "node"}));
  ASSERT_TRUE(general.ok());
  EXPECT_EQ(general->out, "any");

  auto failed = run_one(ioc, fake, command("/sbin/mkfs.ext4", {"/dev/sdb"}));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, errno_code(ENOENT));

  auto unknown = run_one(ioc, fake, command("/bin/true"));
  ASSERT_TRUE(unknown.ok());
  EXPECT_TRUE(unknown->success());

  ASSERT_EQ(fake.commands().size(), 4u);
  EXPECT_EQ(fake.commands()[0].args, (std::vector<std::string>{"--mode", "session"}));
  EXPECT_EQ(fake.commands()[2].program, "/sbin/mkfs.ext4");
  EXPECT_EQ(fake.commands()[3].program, "/bin/true");
}

TEST(FakeProcessRunnerTest, DefaultReplyAndSpawnErrorCanBeChanged) {
  using datera::testing::FakeProcessRunner;
  FakeProcessRunner fake;
  fake.set_default(FakeProcessRunner::exited(1, "", "nope"));
  asio::io_context ioc;

  auto r = run_one(ioc, fake, command("/bin/anything"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);

  fake.set_spawn_error(Error{"cannot start /bin/anything: Permission denied", errno_code(EACCES)});
  auto denied = run_one(ioc, fake, command("/bin/anything"));
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, errno_code(EACCES));

  fake.set_spawn_error(std::nullopt);
  fake.clear_commands();
  auto again = run_one(ioc, fake, command("/bin/anything"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->err, "nope");
  EXPECT_EQ(fake.commands().size(), 1u);
}

}  // namespace
}  // namespace datera::process

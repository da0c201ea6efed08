// The Linux ProcessRunner: posix_spawn into a fresh process group, a pidfd for the exit and pipes
// for the streams, all watched by Asio on the caller's executor. No threads, no SIGCHLD handler and
// no polling: every wait is a reactor wait on a file descriptor or a timer.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "base/process/process_runner.h"
#include "base/unique_fd.h"

extern char** environ;

namespace datera::process {
namespace {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using asio::posix::stream_descriptor;
using std::chrono::milliseconds;
using namespace asio::experimental::awaitable_operators;  // NOLINT(google-build-using-namespace)

constexpr auto kTermGrace = std::chrono::seconds(2);  // SIGTERM to the group, then SIGKILL
constexpr auto kKillWait = std::chrono::seconds(5);   // SIGKILL, then stop waiting (D state)
constexpr auto kDrainAfterExit = milliseconds(200);   // output still arriving after the exit
constexpr size_t kReadChunk = 64 * 1024;
constexpr milliseconds kLongestTimeout = std::chrono::hours(24 * 365);

// ---------------------------------------------------------------------------------------------
// File descriptors and spawning

// Keeps our descriptors clear of 0..2 (possible when the agent runs with a standard stream closed),
// so the child's dup2 actions onto 0, 1 and 2 cannot overwrite one another's sources.
Status move_above_stdio(UniqueFd& fd) {
  if (fd.get() > 2) return ok_status();
  const int high = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (high < 0) return Error::from_errno("fcntl(F_DUPFD_CLOEXEC)", errno);
  fd.reset(high);
  return ok_status();
}

Status make_pipe(UniqueFd& read_end, UniqueFd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Error::from_errno("pipe2", errno);
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  if (Status s = move_above_stdio(read_end); !s) return s;
  return move_above_stdio(write_end);
}

// Reaps a child we have just SIGKILLed during setup; only used before any async wait exists.
void reap_blocking(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

class SpawnActions {
 public:
  SpawnActions() { rc_ = ::posix_spawn_file_actions_init(&actions_); }
  ~SpawnActions() {
    if (rc_ == 0) ::posix_spawn_file_actions_destroy(&actions_);
  }
  SpawnActions(const SpawnActions&) = delete;
  SpawnActions& operator=(const SpawnActions&) = delete;
  int init_error() const { return rc_; }
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
  int rc_;
};

class SpawnAttr {
 public:
  SpawnAttr() { rc_ = ::posix_spawnattr_init(&attr_); }
  ~SpawnAttr() {
    if (rc_ == 0) ::posix_spawnattr_destroy(&attr_);
  }
  SpawnAttr(const SpawnAttr&) = delete;
  SpawnAttr& operator=(const SpawnAttr&) = delete;
  int init_error() const { return rc_; }
  posix_spawnattr_t* get() { return &attr_; }

 private:
  posix_spawnattr_t attr_;
  int rc_;
};

struct Child {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd out;  ///< read end of the child's stdout
  UniqueFd err;  ///< read end of the child's stderr
  UniqueFd in;   ///< non-blocking write end of the child's stdin; empty when it is /dev/null
};

Result<Child> spawn_child(const Command& cmd) {
  const std::string what = "cannot start " + cmd.program;
  Child child;
  UniqueFd out_w, err_w, in_r;  // the child's ends, closed here once it holds its copies
  if (Status s = make_pipe(child.out, out_w); !s) return s.error().wrap(what);
  if (Status s = make_pipe(child.err, err_w); !s) return s.error().wrap(what);
  if (!cmd.stdin_data.empty()) {
    if (Status s = make_pipe(in_r, child.in); !s) return s.error().wrap(what);
    // O_NONBLOCK lives on the open file description, so only our end becomes non-blocking.
    const int flags = ::fcntl(child.in.get(), F_GETFL);
    if (flags < 0 || ::fcntl(child.in.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
      return Error::from_errno(what + ": fcntl(O_NONBLOCK)", errno);
    }
  }

  SpawnActions actions;
  if (actions.init_error() != 0) {
    return Error::from_errno(what + ": posix_spawn_file_actions_init", actions.init_error());
  }
  int rc = cmd.stdin_data.empty()
               ? ::posix_spawn_file_actions_addopen(actions.get(), 0, "/dev/null", O_RDONLY, 0)
               : ::posix_spawn_file_actions_adddup2(actions.get(), in_r.get(), 0);
  if (rc == 0) rc = ::posix_spawn_file_actions_adddup2(actions.get(), out_w.get(), 1);
  if (rc == 0) rc = ::posix_spawn_file_actions_adddup2(actions.get(), err_w.get(), 2);
  // Nothing else reaches the child, whether or not it is close-on-exec (Asio's sockets are not):
  // a child holding the API's listening socket would keep the dead agent's socket "alive" and
  // make a restarted agent refuse to start, or leave a caller waiting in its backlog.
  if (rc == 0) rc = ::posix_spawn_file_actions_addclosefrom_np(actions.get(), 3);
  if (rc != 0) return Error::from_errno(what + ": posix_spawn_file_actions", rc);

  // Own process group (so a timeout can kill everything the program started), no blocked signals
  // and every signal at its default disposition (the agent ignores SIGPIPE; children must not).
  SpawnAttr attr;
  if (attr.init_error() != 0) {
    return Error::from_errno(what + ": posix_spawnattr_init", attr.init_error());
  }
  sigset_t none;
  sigset_t all;
  ::sigemptyset(&none);
  ::sigfillset(&all);
  rc = ::posix_spawnattr_setflags(
      attr.get(),
      static_cast<short>(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  if (rc == 0) rc = ::posix_spawnattr_setpgroup(attr.get(), 0);
  if (rc == 0) rc = ::posix_spawnattr_setsigmask(attr.get(), &none);
  if (rc == 0) rc = ::posix_spawnattr_setsigdefault(attr.get(), &all);
  if (rc != 0) return Error::from_errno(what + ": posix_spawnattr", rc);

  // posix_spawn does not write through argv/envp; the const_casts only satisfy its signature.
  std::vector<char*> argv;
  argv.reserve(cmd.args.size() + 2);
  argv.push_back(const_cast<char*>(cmd.program.c_str()));
  for (const auto& arg : cmd.args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (cmd.env) {
    envp.reserve(cmd.env->size() + 1);
    for (const auto& entry : *cmd.env) envp.push_back(const_cast<char*>(entry.c_str()));
    envp.push_back(nullptr);
  }

  // glibc reports exec failures (ENOENT, EACCES, ENOEXEC...) through posix_spawn's return value.
  rc = ::posix_spawn(&child.pid, cmd.program.c_str(), actions.get(), attr.get(), argv.data(),
                     cmd.env ? envp.data() : environ);
  if (rc != 0) return Error::from_errno(what, rc);

  const long pidfd = ::syscall(SYS_pidfd_open, child.pid, 0);
  if (pidfd < 0) {
    const int err = errno;
    ::kill(-child.pid, SIGKILL);
    reap_blocking(child.pid);
    return Error::from_errno(what + ": pidfd_open (Linux 5.3 or later is required)", err);
  }
  child.pidfd.reset(static_cast<int>(pidfd));
  return child;
}

// Writes without SIGPIPE even when the agent does not ignore it (unit tests, other embedders):
// SIGPIPE is blocked on this thread for the call and one raised by it is consumed before the mask
// is restored.
ssize_t write_without_sigpipe(int fd, const char* data, size_t size, int& error) {
  sigset_t pipe_only;
  ::sigemptyset(&pipe_only);
  ::sigaddset(&pipe_only, SIGPIPE);
  sigset_t pending;
  ::sigpending(&pending);
  const bool was_pending = ::sigismember(&pending, SIGPIPE) == 1;
  sigset_t old_mask;
  ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask);
  const ssize_t n = ::write(fd, data, size);
  error = n < 0 ? errno : 0;
  if (n < 0 && error == EPIPE && !was_pending) {
    const timespec zero{};
    while (::sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  return n;
}

// ---------------------------------------------------------------------------------------------
// One run: the state shared by the coroutines that watch a child. It lives in run()'s frame and
// the coroutines get it by reference; run() awaits all of them before it returns.

struct Session {
  Session(const asio::any_io_executor& ex, pid_t child_pid)
      : pid(child_pid), pidfd(ex), out(ex), err(ex), in(ex), drain(ex) {}

  pid_t pid;
  stream_descriptor pidfd;
  stream_descriptor out;
  stream_descriptor err;
  stream_descriptor in;
  asio::steady_timer drain;  ///< bounds reading once the child has exited
  Outcome outcome;
  bool reaped = false;
  bool killed = false;   ///< SIGKILL sent to the group
  bool io_done = false;  ///< both outputs at EOF and stdin written
  bool closing = false;  ///< stop reading and writing: the drain time is up
};

Status adopt(stream_descriptor& sd, UniqueFd& fd) {
  if (!fd) return ok_status();
  boost::system::error_code ec;
  sd.assign(fd.get(), ec);
  if (ec)
    return Error{"registering a descriptor with the event loop: " + ec.message(),
                 errno_code(ec.value())};
  fd.release();
  return ok_status();
}

// Reaps the child if it has exited and records how; true once there is nothing left to wait for.
bool try_reap(Session& s) {
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(s.pid, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  s.reaped = true;
  if (r == s.pid) {
    if (WIFEXITED(status)) s.outcome.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) s.outcome.signal = WTERMSIG(status);
  }
  // r < 0 (ECHILD): someone else reaped it (SIGCHLD set to SIG_IGN?); the status is lost.
  return true;
}

void signal_group(Session& s, int sig) {
  // Once the leader is reaped its pid (and so the group id) may be reused: never signal after.
  if (s.reaped) return;
  ::kill(-s.pid, sig);
  // A child that moved itself to another group is still ours to stop.
  if (::getpgid(s.pid) != s.pid) ::kill(s.pid, sig);
  if (sig == SIGKILL) s.killed = true;
}

asio::awaitable<void> wait_exit(Session& s) {
  // Asio registers descriptors edge-triggered and a plain wait is not speculative, so an exit that
  // happened before the wait was queued would never be reported. Checking with WNOHANG right
  // before each wait, in the same step, closes that window.
  while (!try_reap(s)) {
    auto [ec] = co_await s.pidfd.async_wait(stream_descriptor::wait_read, as_tuple(use_awaitable));
    if (ec) co_return;  // cancelled: the watchdog gave up on a process that does not die
  }
}

// Completes only when cancelled (the child exited) or when even SIGKILL did not end the child
// within kKillWait (uninterruptible sleep, e.g. I/O to a dead iSCSI target).
asio::awaitable<void> watchdog(Session& s, milliseconds timeout) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(std::min(timeout, kLongestTimeout));  // no overflow in ns arithmetic
  if (auto [ec] = co_await timer.async_wait(as_tuple(use_awaitable)); ec || s.reaped) co_return;
  s.outcome.timed_out = true;
  signal_group(s, SIGTERM);
  timer.expires_after(kTermGrace);
  if (auto [ec] = co_await timer.async_wait(as_tuple(use_awaitable)); ec || s.reaped) co_return;
  signal_group(s, SIGKILL);
  timer.expires_after(kKillWait);
  co_await timer.async_wait(as_tuple(use_awaitable));
}

// Owns the pidfd of a child that would not die in time and reaps it whenever it finally exits.
asio::awaitable<void> reap_in_background(stream_descriptor pidfd, pid_t pid, LoggerPtr log) {
  for (;;) {
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r != 0) {
      log->debug("pid {} reaped in the background", pid);
      co_return;
    }
    auto [ec] = co_await pidfd.async_wait(stream_descriptor::wait_read, as_tuple(use_awaitable));
    if (ec) co_return;
  }
}

void stop_io(Session& s) {
  s.closing = true;
  boost::system::error_code ignored;
  s.out.cancel(ignored);
  s.err.cancel(ignored);
  s.in.cancel(ignored);
}

asio::awaitable<void> supervise(Session& s, milliseconds timeout, asio::any_io_executor ex,
                                LoggerPtr log) {
  co_await (wait_exit(s) || watchdog(s, timeout));
  if (!s.reaped) {
    // Either SIGKILL did not end it within kKillWait, or the caller cancelled the call.
    log->debug("pid {} {}; reaping it in the background", s.pid,
               s.killed ? "survived SIGKILL (uninterruptible sleep?)" : "killed: call cancelled");
    if (!s.killed) signal_group(s, SIGKILL);
    asio::co_spawn(ex, reap_in_background(std::move(s.pidfd), s.pid, log), asio::detached);
  }
  // A grandchild may still hold the pipes open: read what is already there, but not forever.
  if (!s.io_done) {
    s.drain.expires_after(kDrainAfterExit);
    co_await s.drain.async_wait(as_tuple(use_awaitable));
  }
  if (!s.io_done) stop_io(s);
}

asio::awaitable<void> read_stream(Session& s, stream_descriptor& pipe, std::string& sink,
                                  size_t limit) {
  std::vector<char> buf(kReadChunk);
  while (!s.closing) {
    auto [ec, n] = co_await pipe.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
    const size_t room = limit > sink.size() ? limit - sink.size() : 0;
    sink.append(buf.data(), std::min(n, room));
    if (n > room) s.outcome.truncated = true;  // the excess is read and dropped
    if (ec) break;  // EOF, or cancelled once the child has exited and the drain time is up
  }
}

asio::awaitable<void> write_stdin(Session& s, const std::string& data) {
  if (!s.in.is_open()) co_return;
  size_t written = 0;
  while (written < data.size() && !s.closing) {
    int error = 0;
    const ssize_t n = write_without_sigpipe(s.in.native_handle(), data.data() + written,
                                            data.size() - written, error);
    if (n >= 0) {
      written += static_cast<size_t>(n);
      continue;
    }
    if (error == EINTR) continue;
    if (error != EAGAIN) break;  // EPIPE: the child closed its stdin or exited
    // Pipe full; the wait is queued in the same step as the failed write, so no edge is lost.
    auto [ec] = co_await s.in.async_wait(stream_descriptor::wait_write, as_tuple(use_awaitable));
    if (ec) break;
  }
  boost::system::error_code ignored;
  s.in.close(ignored);  // EOF for the child
}

asio::awaitable<void> pump(Session& s, size_t max_output, const std::string& stdin_data) {
  co_await (read_stream(s, s.out, s.outcome.out, max_output) &&
            read_stream(s, s.err, s.outcome.err, max_output) && write_stdin(s, stdin_data));
  s.io_done = true;
  s.drain.cancel();
}

// ---------------------------------------------------------------------------------------------

class LinuxProcessRunner final : public ProcessRunner {
 public:
  LinuxProcessRunner(asio::any_io_executor executor, LoggerPtr log)
      : executor_(std::move(executor)), log_(std::move(log)) {}

  asio::awaitable<Result<Outcome>> run(Command cmd) override {
    const auto start = std::chrono::steady_clock::now();
    if (cmd.program.empty() || cmd.program.front() != '/') {
      log_->debug("refusing to run '{}': not an absolute path", cmd.program);
      co_return Error{"cannot run '" + cmd.program + "': the program must be an absolute path",
                      errno_code(EINVAL)};
    }
    Result<Child> spawned = spawn_child(cmd);
    if (!spawned) {
      log_->debug("{} ({} args): {}", cmd.program, cmd.args.size(), spawned.error().message);
      co_return spawned.error();
    }
    Child& child = spawned.value();
    log_->debug("started {} ({} args) as pid {}", cmd.program, cmd.args.size(), child.pid);

    Session s(executor_, child.pid);
    Status watched = adopt(s.pidfd, child.pidfd);
    if (watched) watched = adopt(s.out, child.out);
    if (watched) watched = adopt(s.err, child.err);
    if (watched) watched = adopt(s.in, child.in);
    if (!watched) {
      ::kill(-child.pid, SIGKILL);
      reap_blocking(child.pid);
      co_return watched.error().wrap("cannot watch " + cmd.program);
    }

    co_await (supervise(s, cmd.timeout, executor_, log_) &&
              pump(s, cmd.max_output, cmd.stdin_data));

    s.outcome.elapsed =
        std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
    log_->debug("{} ({} args) pid {}: {} in {}ms{}", cmd.program, cmd.args.size(), child.pid,
                s.outcome.describe(), s.outcome.elapsed.count(),
                s.outcome.truncated ? ", output truncated" : "");
    co_return std::move(s.outcome);
  }

 private:
  asio::any_io_executor executor_;
  LoggerPtr log_;
};

}  // namespace

ProcessRunnerPtr make_process_runner(boost::asio::any_io_executor executor, LoggerPtr log) {
  if (!log) log = null_logger();
  return std::make_unique<LinuxProcessRunner>(std::move(executor), std::move(log));
}

}  // namespace datera::process

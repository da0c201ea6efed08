#include "agent/installer/installer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "base/blocking.h"
#include "base/fs.h"
#include "base/hash.h"
#include "base/json.h"

namespace datera::installer {

namespace asio = boost::asio;

const char* to_string(Change c) {
  switch (c) {
    case Change::installed:
      return "installed";
    case Change::updated:
      return "updated";
    case Change::unchanged:
      return "unchanged";
  }
  return "?";
}

std::string digest(const std::string& bytes) {
  return fnv1a64_hex(bytes);
}

bool needs_reinstall(const Options& o, const FileEvent& ev) {
  using K = FileEvent::Kind;
  if (!o.shim_source.empty() && ev.dir == fs::dirname(o.shim_source) &&
      ev.name == fs::basename(o.shim_source)) {
    return true;  // a new shim build (or the source vanished, which ensure() will report)
  }
  if (ev.dir == o.driver_dir()) {
    if (ev.kind == K::dir_gone) return true;
    return ev.kind == K::removed && (ev.name == o.exe_name || ev.name == flex::kDriverInfoFile);
  }
  return ev.dir == o.plugin_dir && ev.name == o.driver_dir_name && ev.kind == K::removed;
}

namespace {

/// What stage() prepared; commit() makes it visible to kubelet.
struct Plan {
  Change change = Change::unchanged;
  std::string staged_exe;  ///< exec'd once before commit
  std::string staged_dir;  ///< fresh install: the hidden dir renamed into place
  std::string digest;
  std::vector<std::string> replaced;  ///< "a FIFO at <path>": not ours, replaced unopened
};

/// What is at one of the driver's paths. Only a regular file is ever opened, and then with
/// O_NOFOLLOW | O_NONBLOCK: open() of a FIFO waits for a writer (it used to hang the installer's
/// pool thread, and with it the agent's SIGTERM), a device node may act on open, and following a
/// symlink would read, and have kubelet exec, a file the agent does not own.
struct Found {
  enum Kind { missing, regular, directory, foreign } kind = missing;
  std::string content;  ///< regular only
  mode_t mode = 0;
  std::string what;  ///< foreign: "a FIFO", "a symbolic link", ...
};

Result<Found> inspect(const std::string& path, size_t max_bytes) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Found{};
    return Error::from_errno("stat " + path, errno);
  }
  Found f;
  if (S_ISDIR(st.st_mode)) {
    f.kind = Found::directory;
    return f;
  }
  if (!S_ISREG(st.st_mode)) {
    f.kind = Found::foreign;
    f.what = fs::describe_file_type(st.st_mode);
    return f;
  }
  auto content = fs::read_regular_file(path, max_bytes, &f.mode);
  if (!content) {
    if (content.error().code != errno_code(EINVAL) && content.error().code != errno_code(ELOOP))
      return content.error();
    f.kind = Found::foreign;  // swapped for something else since lstat()
    f.what = "not a regular file";
    return f;
  }
  f.kind = Found::regular;
  f.content = std::move(*content);
  return f;
}

Error directory_in_the_way(const std::string& path) {
  return Error{path +
                   " is a directory, where the driver needs a file; move it away (the agent "
                   "never deletes what it did not make)",
               errno_code(EISDIR)};
}

/// Leftovers of a crashed earlier install (hidden from kubelet, but litter) are removed.
void remove_leftovers(const std::string& dir, const std::string& prefix) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  ::closedir(d);
  for (const auto& n : names) {
    const std::string p = fs::join(dir, n);
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      if (DIR* inner = ::opendir(p.c_str()); inner != nullptr) {
        std::vector<std::string> files;
        while (const dirent* e = ::readdir(inner)) {
          if (std::string(e->d_name) != "." && std::string(e->d_name) != "..")
            files.push_back(e->d_name);
        }
        ::closedir(inner);
        for (const auto& f : files) ::unlink(fs::join(p, f).c_str());
      }
      ::rmdir(p.c_str());
    } else {
      ::unlink(p.c_str());
    }
  }
}

Result<Plan> stage(const Options& o, const std::string& info_text) {
  // The source may be a symlink (to a versioned build), but only to a regular file: a FIFO there
  // would block this read.
  struct stat src {};
  if (::stat(o.shim_source.c_str(), &src) == 0 && !S_ISREG(src.st_mode)) {
    return Error{"the shim to install, " + o.shim_source + ", is " +
                 fs::describe_file_type(src.st_mode) + ", not a regular file"};
  }
  auto shim = fs::read_file(o.shim_source);
  if (!shim) {
    return shim.error().wrap("reading the shim to install (driver.shim_source=" + o.shim_source +
                             ")");
  }
  if (shim->size() < 4 || shim->compare(0, 4,
                                        "\x7f"
                                        "ELF") != 0) {
    return Error{"the shim to install, " + o.shim_source + ", is not an executable (ELF) file"};
  }
  if (auto st = fs::ensure_dir(o.plugin_dir, 0755); !st) return st.error().wrap("plugin_dir");
  const std::string pid = std::to_string(::getpid());
  Plan plan;
  plan.digest = digest(*shim);

  struct stat st {};
  if (::lstat(o.driver_dir().c_str(), &st) != 0) {
    if (errno != ENOENT) return Error::from_errno("stat " + o.driver_dir(), errno);
    remove_leftovers(o.plugin_dir, "." + o.driver_dir_name + ".tmp-");
    const std::string tmp = fs::join(o.plugin_dir, "." + o.driver_dir_name + ".tmp-" + pid);
    if (::mkdir(tmp.c_str(), 0755) != 0) return Error::from_errno("mkdir " + tmp, errno);
    if (::chmod(tmp.c_str(), 0755) != 0) return Error::from_errno("chmod " + tmp, errno);
    Status w = fs::write_synced(fs::join(tmp, flex::kDriverInfoFile), info_text, 0644);
    if (w) w = fs::write_synced(fs::join(tmp, o.exe_name), *shim, 0755);
    if (w) w = fs::fsync_dir(tmp);
    if (!w) return w.error();
    plan.change = Change::installed;
    plan.staged_dir = tmp;
    plan.staged_exe = fs::join(tmp, o.exe_name);
    return plan;
  }
  if (!S_ISDIR(st.st_mode)) return Error{o.driver_dir() + " exists and is not a directory"};
  remove_leftovers(o.driver_dir(), "." + o.exe_name + ".new-");

  // Anything but a regular file at either path is replaced by rename(), which swaps the directory
  // entry and never touches what a symlink points to.
  auto installed = inspect(o.exe_path(), 64 << 20);
  if (!installed) return installed.error();
  if (installed->kind == Found::directory) return directory_in_the_way(o.exe_path());
  auto current_info = inspect(o.info_path(), 1 << 20);
  if (!current_info) return current_info.error();
  if (current_info->kind == Found::directory) return directory_in_the_way(o.info_path());
  for (const auto* f : {&*installed, &*current_info}) {
    if (f->kind == Found::foreign) {
      plan.replaced.push_back(f->what + " at " + (f == &*installed ? o.exe_path() : o.info_path()));
    }
  }

  // The info file is a dot-file, which kubelet's prober ignores: replace it first so that the new
  // shim, once visible, finds the settings it expects.
  if (current_info->kind != Found::regular || current_info->content != info_text) {
    if (auto w = fs::atomic_write(o.info_path(), info_text, 0644); !w) return w.error();
  }
  if (installed->kind == Found::regular && installed->content == *shim &&
      (installed->mode & 0777) == 0755) {
    return plan;
  }
  plan.change = installed->kind == Found::missing ? Change::installed : Change::updated;
  plan.staged_exe = fs::join(o.driver_dir(), "." + o.exe_name + ".new-" + pid);
  if (auto w = fs::write_synced(plan.staged_exe, *shim, 0755); !w) {
    ::unlink(plan.staged_exe.c_str());
    return w.error();
  }
  return plan;
}

Status commit(const Options& o, const Plan& plan) {
  if (!plan.staged_dir.empty()) {
    if (::rename(plan.staged_dir.c_str(), o.driver_dir().c_str()) != 0) {
      return Error::from_errno("renaming " + plan.staged_dir + " to " + o.driver_dir(), errno);
    }
    return fs::fsync_dir(o.plugin_dir);
  }
  if (::rename(plan.staged_exe.c_str(), o.exe_path().c_str()) != 0) {
    return Error::from_errno("renaming " + plan.staged_exe + " to " + o.exe_path(), errno);
  }
  return fs::fsync_dir(o.driver_dir());
}

void discard(const Plan& plan) {
  if (!plan.staged_exe.empty()) ::unlink(plan.staged_exe.c_str());
  if (!plan.staged_dir.empty()) {
    ::unlink(fs::join(plan.staged_dir, flex::kDriverInfoFile).c_str());
    ::rmdir(plan.staged_dir.c_str());
  }
}

std::string clip(const std::string& s) {
  std::string t = s.size() > 300 ? s.substr(0, 300) + "..." : s;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  return t;
}

}  // namespace

Status uninstall(const Options& o) {
  for (const auto& p : {o.exe_path(), o.info_path()}) {
    if (::unlink(p.c_str()) != 0 && errno != ENOENT)
      return Error::from_errno("removing " + p, errno);
  }
  if (::rmdir(o.driver_dir().c_str()) != 0 && errno != ENOENT) {
    return Error::from_errno("removing " + o.driver_dir() +
                                 " (files not installed by the agent are "
                                 "in it; left in place)",
                             errno);
  }
  return ok_status();
}

Installer::Installer(asio::any_io_executor executor, asio::thread_pool& pool,
                     process::ProcessRunner& runner, Options options, Metrics& probe, LoggerPtr log)
    : executor_(std::move(executor)),
      pool_(pool),
      runner_(runner),
      options_(std::move(options)),
      metrics_(probe),
      log_(std::move(log)),
      wait_(executor_) {}

asio::awaitable<Status> Installer::check_shim(const std::string& path, bool round_trip) {
  // kubelet's environment is not ours: give the shim a bare one, so it cannot lean on anything
  // the agent's environment happens to provide.
  const std::vector<std::string> env{
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  struct Step {
    std::vector<std::string> args;
    const char* what;
  };
  std::vector<Step> steps{{{"init"}, "init"}};
  if (round_trip) {
    steps.push_back(
        {{"getvolumename", R"({"kubernetes.io/pvOrVolumeName":"datera-agent-self-test"})"},
         "getvolumename through the agent socket"});
  }
  for (const auto& step : steps) {
    process::Command cmd{path, step.args, env, options_.self_test_timeout, 64 * 1024, {}};
    auto ran = co_await runner_.run(std::move(cmd));
    if (!ran) co_return ran.error().wrap(std::string("running ") + path + " " + step.what);
    const auto& out = *ran;
    const auto parsed = json::parse_bounded(out.out);
    const flex::Json reply = parsed ? *parsed : flex::Json(flex::Json::value_t::discarded);
    const std::string prefix = path + " " + step.what + ": ";
    if (!out.success()) {
      co_return Error{prefix + out.describe() + ", output: " + clip(out.out + out.err)};
    }
    if (!out.err.empty() || reply.is_discarded() || !reply.is_object()) {
      co_return Error{prefix + "did not print exactly one JSON object: " + clip(out.out + out.err)};
    }
    if (reply.value("status", "") != flex::kSuccess) {
      co_return Error{prefix + "answered " + clip(json::dump(reply))};
    }
    if (step.args[0] == "init") {
      const auto caps = reply.find("capabilities");
      if (caps == reply.end() || !caps->is_object() ||
          caps->value("attach", true) != options_.info.capabilities.value("attach", true)) {
        co_return Error{prefix + "capabilities differ from the agent's: " + clip(reply.dump())};
      }
    } else if (reply.value("volumeName", "") != "datera-agent-self-test") {
      co_return Error{prefix + "unexpected reply " + clip(reply.dump())};
    }
  }
  co_return ok_status();
}

asio::awaitable<Result<Change>> Installer::ensure() {
  const std::string info_text = options_.info.to_json().dump(2) + "\n";
  const Options& o = options_;
  auto fail = [this](const Error& e) -> Result<Change> {
    metrics_.install("failed");
    state_ = "failed";
    last_error_ = e.message;
    ready_ = false;
    metrics_.ready(false);
    return e;
  };

  auto plan = co_await run_blocking(pool_, [&o, &info_text] { return stage(o, info_text); });
  if (!plan) co_return fail(plan.error().wrap("installing the FlexVolume driver"));

  if (plan->change != Change::unchanged) {
    if (auto check = co_await check_shim(plan->staged_exe, /*round_trip=*/false); !check) {
      const Plan& staged = *plan;
      co_await run_blocking(pool_, [&staged] { discard(staged); });
      co_return fail(
          check.error().wrap("the new shim failed its check before install; the "
                             "installed driver was left as it was"));
    }
    const Plan& staged = *plan;
    auto committed = co_await run_blocking(pool_, [&o, &staged] {
      auto st = commit(o, staged);
      if (!st) discard(staged);
      return st;
    });
    if (!committed) co_return fail(committed.error().wrap("installing the FlexVolume driver"));
    changed_at_ = std::chrono::system_clock::now();
    log_->info("FlexVolume driver {} at {} (digest {})", to_string(plan->change), o.exe_path(),
               plan->digest);
  }
  for (const auto& what : plan->replaced) {
    log_->warn("replaced {} with the agent's own file (it was never opened or followed)", what);
    metrics_.foreign_replaced();
  }
  metrics_.install(to_string(plan->change));
  installed_digest_ = plan->digest;
  last_change_ = to_string(plan->change);
  metrics_.installed(o.info.agent_version, plan->digest);

  if (plan->change != Change::unchanged || !ready_) {
    auto test = co_await check_shim(o.exe_path(), /*round_trip=*/true);
    metrics_.self_test(test.ok());
    if (!test) {
      self_test_ = "failed";
      state_ = "installed, self-test failed";
      last_error_ = test.error().message;
      ready_ = false;
      metrics_.ready(false);
      co_return test.error().wrap("self-test of the installed driver");
    }
    self_test_ = "ok";
    log_->info("FlexVolume driver self-test passed ({})", o.exe_path());
  }
  state_ = "installed";
  last_error_.clear();
  ready_ = true;
  metrics_.ready(true);
  co_return plan->change;
}

void Installer::refresh_watches(FileWatcher& watcher) {
  for (const auto& dir :
       {options_.plugin_dir, options_.driver_dir(), fs::dirname(options_.shim_source)}) {
    if (auto st = watcher.watch(dir); !st)
      log_->warn("cannot watch {}: {}", dir, st.error().message);
  }
}

asio::awaitable<void> Installer::run(FileWatcher* watcher, StateCallback on_state) {
  using namespace std::chrono_literals;
  watcher_ = watcher;
  std::chrono::milliseconds backoff = 1s;
  while (!stopping_) {
    auto result = co_await ensure();
    if (stopping_) break;
    on_state(ready_, result ? "installed at " + options_.exe_path() : result.error().message);
    boost::system::error_code ec;
    if (!result) {
      log_->error("{}; retrying in {} ms", result.error().message, backoff.count());
      wait_.expires_after(backoff);
      co_await wait_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, 60s);
      continue;
    }
    backoff = 1s;
    if (watcher_ == nullptr) {
      // Degraded (no inotify): re-check once a minute instead of reacting to changes.
      wait_.expires_after(60s);
      co_await wait_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    refresh_watches(*watcher_);
    for (bool relevant = false; !relevant && !stopping_;) {
      auto events = co_await watcher_->next();
      if (stopping_) co_return;
      if (!events) {
        log_->warn("file watch failed ({}); re-checking the driver every 60 s instead",
                   events.error().message);
        metrics_.install("watch_failed");
        watcher_ = nullptr;
        break;
      }
      for (const auto& ev : *events) {
        if (needs_reinstall(options_, ev)) {
          log_->info("{}/{} changed; re-checking the FlexVolume driver", ev.dir, ev.name);
          relevant = true;
        }
      }
    }
    // Let a copy or a link step finish before reading the new shim.
    wait_.expires_after(300ms);
    co_await wait_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

void Installer::stop() {
  stopping_ = true;
  wait_.cancel();
  if (watcher_ != nullptr) watcher_->close();
}

nlohmann::json Installer::state() const {
  nlohmann::json j{{"path", options_.exe_path()},
                   {"state", state_},
                   {"ready", ready_},
                   {"version", options_.info.agent_version},
                   {"digest", installed_digest_},
                   {"last_change", last_change_},
                   {"self_test", self_test_},
                   {"source", options_.shim_source}};
  if (!last_error_.empty()) j["last_error"] = last_error_;
  if (changed_at_.time_since_epoch().count() != 0) {
    j["changed_at_unix"] =
        std::chrono::duration_cast<std::chrono::seconds>(changed_at_.time_since_epoch()).count();
  }
  return j;
}

}  // namespace datera::installer

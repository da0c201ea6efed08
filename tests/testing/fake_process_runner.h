#pragma once

// A scripted ProcessRunner for unit tests of components that run programs (installer, iSCSI
// login, mkfs...). Nothing is executed: every Command is recorded and answered from a script.
//
//   FakeProcessRunner fake;
//   fake.on("/sbin/iscsiadm", "--mode", FakeProcessRunner::exited(0, "iqn.2013-05.com.daterainc"));
//   fake.on("/sbin/blkid", FakeProcessRunner::exited(2));          // any args
//   fake.on("/sbin/mkfs.ext4", Error{"cannot start /sbin/mkfs.ext4: No such file",
//   errno_code(ENOENT)});
//   ... run the component ...
//   EXPECT_EQ(fake.commands().size(), 2u);
//
// Matching: a rule for (program, first arg) beats a rule for the program alone; among equally
// specific rules the one added last wins, so a test can override an earlier script. Commands that
// match nothing get the default reply (exit code 0, no output) unless set_default() changed it.
// set_spawn_error() makes every run fail as if posix_spawn had failed, whatever the script says.

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "base/process/process_runner.h"

namespace datera::testing {

class FakeProcessRunner : public process::ProcessRunner {
 public:
  using Reply = Result<process::Outcome>;

  /// An Outcome for a program that exited by itself with `code`.
  static process::Outcome exited(int code, std::string out = "", std::string err = "") {
    process::Outcome o;
    o.exit_code = code;
    o.out = std::move(out);
    o.err = std::move(err);
    return o;
  }

  /// Answers `program` run with any arguments.
  FakeProcessRunner& on(std::string program, Reply reply) {
    rules_.push_back(Rule{std::move(program), std::nullopt, std::move(reply)});
    return *this;
  }
  /// Answers `program` run with `first_arg` as argv[1].
  FakeProcessRunner& on(std::string program, std::string first_arg, Reply reply) {
    rules_.push_back(Rule{std::move(program), std::move(first_arg), std::move(reply)});
    return *this;
  }
  /// The reply for commands no rule matches.
  void set_default(Reply reply) { default_ = std::move(reply); }
  /// Makes every run() fail to start with `error`; nullopt restores the script.
  void set_spawn_error(std::optional<Error> error) { spawn_error_ = std::move(error); }

  /// Every Command received, in order (including those that "failed to start").
  const std::vector<process::Command>& commands() const { return commands_; }
  void clear_commands() { commands_.clear(); }

  boost::asio::awaitable<Reply> run(process::Command cmd) override {
    Reply reply = spawn_error_ ? Reply(*spawn_error_) : match(cmd);
    commands_.push_back(std::move(cmd));
    co_return reply;
  }

 private:
  struct Rule {
    std::string program;
    std::optional<std::string> first_arg;
    Reply reply;
  };

  Reply match(const process::Command& cmd) const {
    const Rule* best = nullptr;
    for (const Rule& r : rules_) {
      if (r.program != cmd.program) continue;
      if (r.first_arg && (cmd.args.empty() || cmd.args.front() != *r.first_arg)) continue;
      if (best == nullptr || r.first_arg || !best->first_arg) best = &r;
    }
    return best != nullptr ? best->reply : default_;
  }

  std::vector<Rule> rules_;
  Reply default_ = exited(0);
  std::optional<Error> spawn_error_;
  std::vector<process::Command> commands_;
};

}  // namespace datera::testing

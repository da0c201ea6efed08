// The real datera-sim binary: start on port 0, create over HTTP, SIGTERM (exit 0), restart on the
// same --state and find the app instance again; start-up refusals exit 2 with a clear message.

#include <arpa/inet.h>
#include <cctype>
#include <chrono>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <regex>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "tests/testing/agent_process.h"
#include "tests/testing/temp_dir.h"

extern char** environ;

namespace datera::sim {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

class SimProcess {
 public:
  explicit SimProcess(std::string log) : log_(std::move(log)) {}
  ~SimProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  bool start(std::vector<std::string> args) {
    args.insert(args.begin(), DATERA_SIM_PATH);
    ::truncate(log_.c_str(), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 2, 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0;
  }

  /// Waits (bounded) for the "listening on" line; returns the port, 0 on exit or timeout.
  unsigned short wait_listening() {
    static const std::regex re(
        R"(datera-sim listening on http://127\.0\.0\.1:(\d+) \(backend (\w+)\))");
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < end) {
      std::smatch m;
      const std::string text = log();
      if (std::regex_search(text, m, re)) return static_cast<unsigned short>(std::stoi(m[1]));
      if (wait_exit(0ms) >= 0) return 0;
      std::this_thread::sleep_for(10ms);
    }
    return 0;
  }

  /// Exit code after waiting up to `limit`, -1 while still running.
  int wait_exit(std::chrono::milliseconds limit = 10s) {
    if (pid_ <= 0) return status_;
    const auto end = std::chrono::steady_clock::now() + limit;
    do {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        pid_ = 0;
        return status_;
      }
      std::this_thread::sleep_for(5ms);
    } while (std::chrono::steady_clock::now() < end);
    return -1;
  }

  int stop(int sig) {
    ::kill(pid_, sig);
    return wait_exit();
  }

  std::string log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string log_;
  pid_t pid_ = 0;
  int status_ = -1;
};

std::string exchange(unsigned short port, const std::string& method, const std::string& target,
                     const std::string& body, const std::string& key = "") {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string req =
      method + " " + target + " HTTP/1.1\r\nHost: x\r\n" +
      (key.empty() ? "" : "Auth-Token: " + key + "\r\n") +
      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nConnection: close\r\n\r\n" + body;
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

std::string login(unsigned short port, const std::string& password = "password") {
  const auto r =
      exchange(port, "PUT", "/v2.2/login", json{{"name", "admin"}, {"password", password}}.dump());
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r;
  auto body = json::parse(testing::body_of(r), nullptr, false);
  return body.is_object() ? body.value("key", "") : "";
}

TEST(SimProcessTest, StateSurvivesSigtermAndRestart) {
  datera::testing::TempDir dir("dsim");
  const std::string state = dir / "state.json";
  SimProcess sim(dir / "sim.log");
  const std::vector<std::string> args = {"--listen",  "127.0.0.1:0", "--state",    state,
                                         "--backend", "file",        "--file-dir", dir / "vols"};
  ASSERT_TRUE(sim.start(args));
  const auto port = sim.wait_listening();
  ASSERT_NE(port, 0) << sim.log();
  EXPECT_NE(sim.log().find("(backend file)"), std::string::npos);
  const auto key = login(port);
  const std::string body =
      R"({"name":"proc-1","storage_instances":[{"name":"storage-1","volumes":[{"name":"volume-1","size":1}]}]})";
  const auto created = exchange(port, "POST", "/v2.2/app_instances", body, key);
  ASSERT_EQ(created.rfind("HTTP/1.1 200", 0), 0u) << created;
  const auto ai = json::parse(testing::body_of(created))["data"];
  const std::string vol_uuid = ai["storage_instances"][0]["volumes"][0]["uuid"];
  EXPECT_TRUE(fs::exists(dir / "vols/" + vol_uuid + ".img"));
  // A snapshot's file exists once its POST has been answered; a clone gets its own file.
  const std::string vol_path =
      "/v2.2/app_instances/proc-1/storage_instances/storage-1/volumes/volume-1";
  const auto snap = exchange(port, "POST", vol_path + "/snapshots",
                             R"({"uuid":"1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9"})", key);
  ASSERT_EQ(snap.rfind("HTTP/1.1 200", 0), 0u) << snap;
  const std::string ts = json::parse(testing::body_of(snap))["data"]["utc_ts"];
  EXPECT_TRUE(fs::exists(dir / "vols/snap-" + vol_uuid + "-" + ts + ".img"));
  const auto clone =
      exchange(port, "POST", "/v2.2/app_instances",
               json{{"name", "proc-clone"},
                    {"clone_snapshot_src", {{"path", vol_path.substr(5) + "/snapshots/" + ts}}}}
                   .dump(),
               key);
  ASSERT_EQ(clone.rfind("HTTP/1.1 200", 0), 0u) << clone;
  const std::string clone_uuid =
      json::parse(testing::body_of(clone))["data"]["storage_instances"][0]["volumes"][0]["uuid"];
  EXPECT_TRUE(fs::exists(dir / "vols/" + clone_uuid + ".img"));
  EXPECT_EQ(sim.stop(SIGTERM), 0) << sim.log();

  ASSERT_TRUE(sim.start(args));
  const auto port2 = sim.wait_listening();
  ASSERT_NE(port2, 0) << sim.log();
  const auto key2 = login(port2);
  const auto got = exchange(port2, "GET", "/v2.2/app_instances/proc-1", "", key2);
  ASSERT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
  const auto back = json::parse(testing::body_of(got))["data"];
  EXPECT_EQ(back["id"], ai["id"]);
  EXPECT_EQ(back["storage_instances"][0]["volumes"][0]["uuid"], vol_uuid);
  EXPECT_EQ(back["storage_instances"][0]["access"], ai["storage_instances"][0]["access"]);
  const auto snaps = back["storage_instances"][0]["volumes"][0]["snapshots"];
  ASSERT_EQ(snaps.size(), 1u) << "snapshots survive a restart";
  EXPECT_EQ(snaps[0]["utc_ts"], ts);
  EXPECT_EQ(
      exchange(port2, "GET", "/v2.2/app_instances/proc-clone", "", key2).rfind("HTTP/1.1 200", 0),
      0u);
  // The old key died with the old process; clients log in again on the 401.
  EXPECT_EQ(exchange(port2, "GET", "/v2.2/system", "", key).rfind("HTTP/1.1 401", 0), 0u);
  EXPECT_EQ(sim.stop(SIGINT), 0) << sim.log();
  EXPECT_EQ(sim.log().find("password"), std::string::npos);  // nothing secret in the log
}

TEST(SimProcessTest, PasswordFromFlagAndWrongOneRefused) {
  datera::testing::TempDir dir("dsim");
  SimProcess sim(dir / "sim.log");
  ASSERT_TRUE(sim.start({"--listen", "127.0.0.1:0", "--password", "s3cret_pw"}));
  const auto port = sim.wait_listening();
  ASSERT_NE(port, 0) << sim.log();
  EXPECT_FALSE(login(port, "s3cret_pw").empty());
  EXPECT_EQ(exchange(port, "PUT", "/v2.2/login", R"({"name":"admin","password":"password"})")
                .rfind("HTTP/1.1 401", 0),
            0u);
  EXPECT_EQ(sim.stop(SIGTERM), 0);
  EXPECT_EQ(sim.log().find("s3cret_pw"), std::string::npos);
}

std::string form_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else if (c == ' ') {
      out += '+';
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

TEST(SimProcessTest, AnyPrintablePasswordLogsInWithJsonAndFormBodies) {
  datera::testing::TempDir dir("dsim");
  SimProcess sim(dir / "sim.log");
  const std::string pw = "pä ss\"w&o%r+d=\\ü'";
  ASSERT_TRUE(sim.start({"--listen", "127.0.0.1:0", "--password", pw}));
  const auto port = sim.wait_listening();
  ASSERT_NE(port, 0) << sim.log();
  const auto key = login(port, pw);
  ASSERT_FALSE(key.empty());
  EXPECT_EQ(exchange(port, "GET", "/v2.2/system", "", key).rfind("HTTP/1.1 200", 0), 0u);
  // GOSDK sends the login form-encoded: '+' is a space there and %2B a plus.
  const auto form = exchange(port, "PUT", "/v2.2/login", "name=admin&password=" + form_encode(pw));
  ASSERT_EQ(form.rfind("HTTP/1.1 200", 0), 0u) << form;
  EXPECT_EQ(
      exchange(port, "PUT", "/v2.2/login", json{{"name", "admin"}, {"password", "pw\nx"}}.dump())
          .rfind("HTTP/1.1 400", 0),
      0u);
  EXPECT_EQ(sim.stop(SIGTERM), 0);
  EXPECT_EQ(sim.log().find(pw), std::string::npos);
  // A password no login could match is refused at start-up, not at the first login.
  ASSERT_TRUE(sim.start({"--listen", "127.0.0.1:0", "--password", "bad\npw"}));
  EXPECT_EQ(sim.wait_exit(), 2);
  EXPECT_NE(sim.log().find("--password"), std::string::npos) << sim.log();
}

TEST(SimProcessTest, StartupRefusalsExit2WithAClearMessage) {
  datera::testing::TempDir dir("dsim");
  SimProcess sim(dir / "sim.log");
  ASSERT_TRUE(sim.start({"--listen", "127.0.0.1:0", "--backend", "lio"}));
  EXPECT_EQ(sim.wait_exit(), 2);
  EXPECT_NE(sim.log().find("--backend lio needs --file-dir"), std::string::npos) << sim.log();
  // Without LIO in the kernel (the development machines) it refuses clearly instead of crashing;
  // the kernel tier runs it for real.
  ASSERT_TRUE(
      sim.start({"--listen", "127.0.0.1:0", "--backend", "lio", "--file-dir", dir / "vols",
                 "--lio-configfs", dir / "no-configfs", "--lio-node", "node-1=storA:eth0"}));
  EXPECT_EQ(sim.wait_exit(), 2);
  EXPECT_NE(sim.log().find(dir / "no-configfs is missing"), std::string::npos) << sim.log();
  ASSERT_TRUE(sim.start({"--listen", "127.0.0.1:0", "--backend", "lio", "--file-dir", dir / "vols",
                         "--lio-node", "bad"}));
  EXPECT_EQ(sim.wait_exit(), 2);
  EXPECT_NE(sim.log().find("NAME=NETNS:IFACE"), std::string::npos) << sim.log();
  ASSERT_TRUE(sim.start({"--listen", "127.0.0.1:0", "--ip-pool", "10.0.0.0/40"}));
  EXPECT_EQ(sim.wait_exit(), 2);
  EXPECT_NE(sim.log().find("--ip-pool"), std::string::npos) << sim.log();
  ASSERT_TRUE(fs::write_synced(dir / "bad.json", "{}", 0600).ok());
  ASSERT_TRUE(sim.start({"--listen", "127.0.0.1:0", "--state", dir / "bad.json"}));
  EXPECT_EQ(sim.wait_exit(), 2);
  EXPECT_NE(sim.log().find("not a datera-sim state file"), std::string::npos) << sim.log();
  EXPECT_EQ(*fs::read_file(dir / "bad.json"), "{}");  // left as it was
}

}  // namespace
}  // namespace datera::sim

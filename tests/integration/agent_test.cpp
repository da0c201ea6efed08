// Host tier: the real agent binary, the shim exec'd from where kubelet finds it, real sockets,
// files and signals. Nothing here is faked.

#include <arpa/inet.h>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/agent_process.h"
#include "tests/testing/slow_client.h"

namespace datera::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

/// kubelet parses the combined output as one JSON object: exactly one line, nothing else.
json single_reply(const Exec& e) {
  EXPECT_FALSE(e.output.empty());
  EXPECT_EQ(e.output.back(), '\n') << e.output;
  EXPECT_EQ(e.output.find('\n'), e.output.size() - 1) << "more than one line: " << e.output;
  auto j = json::parse(e.output, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << e.output;
  EXPECT_TRUE(j.is_object()) << e.output;
  return j;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(agent_.start());
    ASSERT_TRUE(agent_.wait_ready()) << agent_.log_text();
  }
  AgentProcess agent_;
};

TEST_F(AgentTest, InstallsDriverWithInfoAndReportsItInStatus) {
  struct stat st {};
  ASSERT_EQ(::stat(agent_.installed_shim().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  std::ifstream info(agent_.plugin_dir + "/datera~iscsi/.datera-agent.json");
  const auto j = json::parse(info);
  EXPECT_EQ(j["socket"], agent_.socket);
  EXPECT_EQ(j["capabilities"]["attach"], false);
  const auto s = agent_.status();
  EXPECT_EQ(s["node"], "it-node");
  EXPECT_EQ(s["ready"], true);
  EXPECT_EQ(s["driver"]["state"], "installed");
  EXPECT_EQ(s["driver"]["self_test"], "ok");
  EXPECT_EQ(s["driver"]["path"], agent_.installed_shim());
  EXPECT_GE(s["uptime_seconds"].get<int>(), 0);
  EXPECT_GE(s["flexvolume"]["calls_total"].get<int>(), 1)
      << "the self-test's round trip is counted";
}

TEST_F(AgentTest, EveryFlexVolumeCommandThroughTheInstalledShim) {
  const std::string opts =
      R"({"kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-1","volumeID":"vol-1"})";
  const std::string pod_dir = agent_.root + "/kubelet/pods/uid-1/volumes/datera~iscsi/pv-1";

  auto init = agent_.shim({"init"});
  auto j = single_reply(init);
  EXPECT_EQ(init.exit_code, 0);
  EXPECT_EQ(j["status"], "Success");
  EXPECT_EQ(j["capabilities"]["attach"], false);

  auto name = agent_.shim({"getvolumename", opts});
  EXPECT_EQ(name.exit_code, 0);
  EXPECT_EQ(single_reply(name)["volumeName"], "vol-1");

  // No array configured here, and controller-mode calls: Failure with a reason, exit 1, never
  // "Not supported" (the real data path is tests/integration/volume_test.cpp).
  const std::vector<std::vector<std::string>> later = {
      {"mount", pod_dir, opts},
      {"attach", opts, "it-node"},
      {"isattached", opts, "it-node"},
      {"detach", "pv-1", "it-node"},
      {"waitforattach", "/dev/sdb", opts},
      {"mountdevice", agent_.root + "/kubelet/plugins/m/pv-1", "/dev/sdb", opts},
      {"unmountdevice", agent_.root + "/kubelet/plugins/m/pv-1"},
      {"expandvolume", opts, "/m", "2147483648", "1073741824"},
      {"expandfs", opts, "/dev/sdb", "/m", "2147483648", "1073741824"},
  };
  for (const auto& argv : later) {
    auto r = agent_.shim(argv);
    auto reply = single_reply(r);
    EXPECT_EQ(r.exit_code, 1) << argv[0];
    EXPECT_EQ(reply["status"], "Failure") << argv[0];
    EXPECT_NE(reply["message"].get<std::string>().find(argv[0]), std::string::npos) << reply;
  }

  // Unmount of a pod dir the agent never mounted, and that is not a mount point: nothing to do.
  auto unmount = agent_.shim({"unmount", pod_dir});
  EXPECT_EQ(unmount.exit_code, 0);
  EXPECT_EQ(single_reply(unmount)["status"], "Success");

  auto unknown = agent_.shim({"snapshot", opts});
  EXPECT_EQ(unknown.exit_code, 0);
  EXPECT_EQ(single_reply(unknown)["status"], "Not supported");

  auto bad = agent_.shim({"mount", pod_dir});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(single_reply(bad)["status"], "Failure");

  // The calls show up in the metrics by command and status.
  const auto m = agent_.metrics();
  EXPECT_NE(m.find(R"(datera_agent_flexvolume_requests_total{command="mount",status="Failure"} 1)"),
            std::string::npos)
      << m;
  EXPECT_NE(
      m.find(R"(datera_agent_flexvolume_requests_total{command="getvolumename",status="Success"})"),
      std::string::npos);
  EXPECT_NE(m.find("datera_agent_flexvolume_request_duration_seconds_bucket{command=\"expandfs\""),
            std::string::npos);
}

// Whatever kubelet (or anyone) passes, the shim prints exactly one valid-UTF-8 JSON object: bytes
// that are not UTF-8 used to make the shim abort with nothing on stdout.
TEST_F(AgentTest, ShimAnswersOneJsonObjectForArgvThatIsNotUtf8OrHasControlCharacters) {
  const std::string pods = agent_.root + "/kubelet/pods/";
  const std::vector<std::vector<std::string>> argvs = {
      {"mount", pods + "\xff\xfe/volumes/datera~iscsi/pv", R"({"volumeID":"v1"})"},
      {"unmount", pods + "\xc3\x28"},
      {"getvolumename", "{\"volumeID\":\"v\xff\"}"},
      {"\xff\xfe"},
      {"unmount", pods + "uid\nFAKE LINE"},
      {"unmount", pods + "uid\x1b[2J"},
      {"mount", pods + "uid\r", "{}"},
  };
  for (const auto& argv : argvs) {
    auto r = agent_.shim(argv);
    auto reply = single_reply(r);
    ASSERT_TRUE(reply.is_object()) << argv[0] << ": " << r.output;
    EXPECT_NE(reply["status"], "Success") << r.output;
    EXPECT_FALSE(reply["message"].get<std::string>().empty());
    EXPECT_EQ(r.exit_code, reply["status"] == "Failure" ? 1 : 0) << r.output;
  }
  // The agent refuses such a path on its own too (a client without the shim).
  const std::string body = json{{"command", "unmount"}, {"args", {pods + "uid\nFAKE LINE"}}}.dump();
  const auto http = agent_.api(
      "POST /v1/flexvolume HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body);
  const auto reply = json::parse(body_of(http), nullptr, false);
  ASSERT_TRUE(reply.is_object()) << http;
  EXPECT_EQ(reply["status"], "Failure");
  EXPECT_NE(reply["message"].get<std::string>().find("control character"), std::string::npos)
      << reply;
  EXPECT_EQ(agent_.log_text().find("\nFAKE LINE"), std::string::npos)
      << "outside data started a log line: " << agent_.log_text();
}

TEST_F(AgentTest, CurlWorksOnTheUnixSocket) {
  auto r = exec_capture(
      {"/usr/bin/curl", "-sS", "--unix-socket", agent_.socket, "http://agent/v1/status"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(json::parse(r.output)["node"], "it-node");
  auto v = exec_capture(
      {"/usr/bin/curl", "-sS", "--unix-socket", agent_.socket, "http://agent/v1/volumes"});
  EXPECT_TRUE(json::parse(v.output)["volumes"].is_array());
  auto post = exec_capture({"/usr/bin/curl", "-sS", "--unix-socket", agent_.socket, "-d",
                            R"({"command":"getvolumename","options":{"volumeID":"v9"}})",
                            "http://agent/v1/flexvolume"});
  EXPECT_EQ(json::parse(post.output)["volumeName"], "v9");
}

TEST_F(AgentTest, SocketIsPrivateAndOtherUidsAreRefused) {
  struct stat st {};
  ASSERT_EQ(::stat(agent_.socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((agent_.root + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
  if (::getuid() != 0) GTEST_SKIP() << "needs root to act as another uid";
  // Open the file modes so the kernel lets uid 65534 connect: the agent's own check must refuse.
  ASSERT_EQ(::chmod(agent_.root.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((agent_.root + "/run").c_str(), 0755), 0);
  ASSERT_EQ(::chmod(agent_.socket.c_str(), 0666), 0);
  const auto reply = raw_exchange_as(65534, agent_.socket, http_get("/v1/status"));
  EXPECT_NE(reply.find("HTTP/1.1 403"), std::string::npos) << reply;
  EXPECT_NE(reply.find("uid 65534"), std::string::npos) << reply;
  EXPECT_NE(agent_.log_text().find("refusing API client"), std::string::npos);
  EXPECT_NE(agent_.metrics().find(
                R"(datera_agent_http_rejections_total{reason="peer_uid",server="api"} 1)"),
            std::string::npos)
      << agent_.metrics();
  EXPECT_EQ(agent_.status()["node"], "it-node") << "root is still served";
}

TEST_F(AgentTest, MalformedAndOversizeRequestsAreRefusedWhileServing) {
  const auto big = agent_.api(http_post("/v1/flexvolume", std::string(65 * 1024, ' ')));
  EXPECT_NE(big.find("HTTP/1.1 413"), std::string::npos) << big.substr(0, 300);
  const auto garbage = agent_.api("\x16\x03\x01 not http at all\r\n\r\n");
  EXPECT_NE(garbage.find("HTTP/1.1 400"), std::string::npos) << garbage;
  const auto bad_json = agent_.api(http_post("/v1/flexvolume", "{nope"));
  EXPECT_NE(bad_json.find("HTTP/1.1 400"), std::string::npos);
  EXPECT_EQ(json::parse(body_of(bad_json))["status"], "Failure");
  EXPECT_EQ(agent_.api(http_get("/v1/nothing")).find("HTTP/1.1 404"), 0u);
  // Still serving, through the shim too.
  EXPECT_EQ(agent_.shim({"getvolumename", R"({"volumeID":"after"})"}).exit_code, 0);
  const auto m = agent_.metrics();
  EXPECT_NE(m.find(R"(datera_agent_http_rejections_total{reason="too_large",server="api"})"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find(R"(datera_agent_http_rejections_total{reason="malformed",server="api"})"),
            std::string::npos);
}

// Bytes that are not UTF-8 in the target used to end as a 500 (the JSON error reply failed to
// serialise); they are the client's mistake, refused with a 400 that is valid JSON.
TEST_F(AgentTest, NonUtf8TargetIsA400WithAJsonBody) {
  for (const std::string& target : {std::string("/v1/\xff\xfe"), std::string("/v1/st\xe9tus")}) {
    const auto reply =
        agent_.api("GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
    const auto j = json::parse(body_of(reply), nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << reply;
    EXPECT_EQ(j["status"], "Failure");
  }
  EXPECT_EQ(agent_.status()["node"], "it-node") << "still serving";
}

TEST_F(AgentTest, MetricsServeProcessBuildInstallerAndHealth) {
  EXPECT_EQ(tcp_get(agent_.port, "/healthz").rfind("HTTP/1.1 200", 0), 0u);
  const auto m = agent_.metrics();
  for (const char* name :
       {"datera_agent_build_info{", "\nprocess_resident_memory_bytes ",
        "\nprocess_cpu_seconds_total ", "\nprocess_open_fds ", "\nprocess_max_fds ",
        "\nprocess_start_time_seconds ", "datera_agent_driver_ready 1",
        R"(datera_agent_driver_install_total{result="installed"} 1)",
        R"(datera_agent_driver_self_test_total{result="ok"} 1)",
        "datera_agent_driver_installed_info{", "datera_agent_http_connections{"}) {
    EXPECT_NE(m.find(name), std::string::npos) << name;
  }
}

/// A TCP connection to 127.0.0.1:port from the loopback address `source` (127.0.0.2 ... stand in
/// for other pods); -1 if it cannot connect.
int connect_from(const std::string& source, unsigned short port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, source.c_str(), &a.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// Sends a GET from `source` and reads the reply until the server closes (bounded at 5 s).
std::string get_from(const std::string& source, unsigned short port, const std::string& target) {
  const int fd = connect_from(source, port);
  if (fd < 0) return "";
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const auto req = http_get(target);
  std::string out;
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
    char buf[8192];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
      out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

long count_of(const std::string& text, const std::string& what) {
  long n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The metrics port is reachable from every pod (hostNetwork, 0.0.0.0) and carries kubelet's
// liveness probe: a pod holding idle connections must not turn /healthz into 503s (a restart).
TEST_F(AgentTest, IdleConnectionsFromOnePodCannotLockOutTheProbes) {
  std::vector<int> idle;
  for (int i = 0; i < 48; ++i) {
    const int fd = connect_from("127.0.0.2", agent_.port);
    ASSERT_GE(fd, 0) << "connection " << i;
    idle.push_back(fd);
  }
  std::this_thread::sleep_for(200ms);  // let the agent accept them all

  const auto t0 = std::chrono::steady_clock::now();
  const auto health = get_from("127.0.0.1", agent_.port, "/healthz");
  const auto health_took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(health.rfind("HTTP/1.1 200", 0), 0u) << health;
  EXPECT_LT(health_took, 1s);
  const auto t1 = std::chrono::steady_clock::now();
  const auto scrape = get_from("127.0.0.3", agent_.port, "/metrics");
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 1s);
  EXPECT_EQ(scrape.rfind("HTTP/1.1 200", 0), 0u) << scrape.substr(0, 300);
  EXPECT_NE(
      scrape.find(
          R"(datera_agent_http_rejections_total{reason="too_many_from_source",server="metrics"})"),
      std::string::npos)
      << "the refused connections are counted";

  // The ones it kept are given back soon: nothing was sent on them.
  size_t closed = 0;
  for (int fd : idle) closed += testing::closed_within(fd, 5s) ? 1 : 0;
  for (int fd : idle) ::close(fd);
  EXPECT_EQ(closed, idle.size());
  const auto m = agent_.metrics();
  EXPECT_NE(m.find(R"(datera_agent_http_rejections_total{reason="idle_timeout",server="metrics"})"),
            std::string::npos)
      << m;
  // 40 refusals and 8 timeouts, but the log says so a few times, not 48.
  const auto log = agent_.log_text();
  EXPECT_GE(count_of(log, "too_many_from_source"), 1) << log;
  EXPECT_LE(count_of(log, "too_many_from_source"), 2) << log;
  EXPECT_LE(count_of(log, "idle_timeout"), 2) << log;
}

// Many pods together can still hold every slot of the network port for a moment; kubelet's probes
// go to the loopback-only probe port (metrics.probe_listen), which no pod can reach.
TEST(AgentProbes, TheLoopbackProbePortAnswersWhileTheNetworkPortIsFull) {
  AgentProcess agent;
  const auto probe_port = agent.serve_probes_on_loopback();
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(agent.wait_ready()) << agent.log_text();
  std::vector<int> held;
  for (int src = 10; src < 27; ++src) {  // 17 addresses x 8 = 136 > the port's 128 slots
    for (int i = 0; i < 8; ++i) {
      const int fd = connect_from("127.0.0." + std::to_string(src), agent.port);
      ASSERT_GE(fd, 0);
      held.push_back(fd);
    }
  }
  std::this_thread::sleep_for(200ms);
  const auto full = get_from("127.0.0.1", agent.port, "/healthz");
  EXPECT_EQ(full.rfind("HTTP/1.1 503", 0), 0u) << "the network port is really full: " << full;
  const auto t0 = std::chrono::steady_clock::now();
  const auto health = get_from("127.0.0.1", probe_port, "/healthz");
  const auto ready = get_from("127.0.0.1", probe_port, "/readyz");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(health.rfind("HTTP/1.1 200", 0), 0u) << health;
  EXPECT_EQ(ready.rfind("HTTP/1.1 200", 0), 0u) << ready;
  for (int fd : held) ::close(fd);
}

TEST(AgentProbes, AProbeListenerOffLoopbackIsRefusedAtStartUp) {
  AgentProcess agent;
  agent.serve_probes_on_loopback();
  {
    std::ifstream in(agent.config);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    text.replace(text.find("probe_listen: '127.0.0.1:"), 25, "probe_listen: '0.0.0.0:");
    std::ofstream(agent.config, std::ios::trunc) << text;
  }
  ASSERT_TRUE(agent.start());
  EXPECT_NE(agent.wait_exit(), 0);
  EXPECT_NE(agent.log_text().find("metrics.probe_listen"), std::string::npos) << agent.log_text();
}

// One byte at a time keeps a connection alive only until the whole-request deadline.
TEST_F(AgentTest, ASlowlorisClientIsCutOffByTheRequestDeadline) {
  const int fd = connect_from("127.0.0.4", agent_.port);
  ASSERT_GE(fd, 0);
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(200, 'a');
  const auto t0 = std::chrono::steady_clock::now();
  const bool closed = testing::closed_while_trickling(fd, req, 100ms);
  const auto took = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  EXPECT_TRUE(closed) << "still open after " << req.size() << " bytes";
  EXPECT_LT(took, 8s);
  EXPECT_EQ(get_from("127.0.0.1", agent_.port, "/healthz").rfind("HTTP/1.1 200", 0), 0u);
}

TEST_F(AgentTest, SigtermExitsZeroLeavesDriverRemovesSocket) {
  EXPECT_EQ(agent_.stop(SIGTERM), 0) << agent_.log_text();
  EXPECT_EQ(::access(agent_.installed_shim().c_str(), X_OK), 0)
      << "the driver must survive the agent";
  EXPECT_NE(::access(agent_.socket.c_str(), F_OK), 0) << "our socket file is removed";
  EXPECT_NE(agent_.log_text().find("left as they are"), std::string::npos);
  // With the agent gone, init still works and other calls fail clearly.
  auto init = agent_.shim({"init"});
  EXPECT_EQ(init.exit_code, 0);
  EXPECT_EQ(single_reply(init)["status"], "Success");
  auto mount = agent_.shim({"unmount", "/x"});
  EXPECT_EQ(mount.exit_code, 1);
  const auto msg = single_reply(mount)["message"].get<std::string>();
  EXPECT_NE(msg.find("not reachable at " + agent_.socket), std::string::npos) << msg;
}

// A FIFO at the driver path (and a symlink at the info path) used to block the installer's open()
// forever: the agent never became ready and SIGTERM never completed (its drain waits for the
// blocking pool). They are replaced by the agent's own files, never opened or followed.
TEST(AgentForeignDriverPath, FifoAndSymlinkAreReplacedAndSigtermStaysPrompt) {
  AgentProcess agent;
  const std::string driver_dir = agent.plugin_dir + "/datera~iscsi";
  const std::string info = driver_dir + "/.datera-agent.json";
  const std::string elsewhere = agent.root + "/elsewhere.json";
  ASSERT_EQ(::mkdir(agent.plugin_dir.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(driver_dir.c_str(), 0755), 0);
  ASSERT_EQ(::mkfifo(agent.installed_shim().c_str(), 0644), 0);
  std::ofstream(elsewhere) << "someone else's file\n";
  ASSERT_EQ(::symlink(elsewhere.c_str(), info.c_str()), 0);

  ASSERT_TRUE(agent.start());
  const bool ready = agent.wait_ready(10s);
  const auto began = std::chrono::steady_clock::now();
  const int code = agent.stop(SIGTERM, 5s);
  const auto took = std::chrono::steady_clock::now() - began;
  if (code < 0) {
    // Let the blocked open() go so the SIGKILL in the destructor is not the only way out.
    const int fd = ::open(agent.installed_shim().c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) ::close(fd);
  }
  EXPECT_TRUE(ready) << "the agent never became ready: " << agent.log_text();
  EXPECT_EQ(code, 0) << "SIGTERM did not complete within 5 s: " << agent.log_text();
  EXPECT_LT(took, 5s);
  struct stat st {};
  ASSERT_EQ(::lstat(agent.installed_shim().c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the driver path is still not the shim";
  ASSERT_EQ(::lstat(info.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  std::ifstream in(elsewhere);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "someone else's file\n") << "the symlink's target must not be written";
  auto init = agent.shim({"init"});
  EXPECT_EQ(init.exit_code, 0) << init.output;
}

// The shim reads its info file next to itself: a FIFO there must not hold kubelet's call until
// kubelet's own timeout.
TEST(ShimForeignInfoFile, AFifoAsTheInfoFileIsReportedAtOnce) {
  TempDir dir("dt-shim");
  const std::string fifo = dir / "info.json";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  const auto began = std::chrono::steady_clock::now();
  auto r = exec_capture({"/usr/bin/timeout", "10", DATERA_SHIM_PATH, "unmount", "/x"},
                        {"PATH=/usr/bin:/bin", "DATERA_FLEXVOLUME_INFO=" + fifo});
  EXPECT_LT(std::chrono::steady_clock::now() - began, 3s) << r.output;
  auto reply = single_reply(r);
  EXPECT_EQ(reply["status"], "Failure");
  EXPECT_NE(reply["message"].get<std::string>().find("not a regular file"), std::string::npos)
      << r.output;
}

TEST_F(AgentTest, RestartReusesTheDriverWithoutRewritingIt) {
  struct stat before {};
  ASSERT_EQ(::stat(agent_.installed_shim().c_str(), &before), 0);
  ASSERT_EQ(agent_.stop(SIGKILL), 128 + SIGKILL);  // leaves a stale socket behind
  EXPECT_EQ(::access(agent_.socket.c_str(), F_OK), 0);
  ASSERT_TRUE(agent_.start());
  ASSERT_TRUE(agent_.wait_ready()) << agent_.log_text();
  struct stat after {};
  ASSERT_EQ(::stat(agent_.installed_shim().c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(agent_.status()["driver"]["last_change"], "unchanged");
  EXPECT_NE(agent_.log_text().find("replacing stale socket"), std::string::npos);
}

TEST_F(AgentTest, SecondAgentOnTheSameSocketRefusesToStart) {
  AgentProcess second;
  // Same socket, different everything else.
  std::ofstream(second.config) << "node_name: it-node\nsocket_path: " << agent_.socket
                               << "\nplugin_dir: " << second.plugin_dir
                               << "\nmetrics: {listen: '127.0.0.1:" << second.port << "'}\n";
  ASSERT_TRUE(second.start());
  EXPECT_EQ(second.wait_exit(), 1);
  EXPECT_NE(second.log_text().find("another datera-agent is already serving"), std::string::npos)
      << second.log_text();
  EXPECT_EQ(agent_.status()["node"], "it-node") << "the first agent is unaffected";
}

TEST_F(AgentTest, SighupReloadsTheLogLevel) {
  EXPECT_EQ(agent_.log_text().find("getvolumename volume=probe-1"), std::string::npos);
  std::ofstream(agent_.config, std::ios::app) << "log_level: debug\n";
  ::kill(agent_.pid, SIGHUP);
  bool reloaded = false;
  for (int i = 0; i < 200 && !reloaded; ++i) {
    reloaded = agent_.log_text().find("log level is now debug") != std::string::npos;
    if (!reloaded) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(reloaded) << agent_.log_text();
  EXPECT_EQ(agent_.shim({"getvolumename", R"({"volumeID":"probe-1"})"}).exit_code, 0);
  EXPECT_NE(agent_.log_text().find("getvolumename volume=probe-1"), std::string::npos)
      << agent_.log_text();
}

TEST_F(AgentTest, ChangedShimSourceIsInstalledWhileRunning) {
  // Restart the agent with a shim source it watches, then publish a new build there.
  ASSERT_EQ(agent_.stop(SIGTERM), 0);
  const std::string src = agent_.root + "/bin/datera-flexvolume";
  ASSERT_EQ(
      std::system(("mkdir -p " + agent_.root + "/bin && cp " DATERA_SHIM_PATH " " + src).c_str()),
      0);
  std::ofstream(agent_.config, std::ios::app) << "driver: {shim_source: " << src << "}\n";
  ASSERT_TRUE(agent_.start());
  ASSERT_TRUE(agent_.wait_ready()) << agent_.log_text();
  const auto digest_before = agent_.status()["driver"]["digest"].get<std::string>();
  ASSERT_EQ(std::system(("cp " + src + " " + src + ".new && printf 'v2' >> " + src + ".new && mv " +
                         src + ".new " + src)
                            .c_str()),
            0);
  std::string digest_after = digest_before;
  for (int i = 0; i < 500 && digest_after == digest_before; ++i) {
    std::this_thread::sleep_for(10ms);
    digest_after = agent_.status()["driver"]["digest"].get<std::string>();
  }
  EXPECT_NE(digest_after, digest_before) << agent_.log_text();
  EXPECT_EQ(agent_.status()["driver"]["last_change"], "updated");
  EXPECT_EQ(agent_.shim({"init"}).exit_code, 0);
}

TEST(AgentCli, BadConfigIsRefusedWithKeyAndReason) {
  AgentProcess agent("api: {max_conections: 3}\n");
  ASSERT_TRUE(agent.start());
  EXPECT_EQ(agent.wait_exit(), 2);
  EXPECT_NE(agent.log_text().find("api.max_conections"), std::string::npos) << agent.log_text();
  EXPECT_NE(agent.log_text().find("unknown key"), std::string::npos);
}

TEST(AgentCli, VersionAndUninstallDriver) {
  auto v = exec_capture({DATERA_AGENT_PATH, "--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.output.rfind("datera-agent ", 0), 0u) << v.output;

  AgentProcess agent;
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(agent.wait_ready()) << agent.log_text();
  ASSERT_EQ(agent.stop(SIGTERM), 0);
  auto u = exec_capture({DATERA_AGENT_PATH, "uninstall-driver", "--config", agent.config});
  EXPECT_EQ(u.exit_code, 0) << u.output;
  EXPECT_NE(::access((agent.plugin_dir + "/datera~iscsi").c_str(), F_OK), 0);
}

TEST(AgentCli, NodeNameFromEnvironmentLikeADaemonSet) {
  AgentProcess agent;
  std::ofstream(agent.config) << "socket_path: " << agent.socket
                              << "\nplugin_dir: " << agent.plugin_dir
                              << "\nmetrics: {listen: '127.0.0.1:" << agent.port << "'}\n";
  ::setenv("NODE_NAME", "from-downward-api", 1);
  ASSERT_TRUE(agent.start());
  ::unsetenv("NODE_NAME");
  ASSERT_TRUE(agent.wait_ready()) << agent.log_text();
  EXPECT_EQ(agent.status()["node"], "from-downward-api");
}

}  // namespace
}  // namespace datera::testing

namespace datera::testing {
namespace {

/// A datagram socket standing in for systemd's notify socket.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    ok_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~NotifySocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  bool ok() const { return ok_; }
  /// Collects messages until one contains `needle` or `limit` passes.
  bool wait_for(const std::string& needle, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      messages.emplace_back(buf, static_cast<size_t>(n));
      if (messages.back().find(needle) != std::string::npos) return true;
    }
    return false;
  }
  std::vector<std::string> messages;

 private:
  std::string path_;
  int fd_ = -1;
  bool ok_ = false;
};

TEST(AgentSystemd, NotifiesReadyPingsWatchdogAndSaysStopping) {
  AgentProcess agent;
  NotifySocket notify(agent.root + "/notify.sock");
  ASSERT_TRUE(notify.ok());
  ::setenv("NOTIFY_SOCKET", (agent.root + "/notify.sock").c_str(), 1);
  ::setenv("WATCHDOG_USEC", "400000", 1);  // pings expected every 200 ms
  ASSERT_TRUE(agent.start());
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(notify.wait_for("READY=1", 10s)) << agent.log_text();
  EXPECT_NE(notify.messages.back().find("STATUS=serving; driver installed"), std::string::npos)
      << notify.messages.back();
  EXPECT_EQ(tcp_get(agent.port, "/readyz").rfind("HTTP/1.1 200", 0), 0u)
      << "READY=1 comes after the driver passed its self-test";
  int pings = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (pings < 3 && notify.wait_for("WATCHDOG=1", 2s)) ++pings;
  EXPECT_EQ(pings, 3);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  // systemctl reload: RELOADING=1, then READY=1 again, or the unit stays "reloading".
  ::kill(agent.pid, SIGHUP);
  ASSERT_TRUE(notify.wait_for("RELOADING=1", 5s));
  EXPECT_TRUE(notify.wait_for("READY=1", 5s));
  ::kill(agent.pid, SIGTERM);
  EXPECT_TRUE(notify.wait_for("STOPPING=1", 5s));
  EXPECT_EQ(agent.wait_exit(), 0);
}

TEST(AgentJsonLogs, EveryLineIsOneObjectAndVolumeLinesNameTheVolume) {
  testing::AgentProcess agent("log_format: json\n");
  ASSERT_TRUE(agent.start());
  ASSERT_TRUE(agent.wait_ready()) << agent.log_text();
  // A mount that fails in the agent (no array configured): its lines are about the volume.
  const auto r = agent.shim({"mount", agent.root + "/kubelet/pods/u/volumes/datera~iscsi/pv",
                             R"({"volumeID":"vol-json","kubernetes.io/fsType":"xfs"})"});
  EXPECT_NE(r.output.find("Failure"), std::string::npos) << r.output;
  agent.stop();
  std::istringstream lines(agent.log_text());
  int objects = 0, about_volume = 0;
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("time") && j.contains("level") &&
                j.contains("logger") && j.contains("msg"))
        << "not a log object: " << line;
    ++objects;
    about_volume += j.value("volume", "") == "vol-json";
  }
  EXPECT_GT(objects, 5);
  EXPECT_GE(about_volume, 1) << agent.log_text();
}

}  // namespace
}  // namespace datera::testing

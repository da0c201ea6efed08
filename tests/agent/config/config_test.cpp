#include "agent/config/config.h"

#include <cstdio>
#include <map>
#include <unistd.h>

#include <gtest/gtest.h>

namespace datera::config {
namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

const EnvLookup kNoEnv = env_of({});

TEST(Config, EmptyFileGivesDocumentedDefaults) {
  auto cfg = parse("", kNoEnv, "Worker-1");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->node_name, "worker-1");  // hostname, lowercased like kubelet does
  EXPECT_EQ(cfg->socket_path, "/run/datera-agent/agent.sock");
  EXPECT_EQ(cfg->plugin_dir, "/usr/libexec/kubernetes/kubelet-plugins/volume/exec");
  EXPECT_EQ(cfg->kubelet_root, "/var/lib/kubelet");
  EXPECT_EQ(cfg->state_dir, "/var/lib/datera-agent");
  EXPECT_EQ(cfg->metrics.listen, "0.0.0.0:9808");
  EXPECT_EQ(cfg->metrics.port, 9808);
  EXPECT_EQ(cfg->api.allowed_uids, std::vector<uid_t>{0});
  EXPECT_EQ(cfg->driver.driver_dir_name(), "datera~iscsi");
}

TEST(Config, ReadsEveryKey) {
  const char* yaml = R"(
node_name: node-a
socket_path: /tmp/x/agent.sock
plugin_dir: /tmp/x/plugins/
kubelet_root: /tmp/x/kubelet
state_dir: /tmp/x/state
log_level: debug
shutdown_grace: 5s
metrics: {listen: "127.0.0.1:0"}
api: {allowed_uids: [0, 1000], max_connections: 8, read_timeout: 2s, call_timeout: 1m}
driver: {shim_source: /opt/shim, shim_timeout: 2m, self_test_timeout: 3s}
)";
  auto cfg = parse(yaml, kNoEnv, "h");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->node_name, "node-a");
  EXPECT_EQ(cfg->plugin_dir, "/tmp/x/plugins");  // trailing slash normalised
  EXPECT_EQ(cfg->shutdown_grace, std::chrono::seconds(5));
  EXPECT_EQ(cfg->metrics.host, "127.0.0.1");
  EXPECT_EQ(cfg->metrics.port, 0);
  EXPECT_EQ(cfg->api.allowed_uids, (std::vector<uid_t>{0, 1000}));
  EXPECT_EQ(cfg->api.max_connections, 8u);
  EXPECT_EQ(cfg->api.call_timeout, std::chrono::minutes(1));
  EXPECT_EQ(cfg->driver.shim_source, "/opt/shim");
  EXPECT_EQ(cfg->driver.self_test_timeout, std::chrono::seconds(3));
}

TEST(Config, EnvironmentOverridesFile) {
  auto cfg = parse("node_name: from-file\nlog_level: info\n",
                   env_of({{"NODE_NAME", "from-env"},
                           {"DATERA_AGENT_LOG_LEVEL", "warn"},
                           {"DATERA_AGENT_METRICS_LISTEN", "[::1]:9100"}}),
                   "h");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->node_name, "from-env");
  EXPECT_EQ(cfg->log_level, "warn");
  EXPECT_EQ(cfg->metrics.host, "::1");
  EXPECT_EQ(cfg->metrics.port, 9100);
}

struct BadCase {
  const char* yaml;
  const char* key;     // the message must name the key
  const char* reason;  // ... and say why
};

class ConfigRejects : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigRejects, NamesKeyAndReason) {
  const auto& c = GetParam();
  auto cfg = parse(c.yaml, kNoEnv, "host");
  ASSERT_FALSE(cfg.ok()) << c.yaml;
  const auto& msg = cfg.error().message;
  EXPECT_NE(msg.find(c.key), std::string::npos) << msg;
  EXPECT_NE(msg.find(c.reason), std::string::npos) << msg;
}

const BadCase kBadCases[] = {
    BadCase{"sockt_path: /x", "sockt_path", "unknown key"},
    BadCase{"metrics: {port: 1}", "metrics.port", "unknown key"},
    BadCase{"socket_path: relative/x.sock", "socket_path", "absolute"},
    BadCase{"state_dir: /a/../b", "state_dir", ".."},
    BadCase{"node_name: Bad_Name", "node_name", "not a valid Kubernetes node name"},
    BadCase{"log_level: loud", "log_level", "unknown log level"},
    BadCase{"metrics: {listen: 9808}", "metrics.listen", "HOST:PORT"},
    BadCase{"metrics: {listen: '0.0.0.0:99999'}", "metrics.listen", "out of range"},
    BadCase{"metrics: {probe_listen: '0.0.0.0:9809'}", "metrics.probe_listen", "not a loopback"},
    BadCase{"metrics: {probe_listen: '10.0.0.1:9809'}", "metrics.probe_listen", "not a loopback"},
    BadCase{"metrics: {probe_listen: '127.0.0.1:0'}", "metrics.probe_listen", "fixed port"},
    BadCase{"metrics: {probe_listen: '127.0.0.1:9808'}", "metrics.probe_listen",
            "metrics.listen's port"},
    BadCase{"metrics: {probe_listen: 9809}", "metrics.probe_listen", "HOST:PORT"},
    BadCase{"api: {max_connections: 0}", "api.max_connections", "out of range"},
    BadCase{"api: {allowed_uids: []}", "api.allowed_uids", "at least one"},
    BadCase{"api: {allowed_uids: root}", "api.allowed_uids", "list"},
    BadCase{"api: {read_timeout: 10x}", "api.read_timeout", "unknown unit"},
    BadCase{"api: {call_timeout: 20m}", "driver.shim_timeout", "longer than api.call_timeout"},
    BadCase{"shutdown_grace: soon", "shutdown_grace", "not a duration"},
    BadCase{"driver: {vendor: 'a~b'}", "driver.vendor", "short lowercase name"},
    BadCase{"node_name: [a, b]", "node_name", "must be a string"},
    BadCase{"[unclosed", "YAML", "not valid"},
    BadCase{"socket_path: "
            "/run/"
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            "aaaaaaaaaaaaaaaaaaaaaa.sock",
            "socket_path", "longer than 107"}};

INSTANTIATE_TEST_SUITE_P(Table, ConfigRejects, ::testing::ValuesIn(kBadCases));

TEST(Config, ProbeListenerIsOffByDefaultAndLoopbackWhenSet) {
  auto none = parse("", kNoEnv, "h");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->metrics.probe_listen.empty());
  auto v4 = parse("metrics: {listen: '0.0.0.0:9808', probe_listen: '127.0.0.1:9809'}", kNoEnv, "h");
  ASSERT_TRUE(v4.ok()) << v4.error().message;
  EXPECT_EQ(v4->metrics.probe_host, "127.0.0.1");
  EXPECT_EQ(v4->metrics.probe_port, 9809);
  auto v6 = parse("metrics: {probe_listen: '[::1]:9810'}", kNoEnv, "h");
  ASSERT_TRUE(v6.ok()) << v6.error().message;
  EXPECT_EQ(v6->metrics.probe_host, "::1");
  EXPECT_EQ(v6->metrics.probe_port, 9810);
}

TEST(Config, BackendWithPasswordFromTheEnvironment) {
  auto cfg = parse(
      "backend: {server: 'edf.example:7718', username: admin, tls: true, ca_file: /etc/ca.pem}\n",
      env_of({{"DATERA_AGENT_BACKEND_PASSWORD", "from-env"}}), "h");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_TRUE(cfg->backend.configured());
  EXPECT_TRUE(cfg->backend.tls);
  EXPECT_EQ(cfg->backend.password, "from-env");
  EXPECT_EQ(cfg->backend.tenant, "/root");
}

TEST(Config, BackendRules) {
  auto no_user = parse("backend: {server: edf}\n", kNoEnv, "h");
  ASSERT_FALSE(no_user.ok());
  EXPECT_NE(no_user.error().message.find("backend.username"), std::string::npos);
  auto no_pw = parse("backend: {server: edf, username: admin}\n", kNoEnv, "h");
  ASSERT_FALSE(no_pw.ok());
  EXPECT_NE(no_pw.error().message.find("never written into the config file"), std::string::npos);
  auto inline_pw = parse("backend: {server: edf, username: admin, password: x}\n", kNoEnv, "h");
  ASSERT_FALSE(inline_pw.ok());
  EXPECT_NE(inline_pw.error().message.find("'backend.password': unknown key"), std::string::npos);
  auto bad_bool =
      parse("backend: {server: edf, username: a, password_file: /p, tls: yes}\n", kNoEnv, "h");
  ASSERT_FALSE(bad_bool.ok());
  EXPECT_NE(bad_bool.error().message.find("backend.tls"), std::string::npos);
  EXPECT_TRUE(parse("", kNoEnv, "h")->backend.configured() == false);
}

TEST(Config, BackendAllowedServers) {
  auto none = parse("backend: {server: edf, username: a, password_file: /p}\n", kNoEnv, "h");
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->backend.allowed_servers.empty()) << "default: only the default array";
  auto two = parse(
      "backend: {server: edf, username: a, password_file: /p,\n"
      "          allowed_servers: ['edf2.example', '10.0.0.9:7718', '[fd00::1]:7717']}\n",
      kNoEnv, "h");
  ASSERT_TRUE(two.ok()) << two.error().message;
  EXPECT_EQ(two->backend.allowed_servers,
            (std::vector<std::string>{"edf2.example", "10.0.0.9:7718", "[fd00::1]:7717"}));
  for (const char* bad : {"allowed_servers: edf2", "allowed_servers: [{a: b}]",
                          "allowed_servers: ['has space:7717']", "allowed_servers: ['']",
                          "allowed_servers: ['edf:99999']", "allowed_servers: ['http://edf']"}) {
    auto r =
        parse(std::string("backend: {server: edf, username: a, password_file: /p, ") + bad + "}\n",
              kNoEnv, "h");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("backend.allowed_servers"), std::string::npos)
        << r.error().message;
  }
}

TEST(Config, BackendPasswordFileIsRead) {
  char tmpl[] = "/tmp/dt-pw-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "s3cret\n", 7), 7);
  ::close(fd);
  const std::string cfgfile = std::string(tmpl) + ".yaml";
  {
    FILE* f = std::fopen(cfgfile.c_str(), "w");
    std::fprintf(f, "backend: {server: edf, username: admin, password_file: %s}\n", tmpl);
    std::fclose(f);
  }
  auto cfg = load(cfgfile, kNoEnv, "h");
  ::unlink(tmpl);
  ::unlink(cfgfile.c_str());
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->backend.password, "s3cret");
  auto missing = load(
      "", env_of({{"DATERA_AGENT_BACKEND_SERVER", "edf"}, {"DATERA_AGENT_BACKEND_USERNAME", "a"}}),
      "h");
  ASSERT_FALSE(missing.ok());
}

TEST(Config, NodeNameRules) {
  EXPECT_TRUE(is_valid_node_name("ip-10-0-0-1.ec2.internal"));
  EXPECT_TRUE(is_valid_node_name("a"));
  EXPECT_FALSE(is_valid_node_name(""));
  EXPECT_FALSE(is_valid_node_name("-a"));
  EXPECT_FALSE(is_valid_node_name("a..b"));
  EXPECT_FALSE(is_valid_node_name("UPPER"));
  EXPECT_FALSE(is_valid_node_name(std::string(254, 'a')));
}

TEST(Config, LoadReportsFileAndMissingFile) {
  auto missing = load("/nonexistent/datera.yaml", kNoEnv, "h");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("/nonexistent/datera.yaml"), std::string::npos);
  auto none = load("", kNoEnv, "h");
  EXPECT_TRUE(none.ok());
}

TEST(Config, AttachSwitchNeedsTheDefaultArray) {
  auto cfg = parse("", kNoEnv, "n1");
  ASSERT_TRUE(cfg.ok());
  EXPECT_FALSE(cfg->attach) << "agent-coordinated mode by default";
  auto bad = parse("attach: true\n", kNoEnv, "n1");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("backend.server"), std::string::npos) << bad.error().message;
  const char* yaml = "attach: true\nbackend: {server: 10.0.0.1, username: u}\n";
  auto good = parse(yaml, env_of({{"DATERA_AGENT_BACKEND_PASSWORD", "p"}}), "n1");
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_TRUE(good->attach);
  EXPECT_EQ(good->socket_path,
            "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/.datera-agent.sock")
      << "where kube-controller-manager's container can reach it";
  auto off = parse(
      yaml, env_of({{"DATERA_AGENT_BACKEND_PASSWORD", "p"}, {"DATERA_AGENT_ATTACH", "false"}}),
      "n1");
  ASSERT_TRUE(off.ok()) << off.error().message;
  EXPECT_FALSE(off->attach) << "the environment overrides the file";
  auto typo = parse(
      yaml, env_of({{"DATERA_AGENT_BACKEND_PASSWORD", "p"}, {"DATERA_AGENT_ATTACH", "yes"}}), "n1");
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.error().message.find("DATERA_AGENT_ATTACH"), std::string::npos);
  EXPECT_FALSE(parse("attach: maybe\n", kNoEnv, "n1").ok());
}

TEST(Config, EnumeratedKeysAreParsedOnceIntoChoices) {
  auto defaults = parse("", kNoEnv, "n1");
  ASSERT_TRUE(defaults.ok()) << defaults.error().message;
  EXPECT_EQ(defaults->choices.initiator, InitiatorKind::open_iscsi);
  EXPECT_EQ(defaults->choices.multipath, MultipathMode::automatic);
  EXPECT_EQ(defaults->choices.handoff, HandoffMode::agent);
  EXPECT_EQ(defaults->choices.log_level, spdlog::level::info);
  EXPECT_EQ(defaults->choices.log_format, LogFormat::text);

  auto cfg = parse(
      "log_level: warning\nlog_format: json\ninitiator:\n  multipath: 'off'\n"
      "handoff:\n  mode: 'off'\n",
      env_of({{"DATERA_AGENT_INITIATOR_KIND", "loop"},
              {"DATERA_AGENT_INITIATOR_IQN", "iqn.2026-12.test:node-1"},
              {"DATERA_AGENT_BACKEND_SERVER", "sim:7717"},
              {"DATERA_AGENT_BACKEND_USERNAME", "admin"},
              {"DATERA_AGENT_BACKEND_PASSWORD", "p"}}),
      "n1");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->choices.initiator, InitiatorKind::loop);
  EXPECT_EQ(cfg->choices.multipath, MultipathMode::off);
  EXPECT_EQ(cfg->choices.handoff, HandoffMode::off);
  EXPECT_EQ(cfg->choices.log_level, spdlog::level::warn);
  EXPECT_EQ(cfg->choices.log_format, LogFormat::json);
  EXPECT_EQ(to_string(cfg->choices.initiator), "loop") << "/v1/status reports the key's spelling";
  EXPECT_EQ(to_string(MultipathMode::automatic), "auto");

  // An edit after loading (the command line's --log-level) is re-validated into choices.
  cfg->log_level = "debug";
  ASSERT_TRUE(validate(*cfg).ok());
  EXPECT_EQ(cfg->choices.log_level, spdlog::level::debug);
}

}  // namespace
}  // namespace datera::config

#include "agent/app/wiring.h"

#include <map>

#include <gtest/gtest.h>

namespace datera::app {
namespace {

config::Config parse(const std::string& yaml) {
  const std::map<std::string, std::string> env = {{"DATERA_AGENT_BACKEND_PASSWORD", "secret"}};
  auto cfg = config::parse(
      yaml,
      [&](const std::string& k) -> std::optional<std::string> {
        auto it = env.find(k);
        if (it == env.end()) return std::nullopt;
        return it->second;
      },
      "node-1");
  EXPECT_TRUE(cfg.ok()) << cfg.error().message;
  return cfg.ok() ? *cfg : config::Config{};
}

// The loop initiator used to parse backend.server on its own with the HTTP port, so with
// backend.tls it spoke TLS to port 7717 while the EDF client used 7718.
TEST(ApplicationWiring, TlsBackendDefaultsToPort7718ForEveryUser) {
  const auto cfg = parse(
      "backend:\n  server: Sim.Example\n  username: admin\n  tls: true\n"
      "initiator:\n  kind: loop\n  iqn: iqn.2026-12.test:node-1\n");
  auto target = backend_target(cfg);
  ASSERT_TRUE(target.ok()) << target.error().message;
  EXPECT_EQ(target->host, "sim.example");
  EXPECT_EQ(target->port, 7718);
  EXPECT_EQ(target->server(), "sim.example:7718");
  EXPECT_TRUE(tls_options(cfg).enabled);
}

TEST(ApplicationWiring, BackendTargetCarriesTheAgentsAccount) {
  const auto plain = parse("backend:\n  server: array-1\n  username: admin\n");
  auto target = backend_target(plain);
  ASSERT_TRUE(target.ok()) << target.error().message;
  EXPECT_EQ(target->port, 7717);
  EXPECT_TRUE(target->is_default) << "volumes refer to it instead of copying the password";
  EXPECT_EQ(target->credentials.user, "admin");
  EXPECT_EQ(target->credentials.password, "secret");
  EXPECT_FALSE(tls_options(plain).enabled);

  const auto explicit_port =
      parse("backend:\n  server: array-1:8443\n  username: admin\n  tls: true\n");
  EXPECT_EQ(backend_target(explicit_port)->port, 8443);
}

TEST(ApplicationWiring, TlsOptionsCarryVerificationSettings) {
  const auto cfg = parse(
      "backend:\n  server: array-1\n  username: admin\n  tls: true\n  ca_file: /etc/ca.pem\n"
      "  insecure_skip_verify: true\n");
  const auto tls = tls_options(cfg);
  EXPECT_TRUE(tls.enabled);
  EXPECT_EQ(tls.ca_file, "/etc/ca.pem");
  EXPECT_TRUE(tls.insecure_skip_verify);
}

TEST(ApplicationWiring, BadServerNamesTheKey) {
  auto cfg = parse("");
  cfg.backend.server = "bad host";
  auto target = backend_target(cfg);
  ASSERT_FALSE(target.ok());
  EXPECT_NE(target.error().message.find("config key 'backend.server'"), std::string::npos)
      << target.error().message;
}

}  // namespace
}  // namespace datera::app

#include "plugins/initiator/names.h"

#include <gtest/gtest.h>

namespace datera::initiator {
namespace {

TEST(ValidateIqn, AcceptsDateraAndRfcForms) {
  EXPECT_TRUE(validate_iqn("iqn.2013-05.com.daterainc:tc:01:sn:0123456789abcdef").ok());
  EXPECT_TRUE(validate_iqn("iqn.1993-08.org.debian:01:8f3c2a1b9d7e").ok());
  EXPECT_TRUE(validate_iqn("iqn.2024-01.io.hostprobe:vol1").ok());
  EXPECT_TRUE(validate_iqn("iqn.2001-04.com.example").ok());
  EXPECT_TRUE(validate_iqn("eui.02004567A425678D").ok());
  EXPECT_TRUE(validate_iqn("naa.52004567BA64678D").ok());
}

TEST(ValidateIqn, RefusesWhatCouldMisleadIscsiadmOrPaths) {
  for (const char* bad :
       {"", "-o delete", "iqn.2013-05.com.daterainc:tc x", "iqn.2013-05.com.daterainc:tc;reboot",
        "iqn.2013-05.com.daterainc:a/b", "iqn.13-05.com.x:y", "iqn.2013-5.com.x:y",
        "iqn.2013-05.:y", "iqn.2013-05.com..x:y", "iqn.2013-05.Com.x:y", "iqn.2013-05.com.x:",
        "IQN.2013-05.com.x:y", "eui.0200", "naa.zz004567BA64678D", "target1"}) {
    const auto st = validate_iqn(bad);
    EXPECT_FALSE(st.ok()) << bad;
    if (!st.ok()) {
      EXPECT_EQ(st.error().code, errno_code(EINVAL)) << bad;
    }
  }
  EXPECT_FALSE(validate_iqn("iqn.2013-05.com.x:" + std::string(220, 'a')).ok());
}

TEST(ParsePortal, NormalizesIpAndPort) {
  auto p = parse_portal("10.0.0.5");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->address, "10.0.0.5");
  EXPECT_EQ(p->port, 3260u);
  EXPECT_EQ(p->str(), "10.0.0.5:3260");

  p = parse_portal("10.0.0.5:3261");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->str(), "10.0.0.5:3261");

  p = parse_portal("[fd00::5]:3260");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->ipv6);
  EXPECT_EQ(p->address, "fd00::5");
  EXPECT_EQ(p->str(), "[fd00::5]:3260");

  p = parse_portal("fd00:0:0::5");  // a bare IPv6 address, canonicalized
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->str(), "[fd00::5]:3260");
}

TEST(ParsePortal, RefusesNamesJunkAndBadPorts) {
  for (const char* bad :
       {"", "storage.example.com", "storage.example.com:3260", "10.0.0.5:", "10.0.0.5:0",
        "10.0.0.5:65536", "10.0.0.5:32a0", "10.0.0.5;reboot", "-p", "[fd00::5", "[fd00::5]3260",
        "0.0.0.0", "224.0.0.1", "10.0.0.5:3260:1", "[fe80::1%eth0]:3260"}) {
    EXPECT_FALSE(parse_portal(bad).ok()) << bad;
  }
}

TEST(ValidateLunAndSerial, Bounds) {
  EXPECT_TRUE(validate_lun(0).ok());
  EXPECT_TRUE(validate_lun(255).ok());
  EXPECT_FALSE(validate_lun(-1).ok());
  EXPECT_FALSE(validate_lun(16384).ok());
  EXPECT_TRUE(validate_serial("7f5c3a5e-89ab-4cde-8f01-23456789abcd").ok());
  EXPECT_FALSE(validate_serial("").ok());
  EXPECT_FALSE(validate_serial("has space").ok());
  EXPECT_FALSE(validate_serial(std::string(65, 'a')).ok());
}

TEST(ParseInitiatorName, TakesTheLastNameLineAndIgnoresComments) {
  auto name = parse_initiator_name(
      "## DO NOT EDIT OR REMOVE THIS FILE!\n"
      "#InitiatorName=iqn.1993-08.org.debian:01:commented\n"
      "InitiatorName=iqn.1993-08.org.debian:01:old\n"
      "  InitiatorName=iqn.1993-08.org.debian:01:8f3c2a1b9d7e  \r\n");
  ASSERT_TRUE(name.ok()) << name.error().message;
  EXPECT_EQ(*name, "iqn.1993-08.org.debian:01:8f3c2a1b9d7e");

  EXPECT_FALSE(parse_initiator_name("# nothing\n").ok());
  EXPECT_FALSE(parse_initiator_name("InitiatorName=\n").ok());
  EXPECT_FALSE(parse_initiator_name("InitiatorName=not an iqn\n").ok());
}

}  // namespace
}  // namespace datera::initiator

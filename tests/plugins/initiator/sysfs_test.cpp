#include "plugins/initiator/sysfs.h"

#include <gtest/gtest.h>

#include "tests/plugins/initiator/fake_sysfs.h"
#include "tests/testing/temp_dir.h"

namespace datera::initiator {
namespace {

using testing::FakeSysfs;

TEST(ParseVpdPg80, ReadsTheSerialAfterTheHeader) {
  EXPECT_EQ(parse_vpd_pg80(FakeSysfs::vpd_pg80("7f5c3a5e-89ab")), "7f5c3a5e-89ab");
  // Padded with blanks and NULs as arrays do; the length field bounds it.
  const std::string padded = std::string("\x00\x80\x00\x08", 4) + "HP0001  trailing";
  EXPECT_EQ(parse_vpd_pg80(padded), "HP0001");
  EXPECT_EQ(parse_vpd_pg80(std::string("\x00\x80\x00\x06", 4) + std::string("ab\0\0\0\0", 6)),
            "ab");
  EXPECT_EQ(parse_vpd_pg80(std::string("\x00\x83\x00\x02", 4) + "ab"), std::nullopt);  // page 83
  EXPECT_EQ(parse_vpd_pg80(std::string("\x00\x80", 2)), std::nullopt);                 // short
}

TEST(SerialFromWwid, OnlyT10FormsCarryTheWholeSerial) {
  EXPECT_EQ(serial_from_t10_wwid("t10.DATERA  IBLOCK 7f5c3a5e-89ab\n"), "7f5c3a5e-89ab");
  EXPECT_EQ(serial_from_t10_wwid("naa.6001405f5c3a5e89ab0000000000000"), std::nullopt);
  EXPECT_EQ(serial_from_t10_wwid("t10.DATERAIBLOCK"), std::nullopt);
}

TEST(SerialsMatch, ForgivesCaseAndPaddingButNothingElse) {
  EXPECT_TRUE(serials_match("7F5C3A5E-89AB ", "7f5c3a5e-89ab"));
  EXPECT_FALSE(serials_match("7f5c3a5e89ab", "7f5c3a5e-89ab"));
  EXPECT_FALSE(serials_match("7f5c3a5e-89ac", "7f5c3a5e-89ab"));
  EXPECT_FALSE(serials_match("7f5c3a5e-89ab-0", "7f5c3a5e-89ab"));
  EXPECT_FALSE(serials_match("", ""));
}

TEST(SysfsReader, NoIscsiModuleMeansNoSessions) {
  datera::testing::TempDir dir("iscsi");
  SysfsReader reader(dir.path());
  auto s = reader.sessions();
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->empty());
}

TEST(SysfsReader, WalksSessionsConnectionsHostsAndLuns) {
  datera::testing::TempDir dir("iscsi");
  FakeSysfs tree(dir.path());
  tree.add_session(12, 7, "iqn.2013-05.com.daterainc:tc:01:sn:b", "10.0.0.6", 3261, "FAILED");
  tree.add_session(3, 5, "iqn.2013-05.com.daterainc:tc:01:sn:a", "10.0.0.5");
  tree.add_lun(3, 5, 1, "sdd", 8, 48, "serial-1");
  tree.add_lun(3, 5, 0, "sdc", 8, 32, "serial-0", "naa.6001405abc");
  tree.add_lun(12, 7, 0);  // scanned, disk not registered yet

  SysfsReader reader(dir.path() + "/");
  auto s = reader.sessions();
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_EQ(s->size(), 2u);
  EXPECT_EQ((*s)[0].sid, 3);
  EXPECT_EQ((*s)[0].target_iqn, "iqn.2013-05.com.daterainc:tc:01:sn:a");
  EXPECT_EQ((*s)[0].state, "LOGGED_IN");
  EXPECT_EQ((*s)[0].address, "10.0.0.5");
  EXPECT_EQ((*s)[0].port, 3260);
  EXPECT_EQ((*s)[0].host, 5);
  EXPECT_EQ((*s)[1].sid, 12);
  EXPECT_EQ((*s)[1].state, "FAILED");
  EXPECT_EQ((*s)[1].port, 3261);
  EXPECT_EQ((*s)[1].host, 7);

  const auto luns = reader.luns(3);
  ASSERT_EQ(luns.size(), 2u);
  EXPECT_EQ(luns[0].lun, 0);
  EXPECT_EQ(luns[0].block, "sdc");
  EXPECT_EQ(luns[0].major, 8u);
  EXPECT_EQ(luns[0].minor, 32u);
  EXPECT_EQ(luns[0].scsi_state, "running");
  EXPECT_EQ(reader.serial(luns[0]), "serial-0");
  EXPECT_EQ(reader.wwid(luns[0]), "naa.6001405abc");
  EXPECT_EQ(luns[1].lun, 1);
  EXPECT_EQ(luns[1].block, "sdd");

  const auto pending = reader.luns(12);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].block, "");
  EXPECT_EQ(reader.serial(pending[0]), std::nullopt);
  EXPECT_TRUE(reader.luns(99).empty());
}

TEST(SysfsReader, ScanWritesOneLunToTheHost) {
  datera::testing::TempDir dir("iscsi");
  FakeSysfs tree(dir.path());
  tree.add_session(3, 5, "iqn.2013-05.com.daterainc:tc:01:sn:a", "10.0.0.5");
  SysfsReader reader(dir.path());
  ASSERT_TRUE(reader.scan_lun(5, 2).ok());
  EXPECT_EQ(tree.scan_written(5), "0 0 2");
  const auto missing = reader.scan_lun(9, 0);  // no such host: never creates the file
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, errno_code(ENOENT));
}

}  // namespace
}  // namespace datera::initiator

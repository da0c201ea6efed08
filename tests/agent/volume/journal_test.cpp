#include "agent/volume/journal.h"

#include <fstream>
#include <functional>
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "base/fs.h"
#include "base/hash.h"
#include "tests/testing/run_async.h"
#include "tests/testing/temp_dir.h"

namespace datera::volume {
namespace {

Record sample() {
  Record r;
  r.volume = "vol-1";
  r.phase = Phase::attached;
  r.backend.host = "10.0.0.1";
  r.backend.port = 7718;
  r.backend.credentials = {"admin", "s3cret-pass"};
  r.fs_type = "ext4";
  r.mount_options = {"noatime"};
  r.delete_on_release = true;
  r.initiator_iqn = "iqn.1993-08.org.debian:01:node-a";
  r.target = {"vol-1",
              "iqn.2013-05.com.daterainc:tc:01:sn:abc",
              {"172.28.0.1", "172.28.0.2"},
              "0f8b-uuid",
              0};
  r.device = "/dev/sdc";
  r.staging = "/var/lib/datera-agent/staging/vol-1";
  r.pods = {{"/var/lib/kubelet/pods/u1/volumes/datera~iscsi/pv", false},
            {"/var/lib/kubelet/pods/u2/volumes/datera~iscsi/pv", true}};
  r.pending_pod = "/var/lib/kubelet/pods/u3/volumes/datera~iscsi/pv";
  r.generation = 7;
  return r;
}

TEST(JournalFormat, RoundTripsEveryField) {
  const Record in = sample();
  auto out = Journal::decode(Journal::encode(in));
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->volume, in.volume);
  EXPECT_EQ(out->phase, Phase::attached);
  EXPECT_EQ(out->backend.server(), "10.0.0.1:7718");
  EXPECT_EQ(out->backend.credentials.password, "s3cret-pass");
  EXPECT_EQ(out->fs_type, "ext4");
  EXPECT_EQ(out->mount_options, in.mount_options);
  EXPECT_TRUE(out->delete_on_release);
  EXPECT_EQ(out->initiator_iqn, in.initiator_iqn);
  EXPECT_EQ(out->target.iqn, in.target.iqn);
  EXPECT_EQ(out->target.portals, in.target.portals);
  EXPECT_EQ(out->target.serial, in.target.serial);
  EXPECT_EQ(out->device, "/dev/sdc");
  ASSERT_EQ(out->pods.size(), 2u);
  EXPECT_TRUE(out->pods[1].read_only);
  EXPECT_EQ(out->pending_pod, in.pending_pod);
  EXPECT_EQ(out->generation, 7u);
}

TEST(JournalFormat, ValuesOutOfRangeOrTooDeepAreRefusedNotWrapped) {
  // A checksummed record (so only its content is wrong), with one field changed.
  auto with = [](const std::function<void(nlohmann::json&)>& edit) {
    auto outer = nlohmann::json::parse(Journal::encode(sample()));
    auto body = nlohmann::json::parse(outer["record"].get<std::string>());
    edit(body);
    const std::string text = body.dump();
    outer["record"] = text;
    outer["checksum"] = fnv1a64_hex(text);
    return outer.dump();
  };
  auto port = Journal::decode(with([](nlohmann::json& b) { b["backend"]["port"] = 99999; }));
  ASSERT_FALSE(port.ok()) << "port " << port->backend.port << ": 99999 wrapped";
  EXPECT_NE(port.error().message.find("port"), std::string::npos) << port.error().message;
  EXPECT_FALSE(Journal::decode(with([](nlohmann::json& b) { b["backend"]["port"] = -1; })).ok());
  EXPECT_FALSE(Journal::decode(with([](nlohmann::json& b) { b["target"]["lun"] = 1e300; })).ok())
      << "a float out of an int's range is undefined behaviour to convert";
  EXPECT_FALSE(Journal::decode(with([](nlohmann::json& b) { b["epoch"] = -5; })).ok());
  EXPECT_FALSE(Journal::decode(with([](nlohmann::json& b) { b["generation"] = 1.5; })).ok());
  auto deep = Journal::decode(with([](nlohmann::json& b) {
    nlohmann::json nested = nlohmann::json::array();
    for (int i = 0; i < 100; ++i) nested = nlohmann::json::array({nested});
    b["extra"] = nested;
  }));
  EXPECT_FALSE(deep.ok());
  EXPECT_FALSE(Journal::decode(std::string(300'000, '[')).ok()) << "no stack overflow";
  EXPECT_TRUE(Journal::decode(with([](nlohmann::json&) {})).ok()) << "the control case";
}

TEST(JournalFormat, AnyEditedByteIsDetected) {
  std::string text = Journal::encode(sample());
  const auto pos = text.find("ext4");
  ASSERT_NE(pos, std::string::npos);
  text[pos] = 'x';  // a flipped byte inside the record
  auto out = Journal::decode(text);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.error().message.find("checksum"), std::string::npos) << out.error().message;
  EXPECT_FALSE(Journal::decode(text.substr(0, text.size() / 2)).ok()) << "torn write";
  EXPECT_FALSE(Journal::decode("").ok());
}

TEST(JournalFormat, PublicJsonHasNoCredentials) {
  const auto j = sample().public_json().dump();
  EXPECT_EQ(j.find("s3cret-pass"), std::string::npos);
  EXPECT_EQ(j.find("admin"), std::string::npos);
  EXPECT_NE(j.find("10.0.0.1:7718"), std::string::npos);
}

// Issue 14 item 6: a volume on the agent's own array is journaled as "the default array", never
// with a copy of the agent's password, so a rotated password_file applies to it at its next use.
TEST(JournalFormat, TheDefaultArrayIsAReferenceWithoutCredentials) {
  Record in = sample();
  in.backend.is_default = true;
  const std::string text = Journal::encode(in);
  EXPECT_EQ(text.find("s3cret-pass"), std::string::npos) << text;
  auto out = Journal::decode(text);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_TRUE(out->backend.is_default);
  EXPECT_EQ(out->backend.server(), "10.0.0.1:7718");
  EXPECT_TRUE(out->backend.credentials.password.empty());
  // A volume's own credentials (a secretRef) are still kept: unmount needs them.
  Record own = sample();
  auto back = Journal::decode(Journal::encode(own));
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->backend.is_default);
  EXPECT_EQ(back->backend.credentials.password, "s3cret-pass");
}

TEST(JournalFormat, RecordsOfThePreviousVersionStillLoad) {
  // Written by the version before the "default" flag: credentials inline, no flag.
  const std::string body =
      R"({"volume":"vol-1","phase":"attached","backend":{"host":"10.0.0.1","port":7717,)"
      R"("user":"admin","password":"old-pass"},"fs_type":"xfs","delete_on_release":false,)"
      R"("initiator_iqn":"iqn.1993-08.org.debian:01:node-a","target":{"iqn":"iqn.2013-05.com.)"
      R"(daterainc:tc:01:sn:abc","portals":["172.28.0.1"],"serial":"u-1","lun":0},"device":)"
      R"("/dev/sdc","map":"","staging":"/s/vol-1","pods":[],"pending_pod":"","epoch":3,)"
      R"("generation":4,"mount_options":[]})";
  const std::string text =
      nlohmann::json{{"format", 1}, {"checksum", fnv1a64_hex(body)}, {"record", body}}.dump(1);
  auto out = Journal::decode(text);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_FALSE(out->backend.is_default);
  EXPECT_EQ(out->backend.credentials.user, "admin");
  EXPECT_EQ(out->backend.credentials.password, "old-pass");
  EXPECT_EQ(out->epoch, 3u);
}

TEST(JournalStore, SavesAtomicallyRootOnlyAndLoadsBackMovingBadFilesAside) {
  testing::TempDir dir("dt-journal");
  boost::asio::thread_pool pool(1);
  Journal journal(dir / "journal", pool, null_logger());
  ASSERT_TRUE(journal.prepare().ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir / "journal").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  Record a = sample();
  Record b = sample();
  b.volume = "vol-2";
  boost::asio::io_context ioc;
  ASSERT_TRUE(testing::run_async(ioc, journal.save(a)).ok());
  ASSERT_TRUE(testing::run_async(ioc, journal.save(b)).ok());
  EXPECT_EQ(a.generation, 8u) << "save bumps the generation";
  ASSERT_EQ(::stat((dir / "journal/vol-1.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "records hold credentials";

  // A corrupt record and a record filed under the wrong name are set aside, never used.
  std::ofstream(dir / "journal/vol-3.json")
      << "{\"format\":1,\"checksum\":\"0\",\"record\":\"{}\"}";
  auto moved = Journal::encode(a);
  std::ofstream(dir / "journal/vol-9.json") << moved;

  std::vector<std::string> problems;
  auto all = journal.load_all(&problems);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(problems.size(), 2u);
  EXPECT_FALSE(fs::exists(dir / "journal/vol-3.json"));
  EXPECT_FALSE(fs::exists(dir / "journal/vol-9.json"));

  ASSERT_TRUE(testing::run_async(ioc, journal.remove("vol-1")).ok());
  ASSERT_TRUE(testing::run_async(ioc, journal.remove("vol-1")).ok()) << "idempotent";
  EXPECT_EQ(journal.load_all(nullptr).size(), 1u);
}

}  // namespace
}  // namespace datera::volume

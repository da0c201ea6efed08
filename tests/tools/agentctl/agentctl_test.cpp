// datera-agentctl's tables and doctor checks on recorded agent answers and a fake host.

#include <map>

#include <gtest/gtest.h>

#include "tools/agentctl/doctor.h"
#include "tools/agentctl/views.h"

namespace datera::agentctl {
namespace {

const Json kStatus = Json::parse(R"({
  "node": "worker-1", "version": "0.1.0", "ready": true, "attach": false,
  "initiator": "open-iscsi", "kubelet_root": "/var/lib/kubelet", "uptime_seconds": 4000,
  "readiness": {"driver": {"ok": true, "detail": "installed"}},
  "driver": {"path": "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/datera~iscsi/iscsi",
             "ready": true, "version": "0.1.0", "state": "installed"},
  "backend": {"server": "10.0.0.5:7717", "up": true, "checked": true, "sw_version": "3.3.5"},
  "flexvolume": {"calls_total": 12, "calls_failed": 1, "calls_in_flight": 0}})");

const Json kVolumes = Json::parse(R"({"volumes": [{
  "volume": "pvc-1", "phase": "attached", "device": "/dev/sdb", "map": "datera-0000",
  "epoch": 3, "target": {"iqn": "iqn.2013-05.com.daterainc:tc:01:sn:1",
                         "portals": ["172.28.0.1"]},
  "pods": [{"dir": "/var/lib/kubelet/pods/uid-7/volumes/datera~iscsi/pv", "read_only": false}],
  "session": {"state": "healthy", "session": 4, "session_state": "LOGGED_IN",
              "portal": "172.28.0.1:3260", "recoveries": 2}}]})");

struct FakeHost : Host {
  std::map<std::string, std::string> files;
  bool iscsid = true;
  bool udev = true;
  std::optional<bool> synced = true;
  std::optional<std::string> read_file(const std::string& p) const override {
    auto it = files.find(p);
    if (it == files.end()) return std::nullopt;
    return it->second;
  }
  bool multipathd = false;
  bool process_running(const std::string& comm) const override {
    return (comm == "iscsid" && iscsid) || (comm == "multipathd" && multipathd);
  }
  bool exists(const std::string& p) const override { return p == "/run/udev/control" && udev; }
  std::optional<bool> clock_synced() const override { return synced; }
  std::vector<std::string> list_dir(const std::string& dir) const override {
    std::vector<std::string> out;
    for (const auto& [p, _] : files) {
      if (p.rfind(dir + "/", 0) == 0) out.push_back(p.substr(dir.size() + 1));
    }
    return out;
  }
};

FakeHost healthy_host() {
  FakeHost h;
  h.files["/etc/iscsi/initiatorname.iscsi"] =
      "## comment\nInitiatorName=iqn.1993-08.org.debian:01:w1\n";
  h.files["/proc/self/mountinfo"] =
      "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
      "30 22 8:2 / /var/lib/kubelet rw shared:12 - xfs /dev/sda2 rw\n";
  return h;
}

TEST(Views, StatusAndVolumesAsKubectlStyleTables) {
  const auto s = status_table(kStatus);
  EXPECT_NE(s.find("NODE"), std::string::npos) << s;
  EXPECT_NE(s.find("worker-1   0.1.0"), std::string::npos) << s;
  EXPECT_NE(s.find("10.0.0.5:7717 (up)"), std::string::npos) << s;
  EXPECT_NE(s.find("66m"), std::string::npos) << "uptime: " << s;
  const auto v = volumes_table(kStatus, kVolumes);
  EXPECT_NE(v.find("pvc-1"), std::string::npos) << v;
  EXPECT_NE(v.find("datera-0000 (/dev/sdb)"), std::string::npos) << v;
  EXPECT_NE(v.find("worker-1"), std::string::npos) << "owner: " << v;
  EXPECT_NE(v.find("uid-7"), std::string::npos) << "pods by uid: " << v;
  const auto ss = sessions_table(kVolumes);
  EXPECT_NE(ss.find("LOGGED_IN"), std::string::npos) << ss;
  EXPECT_NE(ss.find("172.28.0.1:3260"), std::string::npos) << ss;
}

TEST(Views, ReleaseAndDrainResultsSayWhatWasKeptAndWhy) {
  const auto results = Json::parse(R"([
    {"volume":"pvc-1","result":"released","message":"volume pvc-1: unmounted","pods":[]},
    {"volume":"pvc-2","result":"in_use","message":"volume pvc-2: 1 pod mount(s) use it",
     "pods":["/var/lib/kubelet/pods/uid-9/volumes/datera~iscsi/pv-2"]},
    {"volume":"pvc-3","result":"not_here","message":"nothing","pods":[]}])");
  const auto t = results_table(results);
  EXPECT_NE(t.find("VOLUME   RESULT     PODS"), std::string::npos) << t;
  EXPECT_NE(t.find("pvc-2    in_use     uid-9"), std::string::npos) << t;
  EXPECT_NE(t.find("volume pvc-2: 1 pod mount(s) use it"), std::string::npos) << t;
  EXPECT_EQ(t.find("volume pvc-1: unmounted"), std::string::npos) << "released: no note\n" << t;
  EXPECT_EQ(results_table(Json::array()), "this node holds no volume\n");

  EXPECT_EQ(release_exit_code(results[0]), 0);
  EXPECT_EQ(release_exit_code(results[1]), 1);
  EXPECT_EQ(release_exit_code(results[2]), 0);
  EXPECT_EQ(release_exit_code(Json::parse(R"({"result":"staged"})")), 1);
  EXPECT_EQ(drain_exit_code(results), 0) << "volumes pods use are kept, not failures";
  auto failed = results;
  failed.push_back(Json::parse(R"({"volume":"pvc-4","result":"failed","message":"m"})"));
  EXPECT_EQ(drain_exit_code(failed), 1);
}

TEST(Views, TablesAlignColumnsAndShowDashesForNothing) {
  EXPECT_EQ(table({"A", "LONGER"}, {{"xxxx", "y"}, {"", "z"}}),
            "A      LONGER\nxxxx   y\n       z\n");
  const auto v =
      volumes_table(kStatus, Json::parse(R"({"volumes":[{"volume":"v","phase":"attaching"}]})"));
  EXPECT_NE(v.find("v        attaching   -"), std::string::npos) << v;
}

TEST(Views, VolumesSayWhichFrontEndServesThem) {
  const auto v = volumes_table(kStatus, Json::parse(R"({"volumes":[
      {"volume":"v1","phase":"attached","mode":"agent"},
      {"volume":"v2","phase":"attached","mode":"csi","block":true}]})"));
  EXPECT_NE(v.find("MODE"), std::string::npos) << v;
  EXPECT_NE(v.find("v1       attached   agent "), std::string::npos) << v;
  EXPECT_NE(v.find("v2       attached   csi (block)"), std::string::npos) << v;
}

TEST(Views, VolumesTheAgentSetAsideSaySo) {
  const auto v = volumes_table(kStatus, Json::parse(R"({"volumes":[
      {"volume":"v1","phase":"detaching","set_aside":true,"release_failures":5},
      {"volume":"v2","phase":"set_aside","set_aside":true},
      {"volume":"v3","phase":"attached"}]})"));
  EXPECT_NE(v.find("v1       detaching (SET ASIDE)"), std::string::npos) << v;
  EXPECT_NE(v.find("v2       set_aside "), std::string::npos) << v;
  EXPECT_EQ(v.find("set_aside (SET ASIDE)"), std::string::npos) << v;
  EXPECT_NE(v.find("v3       attached "), std::string::npos) << v;
}

TEST(Doctor, AHealthyNodePassesEveryCheck) {
  const auto checks = doctor(kStatus, healthy_host());
  EXPECT_FALSE(any_failed(checks)) << render(checks);
  EXPECT_EQ(checks.size(), 9u) << render(checks);
  for (const auto& c : checks) EXPECT_EQ(c.verdict, Verdict::pass) << render(checks);
}

TEST(Doctor, EachProblemFailsItsOwnCheckAndSaysWhatToDo) {
  auto host = healthy_host();
  host.iscsid = false;
  host.files["/proc/self/mountinfo"] = "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n";
  host.files.erase("/etc/iscsi/initiatorname.iscsi");
  host.udev = false;
  host.synced = false;
  Json st = kStatus;
  st["backend"]["up"] = false;
  st["backend"]["last_error"] = "401 Unauthorized";
  st["driver"]["version"] = "0.0.9";
  const auto checks = doctor(st, host);
  ASSERT_TRUE(any_failed(checks));
  std::map<std::string, Verdict> by;
  for (const auto& c : checks) {
    by[c.name] = c.verdict;
    if (c.verdict != Verdict::pass) {
      EXPECT_FALSE(c.fix.empty()) << c.name;
    }
  }
  EXPECT_EQ(by["iscsid"], Verdict::fail);
  EXPECT_EQ(by["initiator-name"], Verdict::fail);
  EXPECT_EQ(by["mount-propagation"], Verdict::fail);
  EXPECT_EQ(by["array"], Verdict::fail);
  EXPECT_EQ(by["driver"], Verdict::fail) << "an older installed driver than the agent";
  EXPECT_EQ(by["udev"], Verdict::warn);
  EXPECT_EQ(by["clock"], Verdict::warn);
  EXPECT_NE(render(checks).find("401 Unauthorized"), std::string::npos);
  EXPECT_EQ(to_json(checks)[0]["result"], "pass") << "the agent itself is fine";
}

TEST(Doctor, TheInitiatorNameIsTheAgentsWhenItSaysOne) {
  auto host = healthy_host();
  host.files.erase("/etc/iscsi/initiatorname.iscsi");
  Json st = kStatus;
  st["initiator_iqn"] = "iqn.2020-01.com.example:from-config";
  auto verdict_of = [&](const Json& status) {
    for (const auto& c : doctor(status, host)) {
      if (c.name == "initiator-name") return std::pair{c.verdict, c.detail};
    }
    return std::pair{Verdict::warn, std::string("no check")};
  };
  auto [v, detail] = verdict_of(st);
  EXPECT_EQ(v, Verdict::pass) << "initiator.iqn overrides the missing host file: " << detail;
  EXPECT_EQ(detail, "iqn.2020-01.com.example:from-config");
  st["initiator_iqn"] = nullptr;
  st["initiator_iqn_error"] = "/etc/iscsi/initiatorname.iscsi: no such file";
  std::tie(v, detail) = verdict_of(st);
  EXPECT_EQ(v, Verdict::fail);
  EXPECT_NE(detail.find("no such file"), std::string::npos) << detail;
}

TEST(Doctor, TheLoopInitiatorNeedsNoIscsid) {
  auto host = healthy_host();
  host.iscsid = false;
  Json st = kStatus;
  st["initiator"] = "loop";
  for (const auto& c : doctor(st, host)) EXPECT_NE(c.name, "iscsid");
}

// multipathd would claim a volume's disk before the agent's map: doctor says whether its
// configuration keeps it off Datera disks, and how to make it so.
TEST(Doctor, MultipathdMustBeKeptOffDateraDisks) {
  nlohmann::json status = kStatus;
  FakeHost h = healthy_host();
  auto find = [](const std::vector<Check>& checks) {
    for (const auto& c : checks) {
      if (c.name == "multipathd") return c;
    }
    return Check{"none", Verdict::fail, "", ""};
  };
  EXPECT_EQ(find(doctor(status, h)).verdict, Verdict::pass) << "not running";
  h.multipathd = true;
  h.files["/etc/multipath.conf"] = "defaults {\n  user_friendly_names yes\n}\n";
  auto c = find(doctor(status, h));
  EXPECT_EQ(c.verdict, Verdict::fail);
  EXPECT_NE(c.fix.find("/etc/multipath/conf.d/datera-agent.conf"), std::string::npos) << c.fix;
  h.files["/etc/multipath/conf.d/datera-agent.conf"] =
      "blacklist {\n\tdevice {\n\t\tvendor \"DATERA\"\n\t\tproduct \"IBLOCK\"\n\t}\n}\n";
  c = find(doctor(status, h));
  EXPECT_EQ(c.verdict, Verdict::pass) << c.detail;
  EXPECT_NE(c.detail.find("conf.d/datera-agent.conf"), std::string::npos);
  h.files["/etc/multipath/conf.d/zz-local.conf"] =
      "blacklist_exceptions { device { vendor \"DAT.*\" } }\n";
  c = find(doctor(status, h));
  EXPECT_EQ(c.verdict, Verdict::fail) << "an exception lets multipathd have them again";
  // The agent saw multipathd's socket where doctor sees no process (another PID namespace).
  h.files.erase("/etc/multipath/conf.d/zz-local.conf");
  h.files.erase("/etc/multipath/conf.d/datera-agent.conf");
  h.multipathd = false;
  status["multipath"] = {{"maps", true}, {"multipathd", true}};
  EXPECT_EQ(find(doctor(status, h)).verdict, Verdict::fail);
}

TEST(MultipathConf, BlacklistsAreReadAsMultipathdReadsThem) {
  EXPECT_EQ(
      multipath_blacklists("blacklist {\n device {\n vendor DATERA\n }\n}\n", "DATERA", "IBLOCK"),
      true)
      << "any product";
  EXPECT_EQ(multipath_blacklists("# blacklist { device { vendor DATERA } }\n", "DATERA", "IBLOCK"),
            std::nullopt)
      << "a comment";
  EXPECT_EQ(multipath_blacklists("blacklist { device { vendor \"DATERA\" product \"^OTHER\" } }",
                                 "DATERA", "IBLOCK"),
            std::nullopt)
      << "another product";
  EXPECT_EQ(
      multipath_blacklists("blacklist {\n  devnode \"^sd\"\n  device {\n    vendor \"^(DATERA|"
                           "LIO-ORG)\"\n    product \".*\" ! all of them\n  }\n}\n",
                           "DATERA", "IBLOCK"),
      true);
  EXPECT_EQ(multipath_blacklists("devices { device { vendor DATERA } }", "DATERA", "IBLOCK"),
            std::nullopt)
      << "a hardware entry is no blacklist";
  EXPECT_EQ(multipath_blacklists("blacklist { device { vendor \"(\" } }", "DATERA", "IBLOCK"),
            std::nullopt)
      << "a broken regex matches nothing";
  EXPECT_EQ(multipath_blacklists(std::string(2 << 20, '{'), "DATERA", "IBLOCK"), std::nullopt);
  EXPECT_EQ(multipath_blacklists(std::string(5000, '{') + "blacklist", "DATERA", "IBLOCK"),
            std::nullopt);
}

TEST(SharedMount, TheLongestMountPointHoldingThePathDecides) {
  const std::string mi =
      "22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n"
      "30 22 8:2 / /var/lib rw - xfs /dev/sda2 rw\n"
      "31 30 8:3 / /var/lib/kubeletx rw shared:5 - xfs /dev/sda3 rw\n";
  EXPECT_EQ(shared_mount(mi, "/var/lib/kubelet"), false) << "/var/lib, not /var/lib/kubeletx";
  EXPECT_EQ(shared_mount(mi, "/srv"), true);
  EXPECT_EQ(shared_mount("", "/x"), std::nullopt);
}

}  // namespace
}  // namespace datera::agentctl

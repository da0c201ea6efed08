#pragma once

// A recorded-shape sysfs (and /dev) tree in a temp dir, laid out as the kernel does for software
// iSCSI, so SysfsReader and OpenIscsi run their real walk against it.

#include <filesystem>
#include <fstream>
#include <string>
#include <sys/file.h>

namespace datera::initiator::testing {

class FakeSysfs {
 public:
  explicit FakeSysfs(std::string root) : root_(std::move(root)) {
    std::filesystem::create_directories(root_ + "/sys/class/iscsi_session");
    std::filesystem::create_directories(root_ + "/sys/class/iscsi_connection");
    std::filesystem::create_directories(root_ + "/dev");
  }

  const std::string& root() const { return root_; }

  void add_session(int sid, int host, const std::string& iqn, const std::string& address,
                   int port = 3260, const std::string& state = "LOGGED_IN") {
    const std::string dev = session_device_dir(sid, host);
    std::filesystem::create_directories(dev);
    const std::string cls = root_ + "/sys/class/iscsi_session/session" + std::to_string(sid);
    std::filesystem::create_directories(cls);
    write(cls + "/targetname", iqn + "\n");
    write(cls + "/state", state + "\n");
    std::filesystem::create_directory_symlink(dev, cls + "/device");
    const std::string conn =
        root_ + "/sys/class/iscsi_connection/connection" + std::to_string(sid) + ":0";
    std::filesystem::create_directories(conn);
    write(conn + "/persistent_address", address + "\n");
    write(conn + "/persistent_port", std::to_string(port) + "\n");
    const std::string scsi_host = root_ + "/sys/class/scsi_host/host" + std::to_string(host);
    std::filesystem::create_directories(scsi_host);
    write(scsi_host + "/scan", "");
  }

  void set_state(int sid, const std::string& state) {
    write(root_ + "/sys/class/iscsi_session/session" + std::to_string(sid) + "/state",
          state + "\n");
  }

  void remove_session(int sid) {
    std::filesystem::remove_all(root_ + "/sys/class/iscsi_session/session" + std::to_string(sid));
    std::filesystem::remove_all(root_ + "/sys/class/iscsi_connection/connection" +
                                std::to_string(sid) + ":0");
  }

  /// The H:0:0:L SCSI device, optionally with its block device and /dev node.
  void add_lun(int sid, int host, int lun, const std::string& block = "", unsigned major = 8,
               unsigned minor = 32, const std::string& vpd_serial = "",
               const std::string& wwid = "", bool dev_node = true) {
    const std::string h = std::to_string(host);
    const std::string dir =
        session_device_dir(sid, host) + "/target" + h + ":0:0/" + h + ":0:0:" + std::to_string(lun);
    std::filesystem::create_directories(dir);
    write(dir + "/state", "running\n");
    if (!vpd_serial.empty()) write(dir + "/vpd_pg80", vpd_pg80(vpd_serial));
    if (!wwid.empty()) write(dir + "/wwid", wwid + "\n");
    if (block.empty()) return;
    std::filesystem::create_directories(dir + "/block/" + block);
    write(dir + "/block/" + block + "/dev",
          std::to_string(major) + ":" + std::to_string(minor) + "\n");
    if (dev_node) add_dev_node(block);
  }

  void add_dev_node(const std::string& block) { write(root_ + "/dev/" + block, ""); }

  std::string scan_written(int host) const {
    return read(root_ + "/sys/class/scsi_host/host" + std::to_string(host) + "/scan");
  }

  /// A VPD page 0x80 as the kernel exposes it: 4-byte header, then the serial.
  static std::string vpd_pg80(const std::string& serial) {
    std::string page = {'\0', static_cast<char>(0x80), '\0', static_cast<char>(serial.size())};
    return page + serial;
  }

  static void write(const std::string& path, const std::string& content) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  }
  static std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::string session_device_dir(int sid, int host) const {
    return root_ + "/sys/devices/platform/host" + std::to_string(host) + "/session" +
           std::to_string(sid);
  }

  std::string root_;
};

}  // namespace datera::initiator::testing

#include "plugins/initiator/sysfs.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <fcntl.h>
#include <filesystem>
#include <tuple>
#include <unistd.h>

#include "base/fs.h"

namespace datera::initiator {

namespace stdfs = std::filesystem;

namespace {

std::string_view trim(std::string_view s) {
  const auto blank = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\0';
  };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return s;
}

/// A small attribute, trimmed; nullopt when missing or unreadable.
std::optional<std::string> read_attr(const std::string& path) {
  auto r = fs::read_file(path, 64 << 10);
  if (!r) return std::nullopt;
  return std::string(trim(*r));
}

std::optional<int> to_int(std::string_view s) {
  int v = 0;
  const auto [end, err] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (err != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return v;
}

/// "<prefix><int>" -> int.
std::optional<int> numbered(std::string_view name, std::string_view prefix) {
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  return to_int(name.substr(prefix.size()));
}

/// "H:C:T:L" -> four ints.
std::optional<std::array<int, 4>> parse_hctl(std::string_view name) {
  std::array<int, 4> out{};
  for (int i = 0; i < 4; ++i) {
    const size_t colon = name.find(':');
    if ((i < 3) != (colon != std::string_view::npos)) return std::nullopt;
    auto v = to_int(name.substr(0, colon));
    if (!v) return std::nullopt;
    out[static_cast<size_t>(i)] = *v;
    if (i < 3) name = name.substr(colon + 1);
  }
  return out;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (stdfs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

char lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

}  // namespace

std::optional<std::string> parse_vpd_pg80(std::string_view bytes) {
  if (bytes.size() < 4 || static_cast<unsigned char>(bytes[1]) != 0x80) return std::nullopt;
  const size_t len = (static_cast<size_t>(static_cast<unsigned char>(bytes[2])) << 8) |
                     static_cast<unsigned char>(bytes[3]);
  const std::string_view body = bytes.substr(4, std::min(len, bytes.size() - 4));
  const std::string_view serial = trim(body);
  for (const char c : serial) {
    if (!std::isprint(static_cast<unsigned char>(c))) return std::nullopt;
  }
  return std::string(serial);
}

std::optional<std::string> serial_from_t10_wwid(std::string_view wwid) {
  wwid = trim(wwid);
  if (wwid.substr(0, 4) != "t10.") return std::nullopt;
  const size_t blank = wwid.find_last_of(" \t");
  if (blank == std::string_view::npos) return std::nullopt;  // vendor+product+serial run together
  const std::string_view serial = wwid.substr(blank + 1);
  if (serial.empty()) return std::nullopt;
  return std::string(serial);
}

bool serials_match(std::string_view device_serial, std::string_view expected) {
  device_serial = trim(device_serial);
  expected = trim(expected);
  if (expected.empty() || device_serial.size() != expected.size()) return false;
  return std::equal(device_serial.begin(), device_serial.end(), expected.begin(),
                    [](char a, char b) { return lower(a) == lower(b); });
}

SysfsReader::SysfsReader(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  if (root_ == "/") root_.clear();
}

std::string SysfsReader::path(std::string_view absolute) const {
  return root_ + std::string(absolute);
}

Result<std::vector<SysfsSession>> SysfsReader::sessions() const {
  std::vector<SysfsSession> out;
  const std::string class_dir = path("/sys/class/iscsi_session");
  std::error_code ec;
  stdfs::directory_iterator it(class_dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return out;  // iscsi module not loaded
    return Error{"listing " + class_dir + ": " + ec.message(), errno_code(ec.value())};
  }
  for (const auto& name : list_dir(class_dir)) {
    const auto sid = numbered(name, "session");
    if (!sid) continue;
    const std::string dir = class_dir + "/" + name;
    auto target = read_attr(dir + "/targetname");
    if (!target) continue;  // logged out while we looked
    SysfsSession s;
    s.sid = *sid;
    s.target_iqn = *target;
    s.state = read_attr(dir + "/state").value_or("");
    s.iface = read_attr(dir + "/ifacename").value_or("");
    const std::string conn =
        path("/sys/class/iscsi_connection/connection" + std::to_string(*sid) + ":0");
    s.address = read_attr(conn + "/persistent_address").value_or("");
    if (auto port = read_attr(conn + "/persistent_port")) s.port = to_int(*port).value_or(-1);
    // The host number comes from the device path: .../hostH/sessionN (as libopeniscsiusr does).
    const auto real = stdfs::canonical(dir + "/device", ec);
    if (!ec) {
      for (const auto& part : real) {
        if (auto h = numbered(part.string(), "host")) s.host = *h;
      }
    }
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(),
            [](const SysfsSession& a, const SysfsSession& b) { return a.sid < b.sid; });
  return out;
}

std::vector<int> SysfsReader::session_ids() const {
  std::vector<int> out;
  for (const auto& name : list_dir(path("/sys/class/iscsi_session"))) {
    if (auto sid = numbered(name, "session")) out.push_back(*sid);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> SysfsReader::attr(const std::string& file) const {
  return read_attr(file);
}

std::vector<SysfsLun> SysfsReader::luns(int sid) const {
  std::vector<SysfsLun> out;
  const std::string dev =
      path("/sys/class/iscsi_session/session" + std::to_string(sid) + "/device");
  for (const auto& tname : list_dir(dev)) {
    if (tname.rfind("target", 0) != 0) continue;
    const std::string tdir = dev + "/" + tname;
    for (const auto& lname : list_dir(tdir)) {
      const auto hctl = parse_hctl(lname);
      if (!hctl) continue;
      SysfsLun l;
      l.host = (*hctl)[0];
      l.channel = (*hctl)[1];
      l.target = (*hctl)[2];
      l.lun = (*hctl)[3];
      l.dir = tdir + "/" + lname;
      l.scsi_state = read_attr(l.dir + "/state").value_or("");
      for (const auto& block : list_dir(l.dir + "/block")) {
        const auto devno = read_attr(l.dir + "/block/" + block + "/dev");
        if (!devno) continue;
        const size_t colon = devno->find(':');
        if (colon == std::string::npos) continue;
        const auto major = to_int(std::string_view(*devno).substr(0, colon));
        const auto minor = to_int(std::string_view(*devno).substr(colon + 1));
        if (!major || !minor || *major < 0 || *minor < 0) continue;
        l.block = block;
        l.major = static_cast<unsigned>(*major);
        l.minor = static_cast<unsigned>(*minor);
        break;
      }
      out.push_back(std::move(l));
    }
  }
  std::sort(out.begin(), out.end(), [](const SysfsLun& a, const SysfsLun& b) {
    return std::tie(a.host, a.channel, a.target, a.lun) <
           std::tie(b.host, b.channel, b.target, b.lun);
  });
  return out;
}

Status SysfsReader::rescan(const SysfsLun& lun) const {
  const std::string file = lun.dir + "/rescan";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Error::from_errno("opening " + file, errno);
  ssize_t n = 0;
  do {
    n = ::write(fd, "1", 1);
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n < 0) return Error::from_errno("writing 1 to " + file, err);
  return ok_status();
}

Status SysfsReader::scan_lun(int host, int lun) const {
  const std::string file = path("/sys/class/scsi_host/host" + std::to_string(host) + "/scan");
  // Not O_CREAT: the attribute exists whenever the host does.
  const int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Error::from_errno("opening " + file, errno);
  const std::string line = "0 0 " + std::to_string(lun);
  ssize_t n = 0;
  do {
    n = ::write(fd, line.data(), line.size());
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n < 0) return Error::from_errno("writing '" + line + "' to " + file, err);
  return ok_status();
}

std::optional<std::string> SysfsReader::serial(const SysfsLun& lun) const {
  if (auto raw = fs::read_file(lun.dir + "/vpd_pg80", 64 << 10)) {
    if (auto s = parse_vpd_pg80(*raw); s && !s->empty()) return s;
  }
  if (auto w = read_attr(lun.dir + "/wwid")) return serial_from_t10_wwid(*w);
  return std::nullopt;
}

std::string SysfsReader::wwid(const SysfsLun& lun) const {
  return read_attr(lun.dir + "/wwid").value_or("");
}

}  // namespace datera::initiator

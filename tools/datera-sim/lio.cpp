#include "tools/datera-sim/lio.h"

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <set>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"

extern char** environ;

namespace datera::sim {

namespace {

constexpr const char* kDateraPrefix = "iqn.2013-05.com.daterainc:";

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  return out;
}

bool is_dir(const std::string& p) {
  struct stat sb {};
  return ::stat(p.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode);
}

Status make_dir(const std::string& p) {
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST)
    return Error::from_errno("mkdir " + p, errno);
  return ok_status();
}

Status remove_dir(const std::string& p) {
  if (::rmdir(p.c_str()) != 0 && errno != ENOENT) return Error::from_errno("rmdir " + p, errno);
  return ok_status();
}

/// configfs attributes take one write of the whole value.
Status write_attr(const std::string& path, const std::string& value) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Error::from_errno("opening " + path, errno);
  const ssize_t n = ::write(fd, value.data(), value.size());
  const int err = errno;
  ::close(fd);
  if (n < 0) return Error::from_errno("writing '" + value + "' to " + path, err);
  return ok_status();
}

std::string read_attr(const std::string& path) {
  auto text = fs::read_file(path, 4096);
  if (!text) return "";
  std::string s = *text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Status link(const std::string& target, const std::string& at) {
  if (::symlink(target.c_str(), at.c_str()) != 0 && errno != EEXIST) {
    return Error::from_errno("linking " + at + " -> " + target, errno);
  }
  return ok_status();
}

}  // namespace

LioBackend::LioBackend(LioOptions options, LoggerPtr log)
    : options_(std::move(options)), log_(std::move(log)), files_(options_.file_dir) {}

Status LioBackend::prepare() {
  if (!is_dir(options_.configfs)) {
    return Error{"--backend lio needs the kernel's LIO target through configfs, and " +
                 options_.configfs +
                 " is missing (modprobe target_core_mod iscsi_target_mod, mount configfs, "
                 "or use --backend memory|file)"};
  }
  if (options_.nodes.empty()) return Error{"--backend lio needs at least one --lio-node"};
  for (const auto& [name, node] : options_.nodes) {
    if (!fs::exists("/run/netns/" + node.netns)) {
      return Error{"--lio-node " + name + ": network namespace " + node.netns + " does not exist"};
    }
  }
  if (auto st = make_dir(options_.configfs + "/core"); !st) return st;
  if (auto st = make_dir(options_.configfs + "/core/fileio_0"); !st) return st;
  if (auto st = make_dir(options_.configfs + "/iscsi"); !st) return st;
  return files_.prepare();
}

Status LioBackend::run(const std::vector<std::string>& argv) const {
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return Error::from_errno("pipe", errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);  // not the simulator's sockets
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(err_pipe[0]);
    return Error::from_errno("running " + argv[0], rc);
  }
  std::string err;
  char buf[1024];
  for (ssize_t n; (n = ::read(err_pipe[0], buf, sizeof buf)) > 0;) err.append(buf, n);
  ::close(err_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return ok_status();
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  return Error{cmd + " failed: " + err};
}

Status LioBackend::in_netns(const std::string& netns, std::vector<std::string> argv) const {
  argv.insert(argv.begin(), {options_.ip, "netns", "exec", netns});
  return run(argv);
}

Status LioBackend::move_vip(const std::string& ip, const std::string& from, const std::string& to) {
  const std::string cidr = ip + "/" + std::to_string(options_.prefix_len);
  for (const auto& [name, node] : options_.nodes) {
    if (node.netns == to) continue;
    // Removing it everywhere else keeps exactly one holder (failing means it was not there).
    (void)run({options_.ip, "-n", node.netns, "addr", "del", cidr, "dev", node.iface});
  }
  const LioNode* dest = nullptr;
  for (const auto& [name, node] : options_.nodes) {
    if (node.netns == to) dest = &node;
  }
  if (!dest) return Error{"no --lio-node for namespace " + to};
  if (auto st = run({options_.ip, "-n", to, "addr", "replace", cidr, "dev", dest->iface}); !st) {
    return st;
  }
  // Gratuitous ARP, as keepalived sends it: without it the initiator keeps the old MAC until its
  // neighbour entry ages out (tens of seconds, measured in qemu-e2e.md).
  if (auto st =
          in_netns(to, {options_.arping, "-q", "-U", "-c", "1", "-I", dest->iface, "-s", ip, ip});
      !st) {
    log_->warn("gratuitous ARP for {} from {} failed: {}", ip, to, st.error().message);
  }
  log_->info("VIP {} moved {} -> {}", ip, from.empty() ? "(none)" : from, to);
  return ok_status();
}

Status LioBackend::ensure_volume(const ExportView& e) {
  const std::string dev = options_.configfs + "/core/fileio_0/" + e.uuid;
  if (is_dir(dev) && read_attr(dev + "/enable") == "1") return ok_status();
  if (auto st = make_dir(dev); !st) return st;
  const std::string control = "fd_dev_name=" + files_.path_for(e) +
                              ",fd_dev_size=" + std::to_string(static_cast<int64_t>(e.size) << 30);
  if (auto st = write_attr(dev + "/control", control); !st) return st;
  // The unit serial (VPD page 0x80) the initiator reads: the volume uuid, as on a Datera array.
  if (auto st = write_attr(dev + "/wwn/vpd_unit_serial", e.uuid); !st) return st;
  // The inquiry strings of an EDF LUN (multipathd's hwtable and blacklists match on them). Kernels
  // before 5.x lack the attributes: their LUNs say LIO-ORG, which nothing but multipath cares of.
  for (const auto& [attr, value] : {std::pair{"vendor_id", "DATERA"}, {"product_id", "IBLOCK"}}) {
    if (auto st = write_attr(dev + "/wwn/" + attr, value); !st) {
      log_->warn("volume {}: {} stays LIO's: {}", e.app_instance, attr, st.error().message);
    }
  }
  if (auto st = write_attr(dev + "/enable", "1"); !st) return st;
  log_->info("volume {}: LIO fileio backstore {} (serial {})", e.app_instance, e.uuid, e.uuid);
  return ok_status();
}

Status LioBackend::ensure_acls(const ExportView& e, const std::string& tpg) {
  const bool allow_all = e.access_control_mode == "allow_all";
  if (auto st = write_attr(tpg + "/attrib/generate_node_acls", allow_all ? "1" : "0"); !st) {
    return st;
  }
  std::set<std::string> want(e.acl_iqns.begin(), e.acl_iqns.end());
  for (const auto& iqn : list_dir(tpg + "/acls")) {
    if (want.count(iqn)) continue;
    // Removing the node ACL ends that initiator's sessions: the array fencing a node.
    const std::string acl = tpg + "/acls/" + iqn;
    for (const auto& mapped : list_dir(acl)) {
      if (mapped.rfind("lun_", 0) != 0) continue;
      ::unlink((acl + "/" + mapped + "/lun").c_str());  // the mapping link made below
      if (auto st = remove_dir(acl + "/" + mapped); !st) return st;
    }
    if (auto st = remove_dir(acl); !st) return st;
    log_->info("volume {}: initiator {} removed from the LIO ACL (its sessions end)",
               e.app_instance, iqn);
  }
  for (const auto& iqn : want) {
    const std::string acl = tpg + "/acls/" + iqn;
    if (is_dir(acl + "/lun_0")) continue;
    if (auto st = make_dir(acl); !st) return st;
    if (auto st = make_dir(acl + "/lun_0"); !st) return st;
    if (auto st = link(tpg + "/lun/lun_0", acl + "/lun_0/lun"); !st) return st;
    log_->info("volume {}: initiator {} added to the LIO ACL", e.app_instance, iqn);
  }
  return ok_status();
}

Status LioBackend::ensure_portals(const ExportView& e, const std::string& tpg) {
  auto node = options_.nodes.find(e.node);
  if (node == options_.nodes.end()) {
    return Error{"volume " + e.app_instance + " is on storage node '" + e.node +
                 "', which has no --lio-node"};
  }
  const std::string& netns = node->second.netns;
  std::set<std::string> want;
  for (const auto& ip : e.ips) want.insert(ip + ":3260");
  for (const auto& np : list_dir(tpg + "/np")) {
    if (want.count(np)) continue;
    if (auto st = remove_dir(tpg + "/np/" + np); !st) return st;  // a rebalanced-away IP
    const std::string ip = np.substr(0, np.rfind(':'));
    for (const auto& [_, n] : options_.nodes) {
      (void)run({options_.ip, "-n", n.netns, "addr", "del",
                 ip + "/" + std::to_string(options_.prefix_len), "dev", n.iface});
    }
    vip_netns_.erase(ip);
  }
  for (const auto& ip : e.ips) {
    const std::string np = tpg + "/np/" + ip + ":3260";
    auto held = vip_netns_.find(ip);
    if (held != vip_netns_.end() && held->second == netns && is_dir(np)) continue;
    // A LIO portal listens in the namespace of whoever creates it, and portals are global: to
    // move one, remove it, move the address, and create it again from the new namespace.
    if (auto st = remove_dir(np); !st) return st;
    if (auto st = move_vip(ip, held == vip_netns_.end() ? "" : held->second, netns); !st) return st;
    if (auto st = in_netns(netns, {"/bin/mkdir", np}); !st) return st;
    vip_netns_[ip] = netns;
  }
  return ok_status();
}

Status LioBackend::remove_target(const std::string& iqn) {
  const std::string target = options_.configfs + "/iscsi/" + iqn;
  for (const auto& t : list_dir(target)) {
    if (t.rfind("tpgt_", 0) != 0) continue;
    const std::string tpg = target + "/" + t;
    (void)write_attr(tpg + "/enable", "0");
    for (const auto& np : list_dir(tpg + "/np")) {
      if (auto st = remove_dir(tpg + "/np/" + np); !st) return st;
    }
    for (const auto& acl : list_dir(tpg + "/acls")) {
      for (const auto& mapped : list_dir(tpg + "/acls/" + acl)) {
        if (mapped.rfind("lun_", 0) != 0) continue;
        ::unlink((tpg + "/acls/" + acl + "/" + mapped + "/lun").c_str());
        if (auto st = remove_dir(tpg + "/acls/" + acl + "/" + mapped); !st) return st;
      }
      if (auto st = remove_dir(tpg + "/acls/" + acl); !st) return st;
    }
    for (const auto& lun : list_dir(tpg + "/lun")) {
      for (const auto& l : list_dir(tpg + "/lun/" + lun)) {
        struct stat sb {};
        const std::string p = tpg + "/lun/" + lun + "/" + l;
        if (::lstat(p.c_str(), &sb) == 0 && S_ISLNK(sb.st_mode)) ::unlink(p.c_str());
      }
      if (auto st = remove_dir(tpg + "/lun/" + lun); !st) return st;
    }
    if (auto st = remove_dir(tpg); !st) return st;
  }
  return remove_dir(target);
}

Status LioBackend::reconcile(const std::vector<ExportView>& exports,
                             const std::vector<SnapshotView>& snapshots) {
  std::set<std::string> iqns, uuids;
  for (const auto& e : exports) {
    if (!Model::valid_uuid(e.uuid)) continue;
    iqns.insert(e.iqn);
    uuids.insert(e.uuid);
  }
  // Gone from the model: targets first, then their backstores, then (files_) their files.
  for (const auto& iqn : list_dir(options_.configfs + "/iscsi")) {
    if (iqn.rfind(kDateraPrefix, 0) != 0 || iqns.count(iqn)) continue;
    if (auto st = remove_target(iqn); !st) return st;
    log_->info("LIO target {} removed", iqn);
  }
  for (const auto& dev : list_dir(options_.configfs + "/core/fileio_0")) {
    if (!Model::valid_uuid(dev) || uuids.count(dev)) continue;
    if (auto st = remove_dir(options_.configfs + "/core/fileio_0/" + dev); !st) return st;
  }
  // Snapshots and clones are file copies (files_): a clone's backstore is made on its copied file
  // below like any new volume's; snapshots are never exported.
  if (auto st = files_.reconcile(exports, snapshots); !st) return st;

  for (const auto& e : exports) {
    if (!Model::valid_uuid(e.uuid)) continue;
    if (auto st = ensure_volume(e); !st) return st.error().wrap("volume " + e.app_instance);
    const std::string tpg = options_.configfs + "/iscsi/" + e.iqn + "/tpgt_1";
    if (auto st = make_dir(options_.configfs + "/iscsi/" + e.iqn); !st) return st;
    if (auto st = make_dir(tpg); !st) return st;
    if (!is_dir(tpg + "/lun/lun_0")) {
      if (auto st = make_dir(tpg + "/lun/lun_0"); !st) return st;
      if (auto st = link(options_.configfs + "/core/fileio_0/" + e.uuid, tpg + "/lun/lun_0/disk");
          !st) {
        return st;
      }
      (void)write_attr(tpg + "/attrib/authentication", "0");
      (void)write_attr(tpg + "/attrib/demo_mode_write_protect", "0");
      (void)write_attr(tpg + "/attrib/cache_dynamic_acls", "0");
    }
    if (auto st = ensure_acls(e, tpg); !st) return st.error().wrap("volume " + e.app_instance);
    if (auto st = ensure_portals(e, tpg); !st) return st.error().wrap("volume " + e.app_instance);
    const std::string enable = e.online ? "1" : "0";
    if (read_attr(tpg + "/enable") != enable) {
      if (auto st = write_attr(tpg + "/enable", enable); !st) return st;
      log_->info("volume {}: target {} {}", e.app_instance, e.iqn,
                 e.online ? "enabled" : "disabled");
    }
  }
  return ok_status();
}

}  // namespace datera::sim

#include "base/fs.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>

namespace datera::fs {
namespace {

/// Closes an fd on scope exit; errors on close are reported by the callers that care (writers).
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

Status write_all(int fd, const std::string& content, const std::string& path) {
  size_t off = 0;
  while (off < content.size()) {
    const ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::from_errno("writing " + path, errno);
    }
    off += static_cast<size_t>(n);
  }
  return ok_status();
}

Result<std::string> read_fd(const FdGuard& g, const std::string& path, size_t max_bytes) {
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(g.fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::from_errno("reading " + path, errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      return Error{path + " is larger than " + std::to_string(max_bytes) + " bytes",
                   errno_code(EFBIG)};
    }
  }
  return out;
}

}  // namespace

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  FdGuard g{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (g.fd < 0) return Error::from_errno("opening " + path, errno);
  return read_fd(g, path, max_bytes);
}

Result<std::string> HeldAttributes::read(const std::string& path, size_t max_bytes) {
  auto it = held_.find(path);
  UniqueFd once;
  int fd = -1;
  if (it != held_.end()) {
    fd = it->second.fd.get();
    it->second.read = true;
  } else {
    UniqueFd opened(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!opened) return Error::from_errno("opening " + path, errno);
    fd = opened.get();
    if (held_.size() < max_open_) {
      it = held_.emplace(path, Held{std::move(opened), true}).first;
    } else {
      once = std::move(opened);
    }
  }
  std::string out(max_bytes + 1, '\0');
  ssize_t n = -1;
  do {
    n = ::pread(fd, out.data(), out.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    const int err = errno;
    if (it != held_.end()) held_.erase(it);
    return Error::from_errno("reading " + path, err);
  }
  if (static_cast<size_t>(n) > max_bytes) {
    return Error{path + " is larger than " + std::to_string(max_bytes) + " bytes",
                 errno_code(EFBIG)};
  }
  out.resize(static_cast<size_t>(n));
  return out;
}

void HeldAttributes::drop_unread() {
  std::erase_if(held_, [](const auto& kv) { return !kv.second.read; });
  for (auto& [_, h] : held_) h.read = false;
}

Result<std::string> read_regular_file(const std::string& path, size_t max_bytes, mode_t* mode) {
  FdGuard g{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)};
  if (g.fd < 0) {
    if (errno == ELOOP)
      return Error{path + " is a symbolic link, not a regular file", errno_code(ELOOP)};
    return Error::from_errno("opening " + path, errno);
  }
  struct stat found {};
  if (::fstat(g.fd, &found) != 0) return Error::from_errno("stat " + path, errno);
  if (!S_ISREG(found.st_mode)) {
    return Error{path + " is " + describe_file_type(found.st_mode) + ", not a regular file",
                 errno_code(EINVAL)};
  }
  if (mode != nullptr) *mode = found.st_mode;
  return read_fd(g, path, max_bytes);
}

std::string describe_file_type(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

Status fsync_dir(const std::string& dir) {
  FdGuard g{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (g.fd < 0) return Error::from_errno("opening directory " + dir, errno);
  if (::fsync(g.fd) != 0) return Error::from_errno("fsync of directory " + dir, errno);
  return ok_status();
}

Status write_synced(const std::string& path, const std::string& content, mode_t mode) {
  // O_NONBLOCK: a FIFO there fails at once (ENXIO) instead of waiting for a reader; a device node
  // or anything else that is not a regular file is refused before a byte is written.
  FdGuard g{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
                   0600)};
  if (g.fd < 0) return Error::from_errno("creating " + path, errno);
  struct stat found {};
  if (::fstat(g.fd, &found) != 0) return Error::from_errno("stat " + path, errno);
  if (!S_ISREG(found.st_mode)) {
    return Error{path + " is " + describe_file_type(found.st_mode) + ", not a regular file",
                 errno_code(EINVAL)};
  }
  if (auto st = write_all(g.fd, content, path); !st) return st;
  if (::fchmod(g.fd, mode) != 0) return Error::from_errno("chmod " + path, errno);
  if (::fsync(g.fd) != 0) return Error::from_errno("fsync " + path, errno);
  // Close before anyone may exec the file: an inode still open for writing gives ETXTBSY.
  if (::close(g.release()) != 0) return Error::from_errno("closing " + path, errno);
  return ok_status();
}

Status atomic_write(const std::string& path, const std::string& content, mode_t mode) {
  const std::string dir = dirname(path);
  const std::string tmp = join(dir, "." + basename(path) + ".tmp-" + std::to_string(::getpid()));
  // The name is predictable: whatever a crash (or someone) left there is ours to replace.
  ::unlink(tmp.c_str());
  if (auto st = write_synced(tmp, content, mode); !st) {
    ::unlink(tmp.c_str());
    return st;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Error::from_errno("renaming " + tmp + " to " + path, err);
  }
  return fsync_dir(dir);
}

Status ensure_dir(const std::string& path, mode_t mode) {
  if (path.empty()) return Error{"empty directory path", errno_code(EINVAL)};
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return Error{path + " exists and is not a directory", errno_code(ENOTDIR)};
    if ((st.st_mode & 07777) != mode && ::chmod(path.c_str(), mode) != 0) {
      return Error::from_errno("chmod " + path, errno);
    }
    return ok_status();
  }
  if (errno != ENOENT) return Error::from_errno("stat " + path, errno);
  const std::string parent = dirname(path);
  if (parent != path && !exists(parent)) {
    if (auto s = ensure_dir(parent, 0755); !s) return s;
  }
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return Error::from_errno("mkdir " + path, errno);
  }
  if (::chmod(path.c_str(), mode) != 0) return Error::from_errno("chmod " + path, errno);
  return ok_status();
}

Status prepare_socket_dir(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return Error::from_errno("stat " + dir, errno);
    return ensure_dir(dir, 0750);
  }
  if (!S_ISDIR(st.st_mode))
    return Error{dir + " exists and is not a directory", errno_code(ENOTDIR)};
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    return Error{dir + " is owned by uid " + std::to_string(st.st_uid) +
                     ", not root: whoever owns it could replace the socket. Give the socket a "
                     "directory owned by root, or a new one for the agent to create",
                 errno_code(EPERM)};
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Error{dir + " is writable by group or others (mode " + mode +
                     "): anyone who can write there could replace the socket. Give the socket "
                     "a directory only root can write, or a new one for the agent to create",
                 errno_code(EPERM)};
  }
  return ok_status();
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string dirname(const std::string& path) {
  const auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string basename(const std::string& path) {
  const auto pos = path.find_last_of('/');
  return pos == std::string::npos ? path : path.substr(pos + 1);
}

std::string join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

Result<std::string> real_path(const std::string& path) {
  char* p = ::realpath(path.c_str(), nullptr);
  if (p == nullptr) return Error::from_errno("resolving " + path, errno);
  std::string out(p);
  ::free(p);  // NOLINT(cppcoreguidelines-no-malloc)
  return out;
}

Result<std::string> self_exe() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return Error::from_errno("readlink /proc/self/exe", errno);
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace datera::fs

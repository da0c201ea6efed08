#pragma once

// Blocking raw HTTP exchanges over a Unix socket for tests, optionally as another uid (forked
// child), so tests can send malformed or oversize requests that no well-behaved client would.

#include <cerrno>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace datera::testing {

inline std::string raw_exchange(const std::string& path, const std::string& request,
                                bool shut_write = true) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    const std::string err = std::strerror(errno);
    ::close(fd);
    return "connect failed: " + err;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  size_t off = 0;
  while (off < request.size()) {
    const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer and close before reading everything
    off += static_cast<size_t>(n);
  }
  if (shut_write) ::shutdown(fd, SHUT_WR);
  std::string out;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

inline std::string http_post(const std::string& target, const std::string& body) {
  return "POST " + target +
         " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

inline std::string http_get(const std::string& target) {
  return "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
}

/// raw_exchange() from a forked child running as uid/gid `id`. Needs root.
inline std::string raw_exchange_as(unsigned id, const std::string& path,
                                   const std::string& request) {
  int p[2];
  if (::pipe(p) != 0) return "pipe failed";
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(p[0]);
    if (::setgid(id) != 0 || ::setuid(id) != 0) ::_exit(3);
    const auto reply = raw_exchange(path, request);
    const ssize_t n = ::write(p[1], reply.data(), reply.size());
    ::_exit(n >= 0 ? 0 : 4);
  }
  ::close(p[1]);
  std::string reply;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;)
    reply.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "child failed: " + std::to_string(status);
  return reply;
}

}  // namespace datera::testing
